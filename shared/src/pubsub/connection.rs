//! Service Bus connection strings: parsing (endpoint, entity path, key or ready signature), the
//! expiry of a ready signature, and signing a SAS token with a key. A leaf: the token service
//! (to date the tokens it stores) and the Service Bus client (to sign requests) both use it.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use thiserror::Error;
use url::Url;

use crate::secret::expose;

/// Why a connection string cannot be used (never contains the key or signature).
#[derive(Debug, Error)]
#[error("connection string: {0}")]
pub struct ConnectionStringError(String);

/// How requests are authorised.
pub(crate) enum SbAuth {
    Key { name: String, key: SecretString },
    Signature(SecretString),
}

/// A parsed connection string.
pub struct Connection {
    /// `https://ns.servicebus.windows.net/` (always ends in `/`).
    pub endpoint: Url,
    /// `EntityPath`, when present.
    pub entity_path: Option<String>,
    pub(crate) auth: SbAuth,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint.as_str())
            .field("entity_path", &self.entity_path)
            .finish_non_exhaustive()
    }
}

/// Parses `Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=..`
/// (keys case-insensitive). `sb://` becomes `https://`; `UseDevelopmentEmulator=true` selects
/// plain `http://`, for loopback hosts only (local emulators and tests).
pub fn parse_connection_string(text: &str) -> Result<Connection, ConnectionStringError> {
    let mut endpoint = None;
    let (mut key_name, mut key, mut signature, mut entity, mut emulator) =
        (None, None, None, None, false);
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.to_string()),
            "sharedaccesskeyname" => key_name = Some(v.to_string()),
            "sharedaccesskey" => key = Some(SecretString::from(v.to_string())),
            "sharedaccesssignature" => signature = Some(SecretString::from(v.to_string())),
            "entitypath" => {
                entity = Some(v.trim_matches('/').to_string()).filter(|e| !e.is_empty())
            }
            "usedevelopmentemulator" => emulator = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let bad = |m: &str| ConnectionStringError(m.to_string());
    let endpoint = endpoint.ok_or_else(|| bad("no Endpoint"))?;
    let mut url = Url::parse(&endpoint).map_err(|_| bad("Endpoint is not a URL"))?;
    let host = url.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err(bad("Endpoint has no host"));
    }
    let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
    let scheme = match url.scheme() {
        "sb" | "https" if emulator && loopback => "http",
        "sb" | "https" => "https",
        "http" if loopback => "http",
        other => {
            return Err(bad(&format!(
                "Endpoint scheme {other:?} is not sb or https"
            )));
        }
    };
    // `Url::set_scheme` refuses sb -> http(s); rebuild instead.
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    url = Url::parse(&format!("{scheme}://{host}{port}/")).map_err(|_| bad("bad Endpoint"))?;
    let auth = match (key_name, key, signature) {
        (_, _, Some(sig)) => SbAuth::Signature(sig),
        (Some(name), Some(key), None) => SbAuth::Key { name, key },
        _ => {
            return Err(bad(
                "needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature",
            ));
        }
    };
    Ok(Connection {
        endpoint: url,
        entity_path: entity,
        auth,
    })
}

/// The expiry (ms since the epoch) of a ready-made `SharedAccessSignature` in a connection string.
pub fn signature_expiry(connection_string: &str) -> Option<u64> {
    let conn = parse_connection_string(connection_string).ok()?;
    let SbAuth::Signature(sig) = &conn.auth else {
        return None;
    };
    let se = expose(sig)
        .split(['&', ' '])
        .find_map(|p| p.strip_prefix("se="))?;
    se.parse::<u64>().ok().map(|s| s * 1000)
}

/// A SAS token for `resource`: `SharedAccessSignature sr=<enc uri>&sig=<enc b64 hmac>&se=<exp>&skn=<name>`.
/// The HMAC-SHA256 key is the key text as given (not base64-decoded).
pub fn sas_token(resource: &str, key_name: &str, key: &SecretString, expiry: u64) -> SecretString {
    let encoded: String = url::form_urlencoded::byte_serialize(resource.as_bytes()).collect();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(expose(key).as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    SecretString::from(format!(
        "SharedAccessSignature sr={encoded}&sig={sig}&se={expiry}&skn={key_name}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_of_both_forms() {
        let c = parse_connection_string(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abc=;EntityPath=export",
        )
        .unwrap();
        assert_eq!(c.endpoint.as_str(), "https://ns.servicebus.windows.net/");
        assert_eq!(c.entity_path.as_deref(), Some("export"));
        assert!(
            matches!(&c.auth, SbAuth::Key { name, key } if name == "listen" && expose(key) == "abc=")
        );
        assert!(!format!("{c:?}").contains("abc="));
        let sig = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1700000000&skn=listen";
        assert_eq!(signature_expiry(sig), Some(1_700_000_000_000));
        // Plain http only for a loopback emulator.
        let local = parse_connection_string("Endpoint=sb://127.0.0.1:9000;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true").unwrap();
        assert_eq!(local.endpoint.as_str(), "http://127.0.0.1:9000/");
        let remote = parse_connection_string("Endpoint=sb://ns.example;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true").unwrap();
        assert_eq!(remote.endpoint.scheme(), "https");
        assert!(parse_connection_string("Endpoint=sb://ns/;SharedAccessKeyName=a").is_err());
    }

    #[test]
    fn sas_token_matches_the_documented_construction() {
        let t = sas_token(
            "https://ns.servicebus.windows.net/t/subscriptions/s",
            "listen",
            &SecretString::from("key".to_string()),
            1_700_000_000,
        );
        let t = expose(&t);
        let sr = "https%3A%2F%2Fns.servicebus.windows.net%2Ft%2Fsubscriptions%2Fs";
        assert!(
            t.starts_with(&format!("SharedAccessSignature sr={sr}&sig=")),
            "{t}"
        );
        assert!(t.ends_with("&se=1700000000&skn=listen"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(format!("{sr}\n1700000000").as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig = t.split("&sig=").nth(1).unwrap().split('&').next().unwrap();
        let sig = percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .unwrap();
        assert_eq!(sig, want);
    }
}
