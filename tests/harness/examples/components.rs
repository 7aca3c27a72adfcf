//! Starts the local components, prints how to reach them and how long each took, then
//! keeps them running until Enter is pressed (or stdin closes). `--exit` stops at once.
//!
//! cargo run -p ferry-harness --example components [-- --exit]

use std::time::Instant;

use ferry_harness::{Azurite, Moto, Sshd, ensure_installed};

fn main() -> anyhow::Result<()> {
    let t = Instant::now();
    ensure_installed()?;
    println!("install check: {:?}", t.elapsed());

    let t = Instant::now();
    let azurite = Azurite::start()?;
    println!(
        "azurite: {} (started in {:?})",
        azurite.account_url,
        t.elapsed()
    );
    let t = Instant::now();
    let moto = Moto::start()?;
    println!("moto:    {} (started in {:?})", moto.endpoint, t.elapsed());
    let t = Instant::now();
    let sshd = Sshd::start()?;
    println!(
        "sshd:    {}@127.0.0.1:{} key {} root {} (started in {:?})",
        sshd.user,
        sshd.port,
        sshd.client_key_path.display(),
        sshd.root.display(),
        t.elapsed()
    );

    if !std::env::args().any(|a| a == "--exit") {
        println!("press Enter to stop");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    Ok(())
}
