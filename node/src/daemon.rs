//! The daemon's event loop. It owns the swarm, both negotiation engines, the
//! offer book, the log and the index, and it is the one place that maps
//! swarm events, admin commands and timers to protocol inputs. Effects are
//! performed strictly in order: records are made durable first (group
//! commit), then messages are sent and events reported. Steps queue behind
//! each other, so no answer ever overtakes an earlier durability point.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::{BookError, Inserted, OfferBook};
use fulcrum_protocol::checkpoint::{SignedCheckpoint, sign_node_checkpoint, verify_node_checkpoint};
use fulcrum_protocol::contract::SignedContract;
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{ContractId, RequestId};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::matching::Constraints;
use fulcrum_protocol::membership::MembershipError;
use fulcrum_protocol::merkle::Hash;
use fulcrum_protocol::messages::{Message, Reject, RejectCode, TerminationReason};
use fulcrum_protocol::negotiation::{Consumer, Event, Outgoing, Provider, Role, Step};
use fulcrum_protocol::offer::{Offer, OfferKey, SignedOffer};
use fulcrum_protocol::record::Record;
use fulcrum_protocol::witness::{self, Evidence, Inclusion, Outcome, SealedEvidence, Witness};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, kad};
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::NodeConfig;
use crate::members::Members;
use crate::metrics::Metrics;
use crate::net::{self, Behaviour, BehaviourEvent, PeerIds, RateLimiter};
use crate::placement::{self, Placements};
use crate::store::checkpoints::{CheckpointFile, read_checkpoints};
use crate::store::index::Index;
use crate::store::log::AgreementLog;

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Offers per sync page (fewer when they would not fit in a response).
const SYNC_PAGE: usize = 2_000;
/// Invalid messages a peer may send before it is disconnected.
const MAX_STRIKES: u32 = 16;
/// Steps waiting for the disk before inbound requests are refused.
const MAX_PENDING_EFFECTS: usize = 8_192;
/// Sync pages pulled from one peer per connection: enough for a full book
/// of the largest offers, which fill a response with fewer than a page.
const MAX_SYNC_PAGES: u32 = 1_200;
/// Peers whose offer books are pulled at once; the others wait their turn.
/// A node joining a large federation connects to dozens of peers that all
/// hold the same book.
const MAX_CONCURRENT_SYNCS: usize = 4;
/// Whole books a node pulls after it starts before a fresh one is enough.
const SYNCS_BEFORE_FRESH: u32 = 4;
/// How long a whole book pulled from a peer counts as fresh.
const SYNC_FRESH: Duration = Duration::from_secs(60);
/// Shared contracts asked about per audit round.
const AUDIT_BATCH: usize = 64;
/// Largest gossiped evidence envelope.
const MAX_EVIDENCE_BYTES: usize = 48 * 1024;
/// The audit-topic message carrying a piece of evidence.
fn evidence_message(envelope: &Envelope) -> Vec<u8> {
    wire::AuditGossip { item: Some(wire::audit_gossip::Item::Evidence(envelope.to_wire())) }.encode_to_vec()
}

fn digest_of(bytes: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(bytes).into()
}

/// A request from the admin API, answered on its oneshot.
#[derive(Debug)]
pub enum AdminCommand {
    /// Node status.
    Status(oneshot::Sender<wire::NodeStatus>),
    /// Connected peers.
    Peers(oneshot::Sender<wire::PeerList>),
    /// Publish an offer (terms from an offer file).
    Publish(wire::Offer, u64, oneshot::Sender<Result<wire::OfferView, String>>),
    /// Withdraw an own offer.
    Withdraw(String, oneshot::Sender<Result<wire::OfferView, String>>),
    /// List offers.
    ListOffers(wire::ListOffersRequest, oneshot::Sender<Result<wire::OfferList, String>>),
    /// Place a workload.
    Place(wire::PlaceRequest, oneshot::Sender<Result<wire::PlaceResult, String>>),
    /// Terminate a contract.
    Terminate(ContractId, TerminationReason, oneshot::Sender<Result<(), String>>),
    /// Evidence held.
    Evidence(oneshot::Sender<wire::EvidenceList>),
    /// Ask the other party of a contract for its inclusion proof.
    Prove(ContractId, oneshot::Sender<Result<wire::ProveResult, String>>),
    /// Sign a checkpoint of everything durable and say what an export holds.
    Export(oneshot::Sender<Result<ExportSnapshot, String>>),
    /// Apply, log and gossip a revocation signed by k authorities.
    Revoke(
        Box<fulcrum_protocol::membership::Revocation>,
        oneshot::Sender<Result<wire::PublishRevocationResult, String>>,
    ),
}

/// What an export of the log holds: the first `records` records of the log
/// and the first `checkpoints` notes of the checkpoints file, the last of
/// which covers exactly those records.
#[derive(Debug, Clone)]
pub struct ExportSnapshot {
    /// The key this node's log started with (its key, unless it rotated).
    pub node_key: PublicKey,
    /// The node's key file (for backups that include the key).
    pub key_path: std::path::PathBuf,
    /// The federation.
    pub federation: String,
    /// Records in the export.
    pub records: u64,
    /// Checkpoints in the export.
    pub checkpoints: u64,
    /// The agreement log file.
    pub log_path: std::path::PathBuf,
    /// The checkpoints file.
    pub checkpoints_path: std::path::PathBuf,
}

/// A contract event for watchers of the admin event stream.
#[derive(Debug, Clone)]
pub struct ContractNotice {
    /// `active`, `terminated` or `expired` (the names hooks get too).
    pub event: &'static str,
    /// The contract.
    pub contract_id: ContractId,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// What a node reports to its observer as it happens. `fulcrumd` runs
/// without one; the simulator measures offer propagation with it.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// An own offer was gossiped (its record is durable).
    OfferPublished {
        /// The offer.
        key: &'a OfferKey,
        /// Its seq.
        seq: u64,
    },
    /// A peer's offer entered the offer book, by gossip or by sync.
    OfferAccepted {
        /// The offer.
        key: &'a OfferKey,
        /// Its seq.
        seq: u64,
    },
    /// A gossip message was validated: `accept`, `reject` or `ignore`.
    Gossip {
        /// `offers`, `audit` or `membership`.
        topic: &'static str,
        /// The validation result.
        result: &'static str,
    },
}

/// Told what the node does, from inside its event loop: it must return quickly.
pub type Observer = Arc<dyn Fn(Observed<'_>) + Send + Sync>;

/// Handles the admin server needs.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Commands to the loop.
    pub commands: mpsc::Sender<AdminCommand>,
    /// Contract events.
    pub events: broadcast::Sender<ContractNotice>,
    /// Index, read directly for contract queries.
    pub index: Index,
    /// This node's key.
    pub me: PublicKey,
}

/// Where the answer to an effect goes once it is durable.
enum Reply {
    None,
    Offer(oneshot::Sender<Result<wire::OfferView, String>>),
    Terminated(oneshot::Sender<Result<(), String>>),
    Placed(placement::PlaceReply, Box<Result<wire::PlaceResult, String>>),
    Revoked(oneshot::Sender<Result<wire::PublishRevocationResult, String>>, wire::PublishRevocationResult),
}

/// An effect waiting for its records to be durable.
struct Pending {
    records: Vec<Record>,
    send: Vec<Outgoing>,
    events: Vec<Event>,
    channel: Option<(PeerId, ResponseChannel<Vec<u8>>)>,
    gossip: Option<SignedOffer>,
    /// Published on the audit topic once durable.
    announce: Option<Vec<u8>>,
    reply: Reply,
}

/// A question asked on the proofs protocol.
enum ProofAsk {
    Consistency(PublicKey),
    Inclusion { contract: Box<SignedContract>, reply: Option<oneshot::Sender<Result<wire::ProveResult, String>>> },
}

type Durable = BoxFuture<'static, (Result<u64, String>, Pending)>;

/// How long a non-member that was disconnected stays unwelcome: its
/// discovery would otherwise redial every few seconds.
const SHUN_MS: u64 = 60_000;

/// The running node.
pub struct Node {
    config: NodeConfig,
    limits: Limits,
    identity: Identity,
    me: PublicKey,
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    provider: Provider,
    consumer: Consumer,
    book: OfferBook,
    log: AgreementLog,
    index: Index,
    rng: StdRng,
    peer_ids: PeerIds,
    rate: RateLimiter,
    strikes: HashMap<PeerId, u32>,
    /// Non-members disconnected by `police_members`, and when: their new
    /// connections are closed at once for `SHUN_MS`.
    shunned: HashMap<PeerId, u64>,
    /// Per peer, the last sync cursor and pages pulled in this connection.
    syncing: HashMap<PeerId, (Vec<u8>, u32)>,
    /// Connected peers whose books are still to be pulled, in order.
    sync_waiting: VecDeque<PeerId>,
    effects: FuturesOrdered<Durable>,
    placements: Placements,
    events: broadcast::Sender<ContractNotice>,
    commands: mpsc::Receiver<AdminCommand>,
    connected: HashMap<PeerId, (Vec<Multiaddr>, u64)>,
    /// Per connected peer, when this node last exchanged a negotiation or
    /// proof message with it (ms): such connections are kept.
    talked: HashMap<PeerId, u64>,
    /// Whole offer books pulled since the node started.
    syncs_done: u32,
    /// When the last whole book was pulled.
    last_sync_done: Option<Instant>,
    started: Instant,
    offer_ttl_ms: u64,
    audit: Audit,
    members: Members,
    metrics: Metrics,
    observer: Option<Observer>,
}

/// The node's side of verifiable logs: its own checkpoints, the witnessed
/// checkpoints of others, shared contracts still to be proven, and evidence.
struct Audit {
    topic: IdentTopic,
    witness: Witness,
    own: Option<SignedCheckpoint>,
    file: CheckpointFile,
    /// Notes in `file`.
    count: u64,
    /// The latest checkpoint witnessed of every other node, appended as
    /// each one is witnessed, fsync'd on the slow tick and rewritten with
    /// only the latest of each node once it holds many older ones.
    witnessed: CheckpointFile,
    /// Notes in `witnessed`.
    witnessed_notes: u64,
    last_signed: Instant,
    /// The size of the last checkpoint gossiped, and when.
    announced: Option<u64>,
    last_announced: Instant,
    interval: Duration,
    every: u64,
    /// Leaf hash to log index of every contract record.
    contract_leaves: HashMap<Hash, u64>,
    /// Shared contracts not yet proven to be in the other party's log.
    unproven: VecDeque<SignedContract>,
    /// Shared contracts proven, each with when it is to be checked again:
    /// a counterparty that drops a contract later is caught as well.
    proven: VecDeque<(Instant, SignedContract)>,
    recheck: Duration,
    asks: HashMap<OutboundRequestId, ProofAsk>,
    evidence: Vec<SealedEvidence>,
    seen: HashSet<[u8; 32]>,
    /// SHA-256 of the audit-topic message of every piece of evidence held,
    /// as this node publishes it: the same bytes from a peer are forwarded
    /// at once, without being opened again.
    evidence_gossip: HashSet<[u8; 32]>,
    /// When this node last published the evidence it found itself, and
    /// whether a publication failed since (no peers yet).
    last_evidence_publish: Instant,
    evidence_publish_due: bool,
    republish_every: Duration,
    peer_keys: HashMap<PeerId, PublicKey>,
    audit_every: Duration,
    last_round: Instant,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.me.short())
    }
}

impl Audit {
    /// Own checkpoints from their file, witnessed ones from the index, and
    /// contracts and evidence from the log.
    fn restore(
        config: &NodeConfig,
        limits: &Limits,
        me: PublicKey,
        log: &AgreementLog,
        records: &[Record],
        index: &Index,
    ) -> anyhow::Result<Audit> {
        let path = config.checkpoints_path();
        let (file, latest, count) =
            CheckpointFile::open(&path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let own = latest.and_then(|note| match verify_node_checkpoint(&note, &config.federation) {
            Ok((key, cp)) if key == me => Some(cp),
            _ => None,
        });
        if let Some(cp) = &own {
            let c = cp.checkpoint();
            if log.with_tree(|t| t.root_at(c.size).ok()) != Some(c.root) {
                error!(
                    checkpoint_size = c.size,
                    log_size = log.len(),
                    "the agreement log does not extend the last checkpoint this node signed: its history was \
                     rewritten or lost, and peers will hold evidence of it"
                );
            }
        }
        // Each node is asked about consistency at most once per two
        // checkpoint intervals, about its newest checkpoint by then.
        let mut witness = Witness::new(&config.federation, me)
            .with_min_ask_interval(config.ms(&config.checkpoint_interval).saturating_mul(2))
            .with_proof_timeout_ms(config.dilated_ms(witness::PROOF_TIMEOUT_MS));
        let witnessed_path = config.witnessed_path();
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot open {}: {e}", witnessed_path.display());
        let mut notes = read_checkpoints(&witnessed_path).map_err(cannot)?;
        let migrated = notes.is_empty();
        if migrated {
            // A data dir from before the witnessed file kept them in the index.
            notes = index.witnessed()?;
        }
        for note in &notes {
            witness.restore(note);
        }
        let latest: Vec<String> = witness.nodes().map(|(_, cp)| cp.to_note()).collect();
        // Rewritten only when it holds more than the latest of every node.
        let witnessed = if migrated || notes.len() != latest.len() {
            CheckpointFile::rewrite(&witnessed_path, latest.iter().map(String::as_str))
        } else {
            CheckpointFile::open(&witnessed_path).map(|(file, _, _)| file)
        }
        .map_err(cannot)?;
        if !latest.is_empty() {
            info!(nodes = latest.len(), "restored the checkpoints witnessed of other nodes");
        }
        let mut contract_leaves = HashMap::new();
        let mut unproven = VecDeque::new();
        let mut evidence = Vec::new();
        let mut seen = HashSet::new();
        let mut evidence_gossip = HashSet::new();
        log.with_tree(|tree| {
            for (i, record) in records.iter().enumerate() {
                match record {
                    Record::Contract { contract } => {
                        if let Some(leaf) = tree.leaf(i as u64) {
                            contract_leaves.insert(leaf, i as u64);
                        }
                        unproven.push_back(contract.clone());
                    }
                    Record::Evidence { envelope } => match Evidence::open(envelope, &config.federation, limits) {
                        Ok(sealed) => {
                            if seen.insert(sealed.evidence.digest()) {
                                evidence_gossip.insert(digest_of(&evidence_message(&sealed.envelope)));
                                evidence.push(sealed);
                            }
                        }
                        Err(e) => warn!(log_index = i, error = %e, "logged evidence no longer checks out"),
                    },
                    _ => {}
                }
            }
        });
        if !evidence.is_empty() {
            warn!(count = evidence.len(), "holding evidence of rewritten history; see 'fulcrumctl audit evidence'");
        }
        Ok(Audit {
            topic: net::audit_topic(&config.federation),
            witness,
            own,
            file,
            count,
            witnessed,
            witnessed_notes: latest.len() as u64,
            last_signed: Instant::now(),
            announced: None,
            last_announced: Instant::now(),
            interval: Duration::from_millis(config.ms(&config.checkpoint_interval)),
            every: config.checkpoint_records,
            contract_leaves,
            unproven,
            proven: VecDeque::new(),
            recheck: Duration::from_millis(config.ms(&config.audit_recheck)),
            asks: HashMap::new(),
            // Evidence this node found is published again soon after start-up.
            evidence_publish_due: evidence.iter().any(|e| e.envelope.signer() == me),
            evidence,
            seen,
            evidence_gossip,
            last_evidence_publish: Instant::now(),
            republish_every: Duration::from_millis(config.ms(&config.evidence_republish)),
            peer_keys: HashMap::new(),
            audit_every: Duration::from_millis(config.ms(&config.audit_interval)),
            last_round: Instant::now(),
        })
    }
}

/// Everything `Node::start` needs.
pub struct Parts {
    /// Merged configuration.
    pub config: NodeConfig,
    /// The node identity.
    pub secret: [u8; 32],
    /// The opened log.
    pub log: AgreementLog,
    /// Every durable record, in order.
    pub records: Vec<Record>,
    /// The opened index.
    pub index: Index,
    /// Where the node reports its metrics and liveness.
    pub metrics: Metrics,
    /// How the swarm reaches peers.
    pub transport: net::Transport,
    /// Told what the node does (None in `fulcrumd`).
    pub observer: Option<Observer>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parts")
    }
}

impl Node {
    /// Restores the engines from the log, opens the swarm and starts listening.
    pub fn start(parts: Parts) -> anyhow::Result<(Node, Handles)> {
        let Parts { config, secret, log, records, index, metrics, transport, observer } = parts;
        log.observe_fsyncs(metrics.fsync_observer());
        let limits = Limits {
            hold_ttl_ms: config.ms(&config.hold_ttl),
            reply_timeout_ms: config.ms(&config.reply_timeout),
            missing_contract_grace_ms: config.ms(&config.audit_grace),
            ..Limits::default()
        };
        let now = now_ms();
        let identity = Identity::from_secret_bytes(&secret);
        let me = identity.public();
        // Membership first: it follows this node's key rotations, and what
        // the keys before this one made is still this node's.
        let mut members = Members::load_with_log(&config, me, &limits, &records, now)?;
        let previous = members.previous_keys().to_vec();
        let fed = &config.federation;
        let own = || Identity::from_secret_bytes(&secret);
        let provider = Provider::restore_with_keys(own(), &previous, fed, limits.clone(), &records, now);
        let consumer = Consumer::restore_with_keys(own(), &previous, fed, limits.clone(), &records, now);
        index.set_previous_keys(&previous);
        let caught_up = index.catch_up(&records, &me)?;
        if caught_up > 0 {
            info!(records = caught_up, "index caught up with the log");
        }
        // Revocations before the book: only members' offers are restored.
        for record in &records {
            if let Record::Revocation { revocation } = record
                && let Err(e) = members.add_revocation(revocation.clone())
            {
                warn!(error = %e, "a logged revocation does not verify against the charter");
            }
        }
        // The offer book: own offers from the log, peers' from the index when
        // their provider is a member now, with the labels its certificate
        // attests. Peers' certificates are not kept: in a closed federation
        // their offers come back with the book sync after the exchange.
        let mut book = OfferBook::new(&limits);
        for signed in provider.own_offers() {
            let _ = book.insert(signed.clone(), BTreeSet::new(), now);
        }
        let (mut restored, mut not_members) = (0, 0);
        for bytes in index.offers()? {
            let Ok(signed) = SignedOffer::verify(&bytes, &config.federation, now, &limits) else { continue };
            let author = signed.offer().provider;
            if members.check(&author, now).is_err() {
                not_members += 1;
                continue;
            }
            if book.insert(signed, members.attested(&author, now), now).is_ok() {
                restored += 1;
            }
        }
        info!(own = provider.own_offers().count(), peers = restored, not_members, "offer book restored");
        let audit = Audit::restore(&config, &limits, me, &log, &records, &index)?;

        let key = net::keypair(&identity).map_err(anyhow::Error::msg)?;
        let topic = net::offers_topic(&config.federation);
        let max_peers = config.max_peers;
        let topic_hashes = [topic.hash(), audit.topic.hash(), members.topic.hash()];
        let mut swarm = net::swarm(key, transport, max_peers, &topic_hashes, config.time_dilation)?;
        swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
        swarm.behaviour_mut().gossipsub.subscribe(&audit.topic)?;
        swarm.behaviour_mut().gossipsub.subscribe(&members.topic)?;
        for addr in &config.listen {
            swarm.listen_on(addr.parse()?)?;
        }
        for addr in &config.bootstrap {
            let addr: Multiaddr = addr.parse()?;
            match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
                    swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                _ => warn!(%addr, "bootstrap address has no /p2p/<peer id>; dialing it anyway"),
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let (commands_tx, commands) = mpsc::channel(256);
        let (events, _) = broadcast::channel(1024);
        let handles = Handles { commands: commands_tx, events: events.clone(), index: index.clone(), me };
        let placements = Placements::restore(limits.clone(), &records);
        let node = Node {
            offer_ttl_ms: config.ms(&config.offer_ttl),
            rate: RateLimiter::new(
                f64::from(config.peer_rate_per_sec) / f64::from(config.time_dilation.max(1)),
                config.peer_burst,
            ),
            config,
            limits,
            identity,
            me,
            swarm,
            topic,
            provider,
            consumer,
            book,
            log,
            index,
            rng: StdRng::from_entropy(),
            peer_ids: PeerIds::default(),
            strikes: HashMap::new(),
            shunned: HashMap::new(),
            syncing: HashMap::new(),
            sync_waiting: VecDeque::new(),
            effects: FuturesOrdered::new(),
            placements,
            events,
            commands,
            connected: HashMap::new(),
            talked: HashMap::new(),
            syncs_done: 0,
            last_sync_done: None,
            started: Instant::now(),
            audit,
            members,
            metrics,
            observer,
        };
        info!(peer_id = %node.swarm.local_peer_id(), key = %me, federation = %node.config.federation, "fulcrumd started");
        Ok((node, handles))
    }

    /// Runs until `shutdown` resolves, then stops taking proposals, finishes
    /// in-flight commits and flushes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.config.dilated(Duration::from_millis(200)));
        let mut slow = tokio::time::interval(self.config.dilated(Duration::from_secs(5)));
        // Discovery refreshes every 10 s while the routing table is short of a
        // bucket's worth of peers (a node that bootstrapped before its peers
        // had met each other); after that, Kademlia's own refresh every five
        // minutes is enough (each round dials dozens of peers).
        let mut kad_refresh = tokio::time::interval(self.config.dilated(Duration::from_secs(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some((result, pending)) = self.effects.next(), if !self.effects.is_empty() => {
                    self.complete(result, pending)?;
                }
                event = self.swarm.select_next_some() => self.on_swarm(event),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                _ = tick.tick() => self.on_tick(),
                _ = slow.tick() => self.on_slow_tick(),
                _ = kad_refresh.tick() => {
                    let known: usize = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
                    // One lookup of its own key (not a bootstrap, which looks
                    // up a key per bucket and dials every peer it meets).
                    if known < 20 {
                        let me = *self.swarm.local_peer_id();
                        self.swarm.behaviour_mut().kad.get_closest_peers(me);
                    }
                }
            }
        }
        info!("shutting down: no new proposals; finishing in-flight commits");
        self.provider.stop_accepting();
        // Keep the swarm running while draining, so the answers of the
        // commits finished here actually leave, then give them a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.effects.is_empty() {
            tokio::select! {
                Some((result, pending)) = self.effects.next() => {
                    if let Err(e) = self.complete(result, pending) {
                        warn!(error = %e, "while draining");
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm(event),
                () = tokio::time::sleep_until(deadline) => {
                    warn!("in-flight effects did not finish in 20 s");
                    break;
                }
            }
        }
        let flush = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(event) = tokio::time::timeout_at(flush, self.swarm.select_next_some()).await {
            self.on_swarm(event);
        }
        self.log.close();
        self.index.flush()?;
        info!("stopped cleanly");
        Ok(())
    }

    // ---- effects -------------------------------------------------------

    /// Queues a step: persist, then (once durable) send and report.
    fn perform(&mut self, step: Step, channel: Option<(PeerId, ResponseChannel<Vec<u8>>)>) {
        self.perform_with(step, channel, None, Reply::None);
    }

    /// Queues records to be made durable, then published on the audit topic.
    fn persist_and_announce(&mut self, records: Vec<Record>, announce: Option<Vec<u8>>) {
        let step = Step { persist: records, ..Step::default() };
        self.perform_full(step, None, None, announce, Reply::None);
    }

    fn perform_with(
        &mut self,
        step: Step,
        channel: Option<(PeerId, ResponseChannel<Vec<u8>>)>,
        gossip: Option<SignedOffer>,
        reply: Reply,
    ) {
        self.perform_full(step, channel, gossip, None, reply);
    }

    fn perform_full(
        &mut self,
        step: Step,
        channel: Option<(PeerId, ResponseChannel<Vec<u8>>)>,
        gossip: Option<SignedOffer>,
        announce: Option<Vec<u8>>,
        reply: Reply,
    ) {
        let Step { persist, send, events } = step;
        let encoded: Result<Vec<Vec<u8>>, String> =
            persist.iter().map(|r| r.to_cbor().map_err(|e| e.to_string())).collect();
        let pending = Pending { records: persist, send, events, channel, gossip, announce, reply };
        let log = self.log.clone();
        self.effects.push_back(Box::pin(async move {
            // A record that cannot be encoded cannot be made durable: nothing
            // of this step may be acknowledged, so the node stops (fail-stop).
            let encoded = match encoded {
                Ok(e) => e,
                Err(e) => return (Err(format!("cannot encode a log record: {e}")), pending),
            };
            let result = if encoded.is_empty() { Ok(0) } else { log.append(encoded).await.map_err(|e| e.to_string()) };
            (result, pending)
        }));
    }

    /// Called in order once a step's records are durable.
    fn complete(&mut self, result: Result<u64, String>, p: Pending) -> anyhow::Result<()> {
        let first = match result {
            Ok(first) => first,
            Err(e) => {
                // Durability is unknown: stop rather than acknowledge anything.
                anyhow::bail!("agreement log write failed, refusing to continue: {e}");
            }
        };
        for (i, record) in p.records.iter().enumerate() {
            let log_index = first + i as u64;
            if let Err(e) = self.index.apply(log_index, record, &self.me) {
                warn!(error = %e, "index update failed; it will be rebuilt from the log at start-up");
            }
            if let Record::Contract { contract } = record {
                if let Some(leaf) = self.log.with_tree(|t| t.leaf(log_index)) {
                    self.audit.contract_leaves.insert(leaf, log_index);
                }
                self.audit.unproven.push_back(contract.clone());
            }
        }
        if let Some(bytes) = p.announce
            && let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.audit.topic.clone(), bytes)
        {
            debug!(error = %e, "evidence not gossiped now; published again on a later tick");
            self.audit.evidence_publish_due = true;
        }
        if let Some(signed) = p.gossip {
            let key = signed.offer().key();
            self.observe(Observed::OfferPublished { key: &key, seq: signed.offer().seq });
            let bytes = signed.envelope().encode();
            let view = offer_view(&signed, BTreeSet::new(), now_ms());
            let _ = self.book.insert(signed, BTreeSet::new(), now_ms());
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes) {
                debug!(offer = %key, error = %e, "offer not gossiped now (peers will sync it)");
            }
            if let Reply::Offer(tx) = p.reply {
                let _ = tx.send(Ok(view));
            }
        } else {
            match p.reply {
                Reply::Terminated(tx) => {
                    let _ = tx.send(Ok(()));
                }
                Reply::Placed(tx, result) => {
                    let _ = tx.send(*result);
                }
                Reply::Revoked(tx, result) => {
                    let _ = tx.send(Ok(result));
                }
                Reply::None | Reply::Offer(_) => {}
            }
        }
        let mut channel = p.channel;
        for out in p.send {
            let bytes = out.message.seal(&self.identity).encode();
            // A contract names the keys its parties had when they signed it;
            // a party that rotated since is reached at its key in use.
            let to = self.members.current_key(&out.to);
            let Some(peer) = self.peer_ids.of(&to) else { continue };
            match channel.take() {
                Some((ch_peer, ch)) if ch_peer == peer => {
                    if self.swarm.behaviour_mut().negotiate.send_response(ch, bytes).is_err() {
                        debug!(%peer, "peer went away before the answer");
                    }
                }
                other => {
                    channel = other;
                    self.talked.insert(peer, now_ms());
                    self.swarm.behaviour_mut().negotiate.send_request(&peer, bytes);
                }
            }
        }
        for event in p.events {
            self.on_event(event);
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        let now = now_ms();
        let (placements, engines) = self.placing(now);
        let effects = placements.on_event(engines, &event);
        self.perform_placement(effects);
        match event {
            Event::ContractActive { contract_id, role } => {
                info!(contract = %contract_id, ?role, "contract active");
                self.metrics.contract(role_name(role), "active");
                let _ = self.events.send(ContractNotice { event: "active", contract_id, at_ms: now });
            }
            Event::ContractTerminated { contract_id, reason, role } => {
                info!(contract = %contract_id, ?reason, ?role, "contract terminated");
                self.metrics.contract(role_name(role), "terminated");
                let _ = self.events.send(ContractNotice { event: "terminated", contract_id, at_ms: now });
            }
            Event::ContractEnded { contract_id, role } => {
                info!(contract = %contract_id, ?role, "contract expired (reached its end time)");
                self.metrics.contract(role_name(role), "expired");
                let _ = self.events.send(ContractNotice { event: "expired", contract_id, at_ms: now });
            }
            Event::ProposalRejected { consumer, code } => {
                debug!(consumer = %consumer.short(), ?code, "proposal rejected");
                self.metrics.proposal(&reject_code_name(code));
            }
            Event::HoldGranted { .. } => self.metrics.proposal("held"),
            // Placements (above) follow these.
            Event::HoldEnded { .. }
            | Event::Held { .. }
            | Event::Released { .. }
            | Event::Placed { .. }
            | Event::Failed { .. } => {}
        }
    }

    /// The placements and the engines they drive, borrowed together.
    fn placing(&mut self, now: u64) -> (&mut Placements, placement::Engines<'_>) {
        let engines = placement::Engines {
            now,
            consumer: &mut self.consumer,
            rng: &mut self.rng,
            book: &self.book,
            index: &self.index,
        };
        (&mut self.placements, engines)
    }

    /// Queues a placement's effects, then its answers behind them.
    fn perform_placement(&mut self, effects: placement::Effects) {
        if !effects.step.is_empty() {
            self.perform(effects.step, None);
        }
        for answer in effects.answers {
            self.perform_with(Step::default(), None, None, Reply::Placed(answer.reply, Box::new(answer.result)));
        }
    }

    // ---- swarm ---------------------------------------------------------

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        if let SwarmEvent::Behaviour(
            BehaviourEvent::Negotiate(request_response::Event::Message { peer, .. })
            | BehaviourEvent::Proofs(request_response::Event::Message { peer, .. }),
        ) = &event
        {
            self.talked.insert(*peer, now_ms());
        }
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.metrics.record(e),
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. }
                if self
                    .shunned
                    .get(&peer_id)
                    .is_some_and(|at| now_ms().saturating_sub(*at) < self.config.dilated_ms(SHUN_MS)) =>
            {
                debug!(%peer_id, ?endpoint, "closing a new connection of a non-member disconnected recently");
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                let addr = endpoint.get_remote_address().clone();
                let entry = self.connected.entry(peer_id).or_insert_with(|| (Vec::new(), now_ms()));
                if !entry.0.contains(&addr) {
                    entry.0.push(addr.clone());
                }
                if endpoint.is_dialer() {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                if num_established.get() == 1 && endpoint.is_dialer() {
                    // Certificates and revocations first, so that what this
                    // peer forwards can be checked.
                    let exchange = self.members.exchange();
                    self.swarm.behaviour_mut().membership.send_request(&peer_id, exchange);
                }
                // In a closed federation the book is pulled once the
                // certificates are exchanged, so its authors can be checked.
                if num_established.get() == 1 && self.members.is_open() {
                    debug!(%peer_id, "connected; pulling its offer book");
                    self.start_sync(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.remove(&peer_id);
                self.talked.remove(&peer_id);
                self.audit.peer_keys.remove(&peer_id);
                self.members.exchanged.remove(&peer_id);
                self.rate.forget(&peer_id);
                self.strikes.remove(&peer_id);
                self.sync_waiting.retain(|p| *p != peer_id);
                self.sync_ended(&peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    if is_dialable(&addr) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                // The peer's node key is its libp2p key: from now on its
                // log is witnessed, starting with its latest checkpoint.
                if info.public_key.to_peer_id() == peer_id
                    && let Ok(ed) = info.public_key.clone().try_into_ed25519()
                    && let Ok(key) = PublicKey::from_bytes(&ed.to_bytes())
                {
                    self.audit.peer_keys.insert(peer_id, key);
                    let request = self.audit.witness.ask_latest(key, now_ms(), &mut self.rng);
                    self.ask_proof(key, wire::proof_request::Request::Consistency(request), ProofAsk::Consistency(key));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(result),
                ..
            })) => self.on_lookup(result),
            // Peers discovered are dialled while the node has fewer than a
            // quarter of its `max_peers`: every node dials about as many as
            // dial it, so a federation settles at about half the limit, and
            // the rest is room for counterparties of negotiations. Nodes that
            // dialled up to half their limit filled each other up to it, and
            // a full node can neither be proposed to nor reach a provider.
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }))
                if !self.swarm.is_connected(&peer)
                    && self.swarm.connected_peers().count() < discovery_target(self.config.max_peers) =>
            {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let (topic, acceptance) = if message.topic == self.audit.topic.hash() {
                    ("audit", self.on_audit_gossip(&message.data))
                } else if message.topic == self.members.topic.hash() {
                    ("membership", self.on_membership_gossip(&message.data))
                } else {
                    ("offers", self.on_gossip(&message.data))
                };
                let result = match acceptance {
                    MessageAcceptance::Accept => "accept",
                    MessageAcceptance::Reject => "reject",
                    MessageAcceptance::Ignore => "ignore",
                };
                self.metrics.gossip(topic, result);
                self.observe(Observed::Gossip { topic, result });
                if acceptance == MessageAcceptance::Reject {
                    self.strike(propagation_source, "invalid gossip");
                }
                let _ = self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Negotiate(event)) => self.on_negotiate(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Proofs(event)) => self.on_proofs(event),
            SwarmEvent::Behaviour(BehaviourEvent::Membership(event)) => self.on_membership(event),
            _ => {}
        }
    }

    fn observe(&self, what: Observed<'_>) {
        if let Some(observer) = &self.observer {
            observer(what);
        }
    }

    fn strike(&mut self, peer: PeerId, why: &str) {
        let n = self.strikes.entry(peer).or_insert(0);
        *n += 1;
        warn!(%peer, strikes = *n, why, "misbehaving peer");
        if *n >= MAX_STRIKES {
            warn!(%peer, "disconnecting a peer that keeps sending invalid messages");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.strikes.remove(&peer);
        }
    }

    /// Validates a gossiped offer: Accept forwards it, Ignore drops it
    /// quietly (stale, duplicate, expired), Reject drops it and costs the
    /// sender score (forged, malformed, equivocating).
    fn on_gossip(&mut self, data: &[u8]) -> MessageAcceptance {
        let now = now_ms();
        let signed = match SignedOffer::verify(data, &self.config.federation, now, &self.limits) {
            Ok(s) => s,
            Err(fulcrum_protocol::offer::OfferError::Expired { .. }) => return MessageAcceptance::Ignore,
            Err(e) => {
                debug!(error = %e, "rejected gossiped offer");
                return MessageAcceptance::Reject;
            }
        };
        self.insert_offer(signed, now)
    }

    fn insert_offer(&mut self, signed: SignedOffer, now: u64) -> MessageAcceptance {
        let key = signed.offer().key();
        // Only members may offer: an unknown author may simply not be known
        // yet (ignored, not forwarded); a revoked or expired one is refused.
        match self.members.check(&key.provider, now) {
            Ok(()) => {}
            Err(MembershipError::NoCertificate(_)) => return MessageAcceptance::Ignore,
            Err(e) => {
                debug!(offer = %key, error = %e, "offer from a non-member refused");
                return MessageAcceptance::Reject;
            }
        }
        let attested = self.members.attested(&key.provider, now);
        let bytes = signed.envelope().encode();
        let seq = signed.offer().seq;
        match self.book.insert(signed, attested, now) {
            Ok(Inserted::New | Inserted::Replaced { .. } | Inserted::Withdrawn) => {
                self.observe(Observed::OfferAccepted { key: &key, seq });
                if let Err(e) = self.index.put_offer(&key, &bytes) {
                    warn!(error = %e, "cannot index offer");
                }
                MessageAcceptance::Accept
            }
            Ok(Inserted::Duplicate) | Err(BookError::Stale { .. } | BookError::Expired { .. }) => {
                MessageAcceptance::Ignore
            }
            Err(BookError::ProviderFull { .. } | BookError::BookFull { .. }) => MessageAcceptance::Ignore,
            Err(BookError::Equivocation { key, seq }) => {
                warn!(offer = %key, seq, "provider signed two different offers with one seq");
                MessageAcceptance::Reject
            }
        }
    }

    fn on_negotiate(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message { peer, message: M::Request { request, channel, .. }, .. } => {
                self.on_request(peer, request, channel)
            }
            E::Message { peer, message: M::Response { response, .. }, .. } => {
                let Some(envelope) = self.verified_from(peer, &response) else { return };
                // A hold or a counter would lead to a new contract: none with
                // a provider that is not a member in good standing now (the
                // negotiation ends at its deadline). Answers about contracts
                // this node already signed (countersigned, status) and
                // termination acknowledgements still count.
                if matches!(envelope.kind(), Kind::Hold | Kind::Counter)
                    && let Err(e) = self.members.check(&envelope.signer(), now_ms())
                {
                    warn!(%peer, provider = %envelope.signer(), error = %e, "answer from a non-member ignored");
                    return;
                }
                // Answers go to the consumer engine, except acknowledgements of
                // terminations the provider engine sent.
                let step = if envelope.kind() == Kind::Terminated && !self.consumer_owns(&envelope) {
                    self.provider.handle(now_ms(), &mut self.rng, &envelope)
                } else {
                    self.consumer.handle(now_ms(), &mut self.rng, &envelope)
                };
                self.perform(step, None);
            }
            E::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "negotiation request failed; timers retry");
                // A provider known only from its gossiped offer may have no
                // address here yet: look it up, so the retry can dial it.
                if matches!(error, request_response::OutboundFailure::DialFailure) {
                    self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                }
            }
            E::InboundFailure { peer, error, .. } => debug!(%peer, %error, "inbound negotiation failed"),
            E::ResponseSent { .. } => {}
        }
    }

    /// Above three quarters of `max_peers` connections, closes the oldest
    /// that carry nothing this node needs, down to half of `max_peers`: not a
    /// gossip mesh peer, no book being pulled, no negotiation or proof
    /// message either way for a while, and open for a few seconds. Every
    /// connection stays open for as long as gossipsub's streams are on it,
    /// so without this a node fills up to its limit with connections opened
    /// once (a lookup, a negotiation, a peer dialling in) and can then
    /// neither reach a new provider nor be reached by a new consumer.
    fn trim_connections(&mut self, now: u64) {
        let max = self.config.max_peers as usize;
        let (high, low) = (max * 3 / 4, max / 2);
        if self.connected.len() <= high {
            return;
        }
        // A connection gets a few seconds to be used at all; one that
        // carried a negotiation is kept long enough for a placement to run
        // its course.
        let young = self.config.dilated_ms(10_000);
        let quiet = self.config.ms(&self.config.place_deadline).saturating_add(self.limits.hold_ttl_ms);
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gossipsub.all_mesh_peers().copied().collect();
        let mut idle: Vec<(u64, PeerId)> = self
            .connected
            .iter()
            .filter(|(peer, (_, since))| {
                !mesh.contains(*peer)
                    && !self.syncing.contains_key(*peer)
                    && now.saturating_sub(*since) > young
                    && self.talked.get(*peer).is_none_or(|at| now.saturating_sub(*at) > quiet)
            })
            .map(|(peer, (_, since))| (*since, *peer))
            .collect();
        idle.sort_unstable();
        let excess = self.connected.len() - low;
        let mut closed = 0;
        for (_, peer) in idle.into_iter().take(excess) {
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                closed += 1;
            }
        }
        if closed > 0 {
            debug!(closed, connected = self.connected.len(), "idle connections closed to keep room");
        }
    }

    /// The end of a Kademlia lookup of a peer this node could not dial (a
    /// provider known only from its offer, a consumer to answer): its
    /// addresses, if the lookup found it, are remembered and dialled, so the
    /// timers' next attempt finds it connected.
    fn on_lookup(&mut self, result: kad::GetClosestPeersResult) {
        let (key, peers) = match result {
            Ok(ok) => (ok.key, ok.peers),
            Err(kad::GetClosestPeersError::Timeout { key, peers }) => (key, peers),
        };
        // The refresh's lookups of this node's own key end here too.
        let Ok(target) = PeerId::from_bytes(&key) else { return };
        if target == *self.swarm.local_peer_id() {
            return;
        }
        let Some(found) = peers.into_iter().find(|p| p.peer_id == target) else {
            debug!(peer = %target, "lookup did not find the peer");
            return;
        };
        let addrs: Vec<Multiaddr> = found.addrs.into_iter().filter(is_dialable).collect();
        if addrs.is_empty() || self.swarm.is_connected(&target) {
            return;
        }
        for addr in &addrs {
            self.swarm.behaviour_mut().kad.add_address(&target, addr.clone());
        }
        debug!(peer = %target, addresses = addrs.len(), "lookup found the peer; dialling it");
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(target)
            .addresses(addrs)
            .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(peer = %target, error = %e, "cannot dial the peer found");
        }
    }

    /// Decodes an envelope and checks its signer is the connected peer.
    fn verified_from(&mut self, peer: PeerId, bytes: &[u8]) -> Option<Envelope> {
        match Envelope::decode(bytes, self.limits.max_envelope_bytes) {
            Ok(env) if self.peer_ids.of(&env.signer()) == Some(peer) => Some(env),
            Ok(_) => {
                self.strike(peer, "message signed by another key than the sender's");
                None
            }
            Err(e) => {
                debug!(%peer, error = %e, "bad envelope");
                self.strike(peer, "malformed envelope");
                None
            }
        }
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let now = now_ms();
        if !self.rate.allow(peer, now) {
            self.refuse(channel, RejectCode::RateLimited, "rate limit exceeded; slow down");
            return;
        }
        // Effects waiting for the disk are bounded: past that the node is
        // overloaded (a stalled fsync, say) and says so instead of queueing.
        if self.effects.len() >= MAX_PENDING_EFFECTS {
            self.refuse(channel, RejectCode::RateLimited, "node is overloaded; retry later");
            return;
        }
        let Some(envelope) = self.verified_from(peer, &request) else {
            self.refuse(channel, RejectCode::Malformed, "malformed or misattributed message");
            return;
        };
        // Non-members get no hold. Contracts made before a revocation can
        // still be wound down: terminations and status questions pass. The
        // refusal names the request, so that the consumer's negotiation
        // ends on it instead of at its deadline.
        if !matches!(envelope.kind(), Kind::Terminate | Kind::Terminated | Kind::StatusRequest)
            && let Err(e) = self.members.check(&envelope.signer(), now)
        {
            let request_id = Message::open(&envelope, &self.limits).map_or(RequestId([0; 16]), |m| m.request_id());
            let why = format!("not a member of the federation: {e}");
            self.refuse_request(channel, request_id, RejectCode::NotAMember, &why);
            self.strike(peer, "proposal from a non-member");
            return;
        }
        // Terminate goes to whichever role this node has in the contract.
        let step = if envelope.kind() == Kind::Terminate && self.consumer_owns(&envelope) {
            self.consumer.handle(now, &mut self.rng, &envelope)
        } else {
            self.provider.handle(now, &mut self.rng, &envelope)
        };
        self.perform(step, Some((peer, channel)));
    }

    /// True when a Terminate or Terminated names a contract this node bought.
    fn consumer_owns(&self, envelope: &Envelope) -> bool {
        match Message::open(envelope, &self.limits) {
            Ok(Message::Terminate(t)) => self.consumer.contract(&t.contract_id).is_some(),
            Ok(Message::Terminated(t)) => self.consumer.contract(&t.contract_id).is_some(),
            _ => false,
        }
    }

    fn refuse(&mut self, channel: ResponseChannel<Vec<u8>>, code: RejectCode, message: &str) {
        self.refuse_request(channel, RequestId([0; 16]), code, message);
    }

    /// A refusal of the request `request_id` (all zeros: of none in particular).
    fn refuse_request(
        &mut self,
        channel: ResponseChannel<Vec<u8>>,
        request_id: RequestId,
        code: RejectCode,
        message: &str,
    ) {
        self.metrics.proposal(&reject_code_name(code));
        let reject = Message::Reject(Reject { request_id, code, message: message.into() });
        let _ = self.swarm.behaviour_mut().negotiate.send_response(channel, reject.seal(&self.identity).encode());
    }

    /// Pulls a peer's offer book from the start, now or once fewer than
    /// [`MAX_CONCURRENT_SYNCS`] pulls are running.
    fn start_sync(&mut self, peer: PeerId) {
        if self.syncing.contains_key(&peer) || self.sync_waiting.contains(&peer) {
            return;
        }
        // A node that pulled whole books from a few peers since it started,
        // one of them within the last minute, has what gossip has not
        // brought it; pulling the book again from every connection a lookup
        // or a negotiation opens would cost each of them a full book.
        let recently = self.last_sync_done.is_some_and(|at| at.elapsed() < self.config.dilated(SYNC_FRESH));
        if self.syncs_done >= SYNCS_BEFORE_FRESH && recently {
            return;
        }
        if self.syncing.len() >= MAX_CONCURRENT_SYNCS {
            self.sync_waiting.push_back(peer);
            return;
        }
        self.syncing.insert(peer, (Vec::new(), 0));
        self.request_sync(peer, Vec::new());
    }

    /// A pull ended (finished, failed, or the peer left): the next waits no more.
    fn sync_ended(&mut self, peer: &PeerId) {
        self.syncing.remove(peer);
        while self.syncing.len() < MAX_CONCURRENT_SYNCS {
            let Some(next) = self.sync_waiting.pop_front() else { break };
            if self.swarm.is_connected(&next) {
                self.start_sync(next);
            }
        }
    }

    /// True when the book holds exactly this offer envelope, or a newer seq
    /// of its offer: a duplicate or a stale version would be ignored anyway,
    /// so its signature is not checked again. (One of the same seq with other
    /// bytes is checked in full: it may be an equivocation.)
    fn already_known(&self, w: &wire::Envelope) -> bool {
        let Ok(offer) = wire::Offer::decode(w.body.as_slice()) else { return false };
        let Ok(provider) = PublicKey::from_bytes(&offer.provider) else { return false };
        let key = OfferKey { provider, offer_id: offer.offer_id };
        self.book.get(&key).is_some_and(|e| {
            let held = e.signed.offer().seq;
            held > offer.seq || (held == offer.seq && e.signed.envelope().to_wire() == *w)
        })
    }

    fn request_sync(&mut self, peer: PeerId, cursor: Vec<u8>) {
        let req = wire::OfferSyncRequest { cursor, max_offers: SYNC_PAGE as u32 };
        self.swarm.behaviour_mut().sync.send_request(&peer, req.encode_to_vec());
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message { peer, message: M::Request { request, channel, .. }, .. } => {
                if !self.rate.allow(peer, now_ms()) {
                    return;
                }
                let Ok(req) = wire::OfferSyncRequest::decode(request.as_slice()) else {
                    self.strike(peer, "malformed sync request");
                    return;
                };
                let after = cursor_key(&req.cursor);
                let max = (req.max_offers as usize).clamp(1, SYNC_PAGE);
                // As many as fit in a response, with room for the framing.
                let resp = sync_page(&self.book, after.as_ref(), max, net::MAX_SYNC_BYTES - 64 * 1024);
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, resp.encode_to_vec());
            }
            E::Message { peer, message: M::Response { response, .. }, .. } => {
                let Ok(resp) = wire::OfferSyncResponse::decode(response.as_slice()) else {
                    self.strike(peer, "malformed sync response");
                    return;
                };
                // The next page is asked for before this one is checked, so
                // that the transfer and the checking overlap.
                if !resp.next_cursor.is_empty() {
                    // A peer must walk its book forward and finish: a cursor
                    // that does not advance, or endless pages, end the sync.
                    let (last, pages) = self.syncing.entry(peer).or_insert((Vec::new(), 0));
                    *pages += 1;
                    if resp.next_cursor <= *last || *pages > MAX_SYNC_PAGES {
                        self.sync_ended(&peer);
                        self.strike(peer, "offer sync that does not advance");
                        return;
                    }
                    *last = resp.next_cursor.clone();
                    self.request_sync(peer, resp.next_cursor.clone());
                } else {
                    self.syncs_done = self.syncs_done.saturating_add(1);
                    self.last_sync_done = Some(Instant::now());
                    self.sync_ended(&peer);
                }
                let now = now_ms();
                let (mut accepted, mut refused, mut known) = (0, 0, 0);
                for w in resp.offers.into_iter().take(SYNC_PAGE) {
                    if self.already_known(&w) {
                        known += 1;
                        continue;
                    }
                    let checked = Envelope::from_wire(w)
                        .map_err(fulcrum_protocol::offer::OfferError::from)
                        .and_then(|env| SignedOffer::from_envelope(env, &self.limits))
                        .and_then(|s| s.offer().check_current(&self.config.federation, now, &self.limits).map(|()| s));
                    match checked {
                        Ok(signed) => {
                            if self.insert_offer(signed, now) == MessageAcceptance::Accept {
                                accepted += 1;
                            }
                        }
                        Err(fulcrum_protocol::offer::OfferError::Expired { .. }) => {}
                        Err(_) => refused += 1,
                    }
                }
                if refused > 0 {
                    self.strike(peer, "invalid offers in sync");
                }
                debug!(%peer, accepted, refused, known, "offer-book page synced");
            }
            E::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "offer sync failed");
                self.sync_ended(&peer);
            }
            _ => {}
        }
    }

    // ---- timers --------------------------------------------------------

    fn on_tick(&mut self) {
        let now = now_ms();
        let step = self.provider.tick(now);
        if !step.is_empty() {
            self.perform(step, None);
        }
        for outcome in self.audit.witness.due(now, &mut self.rng) {
            self.on_outcome(outcome);
        }
        let step = self.consumer.tick(now, &mut self.rng);
        if !step.is_empty() {
            self.perform(step, None);
        }
        // Placements: retries after a wait, deadlines, repairs.
        let (placements, engines) = self.placing(now);
        let effects = placements.tick(engines);
        self.perform_placement(effects);
        self.maybe_checkpoint(false);
        self.refresh_gauges();
    }

    /// Gauges cheap enough to set on every tick, and the heartbeat.
    fn refresh_gauges(&self) {
        let g = self.metrics.gauges();
        let own = self.audit.own.as_ref().map(|cp| cp.checkpoint().size);
        g.peers_connected.set(gauge(self.connected.len()));
        g.holds_live.set(gauge(self.provider.live_holds()));
        g.log_records.set(gauge(self.log.len()));
        g.checkpoint_size.set(gauge(own.unwrap_or(0)));
        g.checkpoint_age_seconds.set(self.audit.last_signed.elapsed().as_secs_f64());
        g.evidence.set(gauge(self.audit.evidence.len()));
        g.effects_pending.set(gauge(self.effects.len()));
        self.metrics.set_checkpoint_signed(own.is_some());
        self.metrics.beat();
    }

    /// Gauges that walk the offer book or the index: every slow tick.
    fn refresh_slow_gauges(&self, now: u64) {
        let g = self.metrics.gauges();
        g.offers_known.set(gauge(self.book.live(now).count()));
        g.offers_own.set(gauge(self.provider.own_offers().filter(|o| !o.offer().is_withdrawal()).count()));
        g.witnessed_nodes.set(gauge(self.audit.witness.nodes().count()));
        g.members_known.set(gauge(self.members.known()));
        let (_, not_after) = self.members.standing(now);
        let left_s = if not_after == 0 { 0 } else { (i128::from(not_after) - i128::from(now)) / 1_000 };
        g.certificate_expiry_seconds.set(i64::try_from(left_s).unwrap_or(i64::MAX));
        match self.index.active_contracts(now) {
            Ok(n) => {
                g.contracts_active.set(gauge(n));
            }
            Err(e) => debug!(error = %e, "cannot count active contracts for the metrics"),
        }
    }

    fn on_slow_tick(&mut self) {
        let now = now_ms();
        self.police_members(now);
        self.trim_connections(now);
        for file in [&mut self.audit.file, &mut self.audit.witnessed] {
            if let Err(e) = file.sync() {
                warn!(path = %file.path().display(), error = %e, "cannot fsync a checkpoints file");
            }
        }
        self.audit.witness.expire(now);
        self.republish_evidence();
        if self.audit.last_round.elapsed() >= self.audit.audit_every {
            self.audit.last_round = Instant::now();
            self.audit_round(now);
        }
        for (signed, step) in self.provider.reannounce(now, self.offer_ttl_ms) {
            self.perform_with(step, None, Some(signed), Reply::None);
        }
        let expired = self.book.expire_keys(now);
        for key in &expired {
            if let Err(e) = self.index.remove_offer(key) {
                warn!(error = %e, "cannot prune an expired offer from the index");
            }
        }
        if !expired.is_empty() {
            debug!(expired = expired.len(), "expired offers dropped");
        }
        self.refresh_slow_gauges(now);
    }

    // ---- membership ----------------------------------------------------

    /// True when the checkpoint's node is a member now.
    fn checkpoint_by_member(&self, note: &str, now: u64) -> bool {
        verify_node_checkpoint(note, &self.config.federation)
            .is_ok_and(|(node, _)| self.members.check(&node, now).is_ok())
    }

    fn on_membership_gossip(&mut self, data: &[u8]) -> MessageAcceptance {
        match self.members.on_gossip(data, now_ms()) {
            crate::members::Gossiped::New(Some(revocation)) => {
                if let Err(e) = self.apply_revocation(revocation, None) {
                    warn!(error = %e, "cannot apply a gossiped revocation");
                }
                MessageAcceptance::Accept
            }
            crate::members::Gossiped::New(None) => {
                self.retire_rotated_keys();
                MessageAcceptance::Accept
            }
            crate::members::Gossiped::Known => MessageAcceptance::Ignore,
            crate::members::Gossiped::Invalid(why) => {
                debug!(%why, "rejected membership message");
                MessageAcceptance::Reject
            }
        }
    }

    fn on_membership(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        let (peer, bytes, channel) = match event {
            E::Message { peer, message: M::Request { request, channel, .. }, .. } => (peer, request, Some(channel)),
            E::Message { peer, message: M::Response { response, .. }, .. } => (peer, response, None),
            E::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "membership exchange failed");
                return;
            }
            _ => return,
        };
        if !self.rate.allow(peer, now_ms()) {
            return;
        }
        match self.members.on_exchange(&bytes, now_ms()) {
            Ok(revocations) => {
                for revocation in revocations {
                    if let Err(e) = self.apply_revocation(revocation, None) {
                        warn!(error = %e, "cannot apply a revocation from a peer");
                    }
                }
            }
            Err(why) => self.strike(peer, &why),
        }
        self.retire_rotated_keys();
        if !self.members.is_open() && self.members.exchanged.insert(peer) {
            debug!(%peer, "certificates exchanged; pulling its offer book");
            self.start_sync(peer);
        }
        if let Some(channel) = channel {
            let exchange = self.members.exchange();
            let _ = self.swarm.behaviour_mut().membership.send_response(channel, exchange);
        }
    }

    /// Applies a verified revocation: the member's offers go, it is
    /// disconnected, the revocation is logged (and gossiped when this node
    /// was handed it through the admin API, which is answered once the
    /// record is durable). Contracts made before stay in the log.
    fn apply_revocation(
        &mut self,
        revocation: fulcrum_protocol::membership::Revocation,
        admin: Option<oneshot::Sender<Result<wire::PublishRevocationResult, String>>>,
    ) -> Result<bool, String> {
        let member = revocation.body().member;
        let result = |new| wire::PublishRevocationResult { member: member.to_bytes().to_vec(), new };
        let new = match self.members.add_revocation(revocation.clone()) {
            Ok(new) => new,
            Err(e) => {
                let why = format!("revocation refused: {e}");
                if let Some(tx) = admin {
                    let _ = tx.send(Err(why.clone()));
                }
                return Err(why);
            }
        };
        if !new {
            if let Some(tx) = admin {
                let _ = tx.send(Ok(result(false)));
            }
            return Ok(false);
        }
        let announce = admin.is_some();
        // One dated in the future takes effect then (`police_members`).
        let now = now_ms();
        let revoked_at_ms = revocation.body().revoked_at_ms;
        if revoked_at_ms <= now {
            let dropped = self.drop_member(member, now).unwrap_or(0);
            info!(%member, offers_dropped = dropped, "revocation applied");
        } else {
            info!(%member, revoked_at_ms, "revocation recorded; it takes effect at its time");
        }
        let gossip = if announce { Members::revocation_gossip(&revocation) } else { None };
        let step = Step { persist: vec![Record::Revocation { revocation }], ..Step::default() };
        let reply = admin.map_or(Reply::None, |tx| Reply::Revoked(tx, result(true)));
        self.perform_full(step, None, None, None, reply);
        if let Some(bytes) = gossip
            && let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.members.topic.clone(), bytes)
        {
            debug!(error = %e, "revocation not gossiped now (peers get it when they connect)");
        }
        Ok(true)
    }

    /// Peers that are not members are disconnected once they had time to
    /// present a certificate; the own certificate is gossiped once the mesh
    /// is there; its coming expiry is warned about.
    fn police_members(&mut self, now: u64) {
        if let Some(warning) = self.members.expiry_warning(now) {
            error!("{warning}");
        }
        // Certificates that expired and revocations that took effect since.
        for key in self.members.take_lapsed(now) {
            if let Some(dropped) = self.drop_member(key, now) {
                info!(member = %key, offers_dropped = dropped, "membership ended: certificate expired or revoked");
            }
        }
        if !self.members.own_published {
            // The certificate, then the key rotations that lead from it to the key in use.
            let messages: Vec<Vec<u8>> =
                self.members.own_gossip().into_iter().chain(self.members.own_rotations_gossip()).collect();
            let topic = self.members.topic.clone();
            let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
            let published = messages.into_iter().fold(true, |all, bytes| {
                let sent = gossipsub.publish(topic.clone(), bytes);
                all && matches!(sent, Ok(_) | Err(gossipsub::PublishError::Duplicate))
            });
            self.members.own_published = published;
        }
        let grace = self.config.dilated_ms(10_000);
        let outsiders: Vec<(PeerId, PublicKey)> = self
            .audit
            .peer_keys
            .iter()
            .filter(|(peer, key)| {
                self.connected.get(*peer).is_some_and(|(_, since)| now.saturating_sub(*since) > grace)
                    && self.members.check(key, now).is_err()
            })
            .map(|(p, k)| (*p, *k))
            .collect();
        for (peer, key) in outsiders {
            let why = self.members.check(&key, now).err().map(|e| e.to_string()).unwrap_or_default();
            warn!(%peer, node = %key, %why, "disconnecting a peer that is not a member of the federation");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.shunned.insert(peer, now);
        }
        let shun = self.config.dilated_ms(SHUN_MS);
        self.shunned.retain(|_, at| now.saturating_sub(*at) < shun);
    }

    /// Drops the offers of a member whose standing ended and disconnects
    /// it: the key named, and the key in use that took over from it by
    /// rotation, each unless it is a member now or this node's own.
    /// Contracts made before stay. Returns the offers dropped, None when
    /// neither key is out.
    fn drop_member(&mut self, key: PublicKey, now: u64) -> Option<usize> {
        let current = self.members.current_key(&key);
        let mut dropped = None;
        for key in [Some(key), (current != key).then_some(current)].into_iter().flatten() {
            if self.members.is_own(&key) || self.members.check(&key, now).is_ok() {
                continue;
            }
            *dropped.get_or_insert(0) += self.book.remove_provider(&key);
            if let Err(e) = self.index.remove_provider_offers(&key) {
                warn!(error = %e, "cannot prune a former member's offers from the index");
            }
            if let Some(peer) = self.peer_ids.of(&key)
                && self.swarm.is_connected(&peer)
            {
                let _ = self.swarm.disconnect_peer_id(peer);
                self.shunned.insert(peer, now);
            }
        }
        dropped
    }

    /// Drops the offers of every provider in the book that is not a member
    /// in good standing now, before a placement plans from it. (The book
    /// takes members' offers only and drops them when their standing ends:
    /// this is a second line.)
    fn drop_offers_of_non_members(&mut self, now: u64) {
        let providers: HashSet<PublicKey> = self.book.iter().map(|e| e.signed.offer().provider).collect();
        for key in providers {
            if !self.members.is_own(&key)
                && self.members.check(&key, now).is_err()
                && let Some(dropped) = self.drop_member(key, now)
            {
                warn!(provider = %key, offers_dropped = dropped, "offers of a non-member dropped before placing");
            }
        }
    }

    // ---- verifiable log ------------------------------------------------

    /// Signs a checkpoint of the log when one is due (every `interval`, or
    /// every `every` records), or at once with `force`. Only the tick
    /// (`force` false) gossips checkpoints, on the same schedule: a
    /// checkpoint signed on demand (to answer a proof, for an export) goes
    /// out at the next due tick, so that questions about checkpoints never
    /// make more checkpoints to ask about.
    fn maybe_checkpoint(&mut self, force: bool) {
        let (size, root) = self.log.with_tree(|t| (t.len(), t.root()));
        let signed = self.audit.own.as_ref().map(|cp| (cp.checkpoint().size, cp.checkpoint().root));
        let every = self.audit.every;
        let grown = move |since: Option<u64>| size.saturating_sub(since.unwrap_or(0)) >= every;
        if signed != Some((size, root)) {
            let signed_size = signed.map(|(s, _)| s);
            if force
                || signed.is_none()
                || grown(signed_size)
                || self.audit.last_signed.elapsed() >= self.audit.interval
            {
                self.sign_checkpoint(size, root);
            }
        }
        if force {
            return;
        }
        let Some(own) = self.audit.own.as_ref() else { return };
        let own_size = own.checkpoint().size;
        let due = self.audit.announced.is_none()
            || grown(self.audit.announced)
            || self.audit.last_announced.elapsed() >= self.audit.interval;
        if self.audit.announced == Some(own_size) || !due {
            return;
        }
        let note = own.to_note();
        self.audit.announced = Some(own_size);
        self.audit.last_announced = Instant::now();
        let bytes = wire::AuditGossip { item: Some(wire::audit_gossip::Item::Checkpoint(wire::Checkpoint { note })) }
            .encode_to_vec();
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.audit.topic.clone(), bytes) {
            debug!(error = %e, "checkpoint not gossiped now (peers ask for it when they connect)");
        }
    }

    fn sign_checkpoint(&mut self, size: u64, root: Hash) {
        let cp = match sign_node_checkpoint(&self.identity, &self.config.federation, size, root) {
            Ok(cp) => cp,
            Err(e) => {
                error!(error = %e, "cannot sign a checkpoint");
                return;
            }
        };
        let note = cp.to_note();
        if let Err(e) = self.audit.file.append(&note) {
            warn!(error = %e, "cannot store the checkpoint; it is still gossiped");
        } else {
            self.audit.count += 1;
        }
        debug!(size, "signed a checkpoint of the log");
        self.audit.own = Some(cp);
        self.audit.last_signed = Instant::now();
    }

    /// This node's checkpoint covering everything durable now.
    fn current_checkpoint(&mut self) -> Option<SignedCheckpoint> {
        self.maybe_checkpoint(self.audit.own.as_ref().map(|cp| cp.checkpoint().size) != Some(self.log.len()));
        self.audit.own.clone()
    }

    /// This node's latest signed checkpoint (a fresh one only if it has none).
    fn latest_checkpoint(&mut self) -> Option<SignedCheckpoint> {
        if self.audit.own.is_none() {
            self.maybe_checkpoint(true);
        }
        self.audit.own.clone()
    }

    /// Validates a checkpoint or a piece of evidence from the audit topic.
    fn on_audit_gossip(&mut self, data: &[u8]) -> MessageAcceptance {
        use wire::audit_gossip::Item;
        let Some(item) = wire::AuditGossip::decode(data).ok().and_then(|g| g.item) else {
            return MessageAcceptance::Reject;
        };
        let now = now_ms();
        match item {
            Item::Checkpoint(c) if !self.members.is_open() && !self.checkpoint_by_member(&c.note, now) => {
                MessageAcceptance::Ignore
            }
            Item::Checkpoint(c) => match self.audit.witness.observe(&c.note, now, &mut self.rng) {
                Ok(outcome) => {
                    if let Some(outcome) = outcome {
                        self.on_outcome(outcome);
                    }
                    MessageAcceptance::Accept
                }
                Err(e) => {
                    debug!(error = %e, "rejected gossiped checkpoint");
                    MessageAcceptance::Reject
                }
            },
            // Evidence already held, in the very bytes this node publishes
            // it (a witness publishing it again for members that joined
            // later): passed on without another check.
            Item::Evidence(_) if self.audit.evidence_gossip.contains(&digest_of(data)) => MessageAcceptance::Accept,
            Item::Evidence(w) => {
                let opened = Envelope::from_wire(w).map_err(|e| e.to_string()).and_then(|env| {
                    if env.encode().len() > MAX_EVIDENCE_BYTES {
                        return Err("evidence too large".into());
                    }
                    Evidence::open(&env, &self.config.federation, &self.limits).map_err(|e| e.to_string())
                });
                match opened {
                    Ok(sealed) => {
                        if !self.audit.seen.insert(sealed.evidence.digest()) {
                            return MessageAcceptance::Ignore;
                        }
                        warn!(
                            accused = %sealed.accused,
                            witness = %sealed.envelope.signer(),
                            kind = sealed.evidence.kind_name(),
                            "evidence from a peer: {}",
                            sealed.evidence.describe()
                        );
                        self.persist_and_announce(vec![Record::Evidence { envelope: sealed.envelope.clone() }], None);
                        self.audit.evidence_gossip.insert(digest_of(&evidence_message(&sealed.envelope)));
                        self.audit.evidence.push(sealed);
                        MessageAcceptance::Accept
                    }
                    Err(e) => {
                        debug!(error = %e, "rejected gossiped evidence");
                        MessageAcceptance::Reject
                    }
                }
            }
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Advanced { checkpoint, .. } => self.keep_witnessed(&checkpoint.to_note()),
            Outcome::Ask { node, request } => {
                self.ask_proof(node, wire::proof_request::Request::Consistency(request), ProofAsk::Consistency(node));
            }
            Outcome::Evidence { node, evidence } => self.found_evidence(node, *evidence),
        }
    }

    /// Appends a newly witnessed checkpoint to the witnessed file; once the
    /// file holds many superseded notes, rewrites it with the latest of
    /// every node.
    fn keep_witnessed(&mut self, note: &str) {
        let audit = &mut self.audit;
        if let Err(e) = audit.witnessed.append(note) {
            warn!(path = %audit.witnessed.path().display(), error = %e, "cannot keep a witnessed checkpoint");
            return;
        }
        audit.witnessed_notes += 1;
        let nodes = audit.witness.nodes().count() as u64;
        if audit.witnessed_notes > 4 * nodes + 1024 {
            let path = audit.witnessed.path().to_path_buf();
            let latest: Vec<String> = audit.witness.nodes().map(|(_, cp)| cp.to_note()).collect();
            match CheckpointFile::rewrite(&path, latest.iter().map(String::as_str)) {
                Ok(file) => {
                    audit.witnessed = file;
                    audit.witnessed_notes = nodes;
                }
                Err(e) => warn!(path = %path.display(), error = %e, "cannot compact the witnessed checkpoints"),
            }
        }
    }

    /// Keeps, logs and gossips evidence this node found.
    fn found_evidence(&mut self, accused: PublicKey, evidence: Evidence) {
        if !self.audit.seen.insert(evidence.digest()) {
            return;
        }
        error!(
            %accused,
            kind = evidence.kind_name(),
            "node rewrote or denied its history: {}",
            evidence.describe()
        );
        self.metrics.evidence_found(evidence.kind_name());
        let now = now_ms();
        let envelope = evidence.seal(&self.identity, &accused, now);
        let announce = evidence_message(&envelope);
        self.audit.evidence_gossip.insert(digest_of(&announce));
        self.persist_and_announce(vec![Record::Evidence { envelope: envelope.clone() }], Some(announce));
        self.audit.evidence.push(SealedEvidence { accused, observed_at_ms: now, evidence, envelope });
    }

    /// Publishes again the evidence this node found itself, every
    /// `evidence_republish` and after a publication failed: members that
    /// joined since, or were cut off when it was found, learn it too.
    fn republish_evidence(&mut self) {
        if !self.audit.evidence_publish_due && self.audit.last_evidence_publish.elapsed() < self.audit.republish_every {
            return;
        }
        let own: Vec<Vec<u8>> = self
            .audit
            .evidence
            .iter()
            .filter(|e| self.members.is_own(&e.envelope.signer()))
            .map(|e| evidence_message(&e.envelope))
            .collect();
        self.audit.last_evidence_publish = Instant::now();
        self.audit.evidence_publish_due = false;
        for bytes in own {
            match self.swarm.behaviour_mut().gossipsub.publish(self.audit.topic.clone(), bytes) {
                // Peers saw it within the duplicate window: nothing to do.
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
                Err(e) => {
                    debug!(error = %e, "evidence not published again now; retried on a later tick");
                    self.audit.evidence_publish_due = true;
                }
            }
        }
    }

    /// Sends a question to `node` if it is connected.
    fn ask_proof(&mut self, node: PublicKey, request: wire::proof_request::Request, ask: ProofAsk) -> bool {
        self.ask_proof_of(node, request, ask, false)
    }

    /// [`Node::ask_proof`], dialling the node first when `dial` says so (a
    /// counterparty of a shared contract, whose connection may have been
    /// closed to keep room; a failed dial puts the contract back in line).
    fn ask_proof_of(
        &mut self,
        node: PublicKey,
        request: wire::proof_request::Request,
        ask: ProofAsk,
        dial: bool,
    ) -> bool {
        let Some(peer) = self.peer_ids.of(&node) else { return false };
        if !dial && !self.swarm.is_connected(&peer) {
            return false;
        }
        self.talked.insert(peer, now_ms());
        let bytes = wire::ProofRequest { request: Some(request) }.encode_to_vec();
        let id = self.swarm.behaviour_mut().proofs.send_request(&peer, bytes);
        self.audit.asks.insert(id, ask);
        true
    }

    /// Asks the other parties of shared contracts to prove they keep them.
    fn audit_round(&mut self, _now: u64) {
        let mut asked = 0;
        let mut later = VecDeque::new();
        // Proven contracts due for another check join the queue.
        while self.audit.proven.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            if let Some((_, contract)) = self.audit.proven.pop_front() {
                self.audit.unproven.push_back(contract);
            }
        }
        while asked < AUDIT_BATCH {
            let Some(contract) = self.audit.unproven.pop_front() else { break };
            let t = contract.terms();
            let other = if self.members.is_own(&t.provider) { t.consumer } else { t.provider };
            let request = witness::inclusion_request(&contract, RequestId::random(&mut self.rng));
            let ask = ProofAsk::Inclusion { contract: Box::new(contract.clone()), reply: None };
            if self.ask_proof_of(other, wire::proof_request::Request::Inclusion(request), ask, true) {
                asked += 1;
            } else {
                later.push_back(contract);
            }
            if later.len() >= AUDIT_BATCH * 4 {
                break;
            }
        }
        // Contracts whose counterparty is away go to the back of the queue.
        self.audit.unproven.extend(later);
        if asked > 0 {
            debug!(asked, left = self.audit.unproven.len(), "asked counterparties to prove shared contracts");
        }
    }

    fn on_proofs(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message { peer, message: M::Request { request, channel, .. }, .. } => {
                if !self.rate.allow(peer, now_ms()) {
                    return;
                }
                let answer = match witness::decode_request(&request) {
                    Ok(r) => self.answer_proof(r),
                    Err(_) => {
                        self.strike(peer, "malformed proof request");
                        return;
                    }
                };
                if let Some(envelope) = answer {
                    let _ = self.swarm.behaviour_mut().proofs.send_response(channel, envelope.encode());
                }
            }
            E::Message { peer, message: M::Response { request_id, response }, .. } => {
                let Some(ask) = self.audit.asks.remove(&request_id) else { return };
                let Some(envelope) = self.verified_from(peer, &response) else {
                    if let ProofAsk::Inclusion { reply: Some(tx), .. } = ask {
                        let _ = tx.send(Err("the counterparty sent an answer that does not verify".into()));
                    }
                    return;
                };
                self.on_proof_answer(peer, ask, &envelope);
            }
            E::OutboundFailure { request_id, peer, error, .. } => {
                debug!(%peer, %error, "proof request failed");
                match self.audit.asks.remove(&request_id) {
                    Some(ProofAsk::Inclusion { contract, reply }) => {
                        if let Some(tx) = reply {
                            let _ = tx.send(Err(format!("the counterparty did not answer: {error}")));
                        }
                        self.audit.unproven.push_back(*contract);
                    }
                    Some(ProofAsk::Consistency(_)) | None => {}
                }
            }
            E::InboundFailure { peer, error, .. } => debug!(%peer, %error, "inbound proof request failed"),
            E::ResponseSent { .. } => {}
        }
    }

    /// Answers a witness or a counterparty. Consistency is proven up to
    /// the latest signed checkpoint (signing one per question would make
    /// every answer a new checkpoint for every peer to ask about); an
    /// inclusion question about a record newer than that gets a fresh one.
    fn answer_proof(&mut self, request: wire::proof_request::Request) -> Option<Envelope> {
        use wire::proof_request::Request;
        let now = now_ms();
        Some(match request {
            Request::Consistency(req) => {
                let latest = self.latest_checkpoint()?;
                self.log.with_tree(|tree| witness::answer_consistency(&self.identity, &req, tree, &latest))
            }
            Request::Inclusion(req) => {
                let index = Hash::try_from(req.leaf_hash.as_slice())
                    .ok()
                    .and_then(|leaf| self.audit.contract_leaves.get(&leaf).copied());
                let covered = self.audit.own.as_ref().map(|cp| cp.checkpoint().size);
                let latest = match (index, covered) {
                    (Some(i), Some(size)) if i < size => self.latest_checkpoint()?,
                    _ => self.current_checkpoint()?,
                };
                self.log.with_tree(|tree| witness::answer_inclusion(&self.identity, &req, tree, index, &latest, now))
            }
        })
    }

    fn on_proof_answer(&mut self, peer: PeerId, ask: ProofAsk, envelope: &Envelope) {
        let now = now_ms();
        match ask {
            ProofAsk::Consistency(node) => {
                if envelope.signer() != node {
                    self.strike(peer, "proof signed by another node");
                    return;
                }
                // A node that is no member (any more) moves no witness on.
                if !self.members.is_open() && self.members.check(&node, now).is_err() {
                    return;
                }
                match self.audit.witness.on_proof(envelope, now, &mut self.rng) {
                    Ok(Some(outcome)) => self.on_outcome(outcome),
                    Ok(None) => {}
                    Err(e) => {
                        debug!(%peer, error = %e, "bad consistency answer");
                        self.strike(peer, "bad consistency answer");
                    }
                }
            }
            ProofAsk::Inclusion { contract, reply } => {
                let other = envelope.signer();
                let result = witness::check_inclusion(&contract, envelope, &self.config.federation, &self.limits, now);
                let view = |outcome: &str, leaf_index: u64, checkpoint: String, message: String| wire::ProveResult {
                    outcome: outcome.into(),
                    counterparty: other.to_bytes().to_vec(),
                    leaf_index,
                    checkpoint,
                    message,
                };
                let answer = match result {
                    Ok(Inclusion::Proven { checkpoint, leaf_index }) => {
                        self.metrics.inclusion_check("proven");
                        // A check of the periodic round (not one asked for
                        // by an operator) comes round again later.
                        if reply.is_none() {
                            self.audit.proven.push_back((Instant::now() + self.audit.recheck, (*contract).clone()));
                        }
                        let note = checkpoint.to_note();
                        // The proof stands (old contracts of a revoked member
                        // stay provable); only a member's checkpoint is witnessed.
                        if self.members.is_open() || self.members.check(&other, now).is_ok() {
                            match self.audit.witness.observe(&note, now, &mut self.rng) {
                                Ok(Some(outcome)) => self.on_outcome(outcome),
                                Ok(None) => {}
                                Err(e) => debug!(error = %e, "checkpoint of a proof not accepted"),
                            }
                        }
                        let size = checkpoint.checkpoint().size;
                        Ok(view(
                            "proven",
                            leaf_index,
                            note,
                            format!("record {leaf_index} of the counterparty's log of {size} records"),
                        ))
                    }
                    Ok(Inclusion::NotYet) => {
                        self.metrics.inclusion_check("not-yet");
                        self.audit.unproven.push_back((*contract).clone());
                        Ok(view(
                            "not-yet",
                            0,
                            String::new(),
                            "not in the counterparty's log yet; the contract is too recent to count as evidence".into(),
                        ))
                    }
                    Ok(Inclusion::Evidence(evidence)) => {
                        self.metrics.inclusion_check("evidence");
                        let message = evidence.describe();
                        self.found_evidence(other, *evidence);
                        Ok(view("evidence", 0, String::new(), message))
                    }
                    Err(e) => {
                        self.metrics.inclusion_check("invalid");
                        self.audit.unproven.push_back((*contract).clone());
                        self.strike(peer, "bad inclusion answer");
                        Err(format!("the counterparty's answer is not valid: {e}"))
                    }
                };
                if let Some(tx) = reply {
                    let _ = tx.send(answer);
                }
            }
        }
    }

    fn evidence_list(&self) -> wire::EvidenceList {
        let evidence = self
            .audit
            .evidence
            .iter()
            .map(|e| wire::EvidenceView {
                accused: e.accused.to_bytes().to_vec(),
                kind: e.evidence.kind_name().into(),
                description: e.evidence.describe(),
                observed_at_ms: e.observed_at_ms,
                witness: e.envelope.signer().to_bytes().to_vec(),
                envelope: Some(e.envelope.to_wire()),
            })
            .collect();
        wire::EvidenceList { evidence }
    }

    fn prove(&mut self, id: ContractId, tx: oneshot::Sender<Result<wire::ProveResult, String>>) {
        let contract = match self.index.contract(&id) {
            Ok(Some(entry)) => wire::SignedContract::decode(entry.contract.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|w| SignedContract::from_wire(w, &self.limits, true).map_err(|e| e.to_string())),
            Ok(None) => Err(format!("no contract {id}")),
            Err(e) => Err(e.to_string()),
        };
        let contract = match contract {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let t = contract.terms();
        let other = if self.members.is_own(&t.provider) { t.consumer } else { t.provider };
        if !self.peer_ids.of(&other).is_some_and(|peer| self.swarm.is_connected(&peer)) {
            let _ = tx.send(Err(format!("the other party {} is not connected; try again when it is", other.short())));
            return;
        }
        let request = witness::inclusion_request(&contract, RequestId::random(&mut self.rng));
        let ask = ProofAsk::Inclusion { contract: Box::new(contract), reply: Some(tx) };
        self.ask_proof(other, wire::proof_request::Request::Inclusion(request), ask);
    }

    /// Follows the rotations just learned: the old keys' offers are dropped,
    /// and each new key speaks for the contracts its old key made.
    fn retire_rotated_keys(&mut self) {
        for old in self.members.take_retired() {
            // Its new key speaks for the contracts the old one made.
            if let Some(rotation) = self.members.rotation_of(&old).cloned() {
                self.provider.follow_rotation(rotation.clone());
                self.consumer.follow_rotation(rotation);
            }
            let dropped = self.book.remove_provider(&old);
            if let Err(e) = self.index.remove_provider_offers(&old) {
                warn!(error = %e, "cannot prune a retired key's offers from the index");
            }
            info!(%old, offers_dropped = dropped, "a member rotated its key: the old key's offers are dropped");
        }
    }

    fn export_snapshot(&mut self) -> Result<ExportSnapshot, String> {
        let cp = self.current_checkpoint().ok_or("cannot sign a checkpoint of the log")?;
        self.audit.file.sync().map_err(|e| format!("cannot fsync the checkpoints file: {e}"))?;
        Ok(ExportSnapshot {
            // The key the log started with: after a key rotation, the
            // export's rotation records lead from it to the key in use.
            node_key: self.members.log_key(),
            key_path: self.config.key_path(),
            federation: self.config.federation.clone(),
            records: cp.checkpoint().size,
            checkpoints: self.audit.count,
            log_path: self.config.log_path(),
            checkpoints_path: self.config.checkpoints_path(),
        })
    }

    // ---- admin ---------------------------------------------------------

    fn on_command(&mut self, cmd: AdminCommand) {
        let now = now_ms();
        match cmd {
            AdminCommand::Status(tx) => {
                let _ = tx.send(self.status());
            }
            AdminCommand::Peers(tx) => {
                let peers = self
                    .connected
                    .iter()
                    .map(|(peer, (addrs, since))| {
                        let key = self.audit.peer_keys.get(peer);
                        wire::PeerView {
                            peer_id: peer.to_string(),
                            addrs: addrs.iter().map(ToString::to_string).collect(),
                            score: self.swarm.behaviour().gossipsub.peer_score(peer).unwrap_or(0.0) as i64,
                            connected_since_ms: *since,
                            node_key: key.map(|k| k.to_bytes().to_vec()).unwrap_or_default(),
                            log_size: key
                                .and_then(|k| self.audit.witness.latest(k))
                                .map_or(0, |cp| cp.checkpoint().size),
                            evidence: key
                                .map_or(0, |k| self.audit.evidence.iter().filter(|e| e.accused == *k).count() as u32),
                        }
                    })
                    .collect();
                let _ = tx.send(wire::PeerList { peers });
            }
            AdminCommand::Publish(w, ttl_ms, tx) => {
                let ttl = if ttl_ms == 0 { self.offer_ttl_ms } else { ttl_ms.min(self.limits.max_offer_ttl_ms) };
                match self.own_terms(w, now, ttl).and_then(|terms| {
                    self.provider.publish(terms, now, ttl).map_err(|e| format!("offer rejected: {e}"))
                }) {
                    Ok((signed, step)) => {
                        info!(offer = %signed.offer().key(), seq = signed.offer().seq, "publishing offer");
                        self.perform_with(step, None, Some(signed), Reply::Offer(tx));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            AdminCommand::Withdraw(offer_id, tx) => match self.provider.withdraw(&offer_id, now, self.offer_ttl_ms) {
                Ok((signed, step)) => {
                    info!(offer = %signed.offer().key(), "withdrawing offer");
                    self.perform_with(step, None, Some(signed), Reply::Offer(tx));
                }
                Err(_) => {
                    let _ = tx.send(Err(format!("no own offer with id {offer_id:?}")));
                }
            },
            AdminCommand::ListOffers(req, tx) => {
                let _ = tx.send(self.list_offers(&req, now));
            }
            AdminCommand::Place(req, tx) => self.place(req, tx, now),
            AdminCommand::Terminate(id, reason, tx) => {
                let step = self
                    .consumer
                    .terminate(now, &mut self.rng, id, reason)
                    .or_else(|| self.provider.terminate(now, &mut self.rng, id, reason));
                match step {
                    Some(step) => self.perform_with(step, None, None, Reply::Terminated(tx)),
                    None => {
                        let _ = tx.send(Err(format!("no active contract {id}")));
                    }
                }
            }
            AdminCommand::Evidence(tx) => {
                let _ = tx.send(self.evidence_list());
            }
            AdminCommand::Prove(id, tx) => self.prove(id, tx),
            AdminCommand::Revoke(revocation, tx) => {
                // Answered by apply_revocation, once the record is durable.
                let _ = self.apply_revocation(*revocation, Some(tx));
            }
            AdminCommand::Export(tx) => {
                let _ = tx.send(self.export_snapshot());
            }
        }
    }

    fn own_terms(&self, mut w: wire::Offer, now: u64, ttl: u64) -> Result<Offer, String> {
        w.provider = self.me.to_bytes().to_vec();
        w.federation = self.config.federation.clone();
        w.issued_at_ms = now;
        w.expires_at_ms = now + ttl;
        Offer::from_wire(w, &self.limits).map_err(|e| format!("offer rejected: {e}"))
    }

    fn status(&self) -> wire::NodeStatus {
        let (membership, certificate_not_after_ms) = self.members.standing(now_ms());
        wire::NodeStatus {
            membership,
            certificate_not_after_ms,
            members_known: self.members.known() as u32,
            node_key: self.me.to_bytes().to_vec(),
            peer_id: self.swarm.local_peer_id().to_string(),
            federation: self.config.federation.clone(),
            listen_addrs: self.swarm.listeners().map(ToString::to_string).collect(),
            connected_peers: self.connected.len() as u32,
            offers_known: self.book.live(now_ms()).count() as u64,
            offers_own: self.provider.own_offers().filter(|o| !o.offer().is_withdrawal()).count() as u64,
            // Counted from the index: only contracts that are durable.
            contracts_active: self.index.active_contracts(now_ms()).unwrap_or(0) as u64,
            log_size: self.log.len(),
            log_root: self.log.root().to_vec(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            checkpoint_size: self.audit.own.as_ref().map_or(0, |cp| cp.checkpoint().size),
            evidence: self.audit.evidence.len() as u32,
            witnessed_nodes: self.audit.witness.nodes().count() as u32,
        }
    }

    fn list_offers(&self, req: &wire::ListOffersRequest, now: u64) -> Result<wire::OfferList, String> {
        let constraints = constraints_from(
            req.min_vcpu,
            req.min_memory_mib,
            0,
            &req.countries,
            &req.labels,
            req.attested_labels,
            req.max_unit_price.clone(),
        )?;
        let offers = self
            .book
            .query(&constraints, now)
            .into_iter()
            .filter(|e| !req.mine || e.signed.offer().provider == self.me)
            .map(|e| offer_view(&e.signed, e.attested_labels.clone(), e.received_at_ms))
            .collect();
        Ok(wire::OfferList { offers })
    }

    fn place(&mut self, req: wire::PlaceRequest, tx: oneshot::Sender<Result<wire::PlaceResult, String>>, now: u64) {
        let min = req.min_per_unit.clone().unwrap_or_default();
        let constraints = match constraints_from(
            min.vcpu,
            min.memory_mib,
            min.storage_gib,
            &req.countries,
            &req.labels,
            req.attested_labels,
            req.max_unit_price.clone(),
        ) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let deadline_ms = now + self.config.ms(&self.config.place_deadline);
        self.drop_offers_of_non_members(now);
        let (placements, engines) = self.placing(now);
        let effects = placements.place(engines, req, constraints, deadline_ms, tx);
        self.perform_placement(effects);
    }
}

/// A count as a gauge value.
fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Provider => "provider",
        Role::Consumer => "consumer",
    }
}

/// `no_capacity` for `REJECT_CODE_NO_CAPACITY`.
fn reject_code_name(code: RejectCode) -> String {
    let name = code.as_str_name();
    name.strip_prefix("REJECT_CODE_").unwrap_or(name).to_ascii_lowercase()
}

fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified()))
}

fn cursor_key(cursor: &[u8]) -> Option<OfferKey> {
    if cursor.len() < 32 {
        return None;
    }
    let provider = PublicKey::from_bytes(&cursor[..32]).ok()?;
    let offer_id = String::from_utf8(cursor[32..].to_vec()).ok()?;
    Some(OfferKey { provider, offer_id })
}

/// One page of offer-book sync after `after`: at most `max` offers, and no
/// more than fit in `budget` bytes (at least one, so that a pull always
/// moves on); the cursor names the last offer sent when more remain.
fn sync_page(book: &OfferBook, after: Option<&OfferKey>, max: usize, budget: usize) -> wire::OfferSyncResponse {
    let (page, next) = book.page(after, max);
    let (mut offers, mut bytes) = (Vec::with_capacity(page.len()), 0);
    for signed in &page {
        let w = signed.envelope().to_wire();
        bytes += w.encoded_len() + 8;
        if bytes > budget && !offers.is_empty() {
            break;
        }
        offers.push(w);
    }
    // Cut short: the next page starts after the last offer sent.
    let next = match offers.len() {
        n if n < page.len() => page.get(n.saturating_sub(1)).map(|s| s.offer().key()),
        _ => next,
    };
    wire::OfferSyncResponse { offers, next_cursor: next.map(|k| key_cursor(&k)).unwrap_or_default() }
}

fn key_cursor(key: &OfferKey) -> Vec<u8> {
    let mut c = key.provider.to_bytes().to_vec();
    c.extend_from_slice(key.offer_id.as_bytes());
    c
}

/// Builds matching constraints from admin filters.
fn constraints_from(
    vcpu: u32,
    memory_mib: u64,
    storage_gib: u64,
    countries: &[String],
    labels: &[String],
    attested: bool,
    max_price: Option<wire::Price>,
) -> Result<Constraints, String> {
    use fulcrum_protocol::offer::{Country, Currency, Price, Resources};
    let countries = countries
        .iter()
        .map(|c| Country::parse(c).ok_or_else(|| format!("{c:?} is not a two-letter country code")))
        .collect::<Result<_, _>>()?;
    let max_unit_price = max_price
        .map(|p| {
            Currency::parse(&p.currency)
                .map(|currency| Price { currency, micros: p.micros })
                .ok_or_else(|| format!("{:?} is not a currency code", p.currency))
        })
        .transpose()?;
    Ok(Constraints {
        min_per_unit: Resources { vcpu, memory_mib, storage_gib, ..Resources::default() },
        countries,
        labels: labels.iter().cloned().collect(),
        attested_labels: attested,
        max_unit_price,
        ..Constraints::default()
    })
}

/// The admin view of an offer.
pub fn offer_view(signed: &SignedOffer, attested: BTreeSet<String>, received_at_ms: u64) -> wire::OfferView {
    wire::OfferView {
        envelope: Some(signed.envelope().to_wire()),
        offer: Some(signed.offer().to_wire()),
        attested_labels: attested.into_iter().collect(),
        received_at_ms,
    }
}

/// The admin view of an indexed contract.
pub fn contract_view(
    id: ContractId,
    entry: &crate::store::index::ContractEntry,
    now: u64,
) -> Result<wire::ContractView, String> {
    // Every contract in the index was verified (both signatures) before its
    // record became durable; a view only needs the body decoded, and checking
    // two signatures again on every read showed up on the placement path.
    let contract = wire::SignedContract::decode(entry.contract.as_slice()).map_err(|e| e.to_string())?;
    let body = wire::ContractBody::decode(contract.body.as_slice()).map_err(|e| e.to_string())?;
    let state = if entry.terminated {
        wire::ContractState::Terminated
    } else if entry.expired || body.end_ms <= now {
        wire::ContractState::Ended
    } else {
        wire::ContractState::Active
    };
    Ok(wire::ContractView {
        contract_id: id.to_vec(),
        contract: Some(contract),
        body: Some(body),
        state: state as i32,
        role: if entry.provider { "provider" } else { "consumer" }.into(),
        log_index: entry.log_index,
    })
}

/// Pin-boxed shutdown signal: SIGTERM or SIGINT.
pub fn shutdown_signal() -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => futures::future::pending::<()>().await,
        }
    })
}

/// How many peers a node dials on its own as it discovers them: a quarter
/// of its `max_peers` (at least one).
pub fn discovery_target(max_peers: u32) -> usize {
    (max_peers as usize / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page cut short by its byte budget continues after the last offer
    /// sent: walking the cursors yields every offer once, in order, and a
    /// budget smaller than one offer still moves on by one.
    #[test]
    fn sync_pages_fit_their_budget_and_walk_the_whole_book() {
        let limits = Limits::default();
        let id = Identity::from_secret_bytes(&[5; 32]);
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/offers/de-general.toml"))
            .expect("example offer");
        let mut book = OfferBook::new(&limits);
        let mut all = Vec::new();
        for n in 0..5 {
            let (mut w, _) = crate::offer_file::parse_offer_file(&text).expect("parses");
            w.provider = id.public().to_bytes().to_vec();
            w.federation = "dev".into();
            w.offer_id = format!("offer-{n}");
            w.seq = 1;
            w.issued_at_ms = 1_000;
            w.expires_at_ms = 3_600_000;
            let signed = Offer::from_wire(w, &limits).expect("valid").sign(&id);
            all.push(signed.envelope().to_wire());
            book.insert(signed, BTreeSet::new(), 2_000).expect("inserted");
        }
        let one = all[0].encoded_len() + 8;
        for (budget, per_page) in [(2 * one, 2), (1, 1), (100 * one, 5)] {
            let (mut walked, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let resp = sync_page(&book, after.as_ref(), SYNC_PAGE, budget);
                assert!(resp.offers.len() <= per_page, "budget {budget}: {} offers", resp.offers.len());
                pages += 1;
                walked.extend(resp.offers);
                if resp.next_cursor.is_empty() {
                    break;
                }
                after = cursor_key(&resp.next_cursor);
            }
            assert_eq!(walked, all, "budget {budget}");
            assert_eq!(pages, all.len().div_ceil(per_page), "budget {budget}");
        }
    }
}
