//! The simulated network: libp2p's in-memory transport with a link model
//! applied to every byte that crosses a link. Each end of a connection holds
//! what it receives until it is due: one-way latency drawn from the model,
//! retransmission delays for lost transmissions, serialisation at the link's
//! bandwidth, in order (a reliable stream has head-of-line blocking).
//! Partitions hold delivery between groups until healed, and refuse new
//! connections across them. Noise and Yamux run on top, as over TCP.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::memory::Channel;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, MemoryTransport, Transport, TransportError, TransportEvent,
};
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity, noise, yamux};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, Sleep};

use crate::scenario::{Distribution, LinkSpec};

/// Bytes a receiving end holds before it stops reading (and the sender
/// blocks): the window of a link.
const MAX_QUEUED: usize = 4 << 20;
/// How often a held link checks whether its partition healed.
const PARTITION_RECHECK: Duration = Duration::from_millis(20);
/// Largest read from the memory channel at once (a buffer of this size is
/// kept by every end of every connection).
const READ_CHUNK: usize = 8 * 1024;
/// Retransmissions after which a transmission is delivered anyway.
const MAX_RETRANSMITS: u32 = 6;

/// The link model in force, in the form the links draw from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// One-way latency (median), ms.
    pub latency_ms: f64,
    /// Spread, ms.
    pub jitter_ms: f64,
    /// Distribution.
    pub distribution: Distribution,
    /// Loss per transmission.
    pub loss: f64,
    /// First retransmission delay, ms.
    pub rto_ms: f64,
    /// Bits per ms (0: unlimited).
    pub bits_per_ms: f64,
}

impl LinkModel {
    /// The model of a scenario's link section.
    pub fn from_spec(spec: &LinkSpec) -> LinkModel {
        LinkModel {
            latency_ms: spec.latency.0 as f64,
            jitter_ms: spec.jitter.0 as f64,
            distribution: spec.distribution,
            loss: spec.loss,
            rto_ms: spec.retransmit_timeout.0 as f64,
            bits_per_ms: f64::from(spec.bandwidth_mbps) * 1000.0,
        }
    }

    /// The model in wall-clock terms when simulated time runs `k` times
    /// slower: every delay `k` times as long, `k` times fewer bits per ms.
    pub fn dilated(self, k: u32) -> LinkModel {
        let k = f64::from(k.max(1));
        LinkModel {
            latency_ms: self.latency_ms * k,
            jitter_ms: self.jitter_ms * k,
            rto_ms: self.rto_ms * k,
            bits_per_ms: self.bits_per_ms / k,
            ..self
        }
    }

    /// One draw of the one-way latency, ms.
    pub fn sample_latency(&self, rng: &mut impl Rng) -> f64 {
        let (m, j) = (self.latency_ms, self.jitter_ms);
        match self.distribution {
            Distribution::Fixed => m,
            Distribution::Uniform if j > 0.0 => rng.gen_range(m - j..=m + j),
            Distribution::Uniform => m,
            Distribution::Normal => (m + j * standard_normal(rng)).max(0.0),
            Distribution::Lognormal => {
                let sigma = (1.0 + j / m.max(1e-9)).ln();
                m * (sigma * standard_normal(rng)).exp()
            }
        }
    }

    /// Delay added by losses of one transmission: each loss costs a
    /// retransmission timeout, doubling, as TCP does.
    pub fn sample_loss_delay(&self, rng: &mut impl Rng) -> f64 {
        let mut delay = 0.0;
        let mut rto = self.rto_ms;
        let mut tries = 0;
        while self.loss > 0.0 && tries < MAX_RETRANSMITS && rng.gen_bool(self.loss) {
            delay += rto;
            rto *= 2.0;
            tries += 1;
        }
        delay
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Bytes and transmissions in and out of one node.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Transmissions received (one write of the sender each).
    pub frames_in: AtomicU64,
    /// Transmissions sent.
    pub frames_out: AtomicU64,
}

/// The simulated network every node's transport is built on.
#[derive(Debug)]
pub struct Network {
    seed: u64,
    /// Simulated time runs this many times slower than the wall clock.
    dilation: u32,
    model: RwLock<LinkModel>,
    partitioned: AtomicBool,
    /// Group of every node while partitioned.
    groups: RwLock<Vec<u32>>,
    /// Memory port to node.
    ports: RwLock<HashMap<u64, usize>>,
    traffic: Vec<Traffic>,
    connections: AtomicU64,
}

impl Network {
    /// A network of `nodes` nodes (the Byzantine peer included) whose time
    /// runs `dilation` times slower than the wall clock: every delay of the
    /// model is stretched by it (and its bandwidth divided).
    pub fn new(seed: u64, model: LinkModel, nodes: usize, dilation: u32) -> Arc<Network> {
        let dilation = dilation.max(1);
        Arc::new(Network {
            seed,
            dilation,
            model: RwLock::new(model.dilated(dilation)),
            partitioned: AtomicBool::new(false),
            groups: RwLock::new(vec![0; nodes]),
            ports: RwLock::new(HashMap::new()),
            traffic: (0..nodes).map(|_| Traffic::default()).collect(),
            connections: AtomicU64::new(0),
        })
    }

    /// Registers the memory port `node` listens on.
    pub fn register(&self, node: usize, port: u64) {
        if let Ok(mut ports) = self.ports.write() {
            ports.insert(port, node);
        }
    }

    /// The model now.
    pub fn model(&self) -> LinkModel {
        match self.model.read() {
            Ok(m) => *m,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Changes the model of every link from now on.
    pub fn set_model(&self, model: LinkModel) {
        if let Ok(mut m) = self.model.write() {
            *m = model.dilated(self.dilation);
        }
    }

    /// How many times slower than the wall clock this network's time runs.
    pub fn dilation(&self) -> u32 {
        self.dilation
    }

    /// `d` of simulated time on the wall clock.
    fn wall(&self, d: Duration) -> Duration {
        d.saturating_mul(self.dilation)
    }

    /// Cuts the links between groups.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        if let Ok(mut g) = self.groups.write() {
            g.iter_mut().for_each(|x| *x = 0);
            for (i, group) in groups.iter().enumerate() {
                for n in group {
                    if let Some(slot) = g.get_mut(*n) {
                        *slot = i as u32;
                    }
                }
            }
        }
        self.partitioned.store(true, Ordering::Release);
    }

    /// Cuts every link: each node alone.
    pub fn isolate(&self) {
        if let Ok(mut g) = self.groups.write() {
            g.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
        }
        self.partitioned.store(true, Ordering::Release);
    }

    /// Every link carries again.
    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::Release);
    }

    /// True when the link between `a` and `b` carries nothing now.
    pub fn cut(&self, a: usize, b: usize) -> bool {
        if !self.partitioned.load(Ordering::Acquire) {
            return false;
        }
        self.groups.read().is_ok_and(|g| g.get(a) != g.get(b))
    }

    /// Traffic of one node.
    pub fn traffic(&self, node: usize) -> Option<&Traffic> {
        self.traffic.get(node)
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn node_at(&self, addr: &Multiaddr) -> Option<usize> {
        let port = addr.iter().find_map(|p| match p {
            Protocol::Memory(port) => Some(port),
            _ => None,
        })?;
        self.ports.read().ok()?.get(&port).copied()
    }

    /// The transport of `node`: memory channels with the link model, then
    /// Noise and Yamux as over TCP.
    pub fn transport(
        self: &Arc<Self>,
        node: usize,
        key: &identity::Keypair,
    ) -> io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
        let net = Arc::clone(self);
        let noise = noise::Config::new(key).map_err(io::Error::other)?;
        Ok(Releasing::default()
            .and_then(move |channel, endpoint| Arc::clone(&net).open(node, channel, endpoint).boxed())
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(self.wall(Duration::from_secs(20)))
            .boxed())
    }

    /// Both ends learn who is at the other end (the dialer says, in a first
    /// message of the link layer), then wrap the channel in the link model.
    async fn open(
        self: Arc<Self>,
        me: usize,
        mut channel: Channel<Vec<u8>>,
        endpoint: ConnectedPoint,
    ) -> io::Result<Link> {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "partitioned");
        let remote = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => {
                let remote = self
                    .node_at(address)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no simulated node at this address"))?;
                if self.cut(me, remote) {
                    return Err(refused());
                }
                // Connection set-up costs a round trip, as a TCP handshake does.
                let model = self.model();
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ ((me as u64) << 20) ^ remote as u64);
                let rtt = model.sample_latency(&mut rng) + model.sample_latency(&mut rng);
                tokio::time::sleep(Duration::from_secs_f64(rtt / 1000.0)).await;
                channel.write_all(&(me as u64).to_le_bytes()).await?;
                channel.flush().await?;
                remote
            }
            ConnectedPoint::Listener { .. } => {
                let mut hello = [0u8; 8];
                channel.read_exact(&mut hello).await?;
                let remote = usize::try_from(u64::from_le_bytes(hello))
                    .ok()
                    .filter(|r| *r < self.traffic.len())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown simulated node"))?;
                if self.cut(me, remote) {
                    return Err(refused());
                }
                remote
            }
        };
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(me, remote, dialer = endpoint.is_dialer(), "link opened");
        let rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n);
        Ok(Link::new(self, me, remote, channel, rng))
    }
}

/// The memory transport, giving its ports back when it is dropped (the
/// memory transport alone keeps them registered until its listeners are
/// removed, so a crashed node could not listen on its port again).
#[derive(Default)]
struct Releasing {
    inner: MemoryTransport,
    listeners: Vec<ListenerId>,
}

impl Transport for Releasing {
    type Output = <MemoryTransport as Transport>::Output;
    type Error = <MemoryTransport as Transport>::Error;
    type ListenerUpgrade = <MemoryTransport as Transport>::ListenerUpgrade;
    type Dial = <MemoryTransport as Transport>::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)?;
        self.listeners.push(id);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.listeners.retain(|l| *l != id);
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.listeners) {
            self.inner.remove_listener(id);
        }
    }
}

/// What one end has received and not yet delivered.
struct Held {
    due: Instant,
    data: Vec<u8>,
    read: usize,
}

/// One end of a connection, with the link model applied to what it receives.
pub struct Link {
    inner: Channel<Vec<u8>>,
    net: Arc<Network>,
    me: usize,
    remote: usize,
    rng: ChaCha8Rng,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// When the last transmission is due (delivery stays in order).
    last_due: Instant,
    /// When the link is free to carry the next transmission (bandwidth).
    wire_free: Instant,
    eof: bool,
    timer: Option<Pin<Box<Sleep>>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({} <- {})", self.me, self.remote)
    }
}

impl Link {
    fn new(net: Arc<Network>, me: usize, remote: usize, inner: Channel<Vec<u8>>, rng: ChaCha8Rng) -> Link {
        let now = Instant::now();
        Link {
            inner,
            net,
            me,
            remote,
            rng,
            held: VecDeque::new(),
            held_bytes: 0,
            last_due: now,
            wire_free: now,
            eof: false,
            timer: None,
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// When a transmission of `len` bytes received now is due.
    fn due(&mut self, len: usize) -> Instant {
        let model = self.net.model();
        let now = Instant::now();
        let start = now.max(self.wire_free);
        let serialise = if model.bits_per_ms > 0.0 { len as f64 * 8.0 / model.bits_per_ms } else { 0.0 };
        self.wire_free = start + Duration::from_secs_f64(serialise / 1000.0);
        let delay = model.sample_latency(&mut self.rng) + model.sample_loss_delay(&mut self.rng);
        let due = (self.wire_free + Duration::from_secs_f64(delay / 1000.0)).max(self.last_due);
        self.last_due = due;
        due
    }

    /// Waits until `at`; Ready when it has passed.
    fn wait_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl AsyncRead for Link {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            // Take in everything that arrived, stamped with when it is due.
            while !this.eof && this.held_bytes < MAX_QUEUED {
                let mut scratch = std::mem::take(&mut this.scratch);
                let read = Pin::new(&mut this.inner).poll_read(cx, &mut scratch);
                let result = match read {
                    Poll::Ready(Ok(0)) => {
                        this.eof = true;
                        None
                    }
                    Poll::Ready(Ok(n)) => Some(Ok(scratch[..n].to_vec())),
                    Poll::Ready(Err(e)) => Some(Err(e)),
                    Poll::Pending => {
                        this.scratch = scratch;
                        break;
                    }
                };
                this.scratch = scratch;
                match result {
                    Some(Ok(data)) => {
                        let due = this.due(data.len());
                        this.held_bytes += data.len();
                        if let Some(t) = this.net.traffic(this.me) {
                            t.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                            t.frames_in.fetch_add(1, Ordering::Relaxed);
                        }
                        this.held.push_back(Held { due, data, read: 0 });
                    }
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => {}
                }
            }
            // Deliver what is due, unless the link is cut.
            let Some(front) = this.held.front() else {
                return if this.eof { Poll::Ready(Ok(0)) } else { Poll::Pending };
            };
            let now = Instant::now();
            if this.net.cut(this.me, this.remote) {
                if this.wait_until(now + this.net.wall(PARTITION_RECHECK), cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            if front.due > now {
                let due = front.due;
                if this.wait_until(due, cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            let Some(front) = this.held.front_mut() else { continue };
            let n = (front.data.len() - front.read).min(buf.len());
            buf[..n].copy_from_slice(&front.data[front.read..front.read + n]);
            front.read += n;
            if front.read == front.data.len() {
                this.held.pop_front();
            }
            this.held_bytes -= n;
            return Poll::Ready(Ok(n));
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written
            && let Some(t) = this.net.traffic(this.me)
        {
            t.bytes_out.fetch_add(*n as u64, Ordering::Relaxed);
            t.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn model(distribution: Distribution, latency: f64, jitter: f64) -> LinkModel {
        LinkModel { latency_ms: latency, jitter_ms: jitter, distribution, loss: 0.0, rto_ms: 200.0, bits_per_ms: 0.0 }
    }

    #[test]
    fn latency_draws_follow_the_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let fixed = model(Distribution::Fixed, 50.0, 10.0);
        assert!((0..100).all(|_| fixed.sample_latency(&mut rng) == 50.0));
        let uniform = model(Distribution::Uniform, 50.0, 10.0);
        assert!((0..1000).map(|_| uniform.sample_latency(&mut rng)).all(|x| (40.0..=60.0).contains(&x)));
        for d in [Distribution::Normal, Distribution::Lognormal] {
            let m = model(d, 50.0, 10.0);
            let mut xs: Vec<f64> = (0..20_001).map(|_| m.sample_latency(&mut rng)).collect();
            xs.sort_by(f64::total_cmp);
            let median = xs[10_000];
            assert!((median - 50.0).abs() < 2.0, "{d:?} median {median}");
            assert!(xs[0] >= 0.0);
        }
    }

    #[test]
    fn losses_cost_doubling_retransmission_timeouts() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let lossless = model(Distribution::Fixed, 50.0, 0.0);
        assert!((0..100).all(|_| lossless.sample_loss_delay(&mut rng) == 0.0));
        let lossy = LinkModel { loss: 0.5, ..lossless };
        let delays: Vec<f64> = (0..10_000).map(|_| lossy.sample_loss_delay(&mut rng)).collect();
        // Each delay is 200 * (2^k - 1) for k losses in a row.
        assert!(delays.iter().all(|d| [0.0, 200.0, 600.0, 1400.0, 3000.0, 6200.0, 12600.0].contains(d)));
        let lost = delays.iter().filter(|d| **d > 0.0).count() as f64 / delays.len() as f64;
        assert!((lost - 0.5).abs() < 0.03, "{lost}");
    }

    #[test]
    fn a_dilated_network_stretches_every_delay_and_set_models_too() {
        let base = LinkModel { loss: 0.1, bits_per_ms: 8_000.0, ..model(Distribution::Normal, 20.0, 5.0) };
        let net = Network::new(1, base, 2, 4);
        let m = net.model();
        assert_eq!((m.latency_ms, m.jitter_ms, m.rto_ms, m.bits_per_ms), (80.0, 20.0, 800.0, 2_000.0));
        assert_eq!((m.loss, m.distribution), (0.1, Distribution::Normal));
        // A link change in the timeline is stretched as well.
        net.set_model(model(Distribution::Fixed, 50.0, 0.0));
        assert_eq!(net.model().latency_ms, 200.0);
        assert_eq!(net.wall(Duration::from_millis(20)), Duration::from_millis(80));
        // Undilated, nothing changes.
        assert_eq!(Network::new(1, base, 2, 1).model(), base);
    }

    #[test]
    fn partitions_cut_only_between_groups() {
        let net = Network::new(1, model(Distribution::Fixed, 1.0, 0.0), 4, 1);
        assert!(!net.cut(0, 3));
        net.partition(&[vec![0, 1], vec![2, 3]]);
        assert!(!net.cut(0, 1) && !net.cut(2, 3));
        assert!(net.cut(0, 2) && net.cut(3, 1));
        net.heal();
        assert!(!net.cut(0, 2));
    }
}
