//! Offers declared as files: a daemon with `offers_dir` publishes every offer
//! file at start and again on SIGHUP; a malformed file is logged by name and
//! skipped; an offer whose file did not change keeps its seq (no churn), also
//! across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use serde_json::Value;

/// This node's own live offers: offer id -> seq.
fn mine(d: &Daemon) -> BTreeMap<String, u64> {
    let v = d.ctl_json(&["offers", "list", "--mine"]).unwrap_or(Value::Null);
    let offers = match &v {
        Value::Array(a) => a.clone(),
        other => other.get("offers").and_then(Value::as_array).cloned().unwrap_or_default(),
    };
    offers.iter().filter_map(|o| Some((o.get("offer_id")?.as_str()?.to_owned(), o.get("seq")?.as_u64()?))).collect()
}

fn hangup(d: &Daemon) {
    let status = std::process::Command::new("kill").arg("-HUP").arg(d.pid().to_string()).status().unwrap();
    assert!(status.success());
}

/// Log lines that name `needle`.
fn count(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains(needle)).count()
}

fn ids(offers: &BTreeMap<String, u64>) -> Vec<&str> {
    offers.keys().map(String::as_str).collect()
}

#[test]
fn offers_dir_is_published_at_start_and_on_sighup_without_churn() {
    let root = tempfile::tempdir().unwrap();
    let offers = root.path().join("offers");
    std::fs::create_dir(&offers).unwrap();
    offer_file(&offers, "a-c8m32", "DE", 4, "0.40");
    let dir = offers.to_str().unwrap();
    let mut d = Daemon::init(root.path(), "p", &[], &[("FULCRUM_OFFERS_DIR", dir)]);
    d.spawn();

    let first = wait_for(Duration::from_secs(20), || Some(mine(&d)).filter(|m| !m.is_empty()));
    let first = first.unwrap_or_else(|| panic!("the offer file was not published; log:\n{}", d.log()));
    assert_eq!(ids(&first), ["a-c8m32"]);

    // A second good file and a malformed one (sorted last), then a reload.
    offer_file(&offers, "b-c4m16", "FR", 2, "0.30");
    let broken = offers.join("c-broken.toml");
    std::fs::write(&broken, "offer_id = \n").unwrap();
    std::fs::write(offers.join("README.txt"), "not an offer file").unwrap();
    hangup(&d);
    let both = wait_for(Duration::from_secs(20), || Some(mine(&d)).filter(|m| m.len() == 2));
    let both = both.unwrap_or_else(|| panic!("the second offer file was not published; log:\n{}", d.log()));
    assert_eq!(ids(&both), ["a-c8m32", "b-c4m16"]);
    assert_eq!(both["a-c8m32"], first["a-c8m32"], "the unchanged offer was published again");
    let named = wait_for(Duration::from_secs(10), || (count(&d, "c-broken.toml") >= 1).then_some(()));
    assert!(named.is_some(), "the log does not name the bad file:\n{}", d.log());
    assert!(!d.log().contains("README.txt"), "only *.toml files are offer files");
    assert!(d.ctl_json(&["status"]).is_ok(), "the daemon went down after a bad offer file:\n{}", d.log());

    // Reloading unchanged files changes nothing. Files are done in name
    // order, so the bad (last) file's second error line ends the reload.
    hangup(&d);
    let done = wait_for(Duration::from_secs(20), || (count(&d, "c-broken.toml") >= 2).then_some(()));
    assert!(done.is_some(), "no second reload; log:\n{}", d.log());
    assert_eq!(mine(&d), both, "a reload of unchanged files bumped a seq; log:\n{}", d.log());
    assert!(d.ctl_json(&["status"]).is_ok());

    // Nor does a restart, which publishes the directory again.
    assert_eq!(d.terminate(), Some(0));
    d.spawn();
    let again = wait_for(Duration::from_secs(20), || (count(&d, "c-broken.toml") >= 3).then_some(()));
    assert!(again.is_some(), "the restarted daemon did not publish its offers_dir; log:\n{}", d.log());
    assert_eq!(mine(&d), both, "a restart re-published unchanged offers; log:\n{}", d.log());

    // Removing a file does not withdraw its offer.
    std::fs::remove_file(offers.join("b-c4m16.toml")).unwrap();
    hangup(&d);
    let fourth = wait_for(Duration::from_secs(20), || (count(&d, "c-broken.toml") >= 4).then_some(()));
    assert!(fourth.is_some(), "no reload; log:\n{}", d.log());
    assert_eq!(ids(&mine(&d)), ["a-c8m32", "b-c4m16"]);
}
