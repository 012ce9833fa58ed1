//! Prometheus metrics, health and readiness of the daemon, and the small
//! HTTP server (hyper) that serves them:
//!
//! - `GET /metrics`: every metric in the OpenMetrics text format: the
//!   node's own (`fulcrum_*`) and libp2p's (`libp2p_*`).
//! - `GET /healthz`: 200 `ok` while the event loop ticks; 503 once it has not
//!   ticked for [`STALL_AFTER`].
//! - `GET /readyz`: 200 `ready` once the node has a connected peer and has
//!   signed a checkpoint of its log; 503 with a one-line reason otherwise.
//!
//! The event loop owns every value but the hook runner's (`hook_*`): it sets
//! the gauges from its state on its timers and counts events where they
//! happen; the server only reads.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use libp2p::metrics::Recorder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::store::log::FsyncObserver;

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `/healthz` fails once the event loop has not ticked for this long.
pub const STALL_AFTER: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Gauges the event loop sets from its state.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Peers connected now.
    pub peers_connected: Gauge,
    /// Live offers in the offer book (own and peers').
    pub offers_known: Gauge,
    /// This node's own published offers (not withdrawn).
    pub offers_own: Gauge,
    /// Durable contracts not terminated or ended, either role.
    pub contracts_active: Gauge,
    /// Holds this node has granted as a provider and that have not ended.
    pub holds_live: Gauge,
    /// Durable records in the agreement log.
    pub log_records: Gauge,
    /// Tree size of the latest checkpoint this node signed.
    pub checkpoint_size: Gauge,
    /// Seconds since this node last signed a checkpoint.
    pub checkpoint_age_seconds: Gauge<f64, AtomicU64>,
    /// Peers whose latest checkpoint this node holds.
    pub witnessed_nodes: Gauge,
    /// Pieces of evidence of rewritten history held.
    pub evidence: Gauge,
    /// Steps waiting for their records to be durable.
    pub effects_pending: Gauge,
    /// Seconds until this node's member certificate expires (negative once
    /// it has; 0 without one).
    pub certificate_expiry_seconds: Gauge,
    /// Member certificates known and valid.
    pub members_known: Gauge,
    /// Contract events whose hook has not succeeded yet (set by the hook
    /// runner).
    pub hook_backlog: Gauge,
    /// Failed attempts in a row of the hook at the head of the queue; 0
    /// while hooks succeed (set by the hook runner).
    pub hook_failures: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GossipLabels {
    topic: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProposalLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContractLabels {
    role: &'static str,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    event: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvidenceLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InclusionLabels {
    outcome: &'static str,
}

/// The daemon's metrics and liveness state. Cheap to clone: every clone
/// shares the same values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    p2p: libp2p::metrics::Metrics,
    gauges: Gauges,
    gossip: Family<GossipLabels, Counter>,
    proposals: Family<ProposalLabels, Counter>,
    contracts: Family<ContractLabels, Counter>,
    evidence_found: Family<EvidenceLabels, Counter>,
    inclusion_checks: Family<InclusionLabels, Counter>,
    fsync: Histogram,
    hook_runs: Family<HookLabels, Counter>,
    hook_duration: Histogram,
    /// When the metrics were made; heartbeats count from here.
    epoch: Instant,
    /// Milliseconds after `epoch` of the event loop's last tick, plus one;
    /// 0 before the first.
    heartbeat: AtomicU64,
    /// Whether this node holds a checkpoint it signed of its own log.
    checkpoint_signed: AtomicBool,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("gauges", &self.inner.gauges).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, libp2p's included.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let p2p = libp2p::metrics::Metrics::new(&mut registry);
        let gauges = Gauges::default();
        let gossip = Family::<GossipLabels, Counter>::default();
        let proposals = Family::<ProposalLabels, Counter>::default();
        let contracts = Family::<ContractLabels, Counter>::default();
        let evidence_found = Family::<EvidenceLabels, Counter>::default();
        let inclusion_checks = Family::<InclusionLabels, Counter>::default();
        // 50 µs to about 1.6 s: from a fast NVMe fdatasync to a struggling disk.
        let fsync = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let hook_runs = Family::<HookLabels, Counter>::default();
        // 10 ms to about 10 min: from a local script to a slow cloud API.
        let hook_duration = Histogram::new(exponential_buckets(0.01, 2.0, 17));

        let r = registry.sub_registry_with_prefix("fulcrum");
        let g = &gauges;
        r.register("peers_connected", "Peers connected now", g.peers_connected.clone());
        r.register("offers_known", "Live offers in the offer book, own and peers'", g.offers_known.clone());
        r.register("offers_own", "This node's own published offers", g.offers_own.clone());
        r.register("contracts_active", "Durable contracts not terminated or ended", g.contracts_active.clone());
        r.register("holds_live", "Holds granted as a provider that have not ended", g.holds_live.clone());
        r.register("log_records", "Durable records in the agreement log", g.log_records.clone());
        r.register("checkpoint_size", "Tree size of the latest checkpoint this node signed", g.checkpoint_size.clone());
        r.register_with_unit(
            "checkpoint_age",
            "Time since this node last signed a checkpoint (since start-up after a restart)",
            Unit::Seconds,
            g.checkpoint_age_seconds.clone(),
        );
        r.register("witnessed_nodes", "Peers whose latest checkpoint this node holds", g.witnessed_nodes.clone());
        r.register("evidence", "Pieces of evidence of rewritten history held", g.evidence.clone());
        r.register("effects_pending", "Steps waiting for their records to be durable", g.effects_pending.clone());
        r.register(
            "certificate_expiry_seconds",
            "Seconds until this node's member certificate expires (negative once it has; 0 without one)",
            g.certificate_expiry_seconds.clone(),
        );
        r.register("members_known", "Member certificates known", g.members_known.clone());
        r.register("gossip_messages", "Gossip messages validated, by topic and result", gossip.clone());
        r.register(
            "proposals",
            "Negotiation requests answered as a provider: held, or refused with a reject code",
            proposals.clone(),
        );
        r.register("contracts", "Contract events, by this node's role", contracts.clone());
        r.register("hook_runs", "Hook runs, by contract event and outcome (ok, failed, timeout)", hook_runs.clone());
        r.register_with_unit("hook_duration", "Duration of each hook run", Unit::Seconds, hook_duration.clone());
        r.register("hook_backlog", "Contract events whose hook has not succeeded yet", g.hook_backlog.clone());
        r.register(
            "hook_failures",
            "Failed attempts in a row of the hook at the head of the queue (0 while hooks succeed)",
            g.hook_failures.clone(),
        );
        r.register("evidence_found", "Evidence this node found itself, by kind", evidence_found.clone());
        r.register(
            "inclusion_checks",
            "Answers of counterparties asked to prove a shared contract is in their log, by outcome",
            inclusion_checks.clone(),
        );
        r.register_with_unit(
            "log_fsync",
            "Duration of each agreement log batch's fdatasync",
            Unit::Seconds,
            fsync.clone(),
        );

        // Known label values start at 0, so that rates work from the first scrape.
        for topic in ["offers", "audit"] {
            for result in ["accept", "reject", "ignore"] {
                let _ = gossip.get_or_create_owned(&GossipLabels { topic, result });
            }
        }
        for role in ["provider", "consumer"] {
            for event in ["active", "terminated", "expired"] {
                let _ = contracts.get_or_create_owned(&ContractLabels { role, event });
            }
        }
        for event in ["active", "terminated", "expired"] {
            for outcome in ["ok", "failed", "timeout"] {
                let _ = hook_runs.get_or_create_owned(&HookLabels { event, outcome });
            }
        }
        for kind in ["conflicting-checkpoints", "inconsistent-proof", "missing-contract"] {
            let _ = evidence_found.get_or_create_owned(&EvidenceLabels { kind });
        }
        for outcome in ["proven", "not-yet", "evidence", "invalid"] {
            let _ = inclusion_checks.get_or_create_owned(&InclusionLabels { outcome });
        }
        let _ = proposals.get_or_create_owned(&ProposalLabels { outcome: "held".into() });

        Metrics {
            inner: Arc::new(Inner {
                registry,
                p2p,
                gauges,
                gossip,
                proposals,
                contracts,
                evidence_found,
                inclusion_checks,
                fsync,
                hook_runs,
                hook_duration,
                epoch: Instant::now(),
                heartbeat: AtomicU64::new(0),
                checkpoint_signed: AtomicBool::new(false),
            }),
        }
    }

    /// The gauges, for the event loop to set.
    pub fn gauges(&self) -> &Gauges {
        &self.inner.gauges
    }

    /// Counts a validated gossip message: `topic` is `offers` or `audit`,
    /// `result` is `accept`, `reject` or `ignore`.
    pub fn gossip(&self, topic: &'static str, result: &'static str) {
        self.inner.gossip.get_or_create(&GossipLabels { topic, result }).inc();
    }

    /// Counts a negotiation request answered as a provider: `held`, or the
    /// reject code's name.
    pub fn proposal(&self, outcome: &str) {
        self.inner.proposals.get_or_create(&ProposalLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Counts a contract event (`active`, `terminated`, `expired`) in a role
    /// (`provider`, `consumer`).
    pub fn contract(&self, role: &'static str, event: &'static str) {
        self.inner.contracts.get_or_create(&ContractLabels { role, event }).inc();
    }

    /// Counts a hook run for a contract event (`active`, `terminated`,
    /// `expired`) and how it went (`ok`, `failed`, `timeout`).
    pub fn hook_run(&self, event: &'static str, outcome: &'static str, took: Duration) {
        self.inner.hook_runs.get_or_create(&HookLabels { event, outcome }).inc();
        self.inner.hook_duration.observe(took.as_secs_f64());
    }

    /// Counts a piece of evidence this node found itself.
    pub fn evidence_found(&self, kind: &'static str) {
        self.inner.evidence_found.get_or_create(&EvidenceLabels { kind }).inc();
    }

    /// Counts a counterparty's answer to an inclusion check: `proven`,
    /// `not-yet`, `evidence` or `invalid`.
    pub fn inclusion_check(&self, outcome: &'static str) {
        self.inner.inclusion_checks.get_or_create(&InclusionLabels { outcome }).inc();
    }

    /// An observer for [`AgreementLog::observe_fsyncs`](crate::store::log::AgreementLog::observe_fsyncs)
    /// feeding the fsync histogram.
    pub fn fsync_observer(&self) -> FsyncObserver {
        let histogram = self.inner.fsync.clone();
        Arc::new(move |elapsed: Duration| histogram.observe(elapsed.as_secs_f64()))
    }

    /// Records a swarm or protocol event in libp2p's metrics.
    pub fn record<E>(&self, event: &E)
    where
        libp2p::metrics::Metrics: Recorder<E>,
    {
        self.inner.p2p.record(event);
    }

    /// Called by the event loop on every tick.
    pub fn beat(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.heartbeat.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether the node holds a checkpoint it signed of its own log.
    pub fn set_checkpoint_signed(&self, signed: bool) {
        self.inner.checkpoint_signed.store(signed, Ordering::Relaxed);
    }

    /// `Ok` while the event loop ticks, else why not.
    pub fn health(&self) -> Result<(), String> {
        self.health_at(self.inner.epoch.elapsed())
    }

    /// [`health`](Self::health) as seen `now` after the metrics were made.
    fn health_at(&self, now: Duration) -> Result<(), String> {
        match self.inner.heartbeat.load(Ordering::Relaxed) {
            0 => Err("the event loop has not started".into()),
            beat => {
                let since = now.saturating_sub(Duration::from_millis(beat - 1));
                if since > STALL_AFTER {
                    Err(format!("the event loop has not ticked for {:.1} s", since.as_secs_f64()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// `Ok` once the node is alive, has a connected peer and has signed a
    /// checkpoint of its log; else the first reason it is not ready.
    pub fn readiness(&self) -> Result<(), String> {
        self.health()?;
        if self.inner.gauges.peers_connected.get() < 1 {
            return Err("no connected peer".into());
        }
        if !self.inner.checkpoint_signed.load(Ordering::Relaxed) {
            return Err("no checkpoint of the log signed yet".into());
        }
        Ok(())
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

/// Binds the metrics endpoint; the error names the address and the setting.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr} (metrics_listen, --metrics-listen, FULCRUM_METRICS_LISTEN; \
             \"\" disables it): {e}"
        )
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`
/// resolves; connections still open then are closed.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        debug!(%peer, "too many metrics connections; closing a new one");
                        continue;
                    }
                    let metrics = metrics.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let response = respond(&metrics, &request);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            debug!(%peer, error = %e, "metrics connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    connections.shutdown().await;
}

/// The answer to one request.
fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<String> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return plain(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => match metrics.encode() {
            Ok(text) => {
                let mut response = Response::new(text);
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE));
                response
            }
            Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}\n")),
        },
        "/healthz" => verdict(metrics.health(), "ok"),
        _ => verdict(metrics.readiness(), "ready"),
    }
}

fn verdict(result: Result<(), String>, ok: &str) -> Response<String> {
    match result {
        Ok(()) => plain(StatusCode::OK, format!("{ok}\n")),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn plain(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    /// A real HTTP/1.1 request with hyper's client: status, content type, body.
    async fn get(addr: SocketAddr, method: Method, path: &str) -> (StatusCode, String, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let metrics = Metrics::new();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));

        // Before the loop ticks: neither healthy nor ready.
        let (status, _, body) = get(addr, Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "the event loop has not started\n"));
        metrics.beat();
        let (status, _, body) = get(addr, Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

        // Ready needs a peer and a signed checkpoint; the reason says which is missing.
        let (status, _, body) = get(addr, Method::GET, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no connected peer\n"));
        metrics.gauges().peers_connected.set(2);
        let (status, _, body) = get(addr, Method::GET, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no checkpoint of the log signed yet\n"));
        metrics.set_checkpoint_signed(true);
        let (status, _, body) = get(addr, Method::GET, "/readyz?verbose=1").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));

        // Metrics: OpenMetrics text with ours and libp2p's.
        metrics.gossip("offers", "accept");
        metrics.gossip("offers", "accept");
        metrics.contract("consumer", "active");
        metrics.proposal("no_capacity");
        metrics.evidence_found("missing-contract");
        metrics.gauges().checkpoint_age_seconds.set(1.5);
        metrics.fsync_observer()(Duration::from_micros(300));
        let (status, content_type, text) = get(addr, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        for line in [
            "fulcrum_peers_connected 2",
            "fulcrum_gossip_messages_total{topic=\"offers\",result=\"accept\"} 2",
            "fulcrum_gossip_messages_total{topic=\"audit\",result=\"reject\"} 0",
            "fulcrum_contracts_total{role=\"consumer\",event=\"active\"} 1",
            "fulcrum_proposals_total{outcome=\"no_capacity\"} 1",
            "fulcrum_evidence_found_total{kind=\"missing-contract\"} 1",
            "fulcrum_checkpoint_age_seconds 1.5",
            "fulcrum_log_fsync_seconds_count 1",
            "fulcrum_log_fsync_seconds_bucket{le=\"0.0004\"} 1",
            "libp2p_swarm_dial_attempt_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));

        let (status, _, _) = get(addr, Method::GET, "/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get(addr, Method::POST, "/metrics").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
    }

    #[test]
    fn health_fails_once_the_loop_stalls() {
        let metrics = Metrics::new();
        metrics.beat();
        let now = metrics.inner.epoch.elapsed();
        assert!(metrics.health_at(now + Duration::from_secs(4)).is_ok());
        let err = metrics.health_at(now + Duration::from_secs(6)).unwrap_err();
        assert!(err.starts_with("the event loop has not ticked for 6."), "{err}");
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()) && err.contains("metrics_listen"), "{err}");
    }
}
