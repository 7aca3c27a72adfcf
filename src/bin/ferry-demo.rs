//! `ferry-demo`: the end-to-end demos on local components, apart from the operational `ferry`
//! binary so that `ferry` does not link the test harness that starts them (feature `demo`).
//!
//! - `ferry-demo` (or `ferry-demo copy`, `make demo`): the webhook-triggered export copy
//!   (Azurite, moto, sshd).
//! - `ferry-demo views` (`make demo-views`): a view synced into PostgreSQL and S3 by the local
//!   scheduler (moto, PostgreSQL, a stand-in view).
//!
//! Its numbered steps go to stdout; log lines, as human text with timestamps, to stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_else(|| "copy".into());
    if !matches!(which.as_str(), "copy" | "views") {
        eprintln!("usage: ferry-demo [copy|views]");
        return ExitCode::from(2);
    }
    // The demos' S3 is a local moto server: give the SDK the dummy credentials moto accepts and
    // keep it from probing the EC2 metadata endpoint. Set before any thread starts.
    // SAFETY: no other thread exists yet.
    unsafe {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "ferry-demo"),
            ("AWS_SECRET_ACCESS_KEY", "ferry-demo"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
    }
    ferry_shared::telemetry::init_local(ferry_shared::telemetry::LogFormat::Text);
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                if which == "views" {
                    ferry::demo_views::run().await
                } else {
                    ferry::demo::run().await
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
