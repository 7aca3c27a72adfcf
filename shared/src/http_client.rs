//! The one place HTTP clients are built: every call has connect and read timeouts.

use std::time::Duration;

/// A client for sources and destinations. `read_timeout` resets on every read, so a long
/// streaming download is fine while a stalled one is cut.
pub fn build(read_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client configuration is static and valid")
}
