//! Checking a recipient key's self-signatures, with RSA verified by AWS-LC.
//!
//! rPGP verifies RSA signatures with the `rsa` crate, in pure Rust: about 0.5 ms for each
//! self-signature of a 3072-bit key, so about 1 ms of blob-copy's cold start when a route
//! encrypts (docs/performance.md). AWS-LC, already in every function for TLS, does the same check
//! in a few tens of microseconds.
//!
//! [`verify`] runs rPGP's own checks (which signatures must be there, which hash algorithms are
//! strong enough, what each signature covers) with the primary key wrapped in [`Signer`], whose
//! RSA check goes to AWS-LC first. AWS-LC can only say yes: whatever it does not accept (a
//! signature that does not verify, a key or hash it does not take) is checked again by rPGP,
//! whose answer stands. So a key passes exactly when rPGP alone would pass it.

use std::cell::Cell;
use std::io;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self as lc, UnparsedPublicKey};
use pgp::composed::SignedPublicKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::PublicKey;
use pgp::ser::Serialize;
use pgp::types::{
    Fingerprint, KeyDetails, KeyId, KeyVersion, Mpi, PublicParams, SignatureBytes, Timestamp,
    VerifyingKey,
};
use rsa::pkcs8::EncodePublicKey as _;
use rsa::traits::PublicKeyParts as _;

/// Checks every self-signature of `key` (user ids, user attributes, direct-key and revocation
/// signatures, subkey bindings) as [`SignedPublicKey::verify_bindings`] does. Returns how many
/// RSA signatures AWS-LC accepted (the rest were checked by rPGP).
pub(super) fn verify(key: &SignedPublicKey) -> pgp::errors::Result<usize> {
    let signer = Signer {
        key: &key.primary_key,
        fast: Cell::new(0),
    };
    key.details.verify_bindings(&signer)?;
    for subkey in &key.public_subkeys {
        subkey.verify_bindings(&signer)?;
    }
    Ok(signer.fast.get())
}

/// A primary key as rPGP's checks see it, with its RSA signatures tried with AWS-LC first.
#[derive(Debug)]
struct Signer<'a> {
    key: &'a PublicKey,
    /// Signatures AWS-LC accepted.
    fast: Cell<usize>,
}

impl VerifyingKey for Signer<'_> {
    fn verify(
        &self,
        hash: HashAlgorithm,
        hashed: &[u8],
        sig: &SignatureBytes,
    ) -> pgp::errors::Result<()> {
        if let PublicParams::RSA(params) = self.key.public_params()
            && let Ok([signature]) = <&[Mpi]>::try_from(sig)
            && rsa_accepts(&params.key, hash, hashed, signature.as_ref())
        {
            self.fast.set(self.fast.get() + 1);
            return Ok(());
        }
        self.key.verify(hash, hashed, sig)
    }
}

/// Whether AWS-LC accepts `signature` as an RSASSA-PKCS1-v1_5 signature by `key` over the
/// digest `hashed`. `false` says only that AWS-LC did not accept it: a hash other than SHA-2
/// 256/384/512, a modulus outside 2048-8192 bits, or a signature that does not verify.
fn rsa_accepts(
    key: &rsa::RsaPublicKey,
    hash: HashAlgorithm,
    hashed: &[u8],
    signature: &[u8],
) -> bool {
    let (algorithm, params) = match hash {
        HashAlgorithm::Sha256 => (&digest::SHA256, &lc::RSA_PKCS1_2048_8192_SHA256),
        HashAlgorithm::Sha384 => (&digest::SHA384, &lc::RSA_PKCS1_2048_8192_SHA384),
        HashAlgorithm::Sha512 => (&digest::SHA512, &lc::RSA_PKCS1_2048_8192_SHA512),
        _ => return false,
    };
    let Ok(digest) = Digest::import_less_safe(hashed, algorithm) else {
        return false;
    };
    // OpenPGP stores the signature as an MPI, without its leading zero octets; AWS-LC wants
    // exactly as many octets as the modulus has.
    let size = key.size();
    if signature.len() > size {
        return false;
    }
    let mut padded = vec![0; size];
    padded[size - signature.len()..].copy_from_slice(signature);
    // The rsa crate's own encoding (SubjectPublicKeyInfo), which AWS-LC reads.
    let Ok(der) = key.to_public_key_der() else {
        return false;
    };
    UnparsedPublicKey::new(params, der.as_bytes())
        .verify_digest(&digest, &padded)
        .is_ok()
}

// What rPGP's checks read of the signer: the primary key's own, unchanged.
impl KeyDetails for Signer<'_> {
    fn version(&self) -> KeyVersion {
        self.key.version()
    }
    fn legacy_key_id(&self) -> KeyId {
        self.key.legacy_key_id()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.key.fingerprint()
    }
    fn algorithm(&self) -> PublicKeyAlgorithm {
        self.key.algorithm()
    }
    fn created_at(&self) -> Timestamp {
        self.key.created_at()
    }
    fn legacy_v3_expiration_days(&self) -> Option<u16> {
        self.key.legacy_v3_expiration_days()
    }
    fn public_params(&self) -> &PublicParams {
        self.key.public_params()
    }
}

impl Serialize for Signer<'_> {
    fn to_writer<W: io::Write>(&self, writer: &mut W) -> pgp::errors::Result<()> {
        self.key.to_writer(writer)
    }
    fn write_len(&self) -> usize {
        self.key.write_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
    use pgp::composed::Deserializable;

    /// gpg 2.2 keys: an RSA-3072 primary key and encryption subkey self-signed with SHA-512,
    /// and an RSA-4096 pair self-signed with SHA-256 (`--cert-digest-algo SHA256`).
    const KEYS: [&str; 2] = [
        include_str!("testdata/rsa3072-sha512.asc"),
        include_str!("testdata/rsa4096-sha256.asc"),
    ];

    fn key(armored: &str) -> SignedPublicKey {
        SignedPublicKey::from_armor_single(armored.as_bytes())
            .expect("a test key")
            .0
    }

    #[test]
    fn gpg_keys_pass_with_every_rsa_signature_checked_by_aws_lc() {
        for armored in KEYS {
            let key = key(armored);
            key.verify_bindings().expect("rPGP alone passes the key");
            // The user id's certification and the subkey's binding.
            assert_eq!(verify(&key).expect("passes"), 2);
        }
    }

    #[test]
    fn a_self_signature_changed_by_one_bit_is_refused() {
        use pgp::ser::Serialize as _;
        for armored in KEYS {
            let key = key(armored);
            let bytes = key.to_bytes().expect("serialised");
            let signatures = [
                key.details.users[0].signatures[0]
                    .to_bytes()
                    .expect("certification"),
                key.public_subkeys[0].signatures[0]
                    .to_bytes()
                    .expect("binding"),
            ];
            for signature in signatures {
                // The last octet of the signature packet is the signature value's last octet.
                let at = bytes
                    .windows(signature.len())
                    .position(|w| w == signature.as_slice())
                    .expect("the signature in the key")
                    + signature.len()
                    - 1;
                let mut changed = bytes.clone();
                changed[at] ^= 1;
                let forged = SignedPublicKey::from_bytes(changed.as_slice()).expect("still parses");
                assert!(forged.verify_bindings().is_err(), "rPGP alone refuses it");
                assert!(verify(&forged).is_err(), "refused with AWS-LC first too");
            }
        }
    }

    #[test]
    fn rsa_signatures_are_accepted_only_when_they_verify_even_when_stored_short() {
        let rng = SystemRandom::new();
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("a key");
        let der = pair.public_key().as_ref();
        let public = rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_der(der).expect("an RSA key");
        let mut signature = vec![0; pair.public_modulus_len()];
        // About one signature in 256 starts with a zero octet, which OpenPGP does not store.
        let mut short = None;
        for i in 0u32..4096 {
            let message = i.to_be_bytes();
            pair.sign(&lc::RSA_PKCS1_SHA256, &rng, &message, &mut signature)
                .expect("signed");
            let hashed = digest::digest(&digest::SHA256, &message);
            assert!(rsa_accepts(
                &public,
                HashAlgorithm::Sha256,
                hashed.as_ref(),
                &signature
            ));
            let mut wrong = signature.clone();
            wrong[100] ^= 1;
            assert!(!rsa_accepts(
                &public,
                HashAlgorithm::Sha256,
                hashed.as_ref(),
                &wrong
            ));
            let other = digest::digest(&digest::SHA256, b"another message");
            assert!(!rsa_accepts(
                &public,
                HashAlgorithm::Sha256,
                other.as_ref(),
                &signature
            ));
            // The right digest under a hash the signature was not made with.
            assert!(!rsa_accepts(
                &public,
                HashAlgorithm::Sha1,
                hashed.as_ref(),
                &signature
            ));
            if signature[0] == 0 {
                short = Some((signature.clone(), hashed));
                break;
            }
        }
        let (signature, hashed) = short.expect("a signature with a leading zero octet");
        let stored = &signature[signature.iter().position(|&b| b != 0).unwrap()..];
        assert!(stored.len() < signature.len());
        assert!(rsa_accepts(
            &public,
            HashAlgorithm::Sha256,
            hashed.as_ref(),
            stored
        ));
    }
}
