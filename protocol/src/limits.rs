//! Every bound on what a peer may send or make us keep, in one place, so an
//! operator (and a reviewer) can see the whole attack surface at a glance.

/// Bounds applied to everything that comes from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded envelope accepted from the wire, in bytes.
    pub max_envelope_bytes: usize,
    /// Largest encoded offer body, in bytes.
    pub max_offer_bytes: usize,
    /// Most labels on one offer or certificate.
    pub max_labels: usize,
    /// Longest label, identifier or free-text field, in bytes.
    pub max_text_len: usize,
    /// Most GPU models in one flavour.
    pub max_gpu_kinds: usize,
    /// Most offers one provider may have in an offer book (withdrawals kept
    /// as tombstones count too: they cost memory like any other entry).
    pub max_offers_per_provider: usize,
    /// Most offers in an offer book in total.
    pub max_offers_total: usize,
    /// How far in the future an `issued_at` may be (clock skew), in ms.
    pub max_clock_skew_ms: u64,
    /// Longest offer lifetime (`expires_at - issued_at`), in ms.
    pub max_offer_ttl_ms: u64,
    /// Most units an offer or a proposal may name.
    pub max_units: u32,
    /// Longest contract duration, in ms.
    pub max_duration_ms: u64,
    /// Furthest in the future a contract may start, in ms.
    pub max_start_lead_ms: u64,
    /// Most live holds a provider grants one consumer.
    pub max_holds_per_peer: usize,
    /// Most live holds a provider keeps in total.
    pub max_holds_total: usize,
    /// Most counter rounds in one negotiation.
    pub max_counter_rounds: u32,
    /// How long a provider keeps a hold, in ms.
    pub hold_ttl_ms: u64,
    /// Most negotiations a consumer runs at once.
    pub max_negotiations: usize,
    /// How long a consumer waits for an answer before reconciling, in ms.
    pub reply_timeout_ms: u64,
    /// Most times a consumer asks for status before giving up, per negotiation.
    pub max_status_attempts: u32,
    /// How long after a contract was made its absence from a party's log is
    /// evidence against that party (the consumer stores a contract only once
    /// the countersignature reaches it, which a lost message can delay).
    pub missing_contract_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 16 * 1024,
            max_offer_bytes: 4 * 1024,
            max_labels: 32,
            max_text_len: 128,
            max_gpu_kinds: 8,
            max_offers_per_provider: 256,
            max_offers_total: 1_000_000,
            max_clock_skew_ms: 30_000,
            max_offer_ttl_ms: 24 * 3_600_000,
            max_units: 1_000_000,
            max_duration_ms: 10 * 365 * 24 * 3_600_000,
            max_start_lead_ms: 90 * 24 * 3_600_000,
            max_holds_per_peer: 64,
            max_holds_total: 16_384,
            max_counter_rounds: 3,
            hold_ttl_ms: 30_000,
            max_negotiations: 4_096,
            reply_timeout_ms: 5_000,
            max_status_attempts: 8,
            missing_contract_grace_ms: 120_000,
        }
    }
}
