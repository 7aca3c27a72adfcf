//! MD5 on AWS-LC's implementation.
//!
//! A copy checks every byte against the blob's Content-MD5, and MD5 is the costliest step of
//! that copy: it is serial by construction, so its speed per byte is the copy's CPU per byte.
//! AWS-LC (already linked for TLS and signatures, through aws-lc-rs) hashes MD5 in assembly on
//! x86-64: 1.33 CPU-s/GiB on the bench machine against md-5 0.11's 1.70 (portable Rust; the
//! crate has no assembly back end). aws-lc-rs does not expose MD5, so this calls aws-lc-sys, the
//! same library build, directly. md-5 stays as a dev-dependency: the tests check this against it.

use aws_lc_sys::{MD5_CTX, MD5_Final, MD5_Init, MD5_Update};

/// Bytes in an MD5 digest.
pub(crate) const MD5_LEN: usize = 16;

/// An MD5 computation in progress.
#[derive(Clone)]
pub(crate) struct Md5 {
    ctx: MD5_CTX,
}

impl Md5 {
    /// A computation over no bytes yet.
    pub(crate) fn new() -> Self {
        // SAFETY: MD5_CTX is plain integers and a byte array, for which all-zero is a valid
        // value; MD5_Init then sets the initial state. It cannot fail (it always returns 1).
        let ctx = unsafe {
            let mut ctx: MD5_CTX = std::mem::zeroed();
            MD5_Init(&mut ctx);
            ctx
        };
        Self { ctx }
    }

    /// Feeds `data`.
    pub(crate) fn update(&mut self, data: &[u8]) {
        // SAFETY: `ctx` was initialised by `new`; `data` is valid for `len` bytes.
        unsafe { MD5_Update(&mut self.ctx, data.as_ptr().cast(), data.len()) };
    }

    /// The digest of everything fed.
    pub(crate) fn finalize(mut self) -> [u8; MD5_LEN] {
        let mut out = [0u8; MD5_LEN];
        // SAFETY: `out` has room for MD5_DIGEST_LENGTH (16) bytes; `ctx` is initialised.
        unsafe { MD5_Final(out.as_mut_ptr(), &mut self.ctx) };
        out
    }

    /// The digest of `data`.
    pub(crate) fn digest(data: &[u8]) -> [u8; MD5_LEN] {
        let mut h = Self::new();
        h.update(data);
        h.finalize()
    }
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use md5::Digest as _;

    use super::Md5;

    /// RFC 1321, appendix A.5.
    #[test]
    fn the_rfc_1321_test_suite() {
        let suite = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in suite {
            assert_eq!(
                hex::encode(Md5::digest(input.as_bytes())),
                expected,
                "{input:?}"
            );
        }
    }

    /// Fed in pieces of every awkward size (inside a block, across blocks, empty), the digest is
    /// md-5's of the whole.
    #[test]
    fn pieces_of_any_size_hash_as_the_whole_does() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = md5::Md5::digest(&data);
        for piece in [1, 7, 63, 64, 65, 1000, 4096, 65_537, 300_000] {
            let mut h = Md5::new();
            for chunk in data.chunks(piece) {
                h.update(chunk);
                h.update(&[]);
            }
            assert_eq!(
                h.finalize().as_slice(),
                whole.as_slice(),
                "pieces of {piece}"
            );
        }
        let mut clone_half = Md5::new();
        clone_half.update(&data[..150_001]);
        let mut other = clone_half.clone();
        clone_half.update(&data[150_001..]);
        other.update(b"x");
        assert_eq!(clone_half.finalize().as_slice(), whole.as_slice());
        assert_ne!(other.finalize().as_slice(), whole.as_slice());
    }
}
