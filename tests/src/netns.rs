//! Test hosts in network namespaces made by the test itself (iproute2's
//! `ip netns`, veth pairs and a bridge): each host is a namespace with
//! loopback and one interface `eth0` with its own address in 10.250.x.0/24,
//! and every `eth0` is plugged into one bridge that lives in a namespace of
//! its own, so nothing of it is visible in the namespace the tests run in.
//! A host is cut off by taking its bridge port down, and healed by bringing
//! it up again.
//!
//! Daemons on a host listen on its address (see [`Host::daemon`]) and are
//! run with `ip netns exec`; their admin sockets are Unix sockets on the
//! shared file system, so `fulcrumctl` runs from here as usual.
//!
//! Names carry the test process's id and a counter, so runs and tests never
//! share a namespace. Dropping the [`Lan`] kills whatever still runs in its
//! namespaces (only the daemons the test started can be there) and deletes
//! them, also when the test panics.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Daemon;

/// Every daemon on a test host listens on this TCP port of its own address.
pub const PORT: u16 = 4100;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// One host: a namespace with one address on the bridge.
#[derive(Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its IPv4 address.
    pub ip: String,
    /// Its port on the bridge (an interface of the switch namespace).
    port: String,
}

impl Host {
    /// `fulcrumd init` in `root/name` for a daemon that runs on this host
    /// (not started: call [`Daemon::spawn`]).
    pub fn daemon(&self, root: &Path, name: &str, bootstrap: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::init(root, name, bootstrap, env);
        d.host = self.ip.clone();
        d.port = PORT;
        d.netns = Some(self.ns.clone());
        d
    }

    /// A started daemon on this host.
    pub fn start(&self, root: &Path, name: &str, bootstrap: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut d = self.daemon(root, name, bootstrap, env);
        d.spawn();
        d
    }
}

/// Hosts on one bridge.
#[derive(Debug)]
pub struct Lan {
    switch: String,
    hosts: Vec<Host>,
}

impl Lan {
    /// Makes `count` hosts on one bridge. Fails (before leaving anything
    /// behind) where network namespaces cannot be made: not root, no
    /// `ip`, or a kernel without veth or bridges.
    pub fn new(count: usize) -> Result<Lan, String> {
        assert!((1..=200).contains(&count), "between 1 and 200 hosts");
        let run = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("fulcrum-{pid}-{run}");
        let subnet = 1 + (pid + run) % 250;
        let mut lan = Lan { switch: format!("{id}-switch"), hosts: Vec::new() };
        // From here on, Drop removes whatever was made.
        ip(&["netns", "add", &lan.switch])?;
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"])?;
        for i in 0..count {
            let host =
                Host { ns: format!("{id}-h{i}"), ip: format!("10.250.{subnet}.{}", 10 + i), port: format!("p{i}") };
            ip(&["netns", "add", &host.ns])?;
            lan.hosts.push(host);
            let host = &lan.hosts[i];
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &lan.switch,
                "link",
                "add",
                &host.port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.ns,
            ])?;
            ip(&["-n", &lan.switch, "link", "set", &host.port, "master", "br0"])?;
            ip(&["-n", &lan.switch, "link", "set", &host.port, "up"])?;
            ip(&["-n", &host.ns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lan)
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Cuts host `i` off: its bridge port goes down, so nothing reaches it
    /// or leaves it (connections are not reset, packets are lost).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &self.hosts[i].port, "down"]).unwrap();
    }

    /// Plugs host `i` back in.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &self.hosts[i].port, "up"]).unwrap();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.switch]) {
            // Only daemons this test started can run in its namespaces.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
