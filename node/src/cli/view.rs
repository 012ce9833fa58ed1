//! What `fulcrumctl` shows, as plain serialisable structs built once from the
//! daemon's answers: `--json` prints them, the human renderer lays them out.
//! Keys, ids and signatures are lower-case hex; money is exact micro-units.

use std::collections::BTreeMap;

use fulcrum_proto::Message;
use fulcrum_proto::v1 as wire;
use serde::Serialize;

use crate::offer_file::format_micros;

/// `fulcrumctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// This node's Ed25519 public key.
    pub node_key: String,
    /// libp2p peer id (derived from the same key).
    pub peer_id: String,
    /// Federation name.
    pub federation: String,
    /// Daemon version.
    pub version: String,
    /// Since the daemon started.
    pub uptime_ms: u64,
    /// Addresses the daemon listens on.
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub connected_peers: u32,
    /// Offers in the local offer book.
    pub offers_known: u64,
    /// Offers this node publishes.
    pub offers_own: u64,
    /// Active contracts.
    pub contracts_active: u64,
    /// Records in the agreement log.
    pub log_size: u64,
    /// Merkle root of the agreement log.
    pub log_root: String,
    /// Size of the latest checkpoint this node signed.
    pub checkpoint_size: u64,
    /// Pieces of evidence held.
    pub evidence: u32,
    /// Nodes whose logs this node witnesses.
    pub witnessed_nodes: u32,
    /// open, member, no certificate, expired, revoked or invalid certificate: ...
    pub membership: String,
    /// When this node's certificate expires, Unix ms (0: none).
    pub certificate_not_after_ms: u64,
    /// Member certificates known.
    pub members_known: u32,
}

impl From<wire::NodeStatus> for StatusView {
    fn from(s: wire::NodeStatus) -> Self {
        StatusView {
            node_key: hex::encode(&s.node_key),
            peer_id: s.peer_id,
            federation: s.federation,
            version: s.version,
            uptime_ms: s.uptime_ms,
            listen_addrs: s.listen_addrs,
            connected_peers: s.connected_peers,
            offers_known: s.offers_known,
            offers_own: s.offers_own,
            contracts_active: s.contracts_active,
            log_size: s.log_size,
            log_root: hex::encode(&s.log_root),
            checkpoint_size: s.checkpoint_size,
            evidence: s.evidence,
            witnessed_nodes: s.witnessed_nodes,
            membership: s.membership,
            certificate_not_after_ms: s.certificate_not_after_ms,
            members_known: s.members_known,
        }
    }
}

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// libp2p peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// gossipsub peer score.
    pub score: i64,
    /// Unix ms.
    pub connected_since_ms: u64,
    /// The peer's node key (hex), once identified.
    pub node_key: String,
    /// Size of the peer's latest checkpoint verified here (0: none yet).
    pub log_size: u64,
    /// Pieces of evidence held against the peer.
    pub evidence: u32,
}

impl From<wire::PeerView> for PeerView {
    fn from(p: wire::PeerView) -> Self {
        PeerView {
            peer_id: p.peer_id,
            addrs: p.addrs,
            score: p.score,
            connected_since_ms: p.connected_since_ms,
            node_key: hex::encode(&p.node_key),
            log_size: p.log_size,
            evidence: p.evidence,
        }
    }
}

/// ISO country, region, datacenter.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
}

impl SiteView {
    fn from_wire(s: Option<wire::Site>) -> Option<SiteView> {
        s.map(|s| SiteView { country: s.country, region: s.region, datacenter: s.datacenter })
    }

    /// `DE/hesse/fra1`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.country, self.region, self.datacenter)
    }
}

/// A flavour and what one unit of it holds.
#[derive(Debug, Clone, Serialize)]
pub struct FlavourView {
    /// Name.
    pub name: String,
    /// vCPUs per unit.
    pub vcpu: u32,
    /// MiB per unit.
    pub memory_mib: u64,
    /// GiB per unit.
    pub storage_gib: u64,
    /// GPUs per unit by model.
    pub gpus: BTreeMap<String, u32>,
}

impl FlavourView {
    fn from_wire(f: Option<wire::Flavour>) -> Option<FlavourView> {
        f.map(|f| {
            let r = f.per_unit.unwrap_or_default();
            FlavourView {
                name: f.name,
                vcpu: r.vcpu,
                memory_mib: r.memory_mib,
                storage_gib: r.storage_gib,
                gpus: r.gpus.into_iter().map(|g| (g.model, g.count)).collect(),
            }
        })
    }

    /// `nvidia-l40s x2`, comma-separated; `-` when there are none.
    pub fn gpus_text(&self) -> String {
        if self.gpus.is_empty() {
            return "-".to_owned();
        }
        self.gpus.iter().map(|(m, n)| format!("{m} x{n}")).collect::<Vec<_>>().join(", ")
    }
}

/// An exact price.
#[derive(Debug, Clone, Serialize)]
pub struct PriceView {
    /// ISO 4217.
    pub currency: String,
    /// Integer micro-units.
    pub micros: u64,
    /// The same amount as a decimal string, `"0.420000"`.
    pub amount: String,
}

impl PriceView {
    fn from_wire(p: Option<wire::Price>) -> Option<PriceView> {
        p.map(|p| PriceView { amount: format_micros(p.micros), currency: p.currency, micros: p.micros })
    }
}

impl std::fmt::Display for PriceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// A signed envelope, verbatim, so an auditor can check it again.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeView {
    /// Envelope kind.
    pub kind: String,
    /// Signer's public key.
    pub signer: String,
    /// Ed25519 signature.
    pub signature: String,
    /// The exact signed protobuf bytes.
    pub body: String,
}

/// An offer from the book, or one this node publishes.
#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    /// Offering provider's key.
    pub provider: String,
    /// Federation.
    pub federation: String,
    /// The provider's id for this flavour at this site.
    pub offer_id: String,
    /// Version; a higher seq replaces a lower one.
    pub seq: u64,
    /// Unix ms.
    pub issued_at_ms: u64,
    /// Unix ms.
    pub expires_at_ms: u64,
    /// When this node received it, Unix ms.
    pub received_at_ms: u64,
    /// Where.
    pub site: Option<SiteView>,
    /// What one unit is.
    pub flavour: Option<FlavourView>,
    /// Units on offer; 0 is a withdrawal.
    pub units_available: u32,
    /// Price of one unit for one hour.
    pub unit_price_per_hour: Option<PriceView>,
    /// Shortest contract, ms.
    pub min_duration_ms: u64,
    /// Longest contract, ms.
    pub max_duration_ms: u64,
    /// Every label the offer carries.
    pub labels: Vec<String>,
    /// The labels backed by the provider's member certificate; the rest are self-declared.
    pub attested_labels: Vec<String>,
    /// Availability SLA, permille.
    pub sla_permille: u32,
    /// The signed offer.
    pub envelope: Option<EnvelopeView>,
}

impl From<wire::OfferView> for OfferView {
    fn from(v: wire::OfferView) -> Self {
        let o = v.offer.unwrap_or_default();
        OfferView {
            provider: hex::encode(&o.provider),
            federation: o.federation,
            offer_id: o.offer_id,
            seq: o.seq,
            issued_at_ms: o.issued_at_ms,
            expires_at_ms: o.expires_at_ms,
            received_at_ms: v.received_at_ms,
            site: SiteView::from_wire(o.site),
            flavour: FlavourView::from_wire(o.flavour),
            units_available: o.units_available,
            unit_price_per_hour: PriceView::from_wire(o.unit_price_per_hour),
            min_duration_ms: o.min_duration_ms,
            max_duration_ms: o.max_duration_ms,
            labels: o.labels,
            attested_labels: v.attested_labels,
            sla_permille: o.sla_permille,
            envelope: v.envelope.map(|e| EnvelopeView {
                kind: e.kind,
                signer: hex::encode(&e.signer),
                signature: hex::encode(&e.signature),
                body: hex::encode(&e.body),
            }),
        }
    }
}

/// The terms both parties signed.
#[derive(Debug, Clone, Serialize)]
pub struct TermsView {
    /// Federation.
    pub federation: String,
    /// Provider's key.
    pub provider: String,
    /// Consumer's key.
    pub consumer: String,
    /// The offer it was made from.
    pub offer_id: String,
    /// That offer's seq.
    pub offer_seq: u64,
    /// The hold it committed.
    pub hold_id: String,
    /// The negotiation it came from.
    pub negotiation_id: String,
    /// Where.
    pub site: Option<SiteView>,
    /// What one unit is.
    pub flavour: Option<FlavourView>,
    /// Units.
    pub units: u32,
    /// Price of one unit for one hour.
    pub unit_price_per_hour: Option<PriceView>,
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms.
    pub end_ms: u64,
    /// Unix ms.
    pub created_at_ms: u64,
}

impl From<wire::ContractBody> for TermsView {
    fn from(b: wire::ContractBody) -> Self {
        TermsView {
            federation: b.federation,
            provider: hex::encode(&b.provider),
            consumer: hex::encode(&b.consumer),
            offer_id: b.offer_id,
            offer_seq: b.offer_seq,
            hold_id: hex::encode(&b.hold_id),
            negotiation_id: hex::encode(&b.negotiation_id),
            site: SiteView::from_wire(b.site),
            flavour: FlavourView::from_wire(b.flavour),
            units: b.units,
            unit_price_per_hour: PriceView::from_wire(b.unit_price_per_hour),
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            created_at_ms: b.created_at_ms,
        }
    }
}

/// A contract (or, for `place --dry-run`, a planned one).
#[derive(Debug, Clone, Serialize)]
pub struct ContractView {
    /// SHA-256 of the signed body; empty for a plan.
    pub contract_id: String,
    /// `held`, `active`, `terminated`, `ended`, ...
    pub state: String,
    /// This node's side: `provider` or `consumer`.
    pub role: String,
    /// Position in this node's agreement log.
    pub log_index: u64,
    /// The terms, when the daemon sent them or the body decodes.
    pub terms: Option<TermsView>,
    /// The exact signed body bytes.
    pub body: Option<String>,
    /// Consumer's Ed25519 signature over the body.
    pub consumer_signature: Option<String>,
    /// Provider's countersignature.
    pub provider_signature: Option<String>,
}

fn non_empty_hex(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| hex::encode(bytes))
}

impl From<wire::ContractView> for ContractView {
    fn from(v: wire::ContractView) -> Self {
        let signed = v.contract.unwrap_or_default();
        // The daemon normally sends the decoded body; when it does not, the
        // signed bytes carry the same terms.
        let terms = match v.body {
            Some(body) => Some(body),
            None if !signed.body.is_empty() => wire::ContractBody::decode(signed.body.as_slice()).ok(),
            None => None,
        }
        .map(TermsView::from);
        ContractView {
            contract_id: hex::encode(&v.contract_id),
            state: state_name(v.state),
            role: v.role,
            log_index: v.log_index,
            terms,
            body: non_empty_hex(&signed.body),
            consumer_signature: non_empty_hex(&signed.consumer_signature),
            provider_signature: non_empty_hex(&signed.provider_signature),
        }
    }
}

impl ContractView {
    /// The other party's key: the provider when we consume, and vice versa.
    pub fn counterparty(&self) -> Option<&str> {
        let t = self.terms.as_ref()?;
        Some(if self.role == "provider" { &t.consumer } else { &t.provider })
    }
}

/// The result of `place`.
#[derive(Debug, Clone, Serialize)]
pub struct PlaceView {
    /// True when nothing was negotiated: `plan` is what would be asked.
    pub dry_run: bool,
    /// The composite placement (empty for a dry run or when nothing fitted).
    pub placement_id: String,
    /// `complete`, `failed` or `partial-repaired`.
    pub placement_state: String,
    /// Contracts made: one per allocation of the plan, when complete.
    pub contracts: Vec<ContractView>,
    /// The plan of a dry run.
    pub plan: Vec<PlannedView>,
    /// Why nothing (or not everything) fitted.
    pub explanation: String,
}

impl PlaceView {
    /// The daemon's answer to `place` (`dry_run` as asked).
    pub fn new(dry_run: bool, r: wire::PlaceResult) -> PlaceView {
        PlaceView {
            dry_run,
            placement_id: hex::encode(&r.placement_id),
            placement_state: r.placement_state,
            contracts: r.contracts.into_iter().map(ContractView::from).collect(),
            plan: r.plan.into_iter().map(PlannedView::from).collect(),
            explanation: r.explanation,
        }
    }
}

/// Units of one offer in a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedView {
    /// The offering provider's key.
    pub provider: String,
    /// Its offer.
    pub offer_id: String,
    /// The offer's seq the plan was made from.
    pub offer_seq: u64,
    /// Where.
    pub site: Option<SiteView>,
    /// Units to take.
    pub units: u32,
    /// Price of one unit for one hour.
    pub unit_price: Option<PriceView>,
}

impl From<wire::PlannedAllocation> for PlannedView {
    fn from(a: wire::PlannedAllocation) -> Self {
        PlannedView {
            provider: hex::encode(&a.provider),
            offer_id: a.offer_id,
            offer_seq: a.offer_seq,
            site: SiteView::from_wire(a.site),
            units: a.units,
            unit_price: PriceView::from_wire(a.unit_price),
        }
    }
}

/// One composite placement, as its latest record in the log says.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementView {
    /// Its id (32 hex digits).
    pub placement_id: String,
    /// `committing`, `complete`, `failed` or `partial-repaired`.
    pub state: String,
    /// Replicas asked for.
    pub units: u32,
    /// `none`, `providers` or `countries`.
    pub spread: String,
    /// Allowed countries (empty: any).
    pub countries: Vec<String>,
    /// Required labels.
    pub labels: Vec<String>,
    /// Whether the labels had to be attested.
    pub attested_labels: bool,
    /// Lowest acceptable SLA, permille.
    pub min_sla_permille: u32,
    /// Highest acceptable unit price per hour.
    pub max_unit_price: Option<PriceView>,
    /// Contract start, Unix ms.
    pub start_ms: u64,
    /// Contract duration, ms.
    pub duration_ms: u64,
    /// Its contracts as they stand now (complete: the placement's;
    /// partial-repaired: those obtained and terminated).
    pub contracts: Vec<ContractView>,
    /// Commits whose outcome was unknown when it ended (terminated if they
    /// turn into contracts).
    pub unresolved: Vec<String>,
    /// Plans tried.
    pub attempts: u32,
    /// Why it is not complete.
    pub reason: String,
    /// Unix ms.
    pub started_at_ms: u64,
    /// When its latest record was written, Unix ms.
    pub updated_at_ms: u64,
    /// Position of that record in the log.
    pub log_index: u64,
}

impl From<wire::PlacementView> for PlacementView {
    fn from(p: wire::PlacementView) -> Self {
        let t = p.terms.unwrap_or_default();
        let spread = match wire::Spread::try_from(t.spread) {
            Ok(wire::Spread::None) => "none".to_owned(),
            Ok(wire::Spread::Providers) => "providers".to_owned(),
            Ok(wire::Spread::Countries) => "countries".to_owned(),
            Err(_) => format!("spread-{}", t.spread),
        };
        PlacementView {
            placement_id: hex::encode(&p.placement_id),
            state: p.state,
            units: t.units,
            spread,
            countries: t.countries,
            labels: t.labels,
            attested_labels: t.attested_labels,
            min_sla_permille: t.min_sla_permille,
            max_unit_price: PriceView::from_wire(t.max_unit_price),
            start_ms: t.start_ms,
            duration_ms: t.duration_ms,
            contracts: p.contracts.into_iter().map(ContractView::from).collect(),
            unresolved: p.unresolved.iter().map(hex::encode).collect(),
            attempts: p.attempts,
            reason: p.reason,
            started_at_ms: p.started_at_ms,
            updated_at_ms: p.updated_at_ms,
            log_index: p.log_index,
        }
    }
}

/// One line of `contracts watch`.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// What happened, as the daemon names it.
    pub event: String,
    /// Unix ms.
    pub at_ms: u64,
    /// The contract after the event.
    pub contract: Option<ContractView>,
}

impl From<wire::ContractEvent> for EventView {
    fn from(e: wire::ContractEvent) -> Self {
        EventView { event: e.event, at_ms: e.at_ms, contract: e.contract.map(ContractView::from) }
    }
}

/// `active` for `CONTRACT_STATE_ACTIVE`; numbers this build does not know stay visible.
pub fn state_name(state: i32) -> String {
    use wire::ContractState as S;
    match S::try_from(state) {
        Ok(S::Unspecified) => "unspecified".to_owned(),
        Ok(S::Unknown) => "unknown".to_owned(),
        Ok(S::Held) => "held".to_owned(),
        Ok(S::Active) => "active".to_owned(),
        Ok(S::Terminated) => "terminated".to_owned(),
        Ok(S::Ended) => "ended".to_owned(),
        Err(_) => format!("state-{state}"),
    }
}

/// The first 8 hex digits of a key or id, for tables; `-` when empty.
pub fn short(hex: &str) -> &str {
    if hex.is_empty() { "-" } else { hex.get(..8).unwrap_or(hex) }
}
