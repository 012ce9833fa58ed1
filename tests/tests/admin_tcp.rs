//! The admin API on loopback TCP: with the right bearer token every command
//! works (the Unix socket still does too); a wrong or missing token is
//! refused by the daemon with UNAUTHENTICATED; a token file that others can
//! read is refused by both the daemon and fulcrumctl; a non-loopback address
//! is refused unless asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fulcrum_e2e::{Daemon, free_port, fulcrumctl, fulcrumd, offer_file};
use serde_json::Value;

const TOKEN: &str = "7f3c9a1e5b2d4f6081a3c5e7f9b1d3e5";

fn token_file(dir: &Path, name: &str, token: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// fulcrumctl with no socket anywhere near: only the TCP endpoint can answer.
fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(fulcrumctl());
    cmd.env_remove("FULCRUM_SOCKET").env_remove("FULCRUM_ADMIN").env_remove("FULCRUM_ADMIN_TOKEN_FILE");
    cmd.env("FULCRUM_DATA_DIR", "/nonexistent/fulcrum-data");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "fulcrumctl failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fulcrumd run` that is expected to refuse to start: its one error line.
fn refused_start(d: &Daemon, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(fulcrumd());
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&d.dir)
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", free_port())])
        .env("FULCRUM_METRICS_LISTEN", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "fulcrumd started with {env:?}");
    stderr(&out)
}

#[test]
fn tcp_admin_needs_the_right_token() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    let mut d = Daemon::init(tmp.path(), "node", &[], &[]);
    let daemon_token = token_file(&d.dir, "admin.token", TOKEN, 0o600);
    d.extra_env.push(("FULCRUM_ADMIN_TCP".into(), addr.clone()));
    d.extra_env.push(("FULCRUM_ADMIN_TOKEN_FILE".into(), daemon_token.to_str().unwrap().into()));
    d.spawn();
    let key = d.node_key();

    // The right token, as a flag and from the environment.
    let client_token = token_file(tmp.path(), "client.token", TOKEN, 0o600);
    let token = client_token.to_str().unwrap();
    let status = json(&ctl(&["--admin", &url, "--token-file", token, "--json", "status"], &[]));
    assert_eq!(status["node_key"].as_str(), Some(key.as_str()), "{status}");
    let env = [("FULCRUM_ADMIN", url.as_str()), ("FULCRUM_ADMIN_TOKEN_FILE", token)];
    let status = json(&ctl(&["--json", "status"], &env));
    assert_eq!(status["node_key"].as_str(), Some(key.as_str()), "{status}");
    // Commands that change the node, and streamed answers, pass too.
    let offer = offer_file(tmp.path(), "fra1-c8m32", "DE", 4, "0.42");
    let out = ctl(&["offers", "publish", offer.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&ctl(&["--json", "audit", "verify"], &env));
    assert!(report["first_failure"].is_null(), "{report}");
    assert!(report["offers"].as_u64() >= Some(1), "{report}");
    // The Unix socket stays the default and needs no token.
    let status = d.ctl_json(&["status"]).unwrap();
    assert_eq!(status["node_key"].as_str(), Some(key.as_str()));

    // A wrong token: refused by the daemon, every request.
    let wrong = token_file(tmp.path(), "wrong.token", "00000000000000000000000000000000", 0o600);
    for args in [&["status"][..], &["offers", "list"], &["audit", "verify"], &["contracts", "watch"]] {
        let mut all = vec!["--admin", url.as_str(), "--token-file", wrong.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = ctl(&all, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("admin token was refused"), "{args:?}: {}", stderr(&out));
    }
    // No token at all: the daemon says what is missing.
    let out = ctl(&["--admin", &url, "status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs the node's admin token"), "{}", stderr(&out));
    // A token file others may read is refused before anything is sent.
    let exposed = token_file(tmp.path(), "exposed.token", TOKEN, 0o644);
    let out = ctl(&["--admin", &url, "--token-file", exposed.to_str().unwrap(), "status"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("readable by others") && stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    // Nothing listening there: said plainly.
    let closed = format!("tcp://127.0.0.1:{}", free_port());
    let out = ctl(&["--admin", &closed, "--token-file", token, "status"], &[]);
    assert!(stderr(&out).contains("nothing listens on"), "{}", stderr(&out));
    let out = ctl(&["--admin", "http://127.0.0.1:1", "status"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The daemon itself refuses a token file others can read, and a
    // non-loopback address unless asked for.
    assert_eq!(d.terminate(), Some(0));
    std::fs::set_permissions(&daemon_token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let token_env = daemon_token.to_str().unwrap();
    let line = refused_start(&d, &[("FULCRUM_ADMIN_TCP", &addr), ("FULCRUM_ADMIN_TOKEN_FILE", token_env)]);
    assert!(line.contains("readable by others") && line.contains("chmod 600"), "{line}");
    std::fs::set_permissions(&daemon_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let anywhere = format!("0.0.0.0:{port}");
    let line = refused_start(&d, &[("FULCRUM_ADMIN_TCP", &anywhere), ("FULCRUM_ADMIN_TOKEN_FILE", token_env)]);
    assert!(line.contains("not a loopback address"), "{line}");
    let line = refused_start(&d, &[("FULCRUM_ADMIN_TCP", &addr)]);
    assert!(line.contains("admin_token_file"), "{line}");
}
