//! Two release daemons on loopback, driven through the admin gRPC API:
//! contracts per second with 64 placements in flight, latency of uncontended
//! placements, and, measured in the same run on the same disk, the floor: the
//! signature and fsync work one contract needs. Also the idle daemons' RSS.
//!
//! `cargo bench -p fulcrum-e2e --bench federation`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::time::{Duration, Instant};

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::contract::{ContractTerms, SignedContract};
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{HoldId, NegotiationId};
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::offer::{Country, Flavour, Price, Resources, Site};

fn place_request() -> wire::PlaceRequest {
    wire::PlaceRequest {
        units: 1,
        min_per_unit: Some(wire::Resources { vcpu: 8, memory_mib: 16_384, ..Default::default() }),
        duration_ms: 3_600_000,
        ..Default::default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
}

/// The unavoidable work of one contract across both sides: the signatures
/// made and checked (propose, hold, commit with the consumer's contract
/// signature, countersigned with the provider's), and three fsyncs (the
/// consumer's pending record, the provider's contract, the consumer's
/// contract), measured on the daemons' own file system.
fn floor(dir: &std::path::Path) -> (Duration, Duration) {
    let (p, c) = (Identity::from_secret_bytes(&[1; 32]), Identity::from_secret_bytes(&[2; 32]));
    let limits = Limits::default();
    let terms = ContractTerms {
        federation: "dev".into(),
        provider: p.public(),
        consumer: c.public(),
        offer_id: "o".into(),
        offer_seq: 1,
        hold_id: HoldId([1; 16]),
        negotiation_id: NegotiationId([2; 16]),
        site: Site { country: Country::parse("DE").unwrap(), region: "r".into(), datacenter: "d".into() },
        flavour: Flavour { name: "f".into(), per_unit: Resources { vcpu: 8, ..Resources::default() } },
        units: 1,
        unit_price_per_hour: Price::eur(1),
        start_ms: 1,
        end_ms: 2,
        created_at_ms: 1,
    };
    let body = terms.encode();
    let n = 300;
    let start = Instant::now();
    for _ in 0..n {
        // 4 envelopes sealed and opened (propose, hold, commit, countersigned).
        for (who, kind) in [(&c, Kind::Propose), (&p, Kind::Hold), (&c, Kind::Commit), (&p, Kind::Countersigned)] {
            let e = Envelope::seal(who, kind, body.clone());
            Envelope::decode(&e.encode(), usize::MAX).unwrap();
        }
        // The contract signed by both and checked by both.
        let signed = SignedContract::sign_as_consumer(&c, body.clone(), &limits).unwrap().countersign(&p).unwrap();
        SignedContract::from_wire(signed.to_wire(), &limits, true).unwrap();
        SignedContract::from_wire(signed.to_wire(), &limits, true).unwrap();
    }
    let crypto = start.elapsed() / n;
    let path = dir.join("fsync-floor");
    let mut f = std::fs::File::create(&path).unwrap();
    let frame = vec![0x5a; 600];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&frame).unwrap();
        f.sync_data().unwrap();
    }
    let fsync = start.elapsed() / n;
    let _ = std::fs::remove_file(&path);
    (crypto, fsync)
}

fn main() {
    // Release daemons (the harness builds them for the bench profile).
    let tmp = tempfile::tempdir().unwrap();
    let fast =
        [("FULCRUM_PEER_RATE_PER_SEC", "1000000"), ("FULCRUM_PEER_BURST", "1000000"), ("FULCRUM_LOG_LEVEL", "warn")];
    let provider = Daemon::start_with(tmp.path(), "provider", &[], &fast);
    let consumer = Daemon::start_with(tmp.path(), "consumer", &[provider.addr()], &fast);
    let file = offer_file(tmp.path(), "bench", "DE", 1_000_000, "0.10");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || consumer
            .ctl_json(&["offers", "list"])
            .ok()
            .filter(|v| v.to_string().contains("bench")))
        .is_some()
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle = (rss_kib(provider.pid()), rss_kib(consumer.pid()));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = consumer.socket();
    let (latencies, rate, made) = rt.block_on(async move {
        let mut client =
            fulcrum_node::admin::client::connect(&fulcrum_node::admin::client::AdminTarget::Socket(socket.clone()))
                .await
                .unwrap();
        for _ in 0..50 {
            client.place(place_request()).await.unwrap(); // warm-up
        }
        let mut latencies = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            let r = client.place(place_request()).await.unwrap().into_inner();
            latencies.push(t.elapsed());
            assert_eq!(r.contracts.len(), 1);
        }
        latencies.sort();
        let per_task = 80;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u32;
                for _ in 0..per_task {
                    if c.place(place_request()).await.map(|r| r.into_inner().contracts.len()).unwrap_or(0) == 1 {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut made = 0;
        for t in tasks {
            made += t.await.unwrap();
        }
        (latencies, f64::from(made) / start.elapsed().as_secs_f64(), made)
    });
    let (crypto, fsync) = floor(&provider.dir);
    let floor_latency = crypto + fsync * 3;
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    // Two cores share the crypto of both daemons; fsyncs overlap by group commit.
    let floor_rate = 2.0 / crypto.as_secs_f64();
    println!("machine: {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("floor per contract: signatures {crypto:.2?} + 3 x fsync {fsync:.2?} = {floor_latency:.2?}");
    println!(
        "uncontended placement (500 sequential): p50 {p50:.2?}  p99 {p99:.2?}  (p50 / floor = {:.2})",
        p50.as_secs_f64() / floor_latency.as_secs_f64()
    );
    println!(
        "throughput, 64 in flight: {rate:.0} contracts/s ({made} contracts)  (floor, crypto-bound on 2 cores: {floor_rate:.0}/s, ratio {:.2})",
        rate / floor_rate
    );
    println!("idle RSS: provider {} KiB, consumer {} KiB", idle.0, idle.1);
}
