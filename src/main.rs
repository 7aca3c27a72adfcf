//! `ferry`: the operator's command. Runs the pipeline locally (`serve`), one function now
//! (`run-job`, `sync-views`, `token-refresh`, `export-pull`, `reconcile`), checks a config
//! (`check`), and inspects and replays jobs in the state bucket (`jobs`, `show`, `failed`,
//! `find`, `replay`). `ferry --help` lists them; `ferry COMMAND --help` has examples. The
//! commands are defined in `cli/`; the demos are the separate `ferry-demo` binary.

mod cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ferry_shared::process::bound_heap();
    cli::main(cli::Cli::parse())
}
