//! `fulcrumctl` as an operator runs it: the real binary, against no daemon, a
//! stale socket, bad input, and a scripted stand-in for the daemon's admin API
//! (so the CLI is checked against the API, not against one daemon build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};

use fulcrum_proto::Message;
use fulcrum_proto::v1 as wire;
use fulcrum_proto::v1::admin_server::{Admin, AdminServer};
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_fulcrumctl");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/offers")
}

fn command(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.args(args).env_remove("FULCRUM_SOCKET").env_remove("FULCRUM_DATA_DIR");
    c
}

fn run(args: &[&str]) -> Output {
    command(args).output().expect("run fulcrumctl")
}

async fn run_async(args: &[&str]) -> Output {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args).env_remove("FULCRUM_SOCKET").env_remove("FULCRUM_DATA_DIR");
    c.output().await.expect("run fulcrumctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts the failure contract: exit code, nothing on stdout unless asked,
/// exactly one stderr line starting with `error: `. Returns that line.
fn failure(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit status; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "want exactly one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_owned()
}

// ---- no daemon -------------------------------------------------------------

#[test]
fn missing_socket_says_daemon_not_running() {
    let out = run(&["--socket", "/nonexistent/admin.sock", "status"]);
    let line = failure(&out, 1);
    assert!(line.starts_with("error: daemon not running"), "{line}");
    assert!(line.contains("/nonexistent/admin.sock"), "{line}");
    assert!(line.contains("fulcrumd run --data-dir /nonexistent"), "{line}");
    assert!(out.stdout.is_empty());
}

#[test]
fn socket_comes_from_data_dir_and_environment() {
    let line = failure(&run(&["--data-dir", "/nonexistent/dd", "peers"]), 1);
    assert!(line.contains("no socket at /nonexistent/dd/admin.sock"), "{line}");

    let out = command(&["status"]).env("FULCRUM_DATA_DIR", "/nonexistent/env-dd").output().unwrap();
    assert!(failure(&out, 1).contains("/nonexistent/env-dd/admin.sock"));

    let out = command(&["status"])
        .env("FULCRUM_DATA_DIR", "/nonexistent/env-dd")
        .env("FULCRUM_SOCKET", "/nonexistent/env.sock")
        .output()
        .unwrap();
    assert!(failure(&out, 1).contains("/nonexistent/env.sock"));

    // A flag typed now beats the environment, even --data-dir over FULCRUM_SOCKET.
    let out = command(&["status", "--data-dir", "/nonexistent/flag"])
        .env("FULCRUM_SOCKET", "/nonexistent/env.sock")
        .output()
        .unwrap();
    assert!(failure(&out, 1).contains("/nonexistent/flag/admin.sock"));

    let line = failure(&run(&["status"]), 1);
    assert!(line.contains("./fulcrum-data/admin.sock"), "{line}");
}

#[test]
fn stale_socket_says_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    // Dropping a std listener leaves its socket file behind, as a crashed daemon does.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let line = failure(&run(&["--socket", socket.to_str().unwrap(), "status"]), 1);
    assert!(line.starts_with("error: daemon not running: nothing listens on"), "{line}");
    assert!(line.contains("stale socket"), "{line}");
}

#[test]
fn regular_file_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let line = failure(&run(&["--socket", file.to_str().unwrap(), "contracts", "list"]), 1);
    assert!(line.contains("is not a socket"), "{line}");
}

#[test]
fn unreadable_socket_says_permission_denied() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0) == 0 {
        eprintln!("skipped: root bypasses file permissions");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
    let line = failure(&run(&["--socket", socket.to_str().unwrap(), "status"]), 1);
    assert!(line.starts_with("error: permission denied"), "{line}");
}

// ---- bad input: exit 2, checked before any daemon is asked -----------------

#[test]
fn usage_errors_exit_2_with_one_line() {
    let line = failure(&run(&["place", "--vcpu", "4", "--memory-mib", "8192"]), 2);
    assert!(line.contains("--units"), "{line}");
    assert!(line.contains("fulcrumctl place --help"), "{line}");

    for (args, needle) in [
        (
            &["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--max-unit-price", "0.1234567"][..],
            "6 decimals",
        ),
        (&["place", "--units", "0", "--vcpu", "4", "--memory-mib", "1"][..], "--units"),
        (&["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--duration", "1.5h"][..], "--duration"),
        (&["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--country", "Germany"][..], "ISO 3166-1"),
        (&["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--spread", "racks"][..], "--spread"),
        (&["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--min-sla", "1001"][..], "--min-sla"),
        (&["place", "--units", "1", "--vcpu", "4", "--memory-mib", "1", "--start", "tomorrow"][..], "RFC 3339"),
        (&["offers", "list", "--label", "iso 27001"][..], "whitespace"),
        (&["contracts", "show", "abc"][..], "prefix of 8"),
        (&["contracts", "terminate", "abcdef12", "--reason", "bored"][..], "--reason"),
        (&["contracts", "frobnicate"][..], "frobnicate"),
        (&[][..], "needs a command: status, peers, offers, place, contracts"),
    ] {
        let line = failure(&run(args), 2);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn help_and_version_succeed() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for word in ["status", "peers", "offers", "place", "contracts", "--socket", "--data-dir", "--json"] {
        assert!(help.contains(word), "{word} missing from help:\n{help}");
    }
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("fulcrumctl "));
}

#[test]
fn publish_missing_or_bad_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    // No daemon is running: the file is checked first.
    let line =
        failure(&run(&["--socket", "/nonexistent/admin.sock", "offers", "publish", missing.to_str().unwrap()]), 2);
    assert!(line.contains("missing.toml"), "{line}");

    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(examples().join("de-general.toml")).unwrap();
    std::fs::write(&bad, text.replace("per_unit_hour = \"0.42\"", "per_unit_hour = 0.42")).unwrap();
    let line = failure(&run(&["--socket", "/nonexistent/admin.sock", "offers", "publish", bad.to_str().unwrap()]), 2);
    assert!(line.contains("bad.toml") && line.contains("price.per_unit_hour"), "{line}");
}

// ---- against a scripted admin API -------------------------------------------

/// What the stand-in daemon received, so tests can check what the CLI sent.
#[derive(Debug, Default)]
struct Seen {
    publish: Option<wire::PublishOfferRequest>,
    list_offers: Option<wire::ListOffersRequest>,
    place: Option<wire::PlaceRequest>,
    show: Option<wire::ContractQuery>,
    terminate: Option<wire::TerminateContractRequest>,
    terminate_placement: Option<wire::TerminatePlacementRequest>,
}

#[derive(Debug, Clone, Default)]
struct MockDaemon {
    seen: Arc<Mutex<Seen>>,
}

const NODE_KEY: [u8; 32] = [0x11; 32];
const OTHER_KEY: [u8; 32] = [0x22; 32];

fn id_a() -> Vec<u8> {
    vec![0xab; 32]
}

fn id_b() -> Vec<u8> {
    let mut id = vec![0xab; 32];
    id[4] = 0xcd;
    id
}

fn id_c() -> Vec<u8> {
    vec![0x12; 32]
}

fn site(country: &str, dc: &str) -> wire::Site {
    wire::Site { country: country.into(), region: "r".into(), datacenter: dc.into() }
}

fn flavour() -> wire::Flavour {
    wire::Flavour {
        name: "c8m32".into(),
        per_unit: Some(wire::Resources { vcpu: 8, memory_mib: 32768, storage_gib: 200, gpus: vec![] }),
    }
}

fn eur(micros: u64) -> Option<wire::Price> {
    Some(wire::Price { currency: "EUR".into(), micros })
}

fn contract(id: Vec<u8>, state: wire::ContractState, send_body: bool) -> wire::ContractView {
    let body = wire::ContractBody {
        federation: "eu-sovereign".into(),
        provider: OTHER_KEY.to_vec(),
        consumer: NODE_KEY.to_vec(),
        offer_id: "fra1-c8m32".into(),
        offer_seq: 3,
        hold_id: vec![0x33; 16],
        negotiation_id: vec![0x44; 16],
        site: Some(site("DE", "fra1")),
        flavour: Some(flavour()),
        units: 2,
        unit_price_per_hour: eur(420_000),
        start_ms: 1_763_884_800_000,
        end_ms: 1_763_884_800_000 + 720 * 3_600_000,
        created_at_ms: 1_763_884_700_000,
    };
    wire::ContractView {
        contract_id: id,
        contract: Some(wire::SignedContract {
            body: body.encode_to_vec(),
            consumer_signature: vec![0x77; 64],
            provider_signature: vec![0x88; 64],
        }),
        body: send_body.then_some(body),
        state: state as i32,
        role: "consumer".into(),
        log_index: 17,
    }
}

fn all_contracts() -> Vec<wire::ContractView> {
    vec![
        contract(id_a(), wire::ContractState::Active, true),
        contract(id_b(), wire::ContractState::Ended, true),
        // Without the decoded body: the CLI must read the terms from the signed bytes.
        contract(id_c(), wire::ContractState::Active, false),
    ]
}

fn placement_a() -> Vec<u8> {
    vec![0x5a; 16]
}

fn placement_b() -> Vec<u8> {
    let mut id = vec![0x5a; 16];
    id[5] = 0x0b;
    id
}

fn placement(id: Vec<u8>, state: &str, contracts: Vec<Vec<u8>>) -> wire::PlacementView {
    let partial = state == "partial-repaired";
    wire::PlacementView {
        placement_id: id,
        state: state.into(),
        terms: Some(wire::PlacementTerms {
            units: 2,
            spread: wire::Spread::Countries as i32,
            min_per_unit: Some(wire::Resources { vcpu: 8, memory_mib: 16_384, ..wire::Resources::default() }),
            countries: vec!["DE".into(), "FR".into()],
            labels: vec!["iso:27001".into()],
            attested_labels: true,
            min_sla_permille: 995,
            max_unit_price: eur(500_000),
            start_ms: 1_763_884_800_000,
            duration_ms: 720 * 3_600_000,
        }),
        contracts: contracts
            .into_iter()
            .map(|c| {
                let state = if partial { wire::ContractState::Terminated } else { wire::ContractState::Active };
                contract(c, state, true)
            })
            .collect(),
        unresolved: if partial { vec![vec![0x77; 32]] } else { vec![] },
        attempts: if partial { 3 } else { 1 },
        reason: if partial { "no answer to a commit before the deadline".into() } else { String::new() },
        started_at_ms: 1_763_884_800_000,
        updated_at_ms: 1_763_884_803_000,
        log_index: 9,
    }
}

fn all_placements() -> Vec<wire::PlacementView> {
    vec![placement(placement_a(), "complete", vec![id_a()]), placement(placement_b(), "partial-repaired", vec![id_b()])]
}

fn offer_view(offer_id: &str, country: &str, micros: u64, labels: &[&str], attested: &[&str]) -> wire::OfferView {
    wire::OfferView {
        envelope: Some(wire::Envelope {
            kind: "offer".into(),
            body: vec![1, 2, 3],
            signer: OTHER_KEY.to_vec(),
            signature: vec![9; 64],
        }),
        offer: Some(wire::Offer {
            provider: OTHER_KEY.to_vec(),
            federation: "eu-sovereign".into(),
            offer_id: offer_id.into(),
            seq: 7,
            issued_at_ms: 1_763_884_800_000,
            expires_at_ms: 1_763_888_400_000,
            site: Some(site(country, "dc1")),
            flavour: Some(flavour()),
            units_available: 24,
            unit_price_per_hour: eur(micros),
            min_duration_ms: 3_600_000,
            max_duration_ms: 8760 * 3_600_000,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            sla_permille: 999,
        }),
        attested_labels: attested.iter().map(|l| (*l).to_owned()).collect(),
        received_at_ms: 1_763_884_801_000,
    }
}

type EventStream = Pin<Box<dyn futures::Stream<Item = Result<wire::ContractEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for MockDaemon {
    async fn status(&self, _: Request<wire::StatusQuery>) -> Result<Response<wire::NodeStatus>, Status> {
        Ok(Response::new(wire::NodeStatus {
            node_key: NODE_KEY.to_vec(),
            peer_id: "12D3KooWMock".into(),
            federation: "eu-sovereign".into(),
            listen_addrs: vec!["/ip4/10.0.0.1/tcp/4001".into(), "/ip4/10.0.0.1/udp/4001/quic-v1".into()],
            connected_peers: 3,
            offers_known: 120,
            offers_own: 2,
            contracts_active: 5,
            log_size: 42,
            log_root: vec![0xee; 32],
            uptime_ms: 3 * 3_600_000 + 12 * 60_000,
            version: "0.1.0".into(),
            checkpoint_size: 42,
            evidence: 0,
            witnessed_nodes: 3,
            membership: "open".into(),
            certificate_not_after_ms: 0,
            members_known: 0,
        }))
    }

    async fn peers(&self, _: Request<wire::PeersQuery>) -> Result<Response<wire::PeerList>, Status> {
        Ok(Response::new(wire::PeerList {
            peers: vec![wire::PeerView {
                peer_id: "12D3KooWPeerOne".into(),
                addrs: vec!["/ip4/10.0.0.2/tcp/4001".into()],
                score: 12,
                connected_since_ms: 0,
                node_key: vec![0x22; 32],
                log_size: 17,
                evidence: 1,
            }],
        }))
    }

    async fn publish_offer(
        &self,
        request: Request<wire::PublishOfferRequest>,
    ) -> Result<Response<wire::OfferView>, Status> {
        let request = request.into_inner();
        self.seen.lock().unwrap().publish = Some(request.clone());
        let mut offer = request.offer.ok_or_else(|| Status::invalid_argument("no offer"))?;
        offer.provider = NODE_KEY.to_vec();
        offer.seq = 7;
        offer.expires_at_ms = 1_763_888_400_000;
        Ok(Response::new(wire::OfferView {
            envelope: None,
            offer: Some(offer),
            attested_labels: vec![],
            received_at_ms: 0,
        }))
    }

    async fn withdraw_offer(
        &self,
        request: Request<wire::WithdrawOfferRequest>,
    ) -> Result<Response<wire::OfferView>, Status> {
        let id = request.into_inner().offer_id;
        if id == "nope" {
            return Err(Status::not_found(format!("no offer {id} is published by this node")));
        }
        let mut view = offer_view(&id, "DE", 420_000, &[], &[]);
        if let Some(o) = view.offer.as_mut() {
            o.units_available = 0;
            o.seq = 8;
        }
        Ok(Response::new(view))
    }

    async fn list_offers(
        &self,
        request: Request<wire::ListOffersRequest>,
    ) -> Result<Response<wire::OfferList>, Status> {
        self.seen.lock().unwrap().list_offers = Some(request.into_inner());
        Ok(Response::new(wire::OfferList {
            offers: vec![
                offer_view("fra1-c8m32", "DE", 420_000, &["iso:27001"], &["iso:27001"]),
                offer_view("par2-m16g128", "FR", 1_180_000, &["gaia-x:level-2"], &[]),
            ],
        }))
    }

    async fn place(&self, request: Request<wire::PlaceRequest>) -> Result<Response<wire::PlaceResult>, Status> {
        let request = request.into_inner();
        self.seen.lock().unwrap().place = Some(request.clone());
        if request.units > 100 {
            return Ok(Response::new(wire::PlaceResult {
                explanation: format!("no offer has {} units\nDE: 3 offers, all too small", request.units),
                ..wire::PlaceResult::default()
            }));
        }
        if request.dry_run {
            let plan = wire::PlannedAllocation {
                provider: OTHER_KEY.to_vec(),
                offer_id: "fra1-c8m32".into(),
                offer_seq: 3,
                site: Some(site("DE", "fra1")),
                units: request.units,
                unit_price: eur(420_000),
            };
            return Ok(Response::new(wire::PlaceResult {
                plan: vec![plan],
                explanation: "dry run: 1 unit for 0.420000 EUR per hour: 1 on 22222222/fra1-c8m32 (DE) at 0.420000 EUR"
                    .into(),
                ..wire::PlaceResult::default()
            }));
        }
        Ok(Response::new(wire::PlaceResult {
            contracts: vec![contract(id_a(), wire::ContractState::Active, true)],
            placement_id: placement_a(),
            placement_state: "complete".into(),
            ..wire::PlaceResult::default()
        }))
    }

    async fn list_placements(
        &self,
        _: Request<wire::ListPlacementsRequest>,
    ) -> Result<Response<wire::PlacementList>, Status> {
        Ok(Response::new(wire::PlacementList { placements: all_placements() }))
    }

    async fn show_placement(
        &self,
        request: Request<wire::PlacementQuery>,
    ) -> Result<Response<wire::PlacementView>, Status> {
        let id = request.into_inner().placement_id;
        all_placements()
            .into_iter()
            .find(|p| p.placement_id == id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such placement"))
    }

    async fn terminate_placement(
        &self,
        request: Request<wire::TerminatePlacementRequest>,
    ) -> Result<Response<wire::PlacementView>, Status> {
        let request = request.into_inner();
        self.seen.lock().unwrap().terminate_placement = Some(request.clone());
        if request.placement_id == placement_b() {
            // As the daemon answers when some contracts could not be terminated.
            let (placement, contract) = (hex::encode(placement_b()), "77".repeat(32));
            return Err(Status::failed_precondition(format!(
                "placement {placement}: 1 of 2 active contracts not terminated: {contract}: no active contract {contract}"
            )));
        }
        let mut view = placement(request.placement_id, "complete", vec![id_a()]);
        for c in &mut view.contracts {
            c.state = wire::ContractState::Terminated as i32;
        }
        Ok(Response::new(view))
    }

    async fn list_contracts(
        &self,
        request: Request<wire::ListContractsRequest>,
    ) -> Result<Response<wire::ContractList>, Status> {
        let active_only = request.into_inner().active_only;
        let contracts = all_contracts()
            .into_iter()
            .filter(|c| !active_only || c.state == wire::ContractState::Active as i32)
            .collect();
        Ok(Response::new(wire::ContractList { contracts }))
    }

    async fn show_contract(
        &self,
        request: Request<wire::ContractQuery>,
    ) -> Result<Response<wire::ContractView>, Status> {
        let query = request.into_inner();
        self.seen.lock().unwrap().show = Some(query.clone());
        all_contracts()
            .into_iter()
            .find(|c| c.contract_id == query.contract_id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such contract"))
    }

    async fn terminate_contract(
        &self,
        request: Request<wire::TerminateContractRequest>,
    ) -> Result<Response<wire::ContractView>, Status> {
        let request = request.into_inner();
        self.seen.lock().unwrap().terminate = Some(request.clone());
        Ok(Response::new(contract(request.contract_id, wire::ContractState::Terminated, true)))
    }

    type WatchContractsStream = EventStream;

    async fn audit_evidence(&self, _: Request<wire::EvidenceQuery>) -> Result<Response<wire::EvidenceList>, Status> {
        Ok(Response::new(wire::EvidenceList::default()))
    }

    async fn audit_prove(&self, _: Request<wire::ProveRequest>) -> Result<Response<wire::ProveResult>, Status> {
        Err(Status::failed_precondition("the other party is not connected; try again when it is"))
    }

    async fn publish_revocation(
        &self,
        _: Request<wire::PublishRevocationRequest>,
    ) -> Result<Response<wire::PublishRevocationResult>, Status> {
        Err(Status::failed_precondition("revocation refused: 1 valid signatures, 2 needed"))
    }

    type AuditExportStream = Pin<Box<dyn futures::Stream<Item = Result<wire::ExportChunk, Status>> + Send>>;

    async fn audit_export(&self, _: Request<wire::ExportRequest>) -> Result<Response<Self::AuditExportStream>, Status> {
        Err(Status::internal("export failed: disk on fire"))
    }

    type BackupStream = Pin<Box<dyn futures::Stream<Item = Result<wire::ExportChunk, Status>> + Send>>;

    async fn backup(&self, _: Request<wire::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::internal("backup failed: disk on fire"))
    }

    async fn watch_contracts(
        &self,
        _: Request<wire::WatchContractsRequest>,
    ) -> Result<Response<Self::WatchContractsStream>, Status> {
        let events = vec![
            Ok(wire::ContractEvent {
                event: "active".into(),
                contract: Some(contract(id_a(), wire::ContractState::Active, true)),
                at_ms: 1_763_884_800_000,
            }),
            Ok(wire::ContractEvent {
                event: "expired".into(),
                contract: Some(contract(id_b(), wire::ContractState::Ended, true)),
                at_ms: 1_763_884_900_000,
            }),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }
}

/// Serves the stand-in on a fresh socket; the directory lives as long as the guard.
async fn mock_daemon() -> (tempfile::TempDir, String, MockDaemon) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let daemon = MockDaemon::default();
    let service = AdminServer::new(daemon.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (dir, socket.to_str().unwrap().to_owned(), daemon)
}

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_human_and_json() {
    let (_dir, socket, _) = mock_daemon().await;
    let out = run_async(&["--socket", &socket, "status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    for needle in [
        &format!("node key      {}", "11".repeat(32))[..],
        "peer id       12D3KooWMock",
        "federation    eu-sovereign",
        "listen addrs  /ip4/10.0.0.1/tcp/4001, /ip4/10.0.0.1/udp/4001/quic-v1",
        "peers         3 connected",
        "offers        120 known, 2 own",
        "contracts     5 active",
        "log size      42 records",
        &format!("log root      {}", "ee".repeat(32))[..],
        "uptime        3h12m",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // --json is global: it may come after the subcommand too.
    let v = json(&run_async(&["--socket", &socket, "status", "--json"]).await);
    assert_eq!(v["node_key"], "11".repeat(32));
    assert_eq!(v["offers_known"], 120);
    assert_eq!(v["log_size"], 42);
    assert_eq!(v["listen_addrs"][1], "/ip4/10.0.0.1/udp/4001/quic-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_table_and_json() {
    let (_dir, socket, _) = mock_daemon().await;
    let out = run_async(&["--socket", &socket, "peers"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("PEER ID          CONNECTED  SCORE  LOG  EVIDENCE  ADDRESSES\n"), "{text}");
    assert!(text.contains("12D3KooWPeerOne          -     12   17     1 (!)  /ip4/10.0.0.2/tcp/4001"), "{text}");
    let v = json(&run_async(&["--json", "--socket", &socket, "peers"]).await);
    assert_eq!(v[0]["score"], 12);
    assert_eq!(v[0]["node_key"], "22".repeat(32));
    assert_eq!((v[0]["log_size"].as_u64(), v[0]["evidence"].as_u64()), (Some(17), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sends_the_unsigned_offer_and_ttl() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let file = examples().join("de-general.toml");
    let out = run_async(&["--socket", &socket, "offers", "publish", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout(&out),
        "published offer fra1-c8m32 (seq 7): 24 x c8m32 in DE/hesse/fra1 at 0.420000 EUR per unit-hour, \
         expires 2025-11-23T09:00:00Z\n"
    );
    let seen = daemon.seen.lock().unwrap().publish.clone().unwrap();
    assert_eq!(seen.ttl_ms, 3_600_000);
    let offer = seen.offer.unwrap();
    assert!(offer.provider.is_empty() && offer.federation.is_empty() && offer.seq == 0);
    assert_eq!(offer.unit_price_per_hour, eur(420_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offers_sends_filters_and_shows_table() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let args = [
        "--socket",
        &socket,
        "offers",
        "list",
        "--mine",
        "--country",
        "de,fr",
        "--country",
        "NL",
        "--label",
        "iso:27001",
        "--label",
        "gaia-x:level-2",
        "--min-vcpu",
        "4",
        "--min-memory-mib",
        "8192",
        "--max-unit-price",
        "0.45",
        "--attested",
    ];
    let out = run_async(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = daemon.seen.lock().unwrap().list_offers.clone().unwrap();
    assert_eq!(seen.countries, ["DE", "FR", "NL"]);
    assert_eq!(seen.labels, ["iso:27001", "gaia-x:level-2"]);
    assert_eq!((seen.mine, seen.attested_labels, seen.min_vcpu, seen.min_memory_mib), (true, true, 4, 8192));
    assert_eq!(seen.max_unit_price, eur(450_000));

    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PROVIDER  OFFER         SITE      FLAVOUR  VCPU  MEM MiB"), "{text}");
    assert!(lines[1].starts_with("22222222  fra1-c8m32    DE/r/dc1  c8m32       8    32768"), "{text}");
    assert!(lines[1].contains("0.420000 EUR") && lines[1].contains("99.9%"), "{text}");
    assert!(lines[1].contains(" iso:27001 "), "attested label is unmarked: {text}");
    assert!(lines[2].contains("gaia-x:level-2*"), "self-declared label is marked: {text}");
    assert!(lines[3].starts_with("* self-declared"), "{text}");

    let v = json(&run_async(&["--socket", &socket, "--json", "offers", "list"]).await);
    assert_eq!(v[1]["unit_price_per_hour"]["micros"], 1_180_000);
    assert_eq!(v[1]["unit_price_per_hour"]["amount"], "1.180000");
    assert_eq!(v[0]["provider"], "22".repeat(32));
    assert_eq!(v[0]["envelope"]["kind"], "offer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_sends_exact_values() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let before = now_ms();
    let args = [
        "--socket",
        &socket,
        "place",
        "--units",
        "2",
        "--vcpu",
        "4",
        "--memory-mib",
        "8192",
        "--storage-gib",
        "50",
        "--gpu",
        "nvidia-l40s=1",
        "--country",
        "DE",
        "--label",
        "iso:27001",
        "--attested",
        "--max-unit-price",
        "0.45",
        "--duration",
        "7d",
        "--start",
        "+10m",
        "--spread",
        "providers",
        "--min-sla",
        "995",
    ];
    let out = run_async(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let p = daemon.seen.lock().unwrap().place.clone().unwrap();
    assert_eq!(p.units, 2);
    let r = p.min_per_unit.unwrap();
    assert_eq!((r.vcpu, r.memory_mib, r.storage_gib), (4, 8192, 50));
    assert_eq!(r.gpus, [wire::GpuCount { model: "nvidia-l40s".into(), count: 1 }]);
    assert_eq!((p.countries, p.labels, p.attested_labels), (vec!["DE".to_owned()], vec!["iso:27001".to_owned()], true));
    assert_eq!(p.max_unit_price, eur(450_000));
    assert_eq!(p.duration_ms, 7 * 86_400_000);
    assert!(p.start_ms >= before + 600_000 && p.start_ms <= now_ms() + 600_000, "start {}", p.start_ms);
    assert_eq!(p.spread, wire::Spread::Providers as i32);
    assert_eq!((p.min_sla_permille, p.dry_run), (995, false));

    let text = stdout(&out);
    assert!(text.contains("abababab  active  consumer  22222222  fra1-c8m32  DE/r/fra1  c8m32"), "{text}");
    assert!(text.contains("2 units in 1 contract, 0.840000 EUR per hour"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unit_price_takes_an_optional_currency() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let base = ["--socket", &socket, "place", "--units", "1", "--vcpu", "2", "--memory-mib", "4096", "--dry-run"];
    for (price, currency, micros) in
        [("1.20 CHF", "CHF", 1_200_000), (" 0.5  chf ", "CHF", 500_000), ("0.45", "EUR", 450_000)]
    {
        let out = run_async(&[&base[..], &["--max-unit-price", price]].concat()).await;
        assert_eq!(out.status.code(), Some(0), "{price:?}: {}", String::from_utf8_lossy(&out.stderr));
        let p = daemon.seen.lock().unwrap().place.clone().unwrap();
        assert_eq!(p.max_unit_price, Some(wire::Price { currency: currency.into(), micros }), "{price:?}");
    }
    let offers = run_async(&["--socket", &socket, "offers", "list", "--max-unit-price", "0.45 USD"]).await;
    assert_eq!(offers.status.code(), Some(0), "{}", String::from_utf8_lossy(&offers.stderr));
    let seen = daemon.seen.lock().unwrap().list_offers.clone().unwrap();
    assert_eq!(seen.max_unit_price, Some(wire::Price { currency: "USD".into(), micros: 450_000 }));

    for (price, needle) in [
        ("1.20 SFR1", "not a currency code"),
        ("1.20 Swiss", "not a currency code"),
        ("1.20 CHF EUR", "an amount and a currency"),
        ("CHF 1.20", "not a price"),
        ("CHF:1.20", "not a price"),
        ("0.1234567 CHF", "6 decimals"),
        ("", "empty price"),
    ] {
        let line = failure(&run_async(&[&base[..], &["--max-unit-price", price]].concat()).await, 2);
        assert!(line.contains("--max-unit-price") && line.contains(needle), "{price:?}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_defaults_and_dry_run() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let out =
        run_async(&["--socket", &socket, "place", "--units", "1", "--vcpu", "2", "--memory-mib", "4096", "--dry-run"])
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let p = daemon.seen.lock().unwrap().place.clone().unwrap();
    assert!(p.dry_run);
    assert_eq!((p.start_ms, p.duration_ms, p.spread, p.min_sla_permille), (0, 720 * 3_600_000, 0, 0));
    assert!(p.max_unit_price.is_none() && p.countries.is_empty());
    let text = stdout(&out);
    assert_eq!(
        text,
        "plan (dry run: nothing was negotiated)\n\
         PROVIDER  OFFER               SITE       UNITS  PRICE/UNIT-HOUR\n\
         22222222  fra1-c8m32 (seq 3)  DE/r/fra1      1     0.420000 EUR\n\
         1 unit for 0.420000 EUR per hour: 1 on 22222222/fra1-c8m32 (DE) at 0.420000 EUR\n"
    );
    let v = json(
        &run_async(&[
            "--socket",
            &socket,
            "--json",
            "place",
            "--units",
            "1",
            "--vcpu",
            "2",
            "--memory-mib",
            "4096",
            "--dry-run",
        ])
        .await,
    );
    assert_eq!(v["plan"][0]["offer_id"], "fra1-c8m32");
    assert_eq!(v["plan"][0]["unit_price"]["micros"], 420_000);
    assert_eq!(v["contracts"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_shows_its_placement() {
    let (_dir, socket, _) = mock_daemon().await;
    let args = ["--socket", &socket, "place", "--units", "2", "--vcpu", "2", "--memory-mib", "4096"];
    let text = stdout(&run_async(&args).await);
    assert!(text.starts_with(&format!("placement {}: complete\n", hex::encode(placement_a()))), "{text}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = json(&run_async(&json_args).await);
    assert_eq!(v["placement_id"], hex::encode(placement_a()));
    assert_eq!(v["placement_state"], "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_list_show_terminate_and_prefixes() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let text = stdout(&run_async(&["--socket", &socket, "placements", "list"]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "PLACEMENT  STATE             UNITS  SPREAD     CONTRACTS     STARTED", "{text}");
    assert_eq!(lines[1], "5a5a5a5a   complete              2  countries  1 (1 active)  2025-11-23T08:00:00Z");
    assert_eq!(lines[2], "5a5a5a5a   partial-repaired      2  countries  1 (0 active)  2025-11-23T08:00:00Z");

    let v = json(&run_async(&["--socket", &socket, "--json", "placements", "list"]).await);
    assert_eq!(v[1]["state"], "partial-repaired");
    assert_eq!(v[1]["unresolved"][0], "77".repeat(32));
    assert_eq!(v[1]["contracts"][0]["state"], "terminated");
    assert_eq!(v[0]["max_unit_price"]["micros"], 500_000);

    // A prefix that names one placement, and one that names both.
    let b = hex::encode(placement_b());
    let text = stdout(&run_async(&["--socket", &socket, "placements", "show", &b[..12]]).await);
    assert!(text.starts_with(&format!("placement   {b}\nstate       partial-repaired\n")), "{text}");
    assert!(text.contains("\nlabels      iso:27001 (attested)\n"), "{text}");
    assert!(text.contains("\nreason      no answer to a commit before the deadline\n"), "{text}");
    assert!(text.contains(&format!("\nunresolved  {}\n", "77".repeat(32))), "{text}");
    assert!(text.contains("\nabababab  terminated  consumer"), "{text}");
    assert!(text.ends_with("2 units in 1 contract, 0.840000 EUR per hour\n"), "{text}");
    let out = run_async(&["--socket", &socket, "placements", "show", "5a5a5a5a"]).await;
    assert_eq!(failure(&out, 1), "error: 5a5a5a5a matches 2 placements; give more digits");

    let a = hex::encode(placement_a());
    let out = run_async(&["--socket", &socket, "placements", "terminate", &a, "--reason", "customer-request"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), format!("terminated placement {a} (customer-request): 1 contracts, 0 still active\n"));
    let seen = daemon.seen.lock().unwrap().terminate_placement.clone().unwrap();
    assert_eq!(seen.placement_id, placement_a());
    assert_eq!(seen.reason, wire::TerminationReason::CustomerRequest as i32);
    // Contracts that could not be terminated: named, and the exit status says so.
    let out = run_async(&["--socket", &socket, "placements", "terminate", &b, "--reason", "breach"]).await;
    let line = failure(&out, 1);
    assert!(line.contains("1 of 2 active contracts not terminated") && line.contains(&"77".repeat(32)), "{line}");
    assert!(out.stdout.is_empty());

    // A bad id is a usage error, before the daemon is asked.
    let out = run_async(&["--socket", &socket, "placements", "show", "xyz"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_that_fits_nothing_fails_with_the_explanation() {
    let (_dir, socket, _) = mock_daemon().await;
    let args = ["--socket", &socket, "place", "--units", "101", "--vcpu", "2", "--memory-mib", "4096"];
    let out = run_async(&args).await;
    let line = failure(&out, 1);
    assert_eq!(line, "error: no contract was made: no offer has 101 units; DE: 3 offers, all too small");
    assert!(out.stdout.is_empty());

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = run_async(&json_args).await;
    failure(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contracts"].as_array().map(Vec::len), Some(0));
    assert!(v["explanation"].as_str().unwrap().starts_with("no offer has 101 units"));

    // A dry run only reports: the explanation is its answer, and it succeeds.
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let out = run_async(&dry_args).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout(&out),
        "plan (dry run: nothing was negotiated)\nno offer has 101 units\nDE: 3 offers, all too small\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_list_show_and_prefixes() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let text = stdout(&run_async(&["--socket", &socket, "contracts", "list"]).await);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(!text.contains("ababababcd") && text.contains("abababab  ended"), "{text}");
    assert!(text.contains("12121212  active  consumer  22222222  fra1-c8m32"), "terms from signed bytes: {text}");
    let active = stdout(&run_async(&["--socket", &socket, "contracts", "list", "--active"]).await);
    assert_eq!(active.lines().count(), 3, "{active}");

    let out = run_async(&["--socket", &socket, "contracts", "show", "ABABABABAB"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(daemon.seen.lock().unwrap().show.clone().unwrap().contract_id, id_a());
    let text = stdout(&out);
    for needle in [
        &format!("contract            {}", "ab".repeat(32))[..],
        "state               active",
        "role                consumer",
        &format!("provider            {}", "22".repeat(32))[..],
        "offer               fra1-c8m32 (seq 3)",
        "flavour             c8m32: 8 vcpu, 32768 MiB memory, 200 GiB storage",
        "unit price          0.420000 EUR per hour",
        "start               2025-11-23T08:00:00Z",
        "end                 2025-12-23T08:00:00Z (30d)",
        &format!("consumer signature  {}", "77".repeat(64))[..],
        &format!("provider signature  {}", "88".repeat(64))[..],
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    let v = json(&run_async(&["--socket", &socket, "--json", "contracts", "show", &"12".repeat(32)]).await);
    assert_eq!(v["terms"]["units"], 2);
    assert_eq!(v["provider_signature"], "88".repeat(64));

    let line = failure(&run_async(&["--socket", &socket, "contracts", "show", "abababab"]).await, 1);
    assert!(line.contains("matches 2 contracts"), "{line}");
    let line = failure(&run_async(&["--socket", &socket, "contracts", "show", "99999999"]).await, 1);
    assert!(line.contains("no contract id starts with 99999999"), "{line}");
    let line = failure(&run_async(&["--socket", &socket, "contracts", "show", &"99".repeat(32)]).await, 1);
    assert_eq!(line, "error: no such contract");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_sends_reason() {
    let (_dir, socket, daemon) = mock_daemon().await;
    let out =
        run_async(&["--socket", &socket, "contracts", "terminate", "12121212", "--reason", "provider-maintenance"])
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let t = daemon.seen.lock().unwrap().terminate.clone().unwrap();
    assert_eq!(t.contract_id, id_c());
    assert_eq!(t.reason, wire::TerminationReason::ProviderMaintenance as i32);
    assert_eq!(
        stdout(&out),
        format!("terminated contract {} (provider-maintenance): now terminated\n", "12".repeat(32))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_errors_print_their_message() {
    let (_dir, socket, _) = mock_daemon().await;
    let line = failure(&run_async(&["--socket", &socket, "offers", "withdraw", "nope"]).await, 1);
    assert_eq!(line, "error: no offer nope is published by this node");
    let out = run_async(&["--socket", &socket, "offers", "withdraw", "fra1-c8m32"]).await;
    assert_eq!(stdout(&out), "withdrew offer fra1-c8m32 (seq 8)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_json_object_per_line() {
    let (_dir, socket, _) = mock_daemon().await;
    let out = run_async(&["--socket", &socket, "--json", "contracts", "watch"]).await;
    // The stand-in ends the stream after two events, as a daemon that stops would.
    let line = failure(&out, 1);
    assert!(line.contains("closed the event stream"), "{line}");
    let text = stdout(&out);
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["event"], "active");
    assert_eq!(events[1]["contract"]["state"], "ended");
    assert_eq!(events[1]["event"], "expired");

    let text = stdout(&run_async(&["--socket", &socket, "contracts", "watch"]).await);
    assert!(
        text.starts_with(
            "2025-11-23T08:00:00Z  active        abababab  active      consumer  2 x c8m32 in DE/r/fra1 at 0.420000 EUR\n"
        ),
        "{text}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
