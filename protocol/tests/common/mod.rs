//! Shared fixtures for the protocol's integration tests, examples and benches.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fulcrum_protocol::Limits;
use fulcrum_protocol::contract::{ContractTerms, SignedContract};
use fulcrum_protocol::ids::{HoldId, NegotiationId};
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

/// Terms of a 3-unit, one-hour contract made at `created_at` for an offer of
/// `provider`; `hold` tells contracts between the same parties apart.
pub fn contract_terms_between(provider: &Identity, consumer: &Identity, hold: u8, created_at: u64) -> ContractTerms {
    let offer = signed_offer(provider, "fra1-c8m32", 10, 1_000_000, created_at);
    ContractTerms {
        federation: FEDERATION.into(),
        provider: provider.public(),
        consumer: consumer.public(),
        offer_id: offer.offer_id.clone(),
        offer_seq: 1,
        hold_id: HoldId([hold; 16]),
        negotiation_id: NegotiationId([hold.wrapping_add(1); 16]),
        site: offer.site.clone(),
        flavour: offer.flavour.clone(),
        units: 3,
        unit_price_per_hour: offer.unit_price_per_hour,
        start_ms: created_at,
        end_ms: created_at + HOUR_MS,
        created_at_ms: created_at,
    }
}

/// That contract, signed by the consumer and countersigned by the provider.
pub fn countersigned_contract(provider: &Identity, consumer: &Identity, hold: u8, created_at: u64) -> SignedContract {
    let body = contract_terms_between(provider, consumer, hold, created_at).encode();
    let c = SignedContract::sign_as_consumer(consumer, body, &Limits::default()).unwrap();
    c.countersign(provider).unwrap()
}
