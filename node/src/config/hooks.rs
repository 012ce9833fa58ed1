//! The `[hooks]` table of `node.toml`: the commands run when a contract
//! becomes active, is terminated or expires, and how long each run may take
//! and how a failing one is retried (the runner is [`crate::hooks`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::offer_file::parse_duration_ms;

/// How long a failing hook waits before its second attempt; every later
/// wait doubles, up to `retry_max_backoff`.
pub const FIRST_RETRY_MS: u64 = 1_000;

/// `[hooks]`: one command (program and arguments, never through a shell) per
/// contract event; an empty list runs nothing for that event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Run when a contract becomes active (durable in this node's log).
    pub on_active: Vec<String>,
    /// Run when a contract is terminated early, by either party.
    pub on_terminated: Vec<String>,
    /// Run when a contract reaches its end time.
    pub on_expired: Vec<String>,
    /// How long one run may take before it is killed and counts as failed.
    pub timeout: String,
    /// Longest wait between two attempts of a failing hook.
    pub retry_max_backoff: String,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_active: Vec::new(),
            on_terminated: Vec::new(),
            on_expired: Vec::new(),
            timeout: "30s".into(),
            retry_max_backoff: "5m".into(),
        }
    }
}

impl HooksConfig {
    /// Checks the durations, and that every configured program can be run:
    /// an absolute path to an executable file, or a name found in `PATH`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("hooks.timeout", &self.timeout), ("hooks.retry_max_backoff", &self.retry_max_backoff)] {
            match parse_duration_ms(value) {
                Ok(0) => return Err(invalid(field, "must be more than zero".into())),
                Ok(_) => {}
                Err(e) => return Err(invalid(field, e.to_string())),
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for (field, argv) in [
            ("hooks.on_active", &self.on_active),
            ("hooks.on_terminated", &self.on_terminated),
            ("hooks.on_expired", &self.on_expired),
        ] {
            check_command(argv, &path).map_err(|message| invalid(field, message))?;
        }
        Ok(())
    }

    /// The run timeout in ms (validated by [`HooksConfig::validate`]).
    pub fn timeout_ms(&self) -> u64 {
        parse_duration_ms(&self.timeout).unwrap_or(30_000)
    }

    /// How long to wait after the `failures`-th failed attempt in a row:
    /// 1 s, then doubling, never more than `retry_max_backoff`.
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let max = parse_duration_ms(&self.retry_max_backoff).unwrap_or(300_000);
        let doublings = failures.saturating_sub(1).min(32);
        FIRST_RETRY_MS.saturating_mul(1 << doublings).min(max)
    }

    /// True when at least one event has a command.
    pub fn any(&self) -> bool {
        !(self.on_active.is_empty() && self.on_terminated.is_empty() && self.on_expired.is_empty())
    }
}

fn invalid(field: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { field, message }
}

/// Why `argv` cannot be run, if it cannot; `search` is the `PATH` to look a
/// bare program name up in.
fn check_command(argv: &[String], search: &std::ffi::OsStr) -> Result<(), String> {
    let Some(program) = argv.first() else { return Ok(()) };
    if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("{arg:?} contains a NUL byte"));
    }
    if program.is_empty() {
        return Err("the program (the first element) is empty; give its absolute path".into());
    }
    if program.contains('/') {
        let path = Path::new(program);
        if !path.is_absolute() {
            return Err(format!(
                "{program:?} is a relative path, which would depend on the daemon's working directory; give an \
                 absolute path"
            ));
        }
        return check_executable(path);
    }
    let found: Vec<PathBuf> = std::env::split_paths(search).map(|dir| dir.join(program)).collect();
    if found.iter().any(|candidate| check_executable(candidate).is_ok()) {
        Ok(())
    } else {
        Err(format!("{program:?} is not an executable file in any directory of PATH; give its absolute path"))
    }
}

fn check_executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{shown} is not executable (chmod +x it)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::NodeConfig;

    fn executable(dir: &Path, name: &str, mode: u32) -> String {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn parsed(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("node.toml")).and_then(|c| c.validate().map(|()| c))
    }

    #[test]
    fn a_hooks_table_parses_with_defaults_for_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let hook = executable(dir.path(), "provision", 0o755);
        let c =
            parsed(&format!("[hooks]\non_active = [\"{hook}\", \"--site\", \"fra1\"]\ntimeout = \"2s\"\n")).unwrap();
        assert_eq!(c.hooks.on_active, [hook.as_str(), "--site", "fra1"]);
        assert!(c.hooks.on_terminated.is_empty() && c.hooks.on_expired.is_empty());
        assert_eq!(c.hooks.timeout_ms(), 2_000);
        assert_eq!(c.hooks.retry_max_backoff, "5m");
        assert!(c.hooks.any());
        // No table: no hooks, and the defaults.
        let c = parsed("").unwrap();
        assert_eq!(c.hooks, HooksConfig::default());
        assert!(!c.hooks.any());
        // A bare name is looked up in PATH.
        assert!(parsed("[hooks]\non_expired = [\"sh\", \"-c\", \"true\"]\n").is_ok());
    }

    #[test]
    fn bad_hooks_are_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let plain = executable(dir.path(), "not-executable", 0o644);
        let missing = dir.path().join("missing").to_str().unwrap().to_owned();
        let folder = dir.path().to_str().unwrap().to_owned();
        let cases = [
            ("[hooks]\ntimeout = \"0s\"\n", "hooks.timeout", "more than zero"),
            ("[hooks]\ntimeout = \"soon\"\n", "hooks.timeout", "soon"),
            ("[hooks]\nretry_max_backoff = \"0ms\"\n", "hooks.retry_max_backoff", "more than zero"),
            ("[hooks]\non_active = [\"\"]\n", "hooks.on_active", "empty"),
            ("[hooks]\non_active = [\"bin/provision\"]\n", "hooks.on_active", "absolute path"),
            (&format!("[hooks]\non_terminated = [\"{plain}\"]\n"), "hooks.on_terminated", "chmod +x"),
            (&format!("[hooks]\non_expired = [\"{missing}\"]\n"), "hooks.on_expired", "No such file"),
            (&format!("[hooks]\non_expired = [\"{folder}\"]\n"), "hooks.on_expired", "not a file"),
            ("[hooks]\non_active = [\"no-such-program-anywhere\"]\n", "hooks.on_active", "PATH"),
            ("[hooks]\non_active = [\"sh\", \"a\\u0000b\"]\n", "hooks.on_active", "NUL"),
            ("[hooks]\non_activ = [\"sh\"]\n", "malformed", "on_activ"),
            ("[hooks]\ntimeout = 30\n", "malformed", "timeout"),
        ];
        for (text, field, why) in cases {
            let message = parsed(text).expect_err(text).to_string();
            assert!(message.contains(field) && message.contains(why), "{text:?} gave {message:?}");
        }
    }

    /// The example in configs/hooks is a hook the daemon accepts, and sh
    /// can parse it.
    #[test]
    fn the_example_hook_is_accepted() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/hooks/provision.sh").canonicalize().unwrap();
        let text = format!("[hooks]\non_active = [\"{}\"]\n", path.display());
        assert!(parsed(&text).is_ok(), "{:?}", parsed(&text));
        let syntax = std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let hooks = HooksConfig { retry_max_backoff: "10s".into(), ..HooksConfig::default() };
        let waits: Vec<u64> = (1..=6).map(|n| hooks.backoff_ms(n)).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(hooks.backoff_ms(u32::MAX), 10_000);
        // A cap below the first wait is the wait.
        let fast = HooksConfig { retry_max_backoff: "200ms".into(), ..HooksConfig::default() };
        assert_eq!((fast.backoff_ms(1), fast.backoff_ms(9)), (200, 200));
    }
}
