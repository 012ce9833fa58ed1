//! Shared fixtures for the protocol's integration tests, examples and benches.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::offer::{Country, Currency, Flavour, Offer, Price, Resources, Site};

pub const FEDERATION: &str = "eu-sovereign";
pub const HOUR_MS: u64 = 3_600_000;
pub const T0: u64 = 1_790_000_000_000;

/// A deterministic identity for tests.
pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

/// Offer terms as an operator would write them; `Provider::publish` fills in
/// provider, federation, seq and lifetime.
pub fn offer_terms(offer_id: &str, country: &str, units: u32, price_micros: u64) -> Offer {
    Offer {
        provider: identity(0).public(),
        federation: String::new(),
        offer_id: offer_id.to_owned(),
        seq: 0,
        issued_at_ms: 0,
        expires_at_ms: 0,
        site: Site { country: Country::parse(country).unwrap(), region: "central".into(), datacenter: "dc1".into() },
        flavour: Flavour {
            name: "c8m32".into(),
            per_unit: Resources { vcpu: 8, memory_mib: 32_768, storage_gib: 200, gpus: BTreeMap::new() },
        },
        units_available: units,
        unit_price_per_hour: Price { currency: Currency::EUR, micros: price_micros },
        min_duration_ms: HOUR_MS,
        max_duration_ms: 720 * HOUR_MS,
        labels: vec!["iso:27001".into()],
        sla_permille: 999,
    }
}

/// A complete signed-ready offer from `provider` (seq 1, one hour of life).
pub fn signed_offer(provider: &Identity, offer_id: &str, units: u32, price_micros: u64, now: u64) -> Offer {
    let mut o = offer_terms(offer_id, "DE", units, price_micros);
    o.provider = provider.public();
    o.federation = FEDERATION.into();
    o.seq = 1;
    o.issued_at_ms = now;
    o.expires_at_ms = now + HOUR_MS;
    o
}
