//! GnuPG for the encryption tests: throwaway homes with keys generated at test time (never
//! committed), exports, revocation, and `gpg --decrypt` of what a destination holds.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A throwaway GnuPG home with one key.
pub(crate) struct Keyring {
    home: tempfile::TempDir,
    pub uid: String,
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

pub(crate) fn have_gpg() -> bool {
    let ok = Command::new("gpg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: gpg is not installed (scripts/install-components.sh installs gnupg)");
    }
    ok
}

impl Keyring {
    /// A new key for `uid`: `algo usage expire` as `gpg --quick-gen-key` takes them;
    /// `faked_time` backdates its creation (for an already expired key).
    pub(crate) fn new(
        uid: &str,
        algo: &str,
        usage: &str,
        expire: &str,
        faked_time: Option<&str>,
    ) -> Self {
        let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        // gpg warns about a home others can read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let ring = Self {
            home,
            uid: uid.to_string(),
        };
        let mut args = vec!["--batch", "--pinentry-mode", "loopback", "--passphrase", ""];
        if let Some(t) = faked_time {
            args.extend(["--faked-system-time", t]);
        }
        args.extend(["--quick-gen-key", uid, algo, usage, expire]);
        ring.gpg(&args);
        ring
    }

    /// A new key for `uid` that may encrypt (gpg's default algorithms and usage), expiring
    /// after `expire` (`never`, `2d`, `2y`...).
    pub(crate) fn encrypting(uid: &str, expire: &str) -> Self {
        Self::new(uid, "default", "default", expire, None)
    }

    pub(crate) fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub(crate) fn public_armored(&self) -> String {
        String::from_utf8(self.gpg(&["--armor", "--export", &self.uid])).unwrap()
    }

    pub(crate) fn secret_armored(&self) -> String {
        String::from_utf8(self.gpg(&[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--armor",
            "--export-secret-keys",
            &self.uid,
        ]))
        .unwrap()
    }

    pub(crate) fn fingerprint(&self) -> String {
        let out =
            String::from_utf8(self.gpg(&["--with-colons", "--fingerprint", &self.uid])).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .unwrap()
    }

    /// Imports the revocation certificate gpg made with the key.
    pub(crate) fn revoke(&self) {
        let rev = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{}.rev", self.fingerprint()));
        let text = std::fs::read_to_string(&rev)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        let path = self.home.path().join("rev.asc");
        std::fs::write(&path, text).unwrap();
        self.gpg(&["--batch", "--import", path.to_str().unwrap()]);
    }

    /// `gpg --decrypt` of `ciphertext` with this keyring; the SHA-256 of the plaintext.
    pub(crate) fn decrypt_sha(&self, ciphertext: &[u8], dir: &Path) -> String {
        let input = dir.join("in.pgp");
        let output: PathBuf = dir.join("out");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, ciphertext).unwrap();
        self.gpg(&[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--output",
            output.to_str().unwrap(),
            "--decrypt",
            input.to_str().unwrap(),
        ]);
        let sha = hex::encode(Sha256::digest(std::fs::read(&output).unwrap()));
        std::fs::remove_file(&output).unwrap();
        sha
    }
}

/// Long base64 lines of an armored private key: none may appear in any log.
pub(crate) fn key_material(armored: &str) -> Vec<String> {
    armored
        .lines()
        .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}
