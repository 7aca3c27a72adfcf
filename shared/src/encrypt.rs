//! OpenPGP encryption of what a route delivers (`encrypt` on a route), for partners who accept
//! files only encrypted to their public keys ("encrypt all files with PGP before sending").
//!
//! Recipient keys are checked where encryption is built: at blob-copy's cold start (and `ferry
//! serve`'s), and by `ferry check`. A key that does not parse, whose self-signatures do not
//! verify, that is revoked, has expired, or has no (sub)key that may encrypt is refused there
//! with its fingerprint and user id, inline or behind a secret reference alike. Loading the config
//! refuses only what needs no key parsed (no recipient, a private key, text that is no armored
//! public key), so the functions that never encrypt do not verify keys they never use (1.7M
//! instructions of every cold start for one RSA-3072 key: docs/performance.md).
//! The chosen encryption (sub)key's expiry is checked again before every encryption, so a
//! long-lived process does not encrypt to a key that expired after it started.
//!
//! Encryption streams: the (decompressed) plaintext is read through a blocking bridge, encrypted
//! by rPGP's message builder (SEIPD v1 with AES-256 and one session key wrapped for each
//! recipient, binary output, no compression: what `gpg --decrypt` reads) and written to a staged
//! temporary file, because destinations need the exact length up front. Memory stays bounded by
//! the builder's chunk size; the plaintext's size and SHA-256 are computed on the way for the
//! receipt.

mod self_signatures;

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::digest::Md5;
use base64::Engine as _;
use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::Signature;
use pgp::types::KeyDetails;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::ByteReader;
use crate::secret::{SecretError, SecretRef, SecretResolver};
use crate::transform::{Spooled, TransformError};

/// OpenPGP encryption of a route's files before they are delivered.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptConfig {
    /// The recipients' OpenPGP public keys (at least one). The file is encrypted once, with a
    /// session key that each recipient's key can open on its own. Each key is checked where
    /// encryption is built (blob-copy's cold start, `ferry serve`, `ferry check`): one that is
    /// revoked, expired, or without a (sub)key that may encrypt is refused.
    pub recipients: Vec<RecipientKey>,
}

/// Where a recipient's public key comes from: the armored key itself, or a secret reference
/// whose value is the armored key (`gpg --export --armor KEYID`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RecipientKey {
    /// The armored public key (`-----BEGIN PGP PUBLIC KEY BLOCK-----` ...). Public keys are not
    /// secret, so they may live in the config; a private key here is refused.
    Armored(String),
    /// Name of an environment variable holding the armored key.
    Env(String),
    /// Path of a file holding the armored key.
    File(PathBuf),
    /// An AWS Secrets Manager secret holding the armored key.
    SecretsManager {
        /// Secret name or ARN.
        id: String,
        /// When the secret string is a JSON object, the key whose value to use.
        #[serde(default)]
        json_key: Option<String>,
    },
}

impl RecipientKey {
    /// The secret reference to resolve, or `None` for an inline key.
    pub fn secret_ref(&self) -> Option<SecretRef> {
        match self {
            RecipientKey::Armored(_) => None,
            RecipientKey::Env(n) => Some(SecretRef::Env(n.clone())),
            RecipientKey::File(p) => Some(SecretRef::File(p.clone())),
            RecipientKey::SecretsManager { id, json_key } => Some(SecretRef::SecretsManager {
                id: id.clone(),
                json_key: json_key.clone(),
            }),
        }
    }
}

impl EncryptConfig {
    /// Checks what needs no key parsed: at least one recipient, and every inline key an armored
    /// public key block. The keys themselves are checked by [`EncryptConfig::load`].
    pub fn validate(&self) -> Result<(), String> {
        if self.recipients.is_empty() {
            return Err("encrypt needs at least one recipient".into());
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if let RecipientKey::Armored(text) = r {
                armored_public_key(text).map_err(|e| format!("encrypt.recipients[{i}]: {e}"))?;
            }
        }
        Ok(())
    }

    /// Resolves and checks every recipient key (cold start).
    pub async fn load(&self, secrets: &SecretResolver) -> Result<Recipients, LoadError> {
        self.load_at(secrets, SystemTime::now()).await
    }

    /// [`EncryptConfig::load`] as of `now`.
    pub async fn load_at(
        &self,
        secrets: &SecretResolver,
        now: SystemTime,
    ) -> Result<Recipients, LoadError> {
        let mut keys = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            let parsed = match r.secret_ref() {
                None => match r {
                    RecipientKey::Armored(text) => Recipient::parse(text, now),
                    _ => unreachable!("only inline keys have no secret reference"),
                },
                Some(reference) => {
                    let value = secrets.resolve(&reference).await?;
                    Recipient::parse(value.expose_secret(), now)
                }
            };
            keys.push(parsed.map_err(|e| LoadError::Key { index: i, error: e })?);
        }
        if keys.is_empty() {
            return Err(LoadError::NoRecipients);
        }
        Ok(Recipients { keys })
    }
}

/// Why a route's recipient keys could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The secret holding a key could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A key is unusable.
    #[error("encrypt.recipients[{index}]: {error}")]
    Key {
        /// Position in `recipients`.
        index: usize,
        /// What is wrong with it.
        error: KeyError,
    },
    /// `recipients` is empty.
    #[error("encrypt needs at least one recipient")]
    NoRecipients,
}

/// Why a recipient key is refused. Messages name the key by fingerprint and user id and never
/// contain key material.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    /// A private key was given where the public key belongs.
    #[error(
        "this is a private key block: give the recipient's public key (gpg --export --armor KEYID), never a private key"
    )]
    PrivateKey,
    /// Not an armored OpenPGP public key.
    #[error("not an armored OpenPGP public key ({0})")]
    Unreadable(String),
    /// The key's self-signatures do not verify.
    #[error("key {fingerprint} ({user_id}): its self-signatures do not verify ({reason})")]
    BadSignatures {
        /// Primary key fingerprint (hex).
        fingerprint: String,
        /// First user id.
        user_id: String,
        /// What failed.
        reason: String,
    },
    /// The key was revoked by its owner.
    #[error("key {fingerprint} ({user_id}) is revoked")]
    Revoked {
        /// Primary key fingerprint (hex).
        fingerprint: String,
        /// First user id.
        user_id: String,
    },
    /// The key (or its only encryption subkeys) expired.
    #[error("key {fingerprint} ({user_id}) expired at {at}")]
    Expired {
        /// Primary key fingerprint (hex).
        fingerprint: String,
        /// First user id.
        user_id: String,
        /// RFC 3339 expiry time.
        at: String,
    },
    /// No primary key or subkey may encrypt.
    #[error(
        "key {fingerprint} ({user_id}) has no usable encryption key (no primary key or subkey with the encrypt flag that is unrevoked and unexpired)"
    )]
    NoEncryptionKey {
        /// Primary key fingerprint (hex).
        fingerprint: String,
        /// First user id.
        user_id: String,
    },
}

/// One checked recipient: the key, and which of its (sub)keys encrypts.
#[derive(Debug, Clone)]
pub struct Recipient {
    key: SignedPublicKey,
    /// Index into `public_subkeys`; `None`: the primary key encrypts.
    subkey: Option<usize>,
    fingerprint: String,
    user_id: String,
    expires_at: Option<SystemTime>,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// When a (sub)key created at `created` expires per `sig` (`None`: never).
fn expiry(sig: &Signature, created: SystemTime) -> Option<SystemTime> {
    sig.key_expiration_time()
        .filter(|d| d.as_secs() > 0)
        .map(|d| created + Duration::from(d))
}

/// The most recent of `sigs` (by creation time).
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

/// Refuses, before any parsing, a private key (so no parser message can echo any of it) and
/// text without an armored public key block.
fn armored_public_key(armored: &str) -> Result<(), KeyError> {
    if armored.contains("PRIVATE KEY BLOCK") {
        return Err(KeyError::PrivateKey);
    }
    if !armored.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        return Err(KeyError::Unreadable(
            "no -----BEGIN PGP PUBLIC KEY BLOCK----- line".into(),
        ));
    }
    Ok(())
}

impl Recipient {
    /// Parses an armored public key and checks it can be encrypted to at `now`.
    pub fn parse(armored: &str, now: SystemTime) -> Result<Self, KeyError> {
        armored_public_key(armored)?;
        let (key, _) = SignedPublicKey::from_armor_single(armored.trim().as_bytes())
            .map_err(|e| KeyError::Unreadable(short(&e.to_string())))?;
        let fingerprint = format!("{:X}", key.fingerprint());
        let user_id = key
            .details
            .users
            .iter()
            .find_map(|u| u.id.as_str().map(str::to_string))
            .unwrap_or_else(|| "no user id".into());
        let named = |f: fn(String, String) -> KeyError| f(fingerprint.clone(), user_id.clone());
        if let Err(e) = self_signatures::verify(&key) {
            return Err(KeyError::BadSignatures {
                fingerprint,
                user_id,
                reason: short(&e.to_string()),
            });
        }
        if !key.details.revocation_signatures.is_empty() {
            return Err(named(|fingerprint, user_id| KeyError::Revoked {
                fingerprint,
                user_id,
            }));
        }
        let primary_fp = key.fingerprint();
        let primary_id = key.legacy_key_id();
        let own = |s: &&Signature| {
            let fps = s.issuer_fingerprint();
            let ids = s.issuer_key_id();
            (fps.is_empty() && ids.is_empty())
                || fps.iter().any(|f| **f == primary_fp)
                || ids.iter().any(|i| **i == primary_id)
        };
        let self_sig = newest(
            key.details
                .users
                .iter()
                .flat_map(|u| u.signatures.iter())
                .chain(key.details.direct_signatures.iter())
                .filter(own),
        );
        let primary_created = SystemTime::from(key.primary_key.created_at());
        let primary_expiry = self_sig.and_then(|s| expiry(s, primary_created));
        if let Some(at) = primary_expiry
            && at <= now
        {
            return Err(KeyError::Expired {
                fingerprint,
                user_id,
                at: rfc3339(at),
            });
        }
        // The newest subkey that may encrypt now; else the primary key if it may.
        let mut chosen: Option<(usize, SystemTime, Option<SystemTime>)> = None;
        let mut expired_at: Option<SystemTime> = None;
        for (i, sub) in key.public_subkeys.iter().enumerate() {
            if sub
                .signatures
                .iter()
                .any(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyRevocation))
            {
                continue;
            }
            let Some(binding) = newest(
                sub.signatures
                    .iter()
                    .filter(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyBinding)),
            ) else {
                continue;
            };
            let flags = binding.key_flags();
            if !(flags.encrypt_comms() || flags.encrypt_storage()) {
                continue;
            }
            let created = SystemTime::from(sub.key.created_at());
            let until = match (expiry(binding, created), primary_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if until.is_some_and(|at| at <= now) {
                expired_at = expired_at.max(until);
                continue;
            }
            if chosen.as_ref().is_none_or(|(_, c, _)| created > *c) {
                chosen = Some((i, created, until));
            }
        }
        let (subkey, expires_at) = match chosen {
            Some((i, _, until)) => (Some(i), until),
            None => {
                let flags = self_sig.map(|s| s.key_flags()).unwrap_or_default();
                if flags.encrypt_comms() || flags.encrypt_storage() {
                    (None, primary_expiry)
                } else if let Some(at) = expired_at {
                    return Err(KeyError::Expired {
                        fingerprint,
                        user_id,
                        at: rfc3339(at),
                    });
                } else {
                    return Err(named(|fingerprint, user_id| KeyError::NoEncryptionKey {
                        fingerprint,
                        user_id,
                    }));
                }
            }
        };
        Ok(Self {
            key,
            subkey,
            fingerprint,
            user_id,
            expires_at,
        })
    }

    /// The primary key's fingerprint (upper-case hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key's first user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    fn still_usable(&self, now: SystemTime) -> Result<(), KeyError> {
        match self.expires_at {
            Some(at) if at <= now => Err(KeyError::Expired {
                fingerprint: self.fingerprint.clone(),
                user_id: self.user_id.clone(),
                at: rfc3339(at),
            }),
            _ => Ok(()),
        }
    }
}

/// Keeps parser messages short (they name what failed, never key material).
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A route's checked recipients.
#[derive(Debug, Clone)]
pub struct Recipients {
    keys: Vec<Recipient>,
}

impl Recipients {
    /// Recipients from already parsed keys (at least one).
    pub fn new(keys: Vec<Recipient>) -> Result<Self, LoadError> {
        if keys.is_empty() {
            return Err(LoadError::NoRecipients);
        }
        Ok(Self { keys })
    }

    /// The recipients, in config order.
    pub fn keys(&self) -> &[Recipient] {
        &self.keys
    }
}

/// The plaintext that was encrypted: its size and SHA-256 (hex), for the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// Bytes of plaintext.
    pub bytes: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256_hex: String,
}

/// Counts and hashes what is read; keeps the first read error whole (a source error stays a
/// source error, whatever the encoder makes of it).
struct HashingReader<R> {
    inner: R,
    sha256: Sha256,
    bytes: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sha256.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(copy)
            }
        }
    }
}

/// Counts and MD5-hashes what is written; keeps the first write error whole.
struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    bytes: u64,
    error: Option<io::Error>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.md5.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(copy)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts `plaintext` to every recipient into a new temporary file in `dir`, as a binary
/// OpenPGP message whose literal data is named `file_name`. Returns the staged ciphertext and
/// what the plaintext was. Errors: the source's own (as read), the disk's, or a
/// `TransformError::Encrypt` (a recipient key expired since it was loaded, or the encoder failed).
pub async fn encrypt_to_spool(
    plaintext: ByteReader,
    recipients: Arc<Recipients>,
    file_name: String,
    dir: &Path,
) -> io::Result<(Spooled, Plaintext)> {
    for r in &recipients.keys {
        r.still_usable(SystemTime::now())
            .map_err(|e| io::Error::other(TransformError::Encrypt(e.to_string())))?;
    }
    let file = tempfile::Builder::new()
        .prefix("ferry-pgp-")
        .tempfile_in(dir)?;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let (file, path) = file.into_parts();
        let mut plain = HashingReader {
            inner: tokio_util::io::SyncIoBridge::new_with_handle(plaintext, handle),
            sha256: Sha256::new(),
            bytes: 0,
            error: None,
        };
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            md5: Md5::new(),
            bytes: 0,
            error: None,
        };
        let encrypted = (|| {
            let mut rng = rand08::thread_rng();
            let mut builder = MessageBuilder::from_reader(file_name, &mut plain)
                .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
            for r in &recipients.keys {
                match r.subkey {
                    Some(i) => builder.encrypt_to_key(&mut rng, &r.key.public_subkeys[i])?,
                    None => builder.encrypt_to_key(&mut rng, &r.key.primary_key)?,
                };
            }
            builder.to_writer(&mut rng, &mut out)
        })();
        if let Some(e) = plain.error.take().or(out.error.take()) {
            return Err(e);
        }
        encrypted.map_err(|e| io::Error::other(TransformError::Encrypt(short(&e.to_string()))))?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let spooled = Spooled::from_file(
            path,
            out.bytes,
            base64::engine::general_purpose::STANDARD.encode(out.md5.finalize()),
        );
        Ok((
            spooled,
            Plaintext {
                bytes: plain.bytes,
                sha256_hex: hex::encode(plain.sha256.finalize()),
            },
        ))
    })
    .await
    .map_err(io::Error::other)?
}
