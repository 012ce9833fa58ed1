//! The node key file: 32 secret bytes in hex, created with mode 0600. A key
//! readable by anyone but its owner is refused: whoever reads it can sign
//! contracts in the provider's name.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fulcrum_protocol::keys::Identity;

/// Why the key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Missing file.
    #[error("no key at {0}; run 'fulcrumd init --data-dir <dir>' first")]
    Missing(PathBuf),
    /// Readable or writable by group or others.
    #[error("key file {path} has mode {mode:o}, readable by others; run 'chmod 600 {path}'")]
    Exposed {
        /// File.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not 64 hex characters.
    #[error("key file {0} is not 64 hex characters")]
    Malformed(PathBuf),
    /// Refusing to overwrite.
    #[error("key file {0} already exists; refusing to overwrite a node identity")]
    Exists(PathBuf),
    /// I/O error.
    #[error("key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Loads the key, checking its permissions first.
pub fn load_key(path: &Path) -> Result<Identity, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyFileError::Missing(path.to_owned())),
        Err(e) => return Err(io(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed { path: path.to_owned(), mode });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
    let secret: [u8; 32] = bytes.try_into().map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
    Ok(Identity::from_secret_bytes(&secret))
}

/// Creates a new key file (mode 0600 from the start, never wider).
pub fn create_key(path: &Path, identity: &Identity) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(KeyFileError::Exists(path.to_owned())),
        Err(e) => return Err(io(e)),
    };
    writeln!(file, "{}", hex::encode(identity.to_secret_bytes())).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}
