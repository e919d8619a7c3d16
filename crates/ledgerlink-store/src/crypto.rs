//! Sealing connection credentials at rest.
//!
//! Layout: [`MasterKey`] is the 32-byte root secret, taken from `LEDGERLINK_MASTER_KEY` (the caller passes the
//! value; this module never reads the environment) or from `DATA_DIR/master.key`, which is created 0600 on first
//! use. [`SecretCipher`] wraps the key in AES-256-GCM and turns a JSON value into the text `v1:` + base64(nonce ||
//! ciphertext) and back. The version prefix lets a later key or algorithm change recognise old rows.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretBox};

use crate::StoreError;

/// The environment variable whose value callers pass to [`MasterKey::load`]; named in error messages.
pub const MASTER_KEY_ENV: &str = "LEDGERLINK_MASTER_KEY";
/// The key file inside the data directory, used when the environment variable is unset.
pub const MASTER_KEY_FILE: &str = "master.key";

const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// The 32-byte key every credential is sealed with. Its bytes are zeroed on drop and never printed.
pub struct MasterKey {
    bytes: SecretBox<[u8; 32]>,
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey { bytes: SecretBox::new(Box::new(bytes)) }
    }

    /// A fresh random key (from the thread-local CSPRNG, seeded by the OS).
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(rand::random::<[u8; 32]>())
    }

    /// Loads the key: from `env_value` (the value of `LEDGERLINK_MASTER_KEY`, standard base64 of 32 bytes) when
    /// given, else from `data_dir/master.key`, creating that file with a new random key when it does not exist.
    ///
    /// The file is created with mode 0600 in the same system call that creates it, so it is never readable by
    /// others even for an instant; an existing file readable by group or others is refused rather than trusted,
    /// because whoever could read it could decrypt every stored token.
    pub fn load(data_dir: &Path, env_value: Option<&str>) -> Result<MasterKey, StoreError> {
        if let Some(value) = env_value {
            return decode_key(value).map_err(|why| StoreError::MasterKey(format!("{MASTER_KEY_ENV} {why}")));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => read_key_file(&path),
            Err(e) if e.kind() == ErrorKind::NotFound => create_key_file(data_dir, &path),
            Err(e) => Err(StoreError::MasterKey(format!("cannot inspect key file {}: {e}", path.display()))),
        }
    }

    /// Standard base64 of the key, for writing the key file or showing it once to an operator who asked.
    pub fn to_base64(&self) -> String {
        B64.encode(self.bytes.expose_secret())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn decode_key(text: &str) -> Result<MasterKey, String> {
    let raw = B64
        .decode(text.trim())
        .map_err(|e| format!("is not valid standard base64 ({e}); expected base64 of 32 random bytes"))?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("decodes to {} bytes; expected base64 of exactly 32 bytes", raw.len()))?;
    Ok(MasterKey::from_bytes(bytes))
}

fn read_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| StoreError::MasterKey(format!("cannot open key file {}: {e}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(|e| StoreError::MasterKey(format!("cannot inspect key file {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::MasterKey(format!(
            "key file {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| StoreError::MasterKey(format!("cannot read key file {}: {e}", path.display())))?;
    decode_key(&text).map_err(|why| StoreError::MasterKey(format!("key file {} {why}", path.display())))
}

fn create_key_file(data_dir: &Path, path: &Path) -> Result<MasterKey, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::MasterKey(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let key = MasterKey::generate();
    let opened = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    let mut file = match opened {
        Ok(file) => file,
        // Another process created it between our check and our create: use theirs, so both agree on one key.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return read_key_file(path),
        Err(e) => {
            return Err(StoreError::MasterKey(format!("cannot create key file {}: {e}", path.display())));
        }
    };
    let mut line = key.to_base64();
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::MasterKey(format!("cannot write key file {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "created a new master key file");
    Ok(key)
}

/// Seals and opens JSON secrets with AES-256-GCM. Cloning is cheap (the cipher state is shared).
#[derive(Clone)]
pub struct SecretCipher {
    aead: Arc<Aes256Gcm>,
}

impl SecretCipher {
    pub fn new(key: MasterKey) -> SecretCipher {
        let key = Key::<Aes256Gcm>::from_slice(key.bytes.expose_secret());
        SecretCipher { aead: Arc::new(Aes256Gcm::new(key)) }
    }

    /// A cipher under a fresh random key: for tests, where nothing has to outlive the process.
    pub fn for_tests() -> SecretCipher {
        SecretCipher::new(MasterKey::generate())
    }

    /// Encrypts `value` under a fresh random 96-bit nonce: `v1:` + base64(nonce || ciphertext with tag).
    pub fn seal(&self, value: &serde_json::Value) -> String {
        let nonce_bytes = rand::random::<[u8; NONCE_LEN]>();
        let plaintext = value.to_string();
        // Encryption fails only for inputs beyond GCM's 64 GiB limit, which a JSON credential never reaches.
        let ciphertext = self
            .aead
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", B64.encode(blob))
    }

    /// Decrypts what [`seal`](Self::seal) produced. Any wrong key, truncation or tampering yields
    /// [`StoreError::Decrypt`]; the error never carries the sealed or the plain text.
    pub fn open(&self, sealed: &str) -> Result<serde_json::Value, StoreError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or(StoreError::Decrypt)?;
        let blob = B64.decode(body).map_err(|_| StoreError::Decrypt)?;
        if blob.len() < NONCE_LEN {
            return Err(StoreError::Decrypt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plaintext = self.aead.decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| StoreError::Decrypt)?;
        serde_json::from_slice(&plaintext).map_err(|_| StoreError::Decrypt)
    }
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCipher([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn creds() -> serde_json::Value {
        json!({"client_secret": "s3cr3t", "refresh_token": "AB11-rotating", "expires_in": 3600})
    }

    #[test]
    fn seal_then_open_round_trips() {
        let cipher = SecretCipher::for_tests();
        let sealed = cipher.seal(&creds());
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(cipher.open(&sealed).unwrap(), creds());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let cipher = SecretCipher::for_tests();
        assert_ne!(cipher.seal(&creds()), cipher.seal(&creds()));
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let sealed = SecretCipher::for_tests().seal(&creds());
        let err = SecretCipher::for_tests().open(&sealed).unwrap_err();
        assert!(matches!(err, StoreError::Decrypt), "{err:?}");
    }

    #[test]
    fn tampered_ciphertext_fails_to_open() {
        let cipher = SecretCipher::for_tests();
        let sealed = cipher.seal(&creds());
        let mut blob = B64.decode(&sealed[3..]).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 0x01;
        let tampered = format!("v1:{}", B64.encode(&blob));
        assert!(matches!(cipher.open(&tampered), Err(StoreError::Decrypt)));
        blob[last] ^= 0x01;
        blob[NONCE_LEN] ^= 0x80;
        assert!(matches!(cipher.open(&format!("v1:{}", B64.encode(&blob))), Err(StoreError::Decrypt)));
        assert!(matches!(cipher.open("v1:AAAA"), Err(StoreError::Decrypt)));
        assert!(matches!(cipher.open("plain text"), Err(StoreError::Decrypt)));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let first = MasterKey::load(&data_dir, None).unwrap();
        let path = data_dir.join(MASTER_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MasterKey::load(&data_dir, None).unwrap();
        assert_eq!(first.to_base64(), second.to_base64());
        // What one seals the other opens.
        let sealed = SecretCipher::new(first).seal(&creds());
        assert_eq!(SecretCipher::new(second).open(&sealed).unwrap(), creds());
    }

    #[test]
    fn loose_key_file_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        MasterKey::load(dir.path(), None).unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn env_value_is_used_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::from_bytes([7u8; 32]);
        let loaded = MasterKey::load(dir.path(), Some(&key.to_base64())).unwrap();
        assert_eq!(loaded.to_base64(), key.to_base64());
        // The env value wins: no key file is created.
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());

        let err = MasterKey::load(dir.path(), Some("not base64!")).unwrap_err().to_string();
        assert!(err.contains(MASTER_KEY_ENV), "{err}");
        let short = B64.encode([1u8; 16]);
        let err = MasterKey::load(dir.path(), Some(&short)).unwrap_err().to_string();
        assert!(err.contains(MASTER_KEY_ENV) && err.contains("16 bytes"), "{err}");
        assert!(!err.contains(&short));
    }

    #[test]
    fn debug_output_is_redacted() {
        let key = MasterKey::from_bytes([9u8; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_base64()));
        assert_eq!(format!("{:?}", SecretCipher::new(key)), "SecretCipher([redacted])");
    }
}
