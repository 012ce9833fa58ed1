//! The bearer token of the admin API on TCP: read from a file that only its
//! owner may read (as ssh treats private keys), sent by `fulcrumctl` in the
//! `authorization` header of every request, and checked by the daemon on
//! every request in time that does not depend on where a guess goes wrong.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Fewest characters a token may have: 16 random characters are beyond
/// guessing over a socket; `openssl rand -hex 32` gives 64.
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest token accepted (it travels in a header of every request).
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No file at the path.
    #[error("no admin token file at {0}; create one with 'umask 077; openssl rand -hex 32 > {0}'")]
    Missing(PathBuf),
    /// Readable or writable by group or others.
    #[error("admin token file {path} has mode {mode:o}, readable by others; run 'chmod 600 {path}'")]
    Exposed {
        /// File.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a usable token.
    #[error(
        "admin token file {path} does not hold a token: {why} (expected one line of {MIN_TOKEN_LEN} to \
         {MAX_TOKEN_LEN} printable ASCII characters without spaces)"
    )]
    Malformed {
        /// File.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Any other I/O failure.
    #[error("admin token file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A token read from its file. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Reads the token, refusing a file that group or others may read or
    /// write, and anything but one line of printable ASCII without spaces
    /// (trailing whitespace, such as the final line feed, is ignored).
    pub fn load(path: &Path) -> Result<AdminToken, TokenError> {
        let io = |source| TokenError::Io { path: path.to_owned(), source };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(TokenError::Missing(path.to_owned())),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed { path: path.to_owned(), mode });
        }
        let bad = |why| TokenError::Malformed { path: path.to_owned(), why };
        if meta.len() > (MAX_TOKEN_LEN + 64) as u64 {
            return Err(bad("the file is too long"));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not text"))?.trim_end();
        AdminToken::parse(text).map_err(bad)
    }

    /// A token from its text.
    pub fn parse(text: &str) -> Result<AdminToken, &'static str> {
        if text.len() < MIN_TOKEN_LEN {
            return Err("it is too short");
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err("it is too long");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("it holds spaces, line breaks or non-ASCII characters");
        }
        Ok(AdminToken(text.to_owned()))
    }

    /// The `authorization` header value that carries it.
    fn header(&self) -> Result<AsciiMetadataValue, Status> {
        MetadataValue::try_from(format!("Bearer {}", self.0))
            .map_err(|_| Status::internal("the admin token cannot be sent as a header"))
    }

    fn digest(text: &[u8]) -> [u8; 32] {
        Sha256::digest(text).into()
    }
}

/// The daemon's check of every request on the TCP endpoint.
#[derive(Debug, Clone)]
pub struct RequireToken {
    /// SHA-256 of the token: comparing digests takes the same time whatever
    /// the guess, and a guess's length shows in nothing but its own hashing.
    expected: [u8; 32],
}

impl RequireToken {
    /// A check against `token`.
    pub fn new(token: &AdminToken) -> RequireToken {
        RequireToken { expected: AdminToken::digest(token.0.as_bytes()) }
    }

    /// Accepts a request whose `authorization` header is `Bearer <token>`.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "this admin endpoint needs the node's admin token: run fulcrumctl with --token-file FILE \
                 (or FULCRUM_ADMIN_TOKEN_FILE)",
            ));
        };
        let given = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or_default();
        if !constant_time_eq(&AdminToken::digest(given), &self.expected) {
            return Err(Status::unauthenticated(
                "the admin token was refused: it is not this node's (compare --token-file with the daemon's \
                 admin_token_file)",
            ));
        }
        Ok(())
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// `fulcrumctl`'s side: adds the token, when it has one, to every request.
#[derive(Debug, Clone, Default)]
pub struct SendToken {
    header: Option<AsciiMetadataValue>,
}

impl SendToken {
    /// Sends `token` with every request (none: sends nothing, as on the socket).
    pub fn new(token: Option<&AdminToken>) -> Result<SendToken, Status> {
        Ok(SendToken { header: token.map(AdminToken::header).transpose()? })
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Equality of two digests that looks at every byte whatever they hold.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("admin.token");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_with_one_token_line_loads() {
        let dir = tempfile::tempdir().unwrap();
        let token = AdminToken::load(&write(dir.path(), &format!("{TOKEN}\n"), 0o600)).unwrap();
        assert_eq!(token, AdminToken::parse(TOKEN).unwrap());
        assert!(!format!("{token:?}").contains(TOKEN), "the token never shows in logs");
        AdminToken::load(&write(dir.path(), TOKEN, 0o400)).unwrap();
    }

    #[test]
    fn files_others_can_read_or_bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            let err = AdminToken::load(&write(dir.path(), TOKEN, mode)).unwrap_err();
            assert!(matches!(err, TokenError::Exposed { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        for text in ["short", "has a space in it, long enough", "two\nlines of text here", "", "\u{e9}\u{e9}\u{e9}"] {
            let err = AdminToken::load(&write(dir.path(), text, 0o600)).unwrap_err();
            assert!(matches!(err, TokenError::Malformed { .. }), "{text:?}: {err}");
        }
        let err = AdminToken::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(err, TokenError::Missing(_)), "{err}");
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let token = AdminToken::parse(TOKEN).unwrap();
        let check = RequireToken::new(&token);
        let with = |value: Option<&str>| {
            let mut request = Request::new(());
            if let Some(value) = value {
                request.metadata_mut().insert("authorization", value.parse().unwrap());
            }
            check.check(&request)
        };
        assert!(with(Some(&format!("Bearer {TOKEN}"))).is_ok());
        for wrong in [
            None,
            Some(TOKEN),
            Some("Bearer "),
            Some("Bearer 0123456789abcdef0123456789abcdeX"),
            Some("bearer 0123456789abcdef0123456789abcdef"),
            Some("Bearer 0123456789abcdef0123456789abcdef0"),
        ] {
            let status = with(wrong).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        }
        // What fulcrumctl sends is what the daemon accepts.
        let mut send = SendToken::new(Some(&token)).unwrap();
        let request = send.call(Request::new(())).unwrap();
        assert!(check.check(&request).is_ok());
        let request = SendToken::default().call(Request::new(())).unwrap();
        assert!(check.check(&request).unwrap_err().message().contains("--token-file"));
    }
}
