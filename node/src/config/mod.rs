//! Node configuration: `node.toml`, with every field overridable by a
//! `FULCRUM_*` environment variable or a flag (flags win, then the
//! environment, then the file, then defaults); the data dir, its lock and the
//! node's key file.

mod hooks;
mod keyfile;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::offer_file::parse_duration_ms;

pub use hooks::HooksConfig;
pub use keyfile::{KeyFileError, create_key, load_key};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config {path} is malformed: {message}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// Parser message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config field {field}: {message}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The data dir is held by another process.
    #[error("data dir {path} is in use by another fulcrumd ({holder}); stop it first or use another --data-dir")]
    Locked {
        /// Data dir.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// File system error on the data dir.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The node's configuration after merging file, environment and flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the key, the log, the index and the admin socket live.
    pub data_dir: PathBuf,
    /// Federation name (must match the peers').
    pub federation: String,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<peer id>`) of peers to join through.
    pub bootstrap: Vec<String>,
    /// Lifetime of published offers; they are re-announced at half of it.
    pub offer_ttl: String,
    /// Most peers connected at once.
    pub max_peers: u32,
    /// Inbound requests per second allowed per peer (negotiation and sync).
    pub peer_rate_per_sec: u32,
    /// Burst of inbound requests allowed per peer.
    pub peer_burst: u32,
    /// How long a provider keeps a hold.
    pub hold_ttl: String,
    /// How long a consumer waits for an answer before reconciling.
    pub reply_timeout: String,
    /// How long `place` may take before it gives up.
    pub place_deadline: String,
    /// Longest time between two checkpoints of the log while it grows.
    pub checkpoint_interval: String,
    /// Records after which a checkpoint is signed at once.
    pub checkpoint_records: u64,
    /// How often shared contracts are checked in the counterparties' logs.
    pub audit_interval: String,
    /// How long after a contract was made its absence from the other party's
    /// log counts as evidence (every member must use the same value).
    pub audit_grace: String,
    /// How long after a shared contract was proven it is checked again.
    pub audit_recheck: String,
    /// How often evidence this node found is published again, for members
    /// that joined or were cut off since.
    pub evidence_republish: String,
    /// `human` or `json`.
    pub log_format: String,
    /// Log filter, e.g. `info` or `fulcrum_node=debug,info`.
    pub log_level: String,
    /// Admin socket path; default `<data_dir>/admin.sock`.
    pub admin_socket: Option<PathBuf>,
    /// Also serve the admin API on this TCP address (e.g. `127.0.0.1:7400`),
    /// every request checked against the bearer token in `admin_token_file`;
    /// empty (the default) serves it on the Unix socket only.
    pub admin_tcp: String,
    /// The file holding the admin API's bearer token (mode 0600 or stricter).
    pub admin_token_file: Option<PathBuf>,
    /// Allow `admin_tcp` on an address other than loopback. The token then
    /// crosses a network in clear text: only behind a tunnel or a proxy that
    /// adds TLS.
    pub admin_tcp_allow_remote: bool,
    /// The federation's charter (`federation.toml`); none is an open
    /// federation named `federation`, for development.
    pub charter: Option<PathBuf>,
    /// This node's member certificate (needed in a closed federation).
    pub certificate: Option<PathBuf>,
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and
    /// `/readyz`; empty disables it.
    pub metrics_listen: String,
    /// A directory of offer files (`*.toml`) published at start and again on
    /// SIGHUP; none publishes nothing by itself.
    pub offers_dir: Option<PathBuf>,
    /// Commands run when a contract becomes active, is terminated or
    /// expires (`[hooks]`; set in the file only, since a command is a list).
    pub hooks: HooksConfig,
    /// How many times slower than the wall clock this node's time runs: 1 in
    /// `fulcrumd`. The simulator slows time down to give a thousand nodes on
    /// one machine the CPU each would have on its own: every fixed interval
    /// and timeout of the node (ticks, libp2p's timers, rate limits) is
    /// multiplied by it, as the simulator does with the durations above and
    /// its links. Not read from the file.
    #[serde(skip, default = "one")]
    pub time_dilation: u32,
}

fn one() -> u32 {
    1
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("fulcrum-data"),
            federation: "dev".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/4100".into(), "/ip4/0.0.0.0/udp/4100/quic-v1".into()],
            bootstrap: Vec::new(),
            offer_ttl: "1h".into(),
            max_peers: 128,
            peer_rate_per_sec: 200,
            peer_burst: 400,
            hold_ttl: "30s".into(),
            reply_timeout: "5s".into(),
            place_deadline: "20s".into(),
            checkpoint_interval: "5s".into(),
            checkpoint_records: 1000,
            audit_interval: "30s".into(),
            audit_grace: "2m".into(),
            audit_recheck: "10m".into(),
            evidence_republish: "10m".into(),
            log_format: "human".into(),
            log_level: "info".into(),
            admin_socket: None,
            admin_tcp: String::new(),
            admin_token_file: None,
            admin_tcp_allow_remote: false,
            charter: None,
            certificate: None,
            metrics_listen: "127.0.0.1:9464".into(),
            offers_dir: None,
            hooks: HooksConfig::default(),
            time_dilation: 1,
        }
    }
}

/// Values given on the command line or in `FULCRUM_*` variables (clap reads
/// both); `None` leaves the file's value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Data directory.
    #[arg(long, env = "FULCRUM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Federation name.
    #[arg(long, env = "FULCRUM_FEDERATION")]
    pub federation: Option<String>,
    /// Listen multiaddr (repeatable; env: comma-separated).
    #[arg(long = "listen", env = "FULCRUM_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Bootstrap peer multiaddr with /p2p/<peer id> (repeatable; env: comma-separated).
    #[arg(long = "bootstrap", env = "FULCRUM_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Offer lifetime, e.g. 1h.
    #[arg(long, env = "FULCRUM_OFFER_TTL")]
    pub offer_ttl: Option<String>,
    /// Most connected peers.
    #[arg(long, env = "FULCRUM_MAX_PEERS")]
    pub max_peers: Option<u32>,
    /// Inbound requests per second per peer.
    #[arg(long, env = "FULCRUM_PEER_RATE_PER_SEC")]
    pub peer_rate_per_sec: Option<u32>,
    /// Inbound request burst per peer.
    #[arg(long, env = "FULCRUM_PEER_BURST")]
    pub peer_burst: Option<u32>,
    /// Hold lifetime, e.g. 30s.
    #[arg(long, env = "FULCRUM_HOLD_TTL")]
    pub hold_ttl: Option<String>,
    /// Reply timeout, e.g. 5s.
    #[arg(long, env = "FULCRUM_REPLY_TIMEOUT")]
    pub reply_timeout: Option<String>,
    /// Deadline of a placement, e.g. 20s.
    #[arg(long, env = "FULCRUM_PLACE_DEADLINE")]
    pub place_deadline: Option<String>,
    /// Longest time between checkpoints, e.g. 5s.
    #[arg(long, env = "FULCRUM_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<String>,
    /// Records after which a checkpoint is signed at once.
    #[arg(long, env = "FULCRUM_CHECKPOINT_RECORDS")]
    pub checkpoint_records: Option<u64>,
    /// How often shared contracts are checked in the counterparties' logs, e.g. 30s.
    #[arg(long, env = "FULCRUM_AUDIT_INTERVAL")]
    pub audit_interval: Option<String>,
    /// Age after which a contract missing from the other party's log is evidence, e.g. 2m.
    #[arg(long, env = "FULCRUM_AUDIT_GRACE")]
    pub audit_grace: Option<String>,
    /// Time after which a proven shared contract is checked again, e.g. 10m.
    #[arg(long, env = "FULCRUM_AUDIT_RECHECK")]
    pub audit_recheck: Option<String>,
    /// How often evidence this node found is published again, e.g. 10m.
    #[arg(long, env = "FULCRUM_EVIDENCE_REPUBLISH")]
    pub evidence_republish: Option<String>,
    /// human or json.
    #[arg(long, env = "FULCRUM_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter.
    #[arg(long, env = "FULCRUM_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Admin socket path.
    #[arg(long, env = "FULCRUM_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Also serve the admin API on this loopback TCP address, e.g. 127.0.0.1:7400 ("" disables it).
    #[arg(long, env = "FULCRUM_ADMIN_TCP")]
    pub admin_tcp: Option<String>,
    /// File holding the bearer token of the TCP admin API (mode 0600).
    #[arg(long, env = "FULCRUM_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Allow admin_tcp on a non-loopback address (the token crosses the network in clear text).
    #[arg(long, env = "FULCRUM_ADMIN_TCP_ALLOW_REMOTE")]
    pub admin_tcp_allow_remote: Option<bool>,
    /// The federation's charter file (federation.toml).
    #[arg(long, env = "FULCRUM_CHARTER")]
    pub charter: Option<PathBuf>,
    /// This node's member certificate file.
    #[arg(long, env = "FULCRUM_CERTIFICATE")]
    pub certificate: Option<PathBuf>,
    /// Address of the metrics, health and readiness endpoint, e.g. 127.0.0.1:9464 ("" disables it).
    #[arg(long, env = "FULCRUM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Directory of offer files (*.toml) to publish at start and on SIGHUP.
    #[arg(long, env = "FULCRUM_OFFERS_DIR")]
    pub offers_dir: Option<PathBuf>,
}

impl NodeConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Malformed { path: path.to_owned(), message: one_line(&e.to_string()) })
    }

    /// Loads `file` if given, else `<data_dir>/node.toml` if present, else
    /// defaults; then applies overrides and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<NodeConfig, ConfigError> {
        let data_dir = overrides.data_dir.clone().unwrap_or_else(|| NodeConfig::default().data_dir);
        let implicit = data_dir.join("node.toml");
        let path = match file {
            Some(p) => Some(p.to_owned()),
            None => implicit.exists().then_some(implicit),
        };
        let mut config = match &path {
            Some(p) => {
                let text = fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
                NodeConfig::parse(&text, p)?
            }
            None => NodeConfig::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies flag / environment overrides.
    pub fn apply(&mut self, o: &Overrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        set!(data_dir, federation, offer_ttl, max_peers, peer_rate_per_sec, peer_burst, hold_ttl, reply_timeout);
        set!(
            place_deadline,
            log_format,
            log_level,
            checkpoint_interval,
            checkpoint_records,
            audit_interval,
            audit_grace,
            audit_recheck,
            evidence_republish
        );
        set!(metrics_listen, admin_tcp, admin_tcp_allow_remote);
        if o.admin_socket.is_some() {
            self.admin_socket = o.admin_socket.clone();
        }
        if o.admin_token_file.is_some() {
            self.admin_token_file = o.admin_token_file.clone();
        }
        if o.charter.is_some() {
            self.charter = o.charter.clone();
        }
        if o.certificate.is_some() {
            self.certificate = o.certificate.clone();
        }
        if o.offers_dir.is_some() {
            self.offers_dir = o.offers_dir.clone();
        }
        if !o.listen.is_empty() {
            self.listen = o.listen.clone();
        }
        if !o.bootstrap.is_empty() {
            self.bootstrap = o.bootstrap.clone();
        }
    }

    /// Checks values an operator could get wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if self.federation.is_empty() || self.federation.len() > 128 || self.federation.contains(char::is_whitespace) {
            return invalid("federation", "must be 1 to 128 characters without spaces".into());
        }
        for (field, value) in [
            ("offer_ttl", &self.offer_ttl),
            ("hold_ttl", &self.hold_ttl),
            ("reply_timeout", &self.reply_timeout),
            ("place_deadline", &self.place_deadline),
            ("checkpoint_interval", &self.checkpoint_interval),
            ("audit_interval", &self.audit_interval),
            ("audit_grace", &self.audit_grace),
            ("audit_recheck", &self.audit_recheck),
            ("evidence_republish", &self.evidence_republish),
        ] {
            match parse_duration_ms(value) {
                Ok(0) => return invalid(field, "must be more than zero".into()),
                Ok(_) => {}
                Err(e) => return invalid(field, e.to_string()),
            }
        }
        if !matches!(self.log_format.as_str(), "human" | "json") {
            return invalid("log_format", format!("{:?} is neither human nor json", self.log_format));
        }
        if self.listen.is_empty() {
            return invalid("listen", "at least one address is needed".into());
        }
        for a in self.listen.iter().chain(&self.bootstrap) {
            if a.parse::<libp2p::Multiaddr>().is_err() {
                return invalid("listen/bootstrap", format!("{a:?} is not a multiaddr"));
            }
        }
        self.hooks.validate()?;
        if self.checkpoint_records == 0 {
            return invalid("checkpoint_records", "must be more than zero".into());
        }
        if self.max_peers == 0 || self.peer_rate_per_sec == 0 || self.peer_burst == 0 {
            return invalid("max_peers/peer_rate_per_sec/peer_burst", "must be more than zero".into());
        }
        if self.metrics_socket_addr().is_err() {
            return invalid(
                "metrics_listen",
                format!(
                    "{:?} is not an address with a port such as 127.0.0.1:9464 (\"\" disables it)",
                    self.metrics_listen
                ),
            );
        }
        self.validate_admin_tcp()
    }

    /// The TCP admin endpoint: an address with a port, a token file, and
    /// loopback unless remote access is asked for in so many words.
    fn validate_admin_tcp(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { field: "admin_tcp", message });
        let addr = match self.admin_tcp_addr() {
            Ok(Some(addr)) => addr,
            Ok(None) => return Ok(()),
            Err(_) => {
                return invalid(format!(
                    "{:?} is not an address with a port such as 127.0.0.1:7400 (\"\" disables it)",
                    self.admin_tcp
                ));
            }
        };
        if self.admin_token_file.is_none() {
            return Err(ConfigError::Invalid {
                field: "admin_token_file",
                message: format!(
                    "admin_tcp = {:?} needs a bearer token: create one with 'umask 077; openssl rand -hex 32 > \
                     admin.token' and set admin_token_file to its path",
                    self.admin_tcp
                ),
            });
        }
        if !addr.ip().is_loopback() && !self.admin_tcp_allow_remote {
            return invalid(format!(
                "{addr} is not a loopback address: the admin API controls the node and its token would cross the \
                 network in clear text; use 127.0.0.1 or [::1] (or set admin_tcp_allow_remote = true behind a \
                 tunnel or a TLS proxy)"
            ));
        }
        Ok(())
    }

    /// The TCP admin endpoint's address, `None` when it is off.
    pub fn admin_tcp_addr(&self) -> Result<Option<std::net::SocketAddr>, std::net::AddrParseError> {
        let addr = self.admin_tcp.trim();
        if addr.is_empty() { Ok(None) } else { addr.parse().map(Some) }
    }

    /// A duration field in ms (validated by [`NodeConfig::validate`]).
    pub fn ms(&self, value: &str) -> u64 {
        parse_duration_ms(value).unwrap_or(0)
    }

    /// A fixed interval of the node, in this node's time (see `time_dilation`).
    pub fn dilated(&self, d: Duration) -> Duration {
        d.saturating_mul(self.time_dilation.max(1))
    }

    /// [`NodeConfig::dilated`] for milliseconds.
    pub fn dilated_ms(&self, ms: u64) -> u64 {
        ms.saturating_mul(u64::from(self.time_dilation.max(1)))
    }

    /// The admin socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.admin_socket.clone().unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    /// The metrics endpoint's address, `None` when disabled.
    pub fn metrics_socket_addr(&self) -> Result<Option<std::net::SocketAddr>, std::net::AddrParseError> {
        let addr = self.metrics_listen.trim();
        if addr.is_empty() { Ok(None) } else { addr.parse().map(Some) }
    }

    /// The key file path.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("node.key")
    }

    /// The agreement log path.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("agreements.log")
    }

    /// The file of this node's own signed checkpoints.
    pub fn checkpoints_path(&self) -> PathBuf {
        self.data_dir.join("checkpoints")
    }

    /// The file of the latest checkpoint this node witnessed of every other
    /// node.
    pub fn witnessed_path(&self) -> PathBuf {
        self.data_dir.join("witnessed")
    }

    /// The sled index path.
    pub fn index_path(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// The hook runner's cursor: the log index of the first contract event
    /// whose hook has not succeeded yet.
    pub fn hooks_cursor_path(&self) -> PathBuf {
        self.data_dir.join("hooks.cursor")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An exclusive lock on the data dir, held for the life of the daemon. The
/// OS releases it if the process dies, so a crash never leaves it stale.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, ConfigError> {
        let err = |source| ConfigError::DataDir { path: data_dir.to_owned(), source };
        fs::create_dir_all(data_dir).map_err(err)?;
        let path = data_dir.join("LOCK");
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(ConfigError::Locked {
                    path: data_dir.to_owned(),
                    holder: format!("pid {}", holder.trim()).trim().to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        file.set_len(0).map_err(err)?;
        writeln!(file, "{}", std::process::id()).map_err(err)?;
        Ok(DataDirLock { _file: file })
    }
}

/// The commented `node.toml` that `fulcrumd init` writes.
pub fn commented_config(data_dir: &Path) -> String {
    format!(
        r#"# fulcrumd configuration. Every field can also be set with a FULCRUM_<FIELD>
# environment variable (e.g. FULCRUM_LISTEN) or a --<field> flag; flags win.

# Where the key, the agreement log, the index and the admin socket live.
data_dir = "{}"

# Federation name; every member of the federation uses the same one.
federation = "dev"

# Addresses to listen on (TCP and QUIC).
listen = ["/ip4/0.0.0.0/tcp/4100", "/ip4/0.0.0.0/udp/4100/quic-v1"]

# Peers to join through: multiaddrs ending in /p2p/<peer id>.
bootstrap = []

# Lifetime of published offers; they are re-announced at half of it.
offer_ttl = "1h"

# Connection and abuse limits.
max_peers = 128
peer_rate_per_sec = 200
peer_burst = 400

# Negotiation timing.
hold_ttl = "30s"
reply_timeout = "5s"
place_deadline = "20s"

# Checkpoints of the agreement log: signed and gossiped at least this often
# while the log grows, and at once after this many records.
checkpoint_interval = "5s"
checkpoint_records = 1000
# How often shared contracts are checked in the other party's log, and how
# old a contract must be before its absence there is evidence (the same for
# every member of the federation).
audit_interval = "30s"
audit_grace = "2m"
# A proven shared contract is checked again this long after, and evidence
# this node found is published again this often (for members that joined
# since).
audit_recheck = "10m"
evidence_republish = "10m"

# Logs: human or json, and a filter such as "info" or "fulcrum_node=debug,info".
log_format = "human"
log_level = "info"

# Admin socket (default: <data_dir>/admin.sock).
# admin_socket = "/run/fulcrum/admin.sock"

# The admin API on loopback TCP as well, for tools that cannot reach the
# socket (a container, another user): every request must carry the bearer
# token in admin_token_file (mode 0600; 'umask 077; openssl rand -hex 32 >
# admin.token'). Only loopback addresses are accepted unless
# admin_tcp_allow_remote = true (the token is not encrypted on the wire).
# admin_tcp = "127.0.0.1:7400"
# admin_token_file = "/etc/fulcrum/admin.token"

# Membership: the federation's charter and this node's certificate. Without a
# charter the federation is open (development only); with a closed charter the
# node needs a certificate signed by k of its authorities (see
# `fulcrumctl federation`).
# charter = "/etc/fulcrum/federation.toml"
# certificate = "/etc/fulcrum/member.cert"

# HTTP endpoint for Prometheus (/metrics), health (/healthz) and readiness
# (/readyz); "" disables it. It has no authentication: keep it on loopback
# (or a private monitoring network) and let the scraper come to it.
metrics_listen = "127.0.0.1:9464"

# Offers managed as files: every *.toml offer file here (the format of
# `fulcrumctl offers publish`) is published at start and again on SIGHUP
# (`systemctl reload fulcrumd`); unchanged offers are left alone. Removing a
# file does not withdraw its offer: use `fulcrumctl offers withdraw`.
# offers_dir = "/etc/fulcrum/offers"

# Provisioning hooks: a command (program and arguments, no shell) run with the
# contract as JSON on stdin when a contract becomes active, is terminated or
# expires, one event at a time in log order. A failing or timed-out hook is
# retried (1 s, doubling up to retry_max_backoff) until it succeeds, without
# ever holding up negotiation; a hook may see an event again after a crash,
# so it should do nothing for an event_id it has handled. See
# configs/hooks/provision.sh.
# [hooks]
# on_active = ["/etc/fulcrum/hooks/provision.sh"]
# on_terminated = ["/etc/fulcrum/hooks/provision.sh"]
# on_expired = ["/etc/fulcrum/hooks/provision.sh"]
# timeout = "30s"
# retry_max_backoff = "5m"
"#,
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_then_flags() {
        let mut c = NodeConfig::parse(
            "federation = \"eu\"\nmax_peers = 10\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!((c.federation.as_str(), c.max_peers), ("eu", 10));
        c.apply(&Overrides { max_peers: Some(3), listen: vec!["/ip4/127.0.0.1/tcp/2".into()], ..Overrides::default() });
        assert_eq!(c.max_peers, 3);
        assert_eq!(c.listen, ["/ip4/127.0.0.1/tcp/2"]);
        assert_eq!(c.federation, "eu", "unset overrides keep the file's value");
        assert_eq!(c.offers_dir, None);
        c.apply(&Overrides { offers_dir: Some("/etc/fulcrum/offers".into()), ..Overrides::default() });
        assert_eq!(c.offers_dir.as_deref(), Some(Path::new("/etc/fulcrum/offers")));
        c.validate().unwrap();
    }

    #[test]
    fn bad_configs_are_named() {
        let cases: [(&str, &str); 8] = [
            ("federation = \n", "malformed"),
            ("no_such_field = 1\n", "malformed"),
            ("federation = \"has space\"\n", "federation"),
            ("hold_ttl = \"30 parsecs\"\n", "hold_ttl"),
            ("listen = [\"not an address\"]\n", "listen"),
            ("log_format = \"xml\"\n", "log_format"),
            ("metrics_listen = \"localhost\"\n", "metrics_listen"),
            ("metrics_listen = \"127.0.0.1\"\n", "metrics_listen"),
        ];
        for (text, word) in cases {
            let err = NodeConfig::parse(text, Path::new("node.toml")).and_then(|c| c.validate().map(|()| c));
            let msg = err.expect_err(text).to_string();
            assert!(msg.contains(word), "{text:?} gave {msg:?}");
        }
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_empty_disables_it() {
        let mut c = NodeConfig::default();
        assert_eq!(c.metrics_socket_addr().unwrap(), Some("127.0.0.1:9464".parse().unwrap()));
        c.apply(&Overrides { metrics_listen: Some("[::1]:9000".into()), ..Overrides::default() });
        assert_eq!(c.metrics_socket_addr().unwrap(), Some("[::1]:9000".parse().unwrap()));
        c.apply(&Overrides { metrics_listen: Some(String::new()), ..Overrides::default() });
        assert_eq!(c.metrics_socket_addr().unwrap(), None);
        c.validate().unwrap();
    }

    #[test]
    fn admin_tcp_needs_a_token_file_and_loopback_unless_remote_is_asked_for() {
        let base = NodeConfig { admin_token_file: Some("/etc/fulcrum/admin.token".into()), ..NodeConfig::default() };
        let with = |addr: &str, token: bool, remote: bool| NodeConfig {
            admin_tcp: addr.into(),
            admin_token_file: if token { base.admin_token_file.clone() } else { None },
            admin_tcp_allow_remote: remote,
            ..NodeConfig::default()
        };
        assert_eq!(NodeConfig::default().admin_tcp_addr().unwrap(), None, "off by default");
        for ok in [with("127.0.0.1:7400", true, false), with("[::1]:7400", true, false), with("", false, false)] {
            ok.validate().unwrap();
        }
        with("0.0.0.0:7400", true, true).validate().unwrap();
        for (config, word) in [
            (with("127.0.0.1:7400", false, false), "admin_token_file"),
            (with("0.0.0.0:7400", true, false), "not a loopback address"),
            (with("10.1.2.3:7400", true, false), "not a loopback address"),
            (with("localhost", true, false), "admin_tcp"),
        ] {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(word), "{:?}: {message}", config.admin_tcp);
        }
        let mut c = NodeConfig::default();
        c.apply(&Overrides {
            admin_tcp: Some("127.0.0.1:7400".into()),
            admin_token_file: Some("/t".into()),
            ..Overrides::default()
        });
        assert_eq!((c.admin_tcp.as_str(), c.admin_token_file.as_deref()), ("127.0.0.1:7400", Some(Path::new("/t"))));
    }

    #[test]
    fn key_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let id = fulcrum_protocol::keys::Identity::from_secret_bytes(&[9; 32]);
        create_key(&path, &id).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_key(&path).unwrap().public(), id.public());
        assert!(matches!(create_key(&path, &id), Err(KeyFileError::Exists(_))));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_key(&path), Err(KeyFileError::Exposed { mode: 0o640, .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "zz").unwrap();
        assert!(matches!(load_key(&path), Err(KeyFileError::Malformed(_))));
        assert!(matches!(load_key(&dir.path().join("none")), Err(KeyFileError::Missing(_))));
    }

    #[test]
    fn data_dir_lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another fulcrumd") && err.contains(&std::process::id().to_string()), "{err}");
        drop(lock);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}

#[cfg(test)]
mod example_config {
    use super::*;

    /// The example in configs/ and the file `fulcrumd init` writes both load.
    #[test]
    fn shipped_configs_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/node.toml");
        let text = fs::read_to_string(&path).unwrap();
        NodeConfig::parse(&text, &path).unwrap().validate().unwrap();
        let written = commented_config(Path::new("/tmp/x"));
        let c = NodeConfig::parse(&written, Path::new("node.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_dir, Path::new("/tmp/x"));
    }
}
