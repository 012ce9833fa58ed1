//! Writes the seed corpus of every fuzz target: real, valid inputs made
//! with the project's own code (signed messages, log records, checkpoints,
//! an export, log files) and the example files of `configs/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus`

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::{Path, PathBuf};

use fulcrum_fuzz::node_targets::membership_authorities;
use fulcrum_fuzz::protocol_targets::{FEDERATION, NOW_MS, fixture};
use fulcrum_node::charter::{
    CertificateRequest, RevocationRequest, SignatureFile, Signed, render_certificate, render_charter, render_revocation,
};
use fulcrum_node::config::commented_config;
use fulcrum_node::store::backup::BackupHeader;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::audit::{ExportHeader, ExportWriter};
use fulcrum_protocol::checkpoint::{Checkpoint, sign_node_checkpoint};
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{ContractId, HoldId, NegotiationId, PlacementId, RequestId};
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::matching::Spread;
use fulcrum_protocol::membership::{CertificateBody, Charter, MemberCertificate, Revocation, RevocationBody};
use fulcrum_protocol::merkle::MerkleTree;
use fulcrum_protocol::messages::{
    Commit, ContractState, Counter, Countersigned, Hold, Message, Propose, Reject, RejectCode, Release, Released,
    StatusRequest, StatusResponse, StatusTarget, Terminate, Terminated, TerminationReason,
};
use fulcrum_protocol::offer::{Country, Price, Resources};
use fulcrum_protocol::placement::{PlacementRecord, PlacementState, PlacementTerms};
use fulcrum_protocol::record::Record;
use fulcrum_protocol::rotation::{KeyRotation, RotationBody};
use fulcrum_protocol::witness::{self, Evidence};
use prost::Message as _;
use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Corpus {
    root: PathBuf,
    count: usize,
}

impl Corpus {
    fn add(&mut self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        self.count += 1;
        Ok(())
    }
}

fn main() -> Result<()> {
    let root = std::env::args().nth(1).map(PathBuf::from).ok_or("usage: seeds OUT_DIR")?;
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut corpus = Corpus { root, count: 0 };
    let fx = fixture();
    let limits = Limits::default();
    let (p, c) = (&fx.provider, &fx.consumer);
    let contract = &fx.contract;
    let rid = RequestId([5; 16]);

    // Every negotiation message, signed by its sender.
    let consumer_only = contract.to_wire();
    let consumer_only = wire::SignedContract { provider_signature: Vec::new(), ..consumer_only };
    let pending = fulcrum_protocol::contract::SignedContract::from_wire(consumer_only, &limits, false)?;
    let messages: Vec<(Message, &Identity)> = vec![
        (
            Message::Propose(Propose {
                request_id: rid,
                negotiation_id: NegotiationId([8; 16]),
                round: 0,
                consumer: c.public(),
                provider: p.public(),
                offer_id: fx.offer.offer_id.clone(),
                offer_seq: fx.offer.seq,
                units: 2,
                max_unit_price: Price::eur(500_000),
                start_ms: NOW_MS,
                duration_ms: 24 * 3_600_000,
                expires_at_ms: NOW_MS + 60_000,
            }),
            c,
        ),
        (
            Message::Hold(Hold {
                request_id: rid,
                hold_id: HoldId([7; 16]),
                unit_price: Price::eur(420_000),
                hold_until_ms: NOW_MS + 30_000,
                draft: contract.body().to_vec(),
            }),
            p,
        ),
        (
            Message::Counter(Counter {
                request_id: rid,
                negotiation_id: NegotiationId([8; 16]),
                units: Some(1),
                unit_price: Some(Price::eur(450_000)),
            }),
            p,
        ),
        (Message::Reject(Reject { request_id: rid, code: RejectCode::NoCapacity, message: "no capacity".into() }), p),
        (Message::Commit(Commit { request_id: rid, hold_id: HoldId([7; 16]), contract: pending.clone() }), c),
        (Message::Countersigned(Countersigned { request_id: rid, contract: contract.clone() }), p),
        (Message::Release(Release { request_id: rid, hold_id: HoldId([7; 16]) }), c),
        (Message::Released(Released { request_id: rid, hold_id: HoldId([7; 16]) }), p),
        (
            Message::Terminate(Terminate {
                request_id: rid,
                contract_id: contract.id(),
                reason: TerminationReason::CustomerRequest,
                at_ms: NOW_MS,
                sender: c.public(),
            }),
            c,
        ),
        (Message::Terminated(Terminated { request_id: rid, contract_id: contract.id(), at_ms: NOW_MS }), p),
        (Message::StatusRequest(StatusRequest { request_id: rid, target: StatusTarget::Hold(HoldId([7; 16])) }), c),
        (Message::StatusRequest(StatusRequest { request_id: rid, target: StatusTarget::Contract(contract.id()) }), c),
        (
            Message::StatusResponse(StatusResponse {
                request_id: rid,
                state: ContractState::Active,
                contract: Some(contract.clone()),
                hold_until_ms: 0,
            }),
            p,
        ),
    ];
    let mut envelopes: Vec<(String, Envelope, &Identity)> =
        messages.iter().map(|(m, who)| (m.kind().as_str().to_owned(), m.seal(who), *who)).collect();

    // Offers, proofs and evidence.
    let offer = fx.offer.sign(p).envelope().clone();
    envelopes.push(("offer".into(), offer.clone(), p));
    let mut tree = MerkleTree::new();
    for record in &fx.log {
        tree.push(record);
    }
    let latest = fx.checkpoints.last().ok_or("no checkpoint")?;
    let consistency = witness::answer_consistency(p, &fx.consistency_request, &tree, latest);
    envelopes.push(("consistency-proof".into(), consistency.clone(), p));
    let ask = witness::inclusion_request(contract, rid);
    let inclusion = witness::answer_inclusion(p, &ask, &tree, Some(1), latest, NOW_MS);
    envelopes.push(("inclusion-proof".into(), inclusion.clone(), p));
    let denial = witness::answer_inclusion(p, &ask, &tree, None, latest, NOW_MS);
    envelopes.push(("inclusion-denial".into(), denial.clone(), p));
    let other_root = sign_node_checkpoint(p, FEDERATION, 3, [9; 32])?;
    let conflicting = Evidence::Conflicting { first: latest.clone(), second: other_root.clone() };
    let evidence = conflicting.seal(&fx.witness, &p.public(), NOW_MS);
    envelopes.push(("evidence-conflicting".into(), evidence.clone(), &fx.witness));
    let missing = Evidence::MissingContract { contract: contract.clone(), answer: denial.clone() };
    envelopes.push(("evidence-missing".into(), missing.seal(&fx.witness, &p.public(), NOW_MS), &fx.witness));
    let inconsistent = Evidence::Inconsistent {
        older: fx.checkpoints[0].clone(),
        newer: other_root.clone(),
        proof: consistency.clone(),
    };
    envelopes.push(("evidence-inconsistent".into(), inconsistent.seal(&fx.witness, &p.public(), NOW_MS), &fx.witness));

    for (name, envelope, who) in &envelopes {
        corpus.add("envelope", name, &envelope.encode())?;
        // The sealed form: kind selector (high bit: the provider signs), then the body.
        if let Some(index) = Kind::ALL.iter().position(|k| *k == envelope.kind())
            && (who.public() == p.public() || who.public() == c.public())
        {
            let selector = index as u8 | if who.public() == p.public() { 0x80 } else { 0 };
            let mut sealed = vec![selector];
            sealed.extend_from_slice(envelope.body());
            corpus.add("envelope", &format!("sealed-{name}"), &sealed)?;
        }
        corpus.add("wire", &format!("body-{name}"), envelope.body())?;
    }

    // Membership: certificates and a revocation of the closed test federation.
    let authorities = membership_authorities();
    let charter = Charter {
        name: FEDERATION.into(),
        authorities: authorities.iter().map(Identity::public).collect(),
        threshold: 2,
    };
    let body = CertificateBody {
        federation: FEDERATION.into(),
        member: p.public(),
        organisation: "Example Cloud GmbH".into(),
        country: Country::parse("DE").ok_or("country")?,
        labels: BTreeSet::from(["gaia-x:level-2".to_owned(), "iso:27001".to_owned()]),
        not_before_ms: NOW_MS - 86_400_000,
        not_after_ms: NOW_MS + 365 * 86_400_000,
        serial: 1,
    };
    let request = CertificateRequest::new(&body)?;
    let cert_sigs: Vec<_> =
        authorities[..2].iter().map(|a| MemberCertificate::sign_request(a, request.body_bytes())).collect();
    let cert = MemberCertificate::assemble(request.body_bytes().to_vec(), cert_sigs.clone(), &limits)?;
    let body2 = CertificateBody { member: c.public(), serial: 2, ..body.clone() };
    let request2 = CertificateRequest::new(&body2)?;
    let cert2_sigs =
        authorities[1..].iter().map(|a| MemberCertificate::sign_request(a, request2.body_bytes())).collect();
    let cert2 = MemberCertificate::assemble(request2.body_bytes().to_vec(), cert2_sigs, &limits)?;
    let revocation_body = RevocationBody {
        federation: FEDERATION.into(),
        member: c.public(),
        revoked_at_ms: NOW_MS,
        reason: "left the federation".into(),
    };
    let revocation_request = RevocationRequest::new(&revocation_body)?;
    let revocation_sigs: Vec<_> =
        authorities[..2].iter().map(|a| Revocation::sign_body(a, revocation_request.body_bytes())).collect();
    let revocation = Revocation::assemble(revocation_request.body_bytes().to_vec(), revocation_sigs.clone())?;
    let cert_wire = wire::MemberCertificate::decode(cert.encode().as_slice())?;
    let cert2_wire = wire::MemberCertificate::decode(cert2.encode().as_slice())?;
    let revocation_wire = wire::Revocation::decode(revocation.encode().as_slice())?;
    let exchange = wire::MembershipExchange {
        certificates: vec![cert_wire.clone(), cert2_wire.clone()],
        revocations: vec![revocation_wire.clone()],
        ..Default::default()
    };
    let gossip_cert =
        wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Certificate(cert_wire.clone())) };
    let gossip_revocation =
        wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Revocation(revocation_wire.clone())) };
    let only_certs = wire::MembershipExchange { certificates: vec![cert_wire, cert2_wire], ..Default::default() };
    for (name, bytes) in [
        ("exchange", exchange.encode_to_vec()),
        ("exchange-certificates", only_certs.encode_to_vec()),
        ("gossip-certificate", gossip_cert.encode_to_vec()),
        ("gossip-revocation", gossip_revocation.encode_to_vec()),
    ] {
        corpus.add("membership", name, &bytes)?;
        corpus.add("wire", name, &bytes)?;
    }
    corpus.add("wire", "certificate", &cert.encode())?;
    corpus.add("wire", "certificate-body", request.body_bytes())?;
    corpus.add("wire", "revocation", &revocation.encode())?;

    // Other wire messages.
    let sync = wire::OfferSyncResponse { offers: vec![offer.to_wire(), offer.to_wire()], next_cursor: vec![1, 2, 3] };
    corpus.add("wire", "offer-sync-response", &sync.encode_to_vec())?;
    corpus.add(
        "wire",
        "offer-sync-request",
        &wire::OfferSyncRequest { cursor: vec![7; 40], max_offers: 64 }.encode_to_vec(),
    )?;
    corpus.add("wire", "offer", &fx.offer.to_wire().encode_to_vec())?;
    corpus.add("wire", "signed-contract", &contract.to_wire().encode_to_vec())?;
    let gossip_checkpoint = wire::AuditGossip {
        item: Some(wire::audit_gossip::Item::Checkpoint(wire::Checkpoint { note: latest.to_note() })),
    };
    corpus.add("wire", "audit-gossip-checkpoint", &gossip_checkpoint.encode_to_vec())?;
    let gossip_evidence = wire::AuditGossip { item: Some(wire::audit_gossip::Item::Evidence(evidence.to_wire())) };
    corpus.add("wire", "audit-gossip-evidence", &gossip_evidence.encode_to_vec())?;
    let proof_consistency =
        wire::ProofRequest { request: Some(wire::proof_request::Request::Consistency(fx.consistency_request.clone())) };
    corpus.add("wire", "proof-request-consistency", &proof_consistency.encode_to_vec())?;
    let proof_inclusion = wire::ProofRequest { request: Some(wire::proof_request::Request::Inclusion(ask)) };
    corpus.add("wire", "proof-request-inclusion", &proof_inclusion.encode_to_vec())?;
    let place = wire::PlaceRequest {
        units: 3,
        min_per_unit: Some(wire::Resources { vcpu: 8, memory_mib: 32_768, ..Default::default() }),
        countries: vec!["DE".into(), "FR".into()],
        labels: vec!["iso:27001".into()],
        duration_ms: 720 * 3_600_000,
        ..Default::default()
    };
    corpus.add("wire", "place-request", &place.encode_to_vec())?;

    // Log records of every type.
    let placement = PlacementRecord {
        id: PlacementId([6; 16]),
        state: PlacementState::Complete,
        terms: PlacementTerms {
            units: 2,
            spread: Spread::Countries,
            min_per_unit: Resources { vcpu: 8, memory_mib: 32_768, storage_gib: 0, gpus: BTreeMap::new() },
            countries: BTreeSet::from([Country::parse("DE").ok_or("country")?, Country::parse("FR").ok_or("country")?]),
            labels: BTreeSet::from(["iso:27001".to_owned()]),
            attested_labels: true,
            min_sla_permille: 990,
            max_unit_price: Some(Price::eur(500_000)),
            start_ms: NOW_MS,
            duration_ms: 24 * 3_600_000,
        },
        contracts: vec![contract.id()],
        unresolved: vec![ContractId([4; 32])],
        attempts: 2,
        reason: String::new(),
        started_at_ms: NOW_MS - 5_000,
        at_ms: NOW_MS,
    };
    // The provider hands its identity to a new key after its three records.
    let new_key = Identity::from_secret_bytes(&[13; 32]);
    let rotation = KeyRotation::sign(
        p,
        &new_key,
        RotationBody {
            federation: FEDERATION.into(),
            old_key: p.public(),
            new_key: new_key.public(),
            at_ms: NOW_MS,
            seq: 1,
            log_size: fx.log.len() as u64,
            log_root: tree.root(),
        },
    )?;
    corpus.add("wire", "key-rotation", &rotation.encode())?;
    corpus.add("wire", "key-rotation-body", rotation.body_bytes())?;
    let gossip_rotation =
        wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Rotation(rotation.to_wire())) };
    corpus.add("membership", "gossip-rotation", &gossip_rotation.encode_to_vec())?;
    corpus.add("wire", "gossip-rotation", &gossip_rotation.encode_to_vec())?;
    let exchange_rotation = wire::MembershipExchange { rotations: vec![rotation.to_wire()], ..Default::default() };
    corpus.add("membership", "exchange-rotation", &exchange_rotation.encode_to_vec())?;
    let records = [
        ("rotation", Record::Rotation { rotation: rotation.clone() }),
        ("expiry", Record::Expiry { contract_id: contract.id(), at_ms: NOW_MS + 25 * 3_600_000 }),
        ("pending", Record::Pending { contract: pending }),
        ("abandoned", Record::Abandoned { contract_id: contract.id() }),
        ("evidence", Record::Evidence { envelope: evidence }),
        ("revocation", Record::Revocation { revocation: revocation.clone() }),
        ("placement", Record::Placement { placement }),
    ];
    for (i, bytes) in fx.log.iter().enumerate() {
        corpus.add("record", &format!("log-{i}"), bytes)?;
    }
    for (name, record) in &records {
        corpus.add("record", name, &record.to_cbor()?)?;
    }

    // Checkpoints.
    for (i, cp) in fx.checkpoints.iter().enumerate() {
        corpus.add("checkpoint", &format!("node-{i}"), cp.to_note().as_bytes())?;
    }
    corpus.add("checkpoint", "conflicting", other_root.to_note().as_bytes())?;
    let origin = format!("fulcrum/{FEDERATION}/{}", p.public());
    let extended =
        Checkpoint { origin: origin.clone(), size: 3, root: tree.root(), extensions: vec!["ext line".into()] }
            .sign(&origin, p.signing_key())?;
    // A witness's cosignature after the node's own.
    let cosigned = format!(
        "{}— witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",
        extended.to_note()
    );
    corpus.add("checkpoint", "extension", extended.to_note().as_bytes())?;
    corpus.add("checkpoint", "cosigned", cosigned.as_bytes())?;

    // Exports: the provider's whole log, and an empty one.
    let header = |records, checkpoints| ExportHeader {
        node_key: p.public(),
        federation: FEDERATION.into(),
        records,
        checkpoints,
    };
    let mut writer = ExportWriter::new(Vec::new(), header(fx.log.len() as u64, fx.checkpoints.len() as u64))?;
    for record in &fx.log {
        writer.record(record)?;
    }
    for cp in &fx.checkpoints {
        writer.checkpoint(&cp.to_note())?;
    }
    let provider_export = writer.finish()?;
    corpus.add("export", "provider", &provider_export)?;
    corpus.add("export", "empty", &ExportWriter::new(Vec::new(), header(0, 0))?.finish()?)?;
    // The provider's log continued after it rotated its key: the rotation
    // fixes the first three records, the new key signs what follows (an offer).
    let mut rotated_log = fx.log.clone();
    rotated_log.push(Record::Rotation { rotation: rotation.clone() }.to_cbor()?);
    let mut successor_offer = fx.offer.clone();
    successor_offer.provider = new_key.public();
    successor_offer.seq = 1;
    rotated_log.push(Record::Offer { envelope: successor_offer.sign(&new_key).envelope().clone() }.to_cbor()?);
    let mut rotated_tree = MerkleTree::new();
    for record in &rotated_log {
        rotated_tree.push(record);
    }
    let after = sign_node_checkpoint(&new_key, FEDERATION, rotated_tree.len(), rotated_tree.root())?;
    let mut writer = ExportWriter::new(Vec::new(), header(rotated_log.len() as u64, 3))?;
    for record in &rotated_log {
        writer.record(record)?;
    }
    for cp in fx.checkpoints.iter().chain([&after]) {
        writer.checkpoint(&cp.to_note())?;
    }
    let rotated_export = writer.finish()?;
    corpus.add("export", "rotated", &rotated_export)?;
    // Backups: a header, then an export (with and without the key).
    for (name, export, key, secret) in [
        ("provider", &provider_export, p.public(), None),
        ("rotated-with-key", &rotated_export, new_key.public(), Some(new_key.to_secret_bytes())),
    ] {
        let header = BackupHeader {
            node_key: key,
            federation: FEDERATION.into(),
            created_at_ms: NOW_MS,
            secret_key: secret,
            export_bytes: export.len() as u64,
            export_sha256: Sha256::digest(export).into(),
        };
        let mut backup = header.to_text().into_bytes();
        backup.extend_from_slice(export);
        corpus.add("backup", name, &backup)?;
    }

    // Log files: framed records, a torn tail, and a checkpoints file.
    let frame = |out: &mut Vec<u8>, payload: &[u8]| {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        out.extend_from_slice(payload);
    };
    let mut log = Vec::new();
    for record in fx.log.iter().chain(records.iter().filter_map(|(_, r)| r.to_cbor().ok()).collect::<Vec<_>>().iter()) {
        frame(&mut log, record);
    }
    corpus.add("log", "records", &log)?;
    let mut torn = log.clone();
    torn.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    corpus.add("log", "torn-tail", &torn)?;
    let mut zeros = log.clone();
    zeros.extend_from_slice(&[0; 24]);
    corpus.add("log", "zero-tail", &zeros)?;
    let mut notes = Vec::new();
    for cp in &fx.checkpoints {
        frame(&mut notes, cp.to_note().as_bytes());
    }
    corpus.add("log", "checkpoints", &notes)?;

    // Configuration, offer files and federation files: the examples, and
    // what the CLI writes.
    corpus.add("config", "node", &std::fs::read(configs.join("node.toml"))?)?;
    corpus.add("config", "commented", commented_config(Path::new("/var/lib/fulcrum")).as_bytes())?;
    corpus.add("config", "key", format!("{}\n", hex(&p.to_secret_bytes())).as_bytes())?;
    for entry in std::fs::read_dir(configs.join("offers"))? {
        let path = entry?.path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("offer").to_owned();
        corpus.add("offer_file", &name, &std::fs::read(&path)?)?;
    }
    corpus.add("charter", "federation", &std::fs::read(configs.join("federation.toml"))?)?;
    corpus.add("charter", "closed", render_charter(&charter, &[]).as_bytes())?;
    corpus.add("charter", "certificate-request", request.to_toml().as_bytes())?;
    let signature_file = |signed, body_bytes: &[u8], member, (authority, signature): &(_, _)| SignatureFile {
        signed,
        federation: FEDERATION.into(),
        member,
        request_sha256: Sha256::digest(body_bytes).into(),
        authority: *authority,
        signature: *signature,
    };
    let cert_signature = signature_file(Signed::Certificate, request.body_bytes(), p.public(), &cert_sigs[0]);
    corpus.add("charter", "certificate-signature", cert_signature.to_toml().as_bytes())?;
    corpus.add("charter", "certificate", render_certificate(&cert).as_bytes())?;
    corpus.add("charter", "revocation-request", revocation_request.to_toml().as_bytes())?;
    let revocation_signature =
        signature_file(Signed::Revocation, revocation_request.body_bytes(), c.public(), &revocation_sigs[0]);
    corpus.add("charter", "revocation-signature", revocation_signature.to_toml().as_bytes())?;
    corpus.add("charter", "revocation", render_revocation(&revocation).as_bytes())?;

    println!("wrote {} seed inputs under {}", corpus.count, corpus.root.display());
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
