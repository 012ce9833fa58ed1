//! Connects `fulcrumctl` to the daemon's admin API, on its Unix socket or on
//! its TCP endpoint with a bearer token, and turns the ways that can fail (no
//! daemon, stale socket, wrong user, nothing listening, an exposed token
//! file) into one line that says what to do about it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum_proto::v1::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use super::token::{AdminToken, SendToken, TokenError};

/// A connection to the admin API, adding the bearer token (if any) to every request.
pub type Admin = AdminClient<InterceptedService<Channel, SendToken>>;

/// Where `fulcrumctl` reaches the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    /// The Unix socket (its mode 0600 is the access check).
    Socket(PathBuf),
    /// The TCP endpoint (`host:port`), with the file holding the bearer token.
    Tcp {
        /// `host:port`.
        addr: String,
        /// The token file; none sends no token (the daemon refuses).
        token_file: Option<PathBuf>,
    },
}

impl AdminTarget {
    /// Parses `--admin`: `tcp://HOST:PORT`, `unix:PATH` or `unix://PATH`.
    pub fn parse(value: &str, token_file: Option<PathBuf>) -> Result<AdminTarget, String> {
        if let Some(addr) = value.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(format!("{value:?} is not tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400"));
            }
            return Ok(AdminTarget::Tcp { addr: addr.to_owned(), token_file });
        }
        if let Some(path) = value.strip_prefix("unix://").or_else(|| value.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err(format!("{value:?} names no socket path"));
            }
            return Ok(AdminTarget::Socket(PathBuf::from(path)));
        }
        Err(format!("{value:?} is neither tcp://HOST:PORT nor unix:PATH"))
    }
}

impl fmt::Display for AdminTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminTarget::Socket(path) => write!(f, "{}", path.display()),
            AdminTarget::Tcp { addr, .. } => write!(f, "tcp://{addr}"),
        }
    }
}

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
    /// Nothing listens on the TCP endpoint.
    #[error(
        "daemon not reachable: nothing listens on tcp://{addr} (is fulcrumd running with admin_tcp = \"{addr}\" \
         in its node.toml?)"
    )]
    TcpRefused {
        /// `host:port` tried.
        addr: String,
    },
    /// The TCP endpoint did not answer in time.
    #[error("daemon at tcp://{addr} did not answer within {}s: is the address right, is fulcrumd stuck?", CONNECT_TIMEOUT.as_secs())]
    TcpTimeout {
        /// `host:port` tried.
        addr: String,
    },
    /// Any other failure on the TCP endpoint.
    #[error("cannot talk to the daemon at tcp://{addr}: {message}")]
    TcpTransport {
        /// `host:port` tried.
        addr: String,
        /// The underlying error chain, on one line.
        message: String,
    },
    /// The token file cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
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

/// Opens a gRPC channel to the daemon. The connection is made here, so a
/// daemon that is not running (or a token file that cannot be used) is
/// reported before any request.
pub async fn connect(target: &AdminTarget) -> Result<Admin, ClientError> {
    match target {
        AdminTarget::Socket(socket) => {
            let channel = connect_socket(socket).await?;
            Ok(AdminClient::with_interceptor(channel, SendToken::default()))
        }
        AdminTarget::Tcp { addr, token_file } => {
            let token = token_file.as_deref().map(AdminToken::load).transpose()?;
            let send = SendToken::new(token.as_ref())
                .map_err(|e| ClientError::TcpTransport { addr: addr.clone(), message: e.message().to_owned() })?;
            let channel = connect_tcp(addr).await?;
            Ok(AdminClient::with_interceptor(channel, send))
        }
    }
}

async fn connect_tcp(addr: &str) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::TcpTransport { addr: addr.to_owned(), message: error_chain(&e) })?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint.connect().await.map_err(|err| {
        let addr = addr.to_owned();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::ConnectionRefused => ClientError::TcpRefused { addr },
                    io::ErrorKind::TimedOut => ClientError::TcpTimeout { addr },
                    _ => ClientError::TcpTransport { addr, message: io.to_string() },
                };
            }
            source = e.source();
        }
        let message = error_chain(&err);
        if message.contains("timed out") {
            ClientError::TcpTimeout { addr }
        } else {
            ClientError::TcpTransport { addr, message }
        }
    })
}

/// Opens a gRPC channel over the Unix socket.
async fn connect_socket(socket: &Path) -> Result<Channel, ClientError> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but never resolved: the connector below
    // ignores it and dials the socket.
    let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(CONNECT_TIMEOUT);
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| classify(socket, &e))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn admin_urls() {
        let token = Some(PathBuf::from("/etc/fulcrum/admin.token"));
        assert_eq!(
            AdminTarget::parse("tcp://127.0.0.1:7400", token.clone()).unwrap(),
            AdminTarget::Tcp { addr: "127.0.0.1:7400".into(), token_file: token }
        );
        assert_eq!(
            AdminTarget::parse("tcp://[::1]:7400/", None).unwrap(),
            AdminTarget::Tcp { addr: "[::1]:7400".into(), token_file: None }
        );
        for unix in ["unix:/run/fulcrum/admin.sock", "unix:///run/fulcrum/admin.sock"] {
            assert_eq!(AdminTarget::parse(unix, None).unwrap(), AdminTarget::Socket("/run/fulcrum/admin.sock".into()));
        }
        for bad in ["127.0.0.1:7400", "http://127.0.0.1:7400", "tcp://127.0.0.1", "tcp://:7400", "tcp://h:0", "unix:"] {
            assert!(AdminTarget::parse(bad, None).is_err(), "{bad}");
        }
        assert_eq!(AdminTarget::parse("tcp://h:1", None).unwrap().to_string(), "tcp://h:1");
    }

    #[test]
    fn the_flag_beats_the_socket_and_the_data_dir() {
        let parse = |args: &[&str]| crate::cli::parse_args(args.iter().copied()).unwrap().admin;
        assert_eq!(
            parse(&["fulcrumctl", "--data-dir", "/d", "--admin", "tcp://127.0.0.1:7400", "status"]),
            AdminTarget::Tcp { addr: "127.0.0.1:7400".into(), token_file: None }
        );
        assert_eq!(
            parse(&["fulcrumctl", "--admin", "unix:/s", "--token-file", "/t", "status"]),
            AdminTarget::Socket("/s".into())
        );
        assert_eq!(
            parse(&["fulcrumctl", "--socket", "/x/admin.sock", "peers"]),
            AdminTarget::Socket("/x/admin.sock".into())
        );
        assert!(crate::cli::parse_args(["fulcrumctl", "--admin", "nonsense", "status"]).is_err());
    }
}
