//! Why a component could not be built from its config at cold start. Every backend's
//! `from_config` returns it, and the function builders in `services` pass it on. A leaf: it
//! imports nothing above `secret`.

use thiserror::Error;

use crate::secret::SecretError;

/// Why the clients could not be built.
#[derive(Debug, Error)]
pub enum SetupError {
    /// A secret the component needs could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The settings cannot work (checked further than `validate` can, e.g. a key that does not
    /// parse).
    #[error("config: {0}")]
    Config(String),
}
