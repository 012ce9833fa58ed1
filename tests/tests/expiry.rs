//! Contracts expire at their end time on both sides: a record in each log
//! (verified by the audit), the `expired` event on the admin stream, the
//! hook, and the contract's units free again. A provider that was down at
//! the end records the expiry and runs the hook when it starts, once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_e2e::events::{file_lines, hooks_table, shell_script, short_offer_file};
use fulcrum_e2e::{Daemon, wait_for};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Places the provider's one unit for `duration`: the contract's id and end.
fn place(consumer: &Daemon, duration: &str) -> Result<(String, u64), String> {
    let placed = consumer.ctl_json(&[
        "place",
        "--units",
        "1",
        "--vcpu",
        "8",
        "--memory-mib",
        "16384",
        "--duration",
        duration,
    ])?;
    let id = placed["contracts"][0]["contract_id"].as_str().ok_or(format!("no contract: {placed}"))?.to_owned();
    let show = consumer.ctl_json(&["contracts", "show", &id])?;
    Ok((id, show["terms"]["end_ms"].as_u64().unwrap()))
}

fn state(d: &Daemon, id: &str) -> String {
    let view = d.ctl_json(&["contracts", "show", id]).unwrap_or_else(|e| panic!("{}: {e}", d.name));
    view["state"].as_str().unwrap().to_owned()
}

/// `fulcrumctl audit verify` of the node's own log: the report.
fn audit(d: &Daemon) -> Value {
    let report = d.ctl_json(&["audit", "verify"]).unwrap_or_else(|e| panic!("{}: {e}\n{}", d.name, d.log()));
    assert!(report["first_failure"].is_null(), "{}: {report}", d.name);
    report
}

#[test]
fn a_provider_down_at_the_end_records_the_expiry_and_runs_the_hook_when_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hook");
    std::fs::create_dir_all(&dir).unwrap();
    let hook = shell_script(
        &dir,
        "record.sh",
        &format!(
            "cat > {d}/input-$FULCRUM_EVENT_ID.json\necho \"$FULCRUM_EVENT_ID $FULCRUM_EVENT $FULCRUM_CONTRACT_ID\" >> \
             {d}/events",
            d = dir.display()
        ),
    );
    let events = || -> Vec<(u64, String, String)> {
        file_lines(&dir.join("events"))
            .iter()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                (f[0].parse().unwrap(), f[1].to_owned(), f[2].to_owned())
            })
            .collect()
    };
    let mut provider = Daemon::init(tmp.path(), "provider", &[], &[]);
    provider.append_config(&hooks_table(&hook, "30s", "1s"));
    provider.spawn();
    let consumer = Daemon::start(tmp.path(), "consumer", &[provider.addr()]);
    let mut watch = consumer.watch();
    let file = short_offer_file(tmp.path(), "fra1-c8m32", 1);
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(30), || {
        (!consumer.ctl_json(&["offers", "list"]).ok()?.as_array()?.is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());

    // The provider's only unit, for a short while; it stops before the end.
    let (first, end_ms) = place(&consumer, "15s").unwrap_or_else(|e| panic!("{e}\n{}", consumer.log()));
    assert_eq!(state(&provider, &first), "active");
    assert!(place(&consumer, "15s").is_err(), "the provider has no second unit");
    assert_eq!(provider.terminate(), Some(0), "{}", provider.log());
    assert!(now_ms() < end_ms, "the provider took until the contract's end to stop; the test needs it down then");

    // The consumer, up all along, records the expiry at the end.
    let expired = watch.until(Duration::from_secs(60), |seen| {
        seen.iter().any(|e| e["event"] == "expired" && e["contract"]["contract_id"] == first.as_str())
    });
    assert!(expired, "no expired event on the consumer's stream: {:?}\n{}", watch.pairs(), consumer.log());
    assert!(now_ms() >= end_ms);
    assert_eq!(state(&consumer, &first), "ended");
    assert_eq!(audit(&consumer)["expiries"].as_u64(), Some(1));
    assert!(!events().iter().any(|(_, event, _)| event == "expired"), "{:?}", events());

    // The provider starts after the end: it catches up.
    let restarted_at = now_ms();
    provider.spawn();
    let ran = wait_for(Duration::from_secs(60), || events().iter().find(|(_, e, _)| e == "expired").cloned());
    let (expiry_id, _, contract) = ran.unwrap_or_else(|| panic!("the expiry hook never ran:\n{}", provider.log()));
    assert_eq!(contract, first);
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("input-{expiry_id}.json"))).unwrap()).unwrap();
    assert_eq!((input["event"].as_str(), input["role"].as_str()), (Some("expired"), Some("provider")), "{input}");
    // Recorded at start-up, not back-dated to the end.
    assert!(input["at_ms"].as_u64().unwrap() >= restarted_at, "{input}");
    assert_eq!(state(&provider, &first), "ended");
    let report = audit(&provider);
    assert_eq!((report["contracts"].as_u64(), report["expiries"].as_u64()), (Some(1), Some(1)), "{report}");
    for (d, role) in [(&provider, "provider"), (&consumer, "consumer")] {
        let series = format!("fulcrum_contracts_total{{role=\"{role}\",event=\"expired\"}}");
        let counted = wait_for(Duration::from_secs(30), || d.metric(&series).filter(|v| *v == 1.0));
        assert!(counted.is_some(), "{}: {series} = {:?}", d.name, d.metric(&series));
    }

    // Its unit is free again.
    let again = wait_for(Duration::from_secs(30), || place(&consumer, "1h").ok());
    let (second, _) = again.unwrap_or_else(|| panic!("the expired contract's unit was not freed:\n{}", provider.log()));

    // Exactly once: after another restart, the next event's hook runs with
    // no second expiry before it (hooks run in log order).
    assert_eq!(provider.terminate(), Some(0), "{}", provider.log());
    provider.spawn();
    let out = consumer.ctl(&["contracts", "terminate", &second, "--reason", "customer-request"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended = wait_for(Duration::from_secs(60), || events().iter().any(|(_, e, _)| e == "terminated").then_some(()));
    assert!(ended.is_some(), "the provider never ran the termination hook:\n{}", provider.log());
    let got: Vec<(String, String)> = events().into_iter().map(|(_, event, contract)| (event, contract)).collect();
    let want = [("active", &first), ("expired", &first), ("active", &second), ("terminated", &second)];
    assert_eq!(got, want.map(|(e, c)| (e.to_owned(), c.clone())), "{:?}", events());
    assert!(events().windows(2).all(|w| w[0].0 < w[1].0), "{:?}", events());
    let report = audit(&provider);
    let counts = (report["contracts"].as_u64(), report["expiries"].as_u64(), report["terminations"].as_u64());
    assert_eq!(counts, (Some(2), Some(1), Some(1)), "{report}");
    assert_eq!(audit(&consumer)["expiries"].as_u64(), Some(1));
}
