//! Provisioning hooks of real daemons, run by real scripts: every contract
//! event (active, terminated, expired) reaches the hook exactly once and in
//! log order on both sides, although the hook fails at first; the same
//! events stream over the admin API; and a hook that takes its time holds up
//! no negotiation, is killed with the daemon's stop, and runs again after
//! the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fulcrum_e2e::events::{file_lines, hooks_table, shell_script, short_offer_file};
use fulcrum_e2e::{Daemon, wait_for};
use serde_json::Value;

/// A provider and a consumer joined to it, each configured with its hooks.
fn pair(root: &Path, provider_hooks: &str, consumer_hooks: &str) -> (Daemon, Daemon) {
    let mut provider = Daemon::init(root, "provider", &[], &[]);
    provider.append_config(provider_hooks);
    provider.spawn();
    let mut consumer = Daemon::init(root, "consumer", &[provider.addr()], &[]);
    consumer.append_config(consumer_hooks);
    consumer.spawn();
    (provider, consumer)
}

/// The provider offers `units` of a flavour that can be bought for as
/// little as a second; returns once the consumer has the offer.
fn publish(provider: &Daemon, consumer: &Daemon, root: &Path, units: u32) {
    let file = short_offer_file(root, "fra1-c8m32", units);
    let out = provider.ctl(&["offers", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = wait_for(Duration::from_secs(30), || {
        let v = consumer.ctl_json(&["offers", "list"]).ok()?;
        (!v.as_array()?.is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());
}

/// Places one unit for `duration`; the contract id.
fn place(consumer: &Daemon, duration: &str) -> String {
    let placed = consumer
        .ctl_json(&["place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", duration])
        .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
    placed["contracts"][0]["contract_id"].as_str().unwrap().to_owned()
}

/// Waits until `series` on `d` is exactly `value`.
fn wait_metric(d: &Daemon, series: &str, value: f64) {
    let got = wait_for(Duration::from_secs(60), || d.metric(series).filter(|v| *v == value));
    assert!(got.is_some(), "{}: {series} is {:?}, never {value}\n{}", d.name, d.metric(series), d.log());
}

/// One line a recording hook appends: `event_id event contract role attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    id: u64,
    event: String,
    contract: String,
    role: String,
    attempt: u32,
}

fn seen(path: &Path) -> Vec<Seen> {
    file_lines(path)
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 5, "{line:?}");
            Seen {
                id: f[0].parse().unwrap(),
                event: f[1].into(),
                contract: f[2].into(),
                role: f[3].into(),
                attempt: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// A hook that fails its first `fails` calls (it counts them in a file),
/// then records every event it is given: a line in `events`, and its stdin
/// in `input-<event id>.json`.
fn recording_hook(dir: &Path, fails: u32) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    shell_script(
        dir,
        "hook.sh",
        &format!(
            r#"calls=$(cat {d}/calls 2>/dev/null || echo 0)
echo $((calls + 1)) > {d}/calls
if [ "$calls" -lt {fails} ]; then
  echo "provisioning API unavailable (call $calls)" >&2
  exit 1
fi
cat > {d}/input-$FULCRUM_EVENT_ID.json
echo "$FULCRUM_EVENT_ID $FULCRUM_EVENT $FULCRUM_CONTRACT_ID $FULCRUM_ROLE $FULCRUM_HOOK_ATTEMPT" >> {d}/events"#
        ),
    )
}

#[test]
fn every_event_reaches_a_failing_hook_once_in_order_and_the_event_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let (provider_dir, consumer_dir) = (tmp.path().join("provider-hook"), tmp.path().join("consumer-hook"));
    let provider_hook = recording_hook(&provider_dir, 2);
    let consumer_hook = recording_hook(&consumer_dir, 0);
    let (provider, consumer) =
        pair(tmp.path(), &hooks_table(&provider_hook, "20s", "300ms"), &hooks_table(&consumer_hook, "20s", "300ms"));
    let mut watches = [provider.watch(), consumer.watch()];
    publish(&provider, &consumer, tmp.path(), 3);

    // Two contracts that run on, one of them terminated; one that expires.
    let kept = place(&consumer, "2h");
    let terminated = place(&consumer, "2h");
    let expiring = place(&consumer, "4s");
    let out = consumer.ctl(&["contracts", "terminate", &terminated, "--reason", "customer-request"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: BTreeSet<(String, String)> = [
        ("active", &kept),
        ("active", &terminated),
        ("active", &expiring),
        ("terminated", &terminated),
        ("expired", &expiring),
    ]
    .iter()
    .map(|(e, c)| ((*e).to_owned(), (*c).clone()))
    .collect();

    for (d, dir, role) in [(&provider, &provider_dir, "provider"), (&consumer, &consumer_dir, "consumer")] {
        // Every run is counted: once all expected ones succeeded, nothing
        // else ran (a second delivery would be one more).
        for (event, ok) in [("active", 3.0), ("terminated", 1.0), ("expired", 1.0)] {
            wait_metric(d, &format!("fulcrum_hook_runs_total{{event=\"{event}\",outcome=\"ok\"}}"), ok);
        }
        wait_metric(d, "fulcrum_hook_backlog", 0.0);
        wait_metric(d, "fulcrum_hook_failures", 0.0);
        let failed = if role == "provider" { 2.0 } else { 0.0 };
        assert_eq!(d.metric("fulcrum_hook_runs_total{event=\"active\",outcome=\"failed\"}"), Some(failed));

        let events = seen(&dir.join("events"));
        let pairs: BTreeSet<(String, String)> = events.iter().map(|s| (s.event.clone(), s.contract.clone())).collect();
        assert_eq!(events.len(), 5, "{}: each event exactly once: {events:?}", d.name);
        assert_eq!(pairs, expected, "{}: {events:?}", d.name);
        // Strictly in log order, each contract's start before its end.
        assert!(events.windows(2).all(|w| w[0].id < w[1].id), "{}: not in log order: {events:?}", d.name);
        for end in events.iter().filter(|s| s.event != "active") {
            let start = events.iter().find(|s| s.event == "active" && s.contract == end.contract).unwrap();
            assert!(start.id < end.id, "{events:?}");
        }
        assert!(events.iter().all(|s| s.role == role), "{events:?}");
        // The first event was tried twice before it went through; the hook
        // was called exactly once more than that for each of the others.
        let first_attempt = if role == "provider" { 3 } else { 1 };
        assert_eq!(events[0].attempt, first_attempt, "{events:?}");
        assert!(events[1..].iter().all(|s| s.attempt == 1), "{events:?}");
        assert_eq!(file_lines(&dir.join("calls")), [(5 + first_attempt - 1).to_string()]);

        // An event id is the log index of the event's record.
        let contracts = d.ctl_json(&["contracts", "list"]).unwrap();
        for s in events.iter().filter(|s| s.event == "active") {
            let c = contracts.as_array().unwrap().iter().find(|c| c["contract_id"] == s.contract.as_str()).unwrap();
            assert_eq!(c["log_index"].as_u64(), Some(s.id), "{c}");
        }

        // What the hook read on stdin.
        for s in &events {
            let input: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("input-{}.json", s.id))).unwrap())
                    .unwrap();
            assert_eq!(input["event"].as_str(), Some(s.event.as_str()), "{input}");
            assert_eq!(input["event_id"].as_u64(), Some(s.id), "{input}");
            assert_eq!(input["role"].as_str(), Some(role), "{input}");
            assert_eq!(input["attempt"].as_u64(), Some(u64::from(s.attempt)), "{input}");
            assert_eq!(input["node_key"].as_str(), Some(d.node_key().as_str()), "{input}");
            assert_eq!(input["federation"].as_str(), Some("dev"), "{input}");
            assert_eq!(input["contract"]["contract_id"].as_str(), Some(s.contract.as_str()), "{input}");
            assert_eq!(input["contract"]["role"].as_str(), Some(role), "{input}");
            assert_eq!(input["contract"]["terms"]["units"].as_u64(), Some(1), "{input}");
            let reason = input["reason"].as_str();
            assert_eq!(reason, (s.event == "terminated").then_some("customer-request"), "{input}");
            if s.event == "expired" {
                let end = input["contract"]["terms"]["end_ms"].as_u64().unwrap();
                assert!(input["at_ms"].as_u64().unwrap() >= end, "{input}");
                assert_eq!(input["contract"]["state"].as_str(), Some("ended"), "{input}");
            }
        }
    }

    // The admin event stream carried the same events, on both sides.
    for watch in &mut watches {
        let got = watch.until(Duration::from_secs(30), |seen| {
            let pairs: BTreeSet<(String, String)> = seen
                .iter()
                .map(|e| {
                    (
                        e["event"].as_str().unwrap_or("").to_owned(),
                        e["contract"]["contract_id"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            pairs == expected
        });
        assert!(got, "the event stream saw {:?}", watch.pairs());
        assert_eq!(watch.seen.len(), 5, "{:?}", watch.pairs());
    }
}

/// Negotiation never waits for hooks: contracts are made while the hook of
/// the first one is still running, and the others queue behind it in log
/// order. A stop kills the running hook (with what it started); after the
/// restart it runs again and the queue drains, each event once.
#[test]
fn a_slow_hook_holds_up_no_contract_and_resumes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hook");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // The first run of all sleeps for minutes; every run after it is quick.
    let hook = shell_script(
        &dir,
        "slow.sh",
        &format!(
            r#"echo "$FULCRUM_EVENT_ID" >> {d}/started
if [ ! -e {d}/slept ]; then
  touch {d}/slept
  echo $$ > {d}/pid
  sleep 300
fi
echo "$FULCRUM_EVENT_ID" >> {d}/finished"#
        ),
    );
    let table = format!("[hooks]\non_active = [\"{}\"]\ntimeout = \"10m\"\n", hook.display());
    let (mut provider, consumer) = pair(tmp.path(), &table, "");
    publish(&provider, &consumer, tmp.path(), 8);

    let contracts: Vec<String> = (0..4).map(|_| place(&consumer, "2h")).collect();
    // All four are durable on the provider, while the first hook sleeps.
    wait_metric(&provider, "fulcrum_hook_backlog", 4.0);
    let active = provider.ctl_json(&["contracts", "list", "--active"]).unwrap();
    assert_eq!(active.as_array().unwrap().len(), 4, "{active}");
    assert_eq!(file_lines(&dir.join("started")).len(), 1, "hooks run one at a time:\n{}", provider.log());
    assert!(file_lines(&dir.join("finished")).is_empty());
    let first_id = file_lines(&dir.join("started"))[0].clone();

    // A graceful stop kills the sleeping hook and everything it started.
    let pid = file_lines(&dir.join("pid"))[0].clone();
    assert_eq!(provider.terminate(), Some(0), "{}", provider.log());
    let gone = wait_for(Duration::from_secs(30), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")).then_some(())
    });
    assert!(gone.is_some(), "the hook outlived the daemon");

    // After the restart the interrupted event runs again, then the rest, in order.
    provider.spawn();
    let done = wait_for(Duration::from_secs(60), || (file_lines(&dir.join("finished")).len() >= 4).then_some(()));
    assert!(done.is_some(), "{:?}\n{}", file_lines(&dir.join("finished")), provider.log());
    wait_metric(&provider, "fulcrum_hook_backlog", 0.0);
    let finished = file_lines(&dir.join("finished"));
    assert_eq!(finished.len(), 4, "each event once: {finished:?}");
    assert_eq!(finished[0], first_id);
    let ids: Vec<u64> = finished.iter().map(|id| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(file_lines(&dir.join("started")), [vec![first_id], finished].concat());
    // The event ids are the contracts' records.
    let listed = provider.ctl_json(&["contracts", "list"]).unwrap();
    let mut indices: Vec<u64> = listed.as_array().unwrap().iter().map(|c| c["log_index"].as_u64().unwrap()).collect();
    indices.sort_unstable();
    assert_eq!(indices, ids);
    assert_eq!(listed.as_array().unwrap().len(), contracts.len());
}
