//! Run by the smoke test `nothing_survives_the_process`: starts the shared components and a
//! private moto whose handle is leaked (never dropped), prints their pids and folders, and exits
//! without any cleanup running. The test then checks the servers died with this process.

use std::io::Write as _;

use ferry_harness::{Moto, shared};

fn main() {
    let c = shared();
    println!(
        "PIDS {} {} {}",
        c.azurite.pid().unwrap(),
        c.moto.pid().unwrap(),
        c.sshd.pid().unwrap()
    );
    println!(
        "DIRS {} {} {}",
        c.azurite.dir().display(),
        c.moto.dir().display(),
        c.sshd.root.parent().unwrap().display()
    );
    // A private instance started from this (main) thread: it must die with the process too.
    let moto = Box::leak(Box::new(Moto::start().unwrap()));
    println!("PRIVATE {}", moto.pid().unwrap());
    std::io::stdout().flush().unwrap();
}
