//! Connects `fulcrumctl` to the daemon's admin socket, and turns the ways that
//! can fail (no daemon, stale socket, wrong user) into one line that says what
//! to do about it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum_proto::v1::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A live daemon accepts at once; waiting longer only hides a wedged one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the admin socket could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing at the socket path.
    #[error("daemon not running: no socket at {} ({})", socket.display(), start_hint(socket))]
    NoSocket {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// A socket file with nobody listening: the daemon stopped without removing it.
    #[error("daemon not running: nothing listens on {} (a stale socket; {})", socket.display(), start_hint(socket))]
    Refused {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// Something other than a socket is at the path.
    #[error("{} is not a socket: point --socket (or FULCRUM_SOCKET) at the daemon's admin.sock", socket.display())]
    NotASocket {
        /// The path tried.
        socket: PathBuf,
    },
    /// The socket (mode 0600) or its directory belongs to another user.
    #[error(
        "permission denied on {}: the admin socket is private to the user running fulcrumd; run fulcrumctl as that user",
        socket.display()
    )]
    PermissionDenied {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// The daemon accepted but did not complete the connection in time.
    #[error("daemon at {} did not answer within {}s: is fulcrumd stuck?", socket.display(), CONNECT_TIMEOUT.as_secs())]
    Timeout {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// Any other transport failure.
    #[error("cannot talk to the daemon at {}: {message}", socket.display())]
    Transport {
        /// The socket path tried.
        socket: PathBuf,
        /// The underlying error chain, on one line.
        message: String,
    },
}

fn start_hint(socket: &Path) -> String {
    match socket.parent() {
        Some(dir) if socket.file_name().is_some_and(|n| n == "admin.sock") => {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            format!("start it with 'fulcrumd run --data-dir {}'", dir.display())
        }
        _ => "start fulcrumd, or point --socket at its admin.sock".to_owned(),
    }
}

/// Opens a gRPC channel to the daemon over its Unix socket. The connection is
/// made here, so a daemon that is not running is reported before any request.
pub async fn connect(socket: &Path) -> Result<AdminClient<Channel>, ClientError> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but never resolved: the connector below
    // ignores it and dials the socket.
    let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(CONNECT_TIMEOUT);
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    });
    let channel = endpoint.connect_with_connector(connector).await.map_err(|e| classify(socket, &e))?;
    Ok(AdminClient::new(channel))
}

fn classify(socket: &Path, err: &tonic::transport::Error) -> ClientError {
    let socket = socket.to_path_buf();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return classify_io(socket, io);
        }
        source = e.source();
    }
    ClientError::Transport { socket, message: error_chain(err) }
}

fn classify_io(socket: PathBuf, err: &io::Error) -> ClientError {
    match err.kind() {
        io::ErrorKind::NotFound => ClientError::NoSocket { socket },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
        io::ErrorKind::TimedOut => ClientError::Timeout { socket },
        io::ErrorKind::ConnectionRefused => {
            // Linux also refuses a connect to a regular file; tell the two apart
            // only for the message, after the fact.
            if is_socket(&socket) { ClientError::Refused { socket } } else { ClientError::NotASocket { socket } }
        }
        _ => ClientError::Transport { socket, message: err.to_string() },
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(true)
}

/// An error and its sources on one line, skipping repeats (tonic and hyper
/// often wrap an error in one that says the same thing).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ").replace('\n', " ")
}
