//! Token signing keys encrypted at rest: whoever reads the database (a backup, a replica,
//! a query) gets ciphertext, and cannot mint tokens without the key-encryption key, which
//! lives in configuration (`user.key_encryption_key`), not in the database.
//!
//! AES-256-GCM (the RustCrypto `aes-gcm` crate) with a random 96-bit nonce per key: a few
//! dozen keys are ever sealed under one key-encryption key, far from the nonce-collision
//! bound. The key id is the associated data, so a sealed key cannot be moved to another id.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::path::Path;

/// What marks a sealed value (version and algorithm), ahead of base64(nonce ‖ ciphertext).
const PREFIX: &str = "aes256gcm.v1:";

/// Seals and opens private keys with the key-encryption key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

/// A stored private key, opened.
pub enum Opened {
    Sealed(Vec<u8>),
    /// Stored in plaintext before keys were encrypted at rest; to be sealed now.
    Plain(Vec<u8>),
}

impl Sealer {
    /// A key-encryption key given as base64 of 32 bytes (`openssl rand -base64 32`).
    pub fn from_base64(encoded: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD.decode(encoded.trim()).context("not base64")?;
        if bytes.len() != 32 {
            bail!("it must be 32 bytes (base64 of `openssl rand 32`), not {}", bytes.len());
        }
        Ok(Self { cipher: Aes256Gcm::new_from_slice(&bytes).expect("32 bytes") })
    }

    /// The key kept at `path` (readable by the owner only), made there on first use: for an
    /// embedded database, which lives on this machine's disk beside it.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(kept) => Self::from_base64(&kept).with_context(|| format!("the key in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let encoded = STANDARD.encode(Aes256Gcm::generate_key(OsRng));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
                std::io::Write::write_all(&mut file, format!("{encoded}\n").as_bytes())?;
                tracing::info!(path = %path.display(), "made a key-encryption key for the signing keys");
                Self::from_base64(&encoded)
            }
            Err(e) => Err(anyhow!(e).context(format!("reading {}", path.display()))),
        }
    }

    /// `plaintext` sealed for storage under `kid`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: kid.as_bytes() })
            .expect("AES-GCM seals any input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// The private key stored under `kid`.
    pub fn open(&self, kid: &str, stored: &str) -> anyhow::Result<Opened> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(Opened::Plain(STANDARD.decode(stored).context("stored signing key is not base64")?));
        };
        let bytes = STANDARD.decode(sealed).context("sealed signing key is not base64")?;
        if bytes.len() < 12 {
            bail!("sealed signing key {kid} is truncated");
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: kid.as_bytes() })
            .map(Opened::Sealed)
            .map_err(|_| {
                anyhow!(
                    "signing key {kid} does not open with this user.key_encryption_key: it was sealed with another \
                     (every instance must share one key-encryption key)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_under_its_id() {
        let s = sealer();
        let stored = s.seal("ed-1", b"private key bytes");
        assert!(stored.starts_with(PREFIX));
        assert!(!stored.contains(&STANDARD.encode(b"private key bytes")), "no plaintext in what is stored");
        assert!(matches!(s.open("ed-1", &stored).unwrap(), Opened::Sealed(k) if k == b"private key bytes"));
        assert!(s.open("ed-2", &stored).is_err(), "moved to another id");
        let other = Sealer::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        let refused = other.open("ed-1", &stored).err().expect("another key does not open it");
        assert!(refused.to_string().contains("user.key_encryption_key"));
        assert!(matches!(s.open("ed-1", &STANDARD.encode(b"legacy")).unwrap(), Opened::Plain(k) if k == b"legacy"));
    }

    #[test]
    fn a_kek_must_be_32_bytes_of_base64() {
        assert!(Sealer::from_base64("not base64!").is_err());
        assert!(Sealer::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn a_kept_kek_is_made_once_and_private() {
        let dir = std::env::temp_dir().join(format!("mosaic-kek-{}", uuid::Uuid::new_v4()));
        let path = dir.join("user").join("key-encryption-key");
        let first = Sealer::load_or_create(&path).unwrap();
        let again = Sealer::load_or_create(&path).unwrap();
        let stored = first.seal("ed-1", b"k");
        assert!(again.open("ed-1", &stored).is_ok(), "the same key on the next start");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "only the owner reads it");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
