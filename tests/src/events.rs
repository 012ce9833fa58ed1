//! Contract events as an operator meets them: the admin event stream
//! (`fulcrumctl --json contracts watch`), hook scripts and what they record.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Daemon, fulcrumctl};

/// A running `fulcrumctl --json contracts watch`, its events kept in order.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Daemon {
    /// Starts watching this daemon's contract events. The daemon subscribes
    /// the stream when it answers the request, a moment later: start it
    /// before whatever leads to the events it must see.
    pub fn watch(&self) -> Watch {
        let mut child = Command::new(fulcrumctl())
            .arg("--socket")
            .arg(self.socket())
            .args(["--json", "contracts", "watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str::<Value>(&line) else { break };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines, seen: Vec::new() }
    }

    /// Appends `text` (a table such as `[hooks]`) to the `node.toml` that
    /// `fulcrumd init` wrote; call it before the daemon starts.
    pub fn append_config(&self, text: &str) {
        let path = self.dir.join("node.toml");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push('\n');
        config.push_str(text);
        std::fs::write(&path, config).unwrap();
    }
}

impl Watch {
    /// Keeps reading events until `done` holds for all of them seen so far,
    /// or `timeout` passes; true if it held.
    pub fn until(&mut self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.lines.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(_) => return done(&self.seen),
            }
        }
        true
    }

    /// (event, contract id) of every event seen, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.seen
            .iter()
            .map(|e| {
                let event = e["event"].as_str().unwrap_or_default().to_owned();
                let id = e["contract"]["contract_id"].as_str().unwrap_or_default().to_owned();
                (event, id)
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an executable `#!/bin/sh` script `name` in `dir` running `body`.
pub fn shell_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The lines of a file a hook appends to (none while it does not exist).
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// The `[hooks]` table running `script` for every contract event.
pub fn hooks_table(script: &Path, timeout: &str, retry_max_backoff: &str) -> String {
    let s = script.display();
    format!(
        "[hooks]\non_active = [\"{s}\"]\non_terminated = [\"{s}\"]\non_expired = [\"{s}\"]\ntimeout = \
         \"{timeout}\"\nretry_max_backoff = \"{retry_max_backoff}\"\n"
    )
}

/// An offer file as [`crate::offer_file`] writes it, but allowing contracts
/// as short as one second (for contracts that expire during a test).
pub fn short_offer_file(dir: &Path, offer_id: &str, units: u32) -> PathBuf {
    let path = crate::offer_file(dir, offer_id, "DE", units, "0.10");
    let text = std::fs::read_to_string(&path).unwrap().replace("min = \"1h\"", "min = \"1s\"");
    std::fs::write(&path, text).unwrap();
    path
}
