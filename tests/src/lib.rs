//! A harness for end-to-end tests: real `fulcrumd` processes on loopback,
//! each with its own data dir, driven through the real `fulcrumctl`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod events;
pub mod netns;

/// Directory holding the built `fulcrumd` and `fulcrumctl`. Building them
/// here keeps `cargo test -p fulcrum-e2e` working on its own.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "fulcrum-node", "--bins"]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the daemon binaries");
        assert!(status.success(), "building fulcrumd/fulcrumctl failed");
        dir
    })
}

pub fn fulcrumd() -> PathBuf {
    bin_dir().join("fulcrumd")
}

pub fn fulcrumctl() -> PathBuf {
    bin_dir().join("fulcrumctl")
}

/// A loopback port free for both TCP and UDP (the OS picks; we release it
/// for the daemon).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One daemon process.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub peer_id: String,
    pub bootstrap: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// Loopback port of the metrics endpoint (`/metrics`, `/healthz`,
    /// `/readyz`): the test's FULCRUM_METRICS_LISTEN if it gave one, else a
    /// free port of its own, so that daemons never clash on the default.
    pub metrics_port: u16,
    /// Listen on QUIC instead of TCP.
    pub quic: bool,
    /// The address it listens on (loopback unless it runs on a test host).
    pub host: String,
    /// The network namespace it runs in (see [`netns`]); none: this one.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Daemon {
    /// `fulcrumd init` in `root/name`, then start it.
    pub fn start(root: &Path, name: &str, bootstrap: &[String]) -> Daemon {
        Daemon::start_with(root, name, bootstrap, &[])
    }

    pub fn start_with(root: &Path, name: &str, bootstrap: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::init(root, name, bootstrap, env);
        d.spawn();
        d
    }

    /// `fulcrumd init` in `root/name` without starting it, so that files
    /// (a member certificate, say) can be put in place first.
    pub fn init(root: &Path, name: &str, bootstrap: &[String], env: &[(&str, &str)]) -> Daemon {
        let dir = root.join(name);
        let out = Command::new(fulcrumd()).args(["init", "--data-dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let peer_id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("peer id"))
            .map(|s| s.trim().to_owned())
            .expect("init prints the peer id");
        let metrics_port = env
            .iter()
            .find(|(k, _)| *k == "FULCRUM_METRICS_LISTEN")
            .and_then(|(_, v)| v.rsplit_once(':')?.1.parse().ok())
            .unwrap_or_else(free_port);
        Daemon {
            name: name.into(),
            dir,
            port: free_port(),
            peer_id,
            bootstrap: bootstrap.to_vec(),
            extra_env: env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            metrics_port,
            quic: env.iter().any(|(k, v)| *k == "QUIC" && *v == "1"),
            host: "127.0.0.1".into(),
            netns: None,
            child: None,
        }
    }

    /// The node's public key (hex), from its key file.
    pub fn node_key(&self) -> String {
        fulcrum_node::config::load_key(&self.dir.join("node.key")).unwrap().public().to_string()
    }

    /// The multiaddr peers use to reach this daemon.
    pub fn addr(&self) -> String {
        format!("{}/p2p/{}", self.listen(), self.peer_id)
    }

    fn listen(&self) -> String {
        if self.quic {
            format!("/ip4/{}/udp/{}/quic-v1", self.host, self.port)
        } else {
            format!("/ip4/{}/tcp/{}", self.host, self.port)
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Starts the process and waits until its admin API answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).unwrap();
        // `ip netns exec` execs the daemon, so the child is the daemon itself.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(fulcrumd());
                cmd
            }
            None => Command::new(fulcrumd()),
        };
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(self.listen())
            .env("FULCRUM_LOG_LEVEL", "info")
            .env("FULCRUM_HOLD_TTL", "5s")
            .env("FULCRUM_REPLY_TIMEOUT", "1s")
            .env("FULCRUM_METRICS_LISTEN", format!("127.0.0.1:{}", self.metrics_port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for b in &self.bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        for (k, v) in self.extra_env.iter().filter(|(k, _)| k.starts_with("FULCRUM_")) {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let up = wait_for(Duration::from_secs(20), || self.ctl_json(&["status"]).ok());
        assert!(up.is_some(), "{} did not come up; log:\n{}", self.name, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs fulcrumctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(fulcrumctl()).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    /// Runs fulcrumctl --json and parses stdout, or returns stderr.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value, String> {
        let out =
            Command::new(fulcrumctl()).arg("--socket").arg(self.socket()).arg("--json").args(args).output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `GET path` on the metrics endpoint: the status code and the body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.metrics_port, path)
    }

    /// The value of one series (`name{labels}` exactly as exposed) in a
    /// fresh scrape of `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = self.http_get("/metrics").ok()?;
        if status != 200 {
            return None;
        }
        metric_value(&text, series)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` on a loopback port over a plain HTTP/1.1 connection: the status
/// code and the body (the endpoint closes the connection after answering).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {response:?}"))?;
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The value of `series` (`name{labels}` exactly as exposed) in an
/// OpenMetrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// Writes an offer file and returns its path.
pub fn offer_file(dir: &Path, offer_id: &str, country: &str, units: u32, price: &str) -> PathBuf {
    let path = dir.join(format!("{offer_id}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"offer_id = "{offer_id}"
units = {units}
labels = ["iso:27001"]
sla_permille = 999

[site]
country = "{country}"
region = "r1"
datacenter = "dc1"

[flavour]
name = "c8m32"
vcpu = 8
memory_mib = 32768
storage_gib = 200

[price]
currency = "EUR"
per_unit_hour = "{price}"

[duration]
min = "1h"
max = "8760h"
"#
        ),
    )
    .unwrap();
    path
}
