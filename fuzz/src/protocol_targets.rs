//! The bodies of the fuzz targets for decoders in `fulcrum-protocol`, one
//! function per decoder family. Each takes arbitrary bytes, must never panic
//! on them, and asserts the properties a decoder owes its callers (what
//! decodes re-encodes to the same value; what is signed can be read back).
//!
//! The same functions replay the saved inputs in
//! `protocol/tests/fuzz_regressions.rs`, so a crash found once stays fixed
//! under a plain `cargo test`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::audit::{ExportHeader, ExportWriter, verify_export};
use fulcrum_protocol::checkpoint::{SignedCheckpoint, sign_node_checkpoint, verify_node_checkpoint};
use fulcrum_protocol::contract::{ContractTerms, SignedContract};
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{HoldId, NegotiationId};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{CertificateBody, MemberCertificate, Revocation};
use fulcrum_protocol::merkle::{MerkleTree, leaf_hash};
use fulcrum_protocol::messages::Message;
use fulcrum_protocol::offer::{Country, Flavour, Offer, Price, Resources, SignedOffer, Site};
use fulcrum_protocol::record::Record;
use fulcrum_protocol::rotation::{KeyChain, KeyRotation, RotationBody};
use fulcrum_protocol::witness::{self, Evidence, Outcome, Witness};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// The federation every fixture belongs to.
pub const FEDERATION: &str = "dev";
/// "Now" for every check that reads a clock.
pub const NOW_MS: u64 = 1_790_000_000_000;
const HOUR_MS: u64 = 3_600_000;

/// Parties, a contract between them and a few signed checkpoints, built once.
#[derive(Debug)]
pub struct Fixture {
    /// The provider: the node of exports, the signer of offers and proofs.
    pub provider: Identity,
    /// The consumer.
    pub consumer: Identity,
    /// A third node that watches the provider's log.
    pub witness: Identity,
    /// A countersigned contract between the two.
    pub contract: SignedContract,
    /// An offer of the provider.
    pub offer: Offer,
    /// The provider's log: an offer record, then the contract record, then a termination.
    pub log: Vec<Vec<u8>>,
    /// The provider's checkpoints of its log at sizes 1 and 3.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// The consistency question a witness that saw both asks (request id
    /// from a seeded RNG, so the same in every run).
    pub consistency_request: wire::ConsistencyProofRequest,
}

/// The fixture.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let limits = Limits::default();
        let provider = Identity::from_secret_bytes(&[1; 32]);
        let consumer = Identity::from_secret_bytes(&[2; 32]);
        let witness = Identity::from_secret_bytes(&[3; 32]);
        let offer = fixture_offer(&provider.public());
        let terms = ContractTerms {
            federation: FEDERATION.into(),
            provider: provider.public(),
            consumer: consumer.public(),
            offer_id: offer.offer_id.clone(),
            offer_seq: offer.seq,
            hold_id: HoldId([7; 16]),
            negotiation_id: NegotiationId([8; 16]),
            site: offer.site.clone(),
            flavour: offer.flavour.clone(),
            units: 2,
            unit_price_per_hour: offer.unit_price_per_hour,
            start_ms: NOW_MS,
            end_ms: NOW_MS + 24 * HOUR_MS,
            created_at_ms: NOW_MS - 10 * 60_000,
        };
        let contract = SignedContract::sign_as_consumer(&consumer, terms.encode(), &limits)
            .and_then(|c| c.countersign(&provider))
            .expect("the fixture contract is valid");
        let terminate = Message::Terminate(fulcrum_protocol::messages::Terminate {
            request_id: fulcrum_protocol::ids::RequestId([9; 16]),
            contract_id: contract.id(),
            reason: fulcrum_protocol::messages::TerminationReason::CustomerRequest,
            at_ms: NOW_MS,
            sender: provider.public(),
        })
        .seal(&provider);
        let records = [
            Record::Offer { envelope: offer.sign(&provider).envelope().clone() },
            Record::Contract { contract: contract.clone() },
            Record::Termination { contract_id: contract.id(), envelope: terminate },
        ];
        let log: Vec<Vec<u8>> = records.iter().map(|r| r.to_cbor().expect("the fixture records encode")).collect();
        let mut tree = MerkleTree::new();
        let mut checkpoints = Vec::new();
        for (i, record) in log.iter().enumerate() {
            tree.push(record);
            if i == 0 || i + 1 == log.len() {
                checkpoints.push(
                    sign_node_checkpoint(&provider, FEDERATION, tree.len(), tree.root())
                        .expect("the fixture checkpoints sign"),
                );
            }
        }
        let mut w = Witness::new(FEDERATION, witness.public());
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut consistency_request = None;
        for cp in &checkpoints {
            if let Ok(Some(Outcome::Ask { request, .. })) = w.observe(&cp.to_note(), NOW_MS, &mut rng) {
                consistency_request = Some(request);
            }
        }
        Fixture {
            provider,
            consumer,
            witness,
            contract,
            offer,
            log,
            checkpoints,
            consistency_request: consistency_request.expect("a witness of two checkpoints asks for a proof"),
        }
    })
}

fn fixture_offer(provider: &PublicKey) -> Offer {
    Offer {
        provider: *provider,
        federation: FEDERATION.into(),
        offer_id: "fra1-c8m32".into(),
        seq: 3,
        issued_at_ms: NOW_MS - 60_000,
        expires_at_ms: NOW_MS + HOUR_MS,
        site: Site {
            country: Country::parse("DE").expect("DE is a country"),
            region: "hesse".into(),
            datacenter: "fra1".into(),
        },
        flavour: Flavour {
            name: "c8m32".into(),
            per_unit: Resources {
                vcpu: 8,
                memory_mib: 32_768,
                storage_gib: 200,
                gpus: BTreeMap::from([("a100".to_owned(), 1)]),
            },
        },
        units_available: 10,
        unit_price_per_hour: Price::eur(420_000),
        min_duration_ms: HOUR_MS,
        max_duration_ms: 720 * HOUR_MS,
        labels: vec!["iso:27001".into(), "jurisdiction:eu-only".into()],
        sla_permille: 999,
    }
}

/// A witness of the provider's log that saw both fixture checkpoints and
/// waits for the provider's consistency proof between them.
fn waiting_witness(fx: &Fixture) -> Witness {
    let mut w = Witness::new(FEDERATION, fx.witness.public());
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for cp in &fx.checkpoints {
        let _ = w.observe(&cp.to_note(), NOW_MS, &mut rng);
    }
    w
}

/// Decodes `data` as `M`; what decodes must encode to bytes that decode to
/// the same message.
fn roundtrip<M: prost::Message + Default + PartialEq + Debug>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("a decoded protobuf message re-encodes");
    assert_eq!(m, again, "protobuf decode, encode, decode is not the identity");
    Some(m)
}

macro_rules! decode_all {
    ($data:expr; $($t:ident),* $(,)?) => {
        $( let _ = roundtrip::<wire::$t>($data); )*
    };
}

/// Target `wire`: the bytes as every protobuf message of the schema, then
/// through the protocol's own checks of the messages that carry meaning.
pub fn wire(data: &[u8]) {
    let limits = Limits::default();
    decode_all!(data;
        // envelope.proto, offer.proto
        Envelope, Site, GpuCount, Resources, Flavour, Price, OfferSyncRequest,
        // negotiation.proto
        Propose, ContractBody, Hold, Counter, Reject, Commit, Countersigned, Release, Released,
        Terminate, Terminated, StatusRequest, StatusResponse,
        // log.proto
        Checkpoint, InclusionProofRequest, InclusionProofResponse, ConsistencyProofRequest,
        ConsistencyProofResponse, ConflictingCheckpoints, InconsistentProof, MissingContract, Evidence,
        // membership.proto
        MemberCertificateBody, AuthoritySignature, MemberCertificate, RevocationBody, Revocation,
        KeyRotationBody, KeyRotation, MembershipExchange, MembershipGossip,
        // admin.proto (a local client's requests and the node's answers)
        StatusQuery, NodeStatus, PeersQuery, PeerView, PeerList, PublishOfferRequest, WithdrawOfferRequest,
        OfferView, ListOffersRequest, OfferList, PlaceRequest, PlaceResult, PlannedAllocation, PlacementTerms,
        ListPlacementsRequest, PlacementQuery, PlacementView, PlacementList, TerminatePlacementRequest,
        ListContractsRequest, ContractView, ContractList, ContractQuery, TerminateContractRequest,
        WatchContractsRequest, ContractEvent, EvidenceQuery, EvidenceView, EvidenceList, ProveRequest,
        ProveResult, ExportRequest, ExportChunk, BackupRequest, PublishRevocationRequest, PublishRevocationResult,
    );

    if let Some(w) = roundtrip::<wire::Offer>(data)
        && let Ok(offer) = Offer::from_wire(w, &limits)
    {
        let again = Offer::from_wire(offer.to_wire(), &limits).expect("a valid offer's wire form is valid");
        assert_eq!(offer, again, "offer wire round trip");
        let _ = offer.check_current(FEDERATION, NOW_MS, &limits);
    }
    if let Ok(terms) = ContractTerms::decode(data, &limits) {
        let again = ContractTerms::decode(&terms.encode(), &limits).expect("valid contract terms re-encode");
        assert_eq!(terms, again, "contract terms round trip");
    }
    if let Some(w) = roundtrip::<wire::SignedContract>(data) {
        let _ = SignedContract::from_wire(w, &limits, false);
    }
    if let Ok(body) = CertificateBody::decode(data, &limits) {
        let again = CertificateBody::decode(&body.encode(), &limits).expect("a valid certificate body re-encodes");
        assert_eq!(body, again, "certificate body round trip");
    }
    if let Ok(cert) = MemberCertificate::decode(data, &limits) {
        let again = MemberCertificate::decode(&cert.encode(), &limits).expect("a valid certificate re-encodes");
        assert_eq!(cert, again, "certificate round trip");
    }
    if let Ok(revocation) = Revocation::decode(data, &limits) {
        let again = Revocation::decode(&revocation.encode(), &limits).expect("a valid revocation re-encodes");
        assert_eq!(revocation, again, "revocation round trip");
    }
    if let Ok(body) = RotationBody::decode(data) {
        let again = RotationBody::decode(&body.encode()).expect("a valid rotation body re-encodes");
        assert_eq!(body, again, "rotation body round trip");
    }
    if let Ok(rotation) = KeyRotation::decode(data) {
        let again = KeyRotation::decode(&rotation.encode()).expect("a valid key rotation re-encodes");
        assert_eq!(rotation, again, "key rotation round trip");
        let _ = rotation.check_federation(FEDERATION);
        let _ = KeyChain::of_log(rotation.body().new_key, [&rotation]);
    }
    let _ = witness::decode_request(data);
    if let Some(page) = roundtrip::<wire::OfferSyncResponse>(data) {
        for w in page.offers {
            if let Ok(envelope) = Envelope::from_wire(w) {
                let _ = SignedOffer::from_envelope(envelope, &limits);
            }
        }
    }
    if let Some(gossip) = roundtrip::<wire::AuditGossip>(data) {
        match gossip.item {
            Some(wire::audit_gossip::Item::Checkpoint(c)) => {
                let _ = verify_node_checkpoint(&c.note, FEDERATION);
            }
            Some(wire::audit_gossip::Item::Evidence(w)) => {
                if let Ok(envelope) = Envelope::from_wire(w) {
                    let _ = Evidence::open(&envelope, FEDERATION, &limits);
                }
            }
            None => {}
        }
    }
}

/// Target `envelope`: the bytes as a signed envelope from a peer (size
/// check, decoding, signature), and, so that the body decoders behind the
/// signature are reached too, as a kind and a body that a party of the
/// fixture signs: byte 0 picks the kind (low 7 bits) and the signer (high
/// bit: the provider, else the consumer), the rest is the body.
pub fn envelope(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(envelope) = Envelope::decode(data, limits.max_envelope_bytes) {
        let again = Envelope::decode(&envelope.encode(), limits.max_envelope_bytes)
            .expect("a verified envelope re-encodes to a verified envelope");
        assert_eq!(envelope, again, "envelope round trip");
        opened(&envelope, None, &limits);
    }
    let _ = Message::decode(data, &limits);
    let _ = SignedOffer::verify(data, FEDERATION, NOW_MS, &limits);

    let Some((&selector, body)) = data.split_first() else { return };
    let fx = fixture();
    let kind = Kind::ALL[usize::from(selector & 0x7f) % Kind::ALL.len()];
    let signer = if selector & 0x80 != 0 { &fx.provider } else { &fx.consumer };
    // Sealing does not check sizes; a peer's envelope would be checked on arrival.
    if let Ok(envelope) = Envelope::from_wire(Envelope::seal(signer, kind, body.to_vec()).to_wire()) {
        opened(&envelope, Some(signer), &limits);
    }
}

/// Everything that opens a verified envelope from a peer.
fn opened(envelope: &Envelope, signer: Option<&Identity>, limits: &Limits) {
    let fx = fixture();
    if let Ok(message) = Message::open(envelope, limits)
        && let Some(signer) = signer
    {
        let again = Message::open(&message.seal(signer), limits).expect("an opened message seals and opens again");
        assert_eq!(message, again, "negotiation message round trip");
    }
    if let Ok(offer) = SignedOffer::from_envelope(envelope.clone(), limits) {
        let _ = offer.offer().check_current(FEDERATION, NOW_MS, limits);
    }
    let _ = Evidence::open(envelope, FEDERATION, limits);
    let _ = witness::check_inclusion(&fx.contract, envelope, FEDERATION, limits, NOW_MS);
    let mut w = waiting_witness(fx);
    let _ = w.on_proof(envelope, NOW_MS, &mut ChaCha20Rng::seed_from_u64(8));
}

/// Target `record`: the bytes as a CBOR record of the agreement log, read
/// by the node's reader and by the audit verifier, which must not accept
/// what the node's reader refuses.
pub fn record(data: &[u8]) {
    let decoded = Record::from_cbor(data);
    if let Ok(record) = &decoded {
        let bytes = record.to_cbor().expect("a decoded record re-encodes");
        let again = Record::from_cbor(&bytes).expect("a re-encoded record decodes");
        assert_eq!(*record, again, "record round trip");
    }
    if data.is_empty() || data.len() > fulcrum_protocol::audit::MAX_RECORD_BYTES {
        return;
    }
    // A one-record export of the provider's log, with a checkpoint that
    // covers it: the verifier's record checks decide alone.
    let fx = fixture();
    let Ok(checkpoint) = sign_node_checkpoint(&fx.provider, FEDERATION, 1, leaf_hash(data)) else { return };
    let header =
        ExportHeader { node_key: fx.provider.public(), federation: FEDERATION.into(), records: 1, checkpoints: 1 };
    let export = ExportWriter::new(Vec::new(), header).and_then(|mut writer| {
        writer.record(data)?;
        writer.checkpoint(&checkpoint.to_note())?;
        writer.finish()
    });
    let Ok(export) = export else { return };
    let report = verify_export(export.as_slice());
    if report.is_ok() {
        assert!(decoded.is_ok(), "the audit verifier accepts a record the node cannot read: {decoded:?}");
    }
}

/// Target `checkpoint`: the bytes as a signed note (a gossiped checkpoint,
/// a line of the checkpoints file, a proof's checkpoint), parsed, checked
/// as a node checkpoint, and shown to a witness of the fixture provider;
/// a note that parses is also signed again by the provider, so that the
/// witness's checks behind the signature are reached.
pub fn checkpoint(data: &[u8]) {
    let fx = fixture();
    let parsed = SignedCheckpoint::parse_bytes(data);
    if let Ok(cp) = &parsed {
        assert_eq!(cp.to_note().as_bytes(), data, "a parsed note is not the note it was parsed from");
        if let Ok(resigned) = cp.checkpoint().sign(&cp.checkpoint().origin, fx.provider.signing_key()) {
            let again = SignedCheckpoint::parse(&resigned.to_note()).expect("a signed checkpoint parses");
            assert_eq!(again.checkpoint(), cp.checkpoint(), "checkpoint sign and parse round trip");
            observe(fx, &resigned.to_note());
        }
    }
    let Ok(note) = std::str::from_utf8(data) else { return };
    let _ = verify_node_checkpoint(note, FEDERATION);
    let mut w = Witness::new(FEDERATION, fx.witness.public());
    let _ = w.restore(note);
    observe(fx, note);
}

fn observe(fx: &Fixture, note: &str) {
    let mut w = waiting_witness(fx);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    // Twice: the second time is a repeat, or a newer one while a question is out.
    let _ = w.observe(note, NOW_MS, &mut rng);
    let _ = w.observe(note, NOW_MS + 1, &mut rng);
}

/// Target `export`: the bytes as an audit export file, verified.
pub fn export(data: &[u8]) {
    let report = verify_export(data);
    // The report is printed by `fulcrumctl audit verify`.
    let _ = report.to_string();
}
