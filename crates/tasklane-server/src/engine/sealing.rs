//! Secrets at rest: with `--secret-key-file`, the signing and HMAC keys tasklane keeps in
//! its store are sealed with AES-256-GCM under a key derived (HKDF-SHA256) from that file,
//! so a copy of the database, or read access to PostgreSQL, does not give the keys away.
//! A sealed record is `tlenc1:` + a 12-byte nonce + the ciphertext and its tag; the record's
//! name is the associated data, so a sealed value cannot be moved to another record.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tasklane_core::Status;

const SEALED_PREFIX: &[u8] = b"tlenc1:";
/// A shorter secret is refused: it would be the weakest part of the chain.
const MIN_SECRET_BYTES: usize = 32;

/// The master key from `--secret-key-file`.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// What to keep in the store for `value` of `record`, and what a stored value means.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

impl Sealer {
    /// Read the master key from a file only its owner can read, holding at least 32 bytes
    /// (raw, or text such as `openssl rand -base64 48`).
    pub fn from_file(path: &Path) -> Result<Sealer, String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta =
                std::fs::metadata(path).map_err(|e| format!("read --secret-key-file {}: {e}", path.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "--secret-key-file {} can be read by others (mode {mode:o}); make it the owner's alone with chmod 600",
                    path.display()
                ));
            }
        }
        let bytes = std::fs::read(path).map_err(|e| format!("read --secret-key-file {}: {e}", path.display()))?;
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "--secret-key-file {} holds {} bytes; it needs at least {MIN_SECRET_BYTES} random bytes \
                 (make one with: head -c 48 /dev/urandom | base64 > FILE)",
                path.display(),
                secret.len()
            ));
        }
        Ok(Sealer::from_secret(secret))
    }

    pub fn from_secret(secret: &[u8]) -> Sealer {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tasklane secret-key-file v1");
        let prk = salt.extract(secret);
        // HKDF-SHA256 yields up to 8160 bytes; AES-256's 32 always fit.
        let okm = prk.expand(&[b"store secrets"], &AES_256_GCM).expect("HKDF output of AES-256 key length");
        let key = UnboundKey::from(okm);
        Sealer { key: LessSafeKey::new(key) }
    }

    pub fn seal(&self, record: &str, plain: &[u8]) -> Result<Vec<u8>, Status> {
        let nonce: [u8; NONCE_LEN] = super::random_bytes("sealing a key")?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(record.as_bytes()), &mut sealed)
            .map_err(|_| Status::internal("could not seal a key"))?;
        let mut out = Vec::with_capacity(SEALED_PREFIX.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, record: &str, stored: &[u8]) -> Result<Vec<u8>, Status> {
        let body = stored.strip_prefix(SEALED_PREFIX).ok_or_else(|| Status::internal("the record is not sealed"))?;
        if body.len() < NONCE_LEN {
            return Err(Status::internal(format!("the sealed record {record} is truncated")));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Status::internal("bad nonce"))?;
        let mut buf = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(record.as_bytes()), &mut buf).map_err(|_| {
            Status::internal(format!(
                "the stored {record} does not open with this --secret-key-file; start with the file it was sealed with"
            ))
        })?;
        Ok(plain.to_vec())
    }
}

/// The plain value of a stored secret: opened with `sealer` when sealed.
pub fn open_stored(sealer: Option<&Sealer>, record: &str, stored: &[u8]) -> Result<Vec<u8>, Status> {
    match (is_sealed(stored), sealer) {
        (false, _) => Ok(stored.to_vec()),
        (true, Some(s)) => s.open(record, stored),
        (true, None) => Err(Status::internal(format!(
            "the stored {record} is sealed: start tasklane with the --secret-key-file it was sealed with"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_record() {
        let sealer = Sealer::from_secret(&[7u8; 32]);
        let sealed = sealer.seal("oidc:signing-key", b"secret der").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(10).any(|w| w == b"secret der"), "the plain value is not in the sealed one");
        assert_eq!(sealer.open("oidc:signing-key", &sealed).unwrap(), b"secret der");
        assert_ne!(sealer.seal("oidc:signing-key", b"secret der").unwrap(), sealed, "a fresh nonce each time");
        assert!(sealer.open("jobs:token-key", &sealed).is_err(), "bound to its record");
        assert!(Sealer::from_secret(&[8u8; 32]).open("oidc:signing-key", &sealed).is_err(), "another key fails");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open("oidc:signing-key", &tampered).is_err());
        assert_eq!(open_stored(None, "r", b"plain").unwrap(), b"plain");
        assert!(open_stored(None, "r", &sealed).unwrap_err().message.contains("--secret-key-file"));
    }

    #[test]
    fn a_key_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tasklane-sealer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "x".repeat(40)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Sealer::from_file(&file).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Sealer::from_file(&file).is_ok());
        std::fs::write(&file, "short\n").unwrap();
        assert!(Sealer::from_file(&file).unwrap_err().contains("at least 32"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
