//! Per-peer token buckets for inbound requests: an honest peer never notices
//! them; a flooding peer gets `RateLimited` answers without any signature
//! checks or disk work being spent on it.

use std::collections::HashMap;

use libp2p::PeerId;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl RateLimiter {
    /// `per_sec` sustained, `burst` at once.
    pub fn new(per_sec: f64, burst: u32) -> RateLimiter {
        RateLimiter { per_sec: per_sec.max(0.0), burst: f64::from(burst.max(1)), buckets: HashMap::new() }
    }

    /// Takes one token for `peer` at `now_ms`; false when the peer is over its rate.
    pub fn allow(&mut self, peer: PeerId, now_ms: u64) -> bool {
        let burst = self.burst;
        let b = self.buckets.entry(peer).or_insert(Bucket { tokens: burst, at_ms: now_ms });
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.per_sec).min(burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a disconnected peer.
    pub fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let mut r = RateLimiter::new(10.0, 5);
        let p = PeerId::random();
        assert_eq!((0..8).filter(|_| r.allow(p, 0)).count(), 5);
        assert!(!r.allow(p, 50));
        assert!(r.allow(p, 150)); // 1.5 tokens refilled
        let other = PeerId::random();
        assert!(r.allow(other, 150), "peers do not share a bucket");
    }
}
