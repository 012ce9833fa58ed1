//! The libp2p side: one behaviour composing connection limits, identify,
//! Kademlia, gossipsub (offers) and two request-response protocols
//! (negotiation, offer-book sync) with a size-limited byte codec; the mapping
//! between protocol keys and PeerIds; per-peer rate limits.

mod codec;
mod full;
mod rate;

use std::collections::HashMap;
use std::time::Duration;

use fulcrum_protocol::keys::{Identity, PublicKey};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, TopicHash, ValidationMode};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, kad, request_response};
use sha2::{Digest, Sha256};

pub use codec::BytesCodec;
pub use full::{Full, Guard};
pub use rate::RateLimiter;

/// Protocol of negotiation messages.
pub const NEGOTIATE_PROTOCOL: StreamProtocol = StreamProtocol::new("/fulcrum/negotiate/1");
/// Protocol of offer-book sync.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/fulcrum/offer-sync/1");
/// Protocol of consistency and inclusion proofs of agreement logs.
pub const PROOFS_PROTOCOL: StreamProtocol = StreamProtocol::new("/fulcrum/proofs/1");
/// Protocol of the certificate and revocation exchange between new peers.
pub const MEMBERSHIP_PROTOCOL: StreamProtocol = StreamProtocol::new("/fulcrum/membership/1");
/// Largest membership exchange (every certificate of a large federation).
pub const MAX_MEMBERSHIP_BYTES: usize = 16 * 1024 * 1024;
/// Kademlia protocol of Fulcrum federations (kept apart from public DHTs).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/fulcrum/kad/1");
/// Largest negotiation message on the wire.
pub const MAX_NEGOTIATION_BYTES: usize = 16 * 1024;
/// Largest offer-sync page on the wire.
pub const MAX_SYNC_BYTES: usize = 4 * 1024 * 1024;
/// Largest gossip message (a signed offer, a checkpoint or a piece of evidence).
pub const MAX_GOSSIP_BYTES: usize = 48 * 1024;
/// Largest proof request.
pub const MAX_PROOF_REQUEST_BYTES: usize = 1024;
/// Largest proof answer (a signed proof and a checkpoint).
pub const MAX_PROOF_RESPONSE_BYTES: usize = 16 * 1024;

/// The composed behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses connections before their handshake while the node is full.
    pub full: Guard,
    /// Connection limits.
    pub limits: connection_limits::Behaviour,
    /// Identify: addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Discovery from bootstrap peers.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Offers, checkpoints and evidence.
    pub gossipsub: gossipsub::Behaviour,
    /// Negotiation request-response.
    pub negotiate: request_response::Behaviour<BytesCodec>,
    /// Offer-book sync request-response.
    pub sync: request_response::Behaviour<BytesCodec>,
    /// Log proofs request-response.
    pub proofs: request_response::Behaviour<BytesCodec>,
    /// Certificate and revocation exchange.
    pub membership: request_response::Behaviour<BytesCodec>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

/// The gossip topic of a federation's offers.
pub fn offers_topic(federation: &str) -> IdentTopic {
    IdentTopic::new(format!("fulcrum/{federation}/offers/1"))
}

/// The gossip topic of a federation's checkpoints and evidence.
pub fn audit_topic(federation: &str) -> IdentTopic {
    IdentTopic::new(format!("fulcrum/{federation}/audit/1"))
}

/// How a node's swarm reaches its peers.
#[derive(Default)]
pub enum Transport {
    /// TCP and QUIC, with Noise and Yamux over TCP: what `fulcrumd` runs.
    #[default]
    TcpQuic,
    /// A transport built by the caller that yields authenticated, multiplexed
    /// connections: the simulator's in-memory links.
    Custom(Boxed<(PeerId, StreamMuxerBox)>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::TcpQuic => "TcpQuic",
            Transport::Custom(_) => "Custom",
        })
    }
}

/// Builds the swarm of a node: the behaviour over `transport`.
/// `dilation` is the node's [`time_dilation`](crate::config::NodeConfig::time_dilation):
/// every libp2p interval and timeout set here is multiplied by it.
pub fn swarm(
    key: identity::Keypair,
    transport: Transport,
    max_peers: u32,
    topics: &[TopicHash],
    dilation: u32,
) -> anyhow::Result<Swarm<Behaviour>> {
    let idle = dilate(Duration::from_secs(120), dilation);
    let make = |key: &identity::Keypair| {
        behaviour(key, max_peers, topics, dilation).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    };
    Ok(match transport {
        Transport::TcpQuic => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_quic()
            .with_behaviour(make)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Transport::Custom(transport) => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_behaviour(make)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    })
}

/// `d` in a node's time: `dilation` times as long (see
/// [`NodeConfig::time_dilation`](crate::config::NodeConfig::time_dilation)).
pub fn dilate(d: Duration, dilation: u32) -> Duration {
    d.saturating_mul(dilation.max(1))
}

/// The gossipsub configuration of a node: anonymous, content-addressed
/// message ids (SHA-256 of the payload), messages forwarded only once the
/// application validated them, Fulcrum's largest message and heartbeat.
/// Every interval of gossipsub's is multiplied by `dilation`.
pub fn gossip_config(dilation: u32) -> Result<gossipsub::Config, String> {
    let base = gossipsub::Config::default();
    let d = |t: Duration| dilate(t, dilation);
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| MessageId::from(Sha256::digest(&m.data).to_vec()))
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .heartbeat_interval(d(Duration::from_millis(700)))
        .heartbeat_initial_delay(d(base.heartbeat_initial_delay()))
        .fanout_ttl(d(base.fanout_ttl()))
        .duplicate_cache_time(d(base.duplicate_cache_time()))
        .prune_backoff(d(base.prune_backoff()))
        .unsubscribe_backoff(d(base.unsubscribe_backoff()))
        .graft_flood_threshold(d(base.graft_flood_threshold()))
        .iwant_followup_time(d(base.iwant_followup_time()))
        .publish_queue_duration(d(base.publish_queue_duration()))
        .forward_queue_duration(d(base.forward_queue_duration()))
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))
}

/// Kademlia as a node runs it: server mode on the federation's protocol,
/// its timeouts and periodic bootstrap multiplied by `dilation`.
pub fn discovery(peer_id: PeerId, dilation: u32) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_query_timeout(dilate(Duration::from_secs(30), dilation));
    config.set_periodic_bootstrap_interval(Some(dilate(Duration::from_secs(300), dilation)));
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), config);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// A node's connection limits: `max_peers` established (two per peer at
/// most) and as many pending inbound.
pub fn limits(max_peers: u32) -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(max_peers))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(max_peers)),
    )
}

/// Identify, under the node's agent protocol, pushed again every five
/// minutes (times `dilation`).
pub fn identification(key: &identity::Keypair, dilation: u32) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new("/fulcrum/1.0.0".into(), key.public())
            .with_interval(dilate(Duration::from_secs(300), dilation)),
    )
}

/// Builds the behaviour. Gossipsub runs anonymous with content-addressed ids:
/// every payload is already a signed envelope, so a second (gossipsub)
/// signature would only double the verification work.
pub fn behaviour(
    key: &identity::Keypair,
    max_peers: u32,
    topics: &[TopicHash],
    dilation: u32,
) -> Result<Behaviour, String> {
    let peer_id = key.public().to_peer_id();
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config(dilation)?)?;
    let (params, thresholds) = gossip_scoring(topics, dilation);
    gossipsub.with_peer_score(params, thresholds)?;
    let kad = discovery(peer_id, dilation);
    let rr = |protocol, max_request, max_response| {
        request_response::Behaviour::with_codec(
            BytesCodec::new(max_request, max_response),
            [(protocol, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(dilate(Duration::from_secs(10), dilation))
                .with_max_concurrent_streams(256),
        )
    };
    Ok(Behaviour {
        full: Guard::new(max_peers),
        limits: limits(max_peers),
        identify: identification(key, dilation),
        kad,
        gossipsub,
        negotiate: rr(NEGOTIATE_PROTOCOL, MAX_NEGOTIATION_BYTES, MAX_NEGOTIATION_BYTES),
        sync: rr(SYNC_PROTOCOL, 1024, MAX_SYNC_BYTES),
        proofs: rr(PROOFS_PROTOCOL, MAX_PROOF_REQUEST_BYTES, MAX_PROOF_RESPONSE_BYTES),
        membership: rr(MEMBERSHIP_PROTOCOL, MAX_MEMBERSHIP_BYTES, MAX_MEMBERSHIP_BYTES),
    })
}

/// Peer scoring tuned for a quiet mesh: offers and checkpoints are rare, so the default
/// penalties for delivering few messages would graylist honest peers. What
/// costs score here is sending invalid messages.
pub fn gossip_scoring(
    topics: &[TopicHash],
    dilation: u32,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let d = |t: Duration| dilate(t, dilation);
    let defaults = gossipsub::TopicScoreParams::default();
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        time_in_mesh_quantum: d(defaults.time_in_mesh_quantum),
        mesh_message_deliveries_window: d(defaults.mesh_message_deliveries_window),
        mesh_message_deliveries_activation: d(defaults.mesh_message_deliveries_activation),
        ..defaults
    };
    let mut params = gossipsub::PeerScoreParams::default();
    params.decay_interval = d(params.decay_interval);
    params.retain_score = d(params.retain_score);
    for hash in topics {
        params.topics.insert(hash.clone(), topic.clone());
    }
    // Local federations run many nodes on one address.
    params.ip_colocation_factor_whitelist.insert(std::net::IpAddr::from([127, 0, 0, 1]));
    params.ip_colocation_factor_whitelist.insert(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        ..gossipsub::PeerScoreThresholds::default()
    };
    (params, thresholds)
}

/// The libp2p keypair of a node identity (the same Ed25519 key).
pub fn keypair(identity: &Identity) -> Result<identity::Keypair, String> {
    identity::Keypair::ed25519_from_bytes(identity.to_secret_bytes()).map_err(|e| e.to_string())
}

/// Maps protocol keys to PeerIds, memoised (it is asked on every message).
#[derive(Debug, Default)]
pub struct PeerIds {
    cache: HashMap<PublicKey, PeerId>,
}

impl PeerIds {
    /// The PeerId of a key.
    pub fn of(&mut self, key: &PublicKey) -> Option<PeerId> {
        if let Some(p) = self.cache.get(key) {
            return Some(*p);
        }
        let ed = identity::ed25519::PublicKey::try_from_bytes(&key.to_bytes()).ok()?;
        let peer = identity::PublicKey::from(ed).to_peer_id();
        if self.cache.len() > 100_000 {
            self.cache.clear();
        }
        self.cache.insert(*key, peer);
        Some(peer)
    }
}
