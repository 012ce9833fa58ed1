//! Offers, the offer book and matching: every check that makes `SignedOffer::verify`
//! refuse a validly signed but bad offer, how the book orders seqs, withdrawals,
//! expiry, limits and paging, and how constraints filter, explain and rank offers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::{FEDERATION, HOUR_MS, T0, identity, signed_offer};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::{BookEntry, BookError, Inserted, OfferBook};
use fulcrum_protocol::envelope::{Envelope, EnvelopeError, Kind};
use fulcrum_protocol::keys::KeyError;
use fulcrum_protocol::matching::{self, Constraints, Mismatch};
use fulcrum_protocol::offer::{Country, Currency, Offer, OfferError, OfferKey, Price, SignedOffer};
use proptest::prelude::*;

const NOW: u64 = T0;
const MINUTE_MS: u64 = 60_000;
/// Seed of the provider whose offers the verify table mutates.
const PROVIDER: u8 = 1;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The fixture offer of provider `seed` (seq 1, issued NOW, one hour of life,
/// 10 units at 0.25 EUR), changed by `f`, signed by that provider.
fn offer_with(seed: u8, offer_id: &str, f: impl FnOnce(&mut Offer)) -> SignedOffer {
    let id = identity(seed);
    let mut o = signed_offer(&id, offer_id, 10, 250_000, NOW);
    f(&mut o);
    o.sign(&id)
}

/// Version `seq` of an offer; `units` 0 makes it a withdrawal.
fn version(seed: u8, offer_id: &str, seq: u64, units: u32) -> SignedOffer {
    offer_with(seed, offer_id, |o| {
        o.seq = seq;
        o.units_available = units;
    })
}

fn labels(ls: &[&str]) -> BTreeSet<String> {
    ls.iter().map(|l| (*l).to_owned()).collect()
}

fn entry(signed: SignedOffer, attested: &[&str]) -> BookEntry {
    let retain_until_ms = signed.offer().expires_at_ms;
    BookEntry { signed, attested_labels: labels(attested), received_at_ms: NOW, retain_until_ms }
}

fn key(seed: u8, offer_id: &str) -> OfferKey {
    OfferKey { provider: identity(seed).public(), offer_id: offer_id.to_owned() }
}

fn keys<'a>(entries: impl IntoIterator<Item = &'a BookEntry>) -> Vec<OfferKey> {
    entries.into_iter().map(|e| e.signed.offer().key()).collect()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

// ---------------------------------------------------------------------------
// SignedOffer::verify
// ---------------------------------------------------------------------------

/// A fresh, valid wire offer of `PROVIDER`.
fn fresh_wire() -> wire::Offer {
    signed_offer(&identity(PROVIDER), "fra1-c8m32", 10, 250_000, NOW).to_wire()
}

/// Seals `w` with the identity of `signer` and runs the full peer-side check at NOW.
fn verify_wire(w: &wire::Offer, signer: u8) -> Result<SignedOffer, OfferError> {
    let bytes = Envelope::seal_message(&identity(signer), Kind::Offer, w).encode();
    SignedOffer::verify(&bytes, FEDERATION, NOW, &Limits::default())
}

/// A change to a wire offer before it is re-signed.
type Mutation = fn(&mut wire::Offer);

struct Rejected {
    name: &'static str,
    /// Seed of the identity that signs the mutated wire message.
    signer: u8,
    mutate: Mutation,
    expect: fn(&OfferError) -> bool,
}

fn bad_field(e: &OfferError, want: &str) -> bool {
    matches!(e, OfferError::BadField { field, .. } if *field == want)
}

fn rejected_cases() -> Vec<Rejected> {
    const SKEW: u64 = 30_000;
    const TTL: u64 = 24 * HOUR_MS;
    vec![
        Rejected {
            name: "expired",
            signer: PROVIDER,
            mutate: |w| {
                w.issued_at_ms = NOW - 2 * HOUR_MS;
                w.expires_at_ms = NOW - HOUR_MS;
            },
            expect: |e| {
                matches!(e, OfferError::Expired { expires_at_ms, now_ms: NOW }
                    if *expires_at_ms == NOW - HOUR_MS)
            },
        },
        Rejected {
            name: "expires exactly now",
            signer: PROVIDER,
            mutate: |w| {
                w.issued_at_ms = NOW - HOUR_MS;
                w.expires_at_ms = NOW;
            },
            expect: |e| matches!(e, OfferError::Expired { expires_at_ms: NOW, now_ms: NOW }),
        },
        Rejected {
            name: "future-dated beyond the clock skew",
            signer: PROVIDER,
            mutate: |w| {
                w.issued_at_ms = NOW + SKEW + 1;
                w.expires_at_ms = NOW + SKEW + 1 + HOUR_MS;
            },
            expect: |e| {
                matches!(e, OfferError::FutureDated { issued_at_ms, now_ms: NOW }
                    if *issued_at_ms == NOW + SKEW + 1)
            },
        },
        Rejected {
            name: "wrong federation",
            signer: PROVIDER,
            mutate: |w| w.federation = "us-commercial".into(),
            expect: |e| {
                matches!(e, OfferError::WrongFederation { expected, got }
                    if expected == FEDERATION && got == "us-commercial")
            },
        },
        Rejected {
            name: "signed by someone other than the provider",
            signer: 2,
            mutate: |_| {},
            expect: |e| {
                matches!(e, OfferError::SignerMismatch { provider, signer }
                    if *provider == identity(PROVIDER).public() && *signer == identity(2).public())
            },
        },
        Rejected {
            name: "provider key of the wrong length",
            signer: PROVIDER,
            mutate: |w| w.provider.truncate(31),
            expect: |e| matches!(e, OfferError::ProviderKey(KeyError::PublicKeyLength(31))),
        },
        Rejected {
            name: "country code of three letters",
            signer: PROVIDER,
            mutate: |w| w.site.as_mut().unwrap().country = "DEU".into(),
            expect: |e| bad_field(e, "site.country"),
        },
        Rejected {
            name: "country code with a digit",
            signer: PROVIDER,
            mutate: |w| w.site.as_mut().unwrap().country = "D1".into(),
            expect: |e| bad_field(e, "site.country"),
        },
        Rejected {
            name: "lower-case currency",
            signer: PROVIDER,
            mutate: |w| w.unit_price_per_hour.as_mut().unwrap().currency = "eur".into(),
            expect: |e| bad_field(e, "price.currency"),
        },
        Rejected {
            name: "currency of four letters",
            signer: PROVIDER,
            mutate: |w| w.unit_price_per_hour.as_mut().unwrap().currency = "EURO".into(),
            expect: |e| bad_field(e, "price.currency"),
        },
        Rejected {
            name: "too many labels",
            signer: PROVIDER,
            mutate: |w| w.labels = (0..33).map(|i| format!("label:{i}")).collect(),
            expect: |e| matches!(e, OfferError::TooMany { what: "labels", count: 33, max: 32 }),
        },
        Rejected {
            name: "label with a space",
            signer: PROVIDER,
            mutate: |w| w.labels.push("iso 9001".into()),
            expect: |e| bad_field(e, "labels"),
        },
        Rejected {
            name: "label with a control character",
            signer: PROVIDER,
            mutate: |w| w.labels.push("iso:9001\u{7}".into()),
            expect: |e| bad_field(e, "labels"),
        },
        Rejected {
            name: "empty label",
            signer: PROVIDER,
            mutate: |w| w.labels.push(String::new()),
            expect: |e| bad_field(e, "labels"),
        },
        Rejected {
            name: "offer_id over max_text_len",
            signer: PROVIDER,
            mutate: |w| w.offer_id = "x".repeat(129),
            expect: |e| matches!(e, OfferError::BadField { field: "offer_id", reason } if reason.contains("129 bytes")),
        },
        Rejected {
            name: "flavour name over max_text_len",
            signer: PROVIDER,
            mutate: |w| w.flavour.as_mut().unwrap().name = "f".repeat(129),
            expect: |e| bad_field(e, "flavour.name"),
        },
        Rejected {
            name: "region over max_text_len",
            signer: PROVIDER,
            mutate: |w| w.site.as_mut().unwrap().region = "r".repeat(129),
            expect: |e| bad_field(e, "site.region"),
        },
        Rejected {
            name: "lifetime longer than max_offer_ttl",
            signer: PROVIDER,
            mutate: |w| w.expires_at_ms = w.issued_at_ms + TTL + 1,
            expect: |e| {
                matches!(e, OfferError::BadLifetime { issued_at_ms: NOW, expires_at_ms, max_ttl_ms: TTL }
                    if *expires_at_ms == NOW + TTL + 1)
            },
        },
        Rejected {
            name: "expires before it is issued",
            signer: PROVIDER,
            mutate: |w| w.expires_at_ms = w.issued_at_ms - 1,
            expect: |e| {
                matches!(e, OfferError::BadLifetime { issued_at_ms: NOW, expires_at_ms, .. }
                    if *expires_at_ms == NOW - 1)
            },
        },
        Rejected {
            name: "expires when it is issued",
            signer: PROVIDER,
            mutate: |w| w.expires_at_ms = w.issued_at_ms,
            expect: |e| matches!(e, OfferError::BadLifetime { issued_at_ms: NOW, expires_at_ms: NOW, .. }),
        },
        Rejected {
            name: "min duration above max duration",
            signer: PROVIDER,
            mutate: |w| {
                w.min_duration_ms = 2 * HOUR_MS;
                w.max_duration_ms = HOUR_MS;
            },
            expect: |e| matches!(e, OfferError::BadDurations { min_ms: 7_200_000, max_ms: 3_600_000 }),
        },
        Rejected {
            name: "zero max duration on a live offer",
            signer: PROVIDER,
            mutate: |w| {
                w.min_duration_ms = 0;
                w.max_duration_ms = 0;
            },
            expect: |e| matches!(e, OfferError::BadDurations { min_ms: 0, max_ms: 0 }),
        },
        Rejected {
            name: "max duration above the limit",
            signer: PROVIDER,
            mutate: |w| w.max_duration_ms = Limits::default().max_duration_ms + 1,
            expect: |e| {
                matches!(e, OfferError::BadDurations { min_ms: HOUR_MS, max_ms }
                    if *max_ms == Limits::default().max_duration_ms + 1)
            },
        },
        Rejected {
            name: "SLA over 1000 permille",
            signer: PROVIDER,
            mutate: |w| w.sla_permille = 1001,
            expect: |e| matches!(e, OfferError::BadSla(1001)),
        },
        Rejected {
            name: "units over the limit",
            signer: PROVIDER,
            mutate: |w| w.units_available = 1_000_001,
            expect: |e| matches!(e, OfferError::TooManyUnits { units: 1_000_001, max: 1_000_000 }),
        },
        Rejected {
            name: "missing site",
            signer: PROVIDER,
            mutate: |w| w.site = None,
            expect: |e| matches!(e, OfferError::Missing("site")),
        },
        Rejected {
            name: "missing flavour",
            signer: PROVIDER,
            mutate: |w| w.flavour = None,
            expect: |e| matches!(e, OfferError::Missing("flavour")),
        },
        Rejected {
            name: "missing resources per unit",
            signer: PROVIDER,
            mutate: |w| w.flavour.as_mut().unwrap().per_unit = None,
            expect: |e| matches!(e, OfferError::Missing("flavour.per_unit")),
        },
        Rejected {
            name: "missing price",
            signer: PROVIDER,
            mutate: |w| w.unit_price_per_hour = None,
            expect: |e| matches!(e, OfferError::Missing("unit_price_per_hour")),
        },
        Rejected {
            name: "GPU model listed twice",
            signer: PROVIDER,
            mutate: |w| {
                w.flavour.as_mut().unwrap().per_unit.as_mut().unwrap().gpus = vec![
                    wire::GpuCount { model: "nvidia-h100".into(), count: 1 },
                    wire::GpuCount { model: "nvidia-h100".into(), count: 2 },
                ];
            },
            expect: |e| bad_field(e, "gpus"),
        },
        Rejected {
            name: "too many GPU models",
            signer: PROVIDER,
            mutate: |w| {
                w.flavour.as_mut().unwrap().per_unit.as_mut().unwrap().gpus =
                    (0..9).map(|i| wire::GpuCount { model: format!("gpu-{i}"), count: 1 }).collect();
            },
            expect: |e| matches!(e, OfferError::TooMany { what: "GPU models", count: 9, max: 8 }),
        },
    ]
}

#[test]
fn verify_accepts_a_fresh_offer() {
    let offer = signed_offer(&identity(PROVIDER), "fra1-c8m32", 10, 250_000, NOW);
    let bytes = offer.sign(&identity(PROVIDER)).envelope().encode();
    let signed = SignedOffer::verify(&bytes, FEDERATION, NOW, &Limits::default()).unwrap();
    assert_eq!(signed.offer(), &offer);
    assert_eq!(signed.envelope().signer(), identity(PROVIDER).public());
    // The re-signing harness of the table, with no mutation, is accepted too.
    assert_eq!(verify_wire(&fresh_wire(), PROVIDER).unwrap().offer(), &offer);
}

#[test]
fn verify_accepts_the_boundaries() {
    let limits = Limits::default();
    let accepted: [(&str, Mutation); 7] = [
        ("issued exactly at the clock skew", |w| {
            w.issued_at_ms = NOW + 30_000;
            w.expires_at_ms = NOW + 30_000 + HOUR_MS;
        }),
        ("expires one ms after now", |w| {
            w.issued_at_ms = NOW - HOUR_MS;
            w.expires_at_ms = NOW + 1;
        }),
        ("lifetime exactly max_offer_ttl", |w| w.expires_at_ms = w.issued_at_ms + 24 * HOUR_MS),
        ("units exactly the limit", |w| w.units_available = 1_000_000),
        ("SLA exactly 1000", |w| w.sla_permille = 1000),
        ("32 labels", |w| w.labels = (0..32).map(|i| format!("label:{i}")).collect()),
        ("withdrawal with zero durations", |w| {
            w.units_available = 0;
            w.min_duration_ms = 0;
            w.max_duration_ms = 0;
        }),
    ];
    for (name, mutate) in accepted {
        let mut w = fresh_wire();
        mutate(&mut w);
        let got = verify_wire(&w, PROVIDER);
        assert!(got.is_ok(), "{name}: expected accepted, got {got:?}");
        assert_eq!(got.unwrap().offer().to_wire(), w, "{name}");
    }
    assert_eq!(limits.max_clock_skew_ms, 30_000, "the table assumes the default limits");
}

#[test]
fn verify_rejects_each_bad_offer_with_its_own_error() {
    for case in rejected_cases() {
        let mut w = fresh_wire();
        (case.mutate)(&mut w);
        match verify_wire(&w, case.signer) {
            Ok(_) => panic!("{}: accepted", case.name),
            Err(e) => assert!((case.expect)(&e), "{}: unexpected error {e:?}", case.name),
        }
    }
}

#[test]
fn verify_rejects_a_broken_envelope() {
    let signed = signed_offer(&identity(PROVIDER), "fra1-c8m32", 10, 250_000, NOW).sign(&identity(PROVIDER));
    let limits = Limits::default();

    // A body byte changed after signing.
    let mut w = signed.envelope().to_wire();
    let last = w.body.len() - 1;
    w.body[last] ^= 1;
    let bytes = prost::Message::encode_to_vec(&w);
    assert_eq!(
        SignedOffer::verify(&bytes, FEDERATION, NOW, &limits),
        Err(OfferError::Envelope(EnvelopeError::BadSignature))
    );

    // A valid signature under another kind.
    let bytes = Envelope::seal_message(&identity(PROVIDER), Kind::Propose, &fresh_wire()).encode();
    assert_eq!(
        SignedOffer::verify(&bytes, FEDERATION, NOW, &limits),
        Err(OfferError::Envelope(EnvelopeError::WrongKind { expected: Kind::Offer, got: Kind::Propose }))
    );

    // More bytes than an envelope may have.
    let bytes = vec![0u8; limits.max_envelope_bytes + 1];
    assert_eq!(
        SignedOffer::verify(&bytes, FEDERATION, NOW, &limits),
        Err(OfferError::Envelope(EnvelopeError::TooLarge {
            len: limits.max_envelope_bytes + 1,
            max: limits.max_envelope_bytes
        }))
    );
}

// ---------------------------------------------------------------------------
// OfferBook
// ---------------------------------------------------------------------------

#[test]
fn book_orders_versions_by_seq() {
    let mut book = OfferBook::new(&Limits::default());
    let k = key(1, "a");

    assert_eq!(book.insert(version(1, "a", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(version(1, "a", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::Duplicate));
    assert_eq!(book.insert(version(1, "a", 3, 7), BTreeSet::new(), NOW), Ok(Inserted::Replaced { previous_seq: 1 }));
    assert_eq!(
        book.insert(version(1, "a", 2, 10), BTreeSet::new(), NOW),
        Err(BookError::Stale { key: k.clone(), have: 3, got: 2 })
    );
    assert_eq!(
        book.insert(version(1, "a", 1, 10), BTreeSet::new(), NOW),
        Err(BookError::Stale { key: k.clone(), have: 3, got: 1 })
    );
    // Same seq, other terms: the provider signed two versions of seq 3.
    assert_eq!(
        book.insert(version(1, "a", 3, 8), BTreeSet::new(), NOW),
        Err(BookError::Equivocation { key: k.clone(), seq: 3 })
    );
    assert_eq!(book.len(), 1);
    let held = book.get(&k).unwrap();
    assert_eq!(held.signed, version(1, "a", 3, 7), "neither the stale nor the equivocating version got in");
}

#[test]
fn book_keeps_a_withdrawal_as_a_tombstone() {
    let mut book = OfferBook::new(&Limits::default());
    let k = key(1, "a");
    let all = Constraints::default();

    assert_eq!(book.insert(version(1, "a", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(version(1, "a", 2, 0), BTreeSet::new(), NOW), Ok(Inserted::Withdrawn));
    assert_eq!(book.len(), 1, "the tombstone stays");
    assert_eq!(book.get(&k).unwrap().signed.offer().seq, 2);
    assert_eq!(book.live(NOW).count(), 0);
    assert!(book.query(&all, NOW).is_empty());
    assert_eq!(book.explain(&all, NOW), BTreeMap::from([(Mismatch::Withdrawn, 1)]));

    // The older seq cannot bring the offer back.
    assert_eq!(
        book.insert(version(1, "a", 1, 10), BTreeSet::new(), NOW),
        Err(BookError::Stale { key: k.clone(), have: 2, got: 1 })
    );
    assert_eq!(book.live(NOW).count(), 0);

    // Offer-book sync still carries the tombstone.
    let (page, next) = book.page(None, 10);
    assert_eq!(page, vec![&version(1, "a", 2, 0)]);
    assert_eq!(next, None);

    // A newer seq re-offers.
    assert_eq!(book.insert(version(1, "a", 3, 5), BTreeSet::new(), NOW), Ok(Inserted::Replaced { previous_seq: 2 }));
    assert_eq!(keys(book.query(&all, NOW)), vec![k]);

    // A withdrawal that arrives first is a tombstone from the start.
    assert_eq!(book.insert(version(1, "b", 4, 0), BTreeSet::new(), NOW), Ok(Inserted::Withdrawn));
    assert_eq!(
        book.insert(version(1, "b", 3, 10), BTreeSet::new(), NOW),
        Err(BookError::Stale { key: key(1, "b"), have: 4, got: 3 })
    );
    assert_eq!(keys(book.live(NOW)), vec![key(1, "a")]);
}

#[test]
fn book_expire_drops_offers_and_tombstones() {
    let mut book = OfferBook::new(&Limits::default());
    let short = |id: &str, units: u32| {
        offer_with(1, id, |o| {
            o.units_available = units;
            o.expires_at_ms = NOW + 10 * MINUTE_MS;
        })
    };
    book.insert(short("live-short", 10), BTreeSet::new(), NOW).unwrap();
    book.insert(short("tombstone", 0), BTreeSet::new(), NOW).unwrap();
    book.insert(version(1, "live-long", 1, 10), BTreeSet::new(), NOW).unwrap();
    assert_eq!(book.len(), 3);

    assert_eq!(book.expire(NOW + 10 * MINUTE_MS - 1), 0);
    assert_eq!(book.expire(NOW + 10 * MINUTE_MS), 2, "expires_at == now is expired");
    assert_eq!(keys(book.iter()), vec![key(1, "live-long")]);
    assert_eq!(book.expire(NOW + 10 * MINUTE_MS), 0);

    // Until `expire` runs, an expired entry is held but not live and never matches.
    assert_eq!(book.live(NOW + HOUR_MS).count(), 0);
    assert_eq!(book.explain(&Constraints::default(), NOW + HOUR_MS), BTreeMap::from([(Mismatch::Expired, 1)]));

    assert_eq!(
        book.insert(short("late", 10), BTreeSet::new(), NOW + 10 * MINUTE_MS),
        Err(BookError::Expired { key: key(1, "late") })
    );
    assert_eq!(book.expire(NOW + HOUR_MS), 1);
    assert!(book.is_empty());
}

#[test]
fn book_enforces_provider_and_total_limits() {
    let limits = Limits { max_offers_per_provider: 2, max_offers_total: 3, ..Limits::default() };
    let mut book = OfferBook::new(&limits);
    let a = identity(1).public();

    assert_eq!(book.insert(version(1, "a1", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(version(1, "a2", 1, 0), BTreeSet::new(), NOW), Ok(Inserted::Withdrawn));
    assert_eq!(
        book.insert(version(1, "a3", 1, 10), BTreeSet::new(), NOW),
        Err(BookError::ProviderFull { provider: a, max: 2 })
    );
    // A full provider can still update what it has.
    assert_eq!(book.insert(version(1, "a1", 2, 5), BTreeSet::new(), NOW), Ok(Inserted::Replaced { previous_seq: 1 }));

    assert_eq!(book.insert(version(2, "b1", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(version(3, "c1", 1, 10), BTreeSet::new(), NOW), Err(BookError::BookFull { max: 3 }));
    assert_eq!(book.insert(version(2, "b2", 1, 10), BTreeSet::new(), NOW), Err(BookError::BookFull { max: 3 }));
    assert_eq!(book.len(), 3);

    // Removing an offer frees a slot for its provider and in the book.
    assert!(book.remove(&key(1, "a2")).is_some());
    assert!(book.remove(&key(1, "a2")).is_none());
    assert_eq!(book.insert(version(1, "a3", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.len(), 3);
}

#[test]
fn book_remove_provider() {
    let limits = Limits { max_offers_per_provider: 2, ..Limits::default() };
    let mut book = OfferBook::new(&limits);
    book.insert(version(1, "a1", 1, 10), BTreeSet::new(), NOW).unwrap();
    book.insert(version(1, "a2", 1, 0), BTreeSet::new(), NOW).unwrap();
    book.insert(version(2, "b1", 1, 10), BTreeSet::new(), NOW).unwrap();

    assert_eq!(book.remove_provider(&identity(1).public()), 2, "tombstones included");
    assert_eq!(keys(book.iter()), vec![key(2, "b1")]);
    assert_eq!(book.remove_provider(&identity(1).public()), 0);
    assert_eq!(book.remove_provider(&identity(9).public()), 0);

    // The provider's count went back to zero: it may fill its quota again.
    assert_eq!(book.insert(version(1, "a3", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(version(1, "a4", 1, 10), BTreeSet::new(), NOW), Ok(Inserted::New));
    assert_eq!(
        book.insert(version(1, "a5", 1, 10), BTreeSet::new(), NOW),
        Err(BookError::ProviderFull { provider: identity(1).public(), max: 2 })
    );
}

/// 300 signed offers from five providers, signed once for all page cases.
fn page_pool() -> &'static [SignedOffer] {
    static POOL: OnceLock<Vec<SignedOffer>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..300u32)
            .map(|i| {
                let units = if i % 7 == 0 { 0 } else { 10 };
                version(1 + (i % 5) as u8, &format!("o{:03}", (i * 37) % 300), 1, units)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Paging from the start until there is no cursor returns every entry once,
    /// in key order, with full pages except the last.
    #[test]
    fn page_walks_the_whole_book(size in 0usize..300, page_size in 1usize..50) {
        let mut book = OfferBook::new(&Limits::default());
        for s in &page_pool()[..size] {
            book.insert(s.clone(), BTreeSet::new(), NOW).unwrap();
        }
        prop_assert_eq!(book.len(), size);

        let mut walked: Vec<OfferKey> = Vec::new();
        let mut cursor: Option<OfferKey> = None;
        for _ in 0..=size / page_size + 1 {
            let (page, next) = book.page(cursor.as_ref(), page_size);
            prop_assert!(page.len() <= page_size);
            walked.extend(page.iter().map(|s| s.offer().key()));
            if next.is_some() {
                prop_assert_eq!(page.len(), page_size, "only the last page may be short");
                prop_assert_eq!(next.as_ref(), walked.last(), "the cursor is the last key returned");
            }
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        prop_assert!(cursor.is_none(), "the walk did not end");
        let all: Vec<OfferKey> = keys(book.iter());
        prop_assert_eq!(walked, all);
    }
}

/// A withdrawal may expire before the offer it withdraws (a shorter ttl on
/// `withdraw`, or a clock that stepped back). The tombstone must outlive every
/// seq it replaced, or a replay of the older, still valid seq would bring the
/// withdrawn offer back.
#[test]
fn an_expired_tombstone_does_not_let_the_withdrawn_offer_come_back() {
    let limits = Limits::default();
    let provider = identity(1);
    let mut offer = signed_offer(&provider, "a", 10, 250_000, NOW);
    offer.expires_at_ms = NOW + 24 * HOUR_MS;
    let mut withdrawal = offer.clone();
    withdrawal.seq = 2;
    withdrawal.units_available = 0;
    withdrawal.issued_at_ms = NOW + MINUTE_MS;
    withdrawal.expires_at_ms = NOW + 2 * MINUTE_MS;
    let offer_bytes = offer.sign(&provider).envelope().encode();
    let withdrawal_bytes = withdrawal.sign(&provider).envelope().encode();

    let mut book = OfferBook::new(&limits);
    let v1 = SignedOffer::verify(&offer_bytes, FEDERATION, NOW, &limits).unwrap();
    assert_eq!(book.insert(v1, BTreeSet::new(), NOW), Ok(Inserted::New));
    let v2 = SignedOffer::verify(&withdrawal_bytes, FEDERATION, NOW + MINUTE_MS, &limits).unwrap();
    assert_eq!(book.insert(v2, BTreeSet::new(), NOW + MINUTE_MS), Ok(Inserted::Withdrawn));

    let later = NOW + 3 * MINUTE_MS;
    assert_eq!(book.expire(later), 0, "the tombstone is kept while seq 1 could still be replayed");
    // A peer that missed the withdrawal gossips seq 1 again; it still verifies.
    let replay = SignedOffer::verify(&offer_bytes, FEDERATION, later, &limits).unwrap();
    assert_eq!(
        book.insert(replay, BTreeSet::new(), later),
        Err(BookError::Stale { key: key(1, "a"), have: 2, got: 1 }),
        "the withdrawn seq 1 was accepted again"
    );
    assert_eq!(book.live(later).count(), 0);
}

// ---------------------------------------------------------------------------
// Seq invariant under random inserts
// ---------------------------------------------------------------------------

const SEQ_KEYS: [(u8, &str); 3] = [(1, "a"), (1, "b"), (2, "a")];
const MAX_SEQ: u64 = 16;

fn seq_issued(seq: u64) -> u64 {
    NOW + seq * 2 * MINUTE_MS
}

fn seq_expires(seq: u64) -> u64 {
    seq_issued(seq) + 20 * MINUTE_MS
}

/// Every version of every key, signed once: a provider's clock runs forward,
/// so a higher seq is issued, and expires, later.
fn seq_versions() -> &'static BTreeMap<(usize, u64, bool), SignedOffer> {
    static VERSIONS: OnceLock<BTreeMap<(usize, u64, bool), SignedOffer>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let mut all = BTreeMap::new();
        for (k, (seed, id)) in SEQ_KEYS.iter().enumerate() {
            for seq in 1..=MAX_SEQ {
                for withdraw in [false, true] {
                    let signed = offer_with(*seed, id, |o| {
                        o.seq = seq;
                        o.units_available = if withdraw { 0 } else { 5 };
                        o.issued_at_ms = seq_issued(seq);
                        o.expires_at_ms = seq_expires(seq);
                    });
                    all.insert((k, seq, withdraw), signed);
                }
            }
        }
        all
    })
}

#[derive(Debug, Clone)]
enum BookOp {
    Insert { key: usize, seq: u64, withdraw: bool },
    Advance(u64),
    Expire,
}

fn book_op() -> impl Strategy<Value = BookOp> {
    prop_oneof![
        8 => (0..SEQ_KEYS.len(), 1..=MAX_SEQ, prop::bool::weighted(0.3))
            .prop_map(|(key, seq, withdraw)| BookOp::Insert { key, seq, withdraw }),
        2 => (0..8 * MINUTE_MS).prop_map(BookOp::Advance),
        1 => Just(BookOp::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever order versions arrive in, the book holds, for each key, the
    /// highest seq it ever accepted (or nothing once that one has expired), and
    /// every insert reports exactly what it did.
    #[test]
    fn book_holds_only_the_highest_seq(ops in prop::collection::vec(book_op(), 1..80)) {
        let versions = seq_versions();
        let mut book = OfferBook::new(&Limits::default());
        let mut now = NOW;
        // Per key: (seq, withdrawal) the book should hold, and the highest accepted (seq, expiry).
        let mut held: BTreeMap<usize, (u64, bool)> = BTreeMap::new();
        let mut highest: BTreeMap<usize, (u64, u64)> = BTreeMap::new();

        for op in ops {
            match op {
                BookOp::Insert { key: k, seq, withdraw } => {
                    let offer_key = key(SEQ_KEYS[k].0, SEQ_KEYS[k].1);
                    let want = if seq_expires(seq) <= now {
                        Err(BookError::Expired { key: offer_key.clone() })
                    } else {
                        match held.get(&k) {
                            None if withdraw => Ok(Inserted::Withdrawn),
                            None => Ok(Inserted::New),
                            Some(&(have, was_withdrawal)) if have == seq => {
                                if was_withdrawal == withdraw {
                                    Ok(Inserted::Duplicate)
                                } else {
                                    Err(BookError::Equivocation { key: offer_key.clone(), seq })
                                }
                            }
                            Some(&(have, _)) if seq < have => {
                                Err(BookError::Stale { key: offer_key.clone(), have, got: seq })
                            }
                            Some(_) if withdraw => Ok(Inserted::Withdrawn),
                            Some(&(have, _)) => Ok(Inserted::Replaced { previous_seq: have }),
                        }
                    };
                    let got = book.insert(versions[&(k, seq, withdraw)].clone(), BTreeSet::new(), now);
                    prop_assert_eq!(&got, &want);
                    if got.is_ok() {
                        held.insert(k, (seq, withdraw));
                        let h = highest.entry(k).or_insert((seq, seq_expires(seq)));
                        if seq > h.0 {
                            *h = (seq, seq_expires(seq));
                        }
                    }
                }
                BookOp::Advance(ms) => now += ms,
                BookOp::Expire => {
                    let before = held.len();
                    held.retain(|_, (seq, _)| seq_expires(*seq) > now);
                    prop_assert_eq!(book.expire(now), before - held.len());
                }
            }

            for (k, (seed, id)) in SEQ_KEYS.iter().enumerate() {
                let got = book.get(&key(*seed, id)).map(|e| e.signed.offer().seq);
                match highest.get(&k) {
                    None => prop_assert_eq!(got, None),
                    Some(&(seq, expires)) if expires > now => prop_assert_eq!(got, Some(seq)),
                    Some(&(seq, _)) => {
                        prop_assert!(got.is_none() || got == Some(seq), "key {k} holds {got:?}, highest {seq}")
                    }
                }
            }
            let live: Vec<OfferKey> = keys(book.live(now));
            let want_live: Vec<OfferKey> = held
                .iter()
                .filter(|(_, (seq, withdrawal))| !withdrawal && seq_expires(*seq) > now)
                .map(|(k, _)| key(SEQ_KEYS[*k].0, SEQ_KEYS[*k].1))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            prop_assert_eq!(live, want_live);
        }
    }
}

// ---------------------------------------------------------------------------
// Matching: one test per Mismatch
// ---------------------------------------------------------------------------

/// A book with a fixture offer `good` (attested `iso:27001`) that `constraints`
/// accepts and an offer `bad` that differs from it by `bad`: `constraints`
/// must exclude `bad` with `expected`, `query` return only `good` and
/// `explain` count `bad` once under `expected`.
fn assert_excluded(
    constraints: &Constraints,
    at: u64,
    good: impl FnOnce(&mut Offer),
    bad: impl FnOnce(&mut Offer),
    bad_attested: &[&str],
    expected: Mismatch,
) {
    let mut book = OfferBook::new(&Limits::default());
    let good = offer_with(1, "good", good);
    let bad = offer_with(2, "bad", bad);
    book.insert(good.clone(), labels(&["iso:27001"]), NOW).unwrap();
    book.insert(bad.clone(), labels(bad_attested), NOW).unwrap();

    let bad_entry = book.get(&bad.offer().key()).unwrap();
    assert_eq!(constraints.check(bad_entry, at), Err(expected.clone()));
    assert_eq!(keys(book.query(constraints, at)), vec![good.offer().key()]);
    assert_eq!(book.explain(constraints, at), BTreeMap::from([(expected.clone(), 1)]));
    if !matches!(expected, Mismatch::Withdrawn | Mismatch::Expired) {
        assert_eq!(
            Constraints::default().check(bad_entry, at),
            Ok(()),
            "without the constraint under test the offer would match"
        );
    }
}

#[test]
fn mismatch_withdrawn() {
    assert_excluded(&Constraints::default(), NOW, |_| {}, |o| o.units_available = 0, &[], Mismatch::Withdrawn);
}

#[test]
fn mismatch_expired() {
    assert_excluded(
        &Constraints::default(),
        NOW + MINUTE_MS,
        |_| {},
        |o| o.expires_at_ms = NOW + MINUTE_MS,
        &[],
        Mismatch::Expired,
    );
}

#[test]
fn mismatch_resources() {
    let gpus = |n: u32| BTreeMap::from([("nvidia-h100".to_owned(), n)]);
    let needs = |f: fn(&mut Constraints)| {
        let mut c = Constraints::default();
        f(&mut c);
        c
    };
    let c = needs(|c| c.min_per_unit.vcpu = 8);
    assert_excluded(&c, NOW, |_| {}, |o| o.flavour.per_unit.vcpu = 7, &[], Mismatch::Resources);
    let c = needs(|c| c.min_per_unit.memory_mib = 32_768);
    assert_excluded(&c, NOW, |_| {}, |o| o.flavour.per_unit.memory_mib = 16_384, &[], Mismatch::Resources);
    let c = needs(|c| c.min_per_unit.storage_gib = 200);
    assert_excluded(&c, NOW, |_| {}, |o| o.flavour.per_unit.storage_gib = 199, &[], Mismatch::Resources);
    let c = needs(|c| c.min_per_unit.gpus = BTreeMap::from([("nvidia-h100".to_owned(), 2)]));
    assert_excluded(
        &c,
        NOW,
        |o| o.flavour.per_unit.gpus = gpus(2),
        |o| o.flavour.per_unit.gpus = gpus(1),
        &[],
        Mismatch::Resources,
    );
    assert_excluded(
        &c,
        NOW,
        |o| o.flavour.per_unit.gpus = gpus(4),
        |o| o.flavour.per_unit.gpus = BTreeMap::from([("amd-mi300x".to_owned(), 8)]),
        &[],
        Mismatch::Resources,
    );
}

#[test]
fn mismatch_country() {
    let c = Constraints { countries: [Country::parse("DE").unwrap()].into(), ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.site.country = Country::parse("FR").unwrap(), &[], Mismatch::Country);
}

#[test]
fn mismatch_label() {
    let c = Constraints { labels: labels(&["iso:27001"]), ..Constraints::default() };
    // Attested but not claimed in the offer is still missing.
    assert_excluded(
        &c,
        NOW,
        |_| {},
        |o| o.labels = vec!["iso:9001".into()],
        &["iso:27001"],
        Mismatch::Label("iso:27001".into()),
    );
}

#[test]
fn mismatch_label_not_attested() {
    let c = Constraints { labels: labels(&["iso:27001"]), attested_labels: true, ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |_| {}, &[], Mismatch::LabelNotAttested("iso:27001".into()));
}

#[test]
fn mismatch_currency() {
    let c = Constraints { max_unit_price: Some(Price::eur(300_000)), ..Constraints::default() };
    // Numerically cheaper, but in another currency.
    assert_excluded(
        &c,
        NOW,
        |_| {},
        |o| o.unit_price_per_hour = Price { currency: usd(), micros: 100_000 },
        &[],
        Mismatch::Currency,
    );
}

#[test]
fn mismatch_price() {
    // The good offer costs exactly the maximum.
    let c = Constraints { max_unit_price: Some(Price::eur(250_000)), ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.unit_price_per_hour = Price::eur(250_001), &[], Mismatch::Price);
}

#[test]
fn mismatch_sla() {
    let c = Constraints { min_sla_permille: 999, ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.sla_permille = 998, &[], Mismatch::Sla);
}

#[test]
fn mismatch_duration() {
    // Above the bad offer's maximum (the good offer's maximum is exactly 720 h).
    let c = Constraints { duration_ms: Some(720 * HOUR_MS), ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.max_duration_ms = 24 * HOUR_MS, &[], Mismatch::Duration);
    // Below the bad offer's minimum (the good offer's minimum is exactly 1 h).
    let c = Constraints { duration_ms: Some(HOUR_MS), ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.min_duration_ms = 2 * HOUR_MS, &[], Mismatch::Duration);
}

#[test]
fn mismatch_units() {
    let c = Constraints { min_units: 10, ..Constraints::default() };
    assert_excluded(&c, NOW, |_| {}, |o| o.units_available = 9, &[], Mismatch::Units);
}

#[test]
fn attested_and_self_declared_labels() {
    let signed = offer_with(1, "a", |o| o.labels = vec!["iso:27001".into(), "gaia-x:level-2".into()]);
    // The certificate vouches for iso:27001 only; gaia-x:level-2 is self-declared.
    let e = entry(signed, &["iso:27001"]);

    let want = |ls: &[&str], attested: bool| Constraints {
        labels: labels(ls),
        attested_labels: attested,
        ..Default::default()
    };
    assert_eq!(want(&["gaia-x:level-2"], false).check(&e, NOW), Ok(()));
    assert_eq!(
        want(&["gaia-x:level-2"], true).check(&e, NOW),
        Err(Mismatch::LabelNotAttested("gaia-x:level-2".into()))
    );
    assert_eq!(want(&["iso:27001"], true).check(&e, NOW), Ok(()));
    assert_eq!(
        want(&["iso:27001", "gaia-x:level-2"], true).check(&e, NOW),
        Err(Mismatch::LabelNotAttested("gaia-x:level-2".into()))
    );
    assert_eq!(want(&["iso:27001", "gaia-x:level-2"], false).check(&e, NOW), Ok(()));
    assert_eq!(want(&["iso:9001"], false).check(&e, NOW), Err(Mismatch::Label("iso:9001".into())));
}

// ---------------------------------------------------------------------------
// Ranking
// ---------------------------------------------------------------------------

#[test]
fn ranking_cheaper_then_higher_sla_then_fresher() {
    let spec = |id: &'static str, micros: u64, sla: u32, issued: u64| {
        offer_with(1, id, move |o| {
            o.unit_price_per_hour = Price::eur(micros);
            o.sla_permille = sla;
            o.issued_at_ms = issued;
        })
    };
    let offers = vec![
        spec("dear-best-sla", 300_000, 1000, NOW),
        spec("mid-low-sla", 200_000, 990, NOW),
        spec("mid-old", 200_000, 999, NOW - 10 * MINUTE_MS),
        spec("cheap-low-sla", 100_000, 900, NOW - 20 * MINUTE_MS),
        spec("mid-fresh", 200_000, 999, NOW),
    ];
    let want: Vec<OfferKey> =
        ["cheap-low-sla", "mid-fresh", "mid-old", "mid-low-sla", "dear-best-sla"].map(|id| key(1, id)).to_vec();

    for reversed in [false, true] {
        let mut book = OfferBook::new(&Limits::default());
        let mut order = offers.clone();
        if reversed {
            order.reverse();
        }
        for s in order {
            book.insert(s, BTreeSet::new(), NOW).unwrap();
        }
        assert_eq!(keys(book.query(&Constraints::default(), NOW)), want);
    }
}

#[test]
fn ranking_ties_break_by_provider_then_offer_id() {
    let mut entries: Vec<BookEntry> = [(3, "b"), (4, "a"), (3, "a"), (4, "b"), (5, "a")]
        .into_iter()
        .map(|(seed, id)| entry(version(seed, id, 1, 10), &[]))
        .collect();
    let mut want: Vec<OfferKey> = entries.iter().map(|e| e.signed.offer().key()).collect();
    want.sort_by(|a, b| a.provider.to_bytes().cmp(&b.provider.to_bytes()).then_with(|| a.offer_id.cmp(&b.offer_id)));

    entries.sort_by(matching::rank);
    assert_eq!(keys(&entries), want);
    for a in &entries {
        for b in &entries {
            let same = a.signed.offer().key() == b.signed.offer().key();
            assert_eq!(matching::rank(a, b) == Ordering::Equal, same);
        }
    }
}

#[derive(Debug, Clone)]
struct OfferSpec {
    provider: u8,
    micros: u64,
    usd: bool,
    sla: u32,
    issued_back_min: u64,
    ttl_min: u64,
    country: usize,
    units: u32,
    vcpu: u32,
    label_mask: u8,
    attested_mask: u8,
    min_h: u64,
    max_h: u64,
}

const COUNTRIES: [&str; 3] = ["DE", "FR", "NL"];
const LABELS: [&str; 3] = ["iso:27001", "gaia-x:level-2", "soc2"];

fn pick(mask: u8) -> Vec<&'static str> {
    LABELS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, l)| *l).collect()
}

fn offer_spec() -> impl Strategy<Value = OfferSpec> {
    (
        (1u8..=4, prop::sample::select(vec![100_000u64, 200_000, 300_000]), prop::bool::weighted(0.2)),
        (prop::sample::select(vec![990u32, 999, 1000]), 0u64..3, 1u64..60),
        (0..COUNTRIES.len(), 0u32..4, prop::sample::select(vec![4u32, 8, 16])),
        (0u8..8, 0u8..8, 1u64..4, 4u64..48),
    )
        .prop_map(
            |(
                (provider, micros, usd),
                (sla, issued_back_min, ttl_min),
                (country, units, vcpu),
                (label_mask, attested_mask, min_h, max_h),
            )| OfferSpec {
                provider,
                micros,
                usd,
                sla,
                issued_back_min,
                ttl_min,
                country,
                units,
                vcpu,
                label_mask,
                attested_mask,
                min_h,
                max_h,
            },
        )
}

fn constraints_strategy() -> impl Strategy<Value = Constraints> {
    (
        prop::sample::select(vec![0u32, 4, 8, 16]),
        0u8..8,
        0u8..8,
        any::<bool>(),
        prop::option::of((prop::bool::weighted(0.2), prop::sample::select(vec![100_000u64, 200_000, 300_000]))),
        prop::sample::select(vec![0u32, 990, 999, 1000]),
        prop::option::of(1u64..48),
        0u32..4,
    )
        .prop_map(|(vcpu, country_mask, label_mask, attested_labels, price, sla, duration_h, min_units)| {
            let mut c = Constraints::default();
            c.min_per_unit.vcpu = vcpu;
            c.countries = COUNTRIES
                .iter()
                .enumerate()
                .filter(|(i, _)| country_mask & (1 << i) != 0)
                .map(|(_, cc)| Country::parse(cc).unwrap())
                .collect();
            c.labels = labels(&pick(label_mask));
            c.attested_labels = attested_labels;
            c.max_unit_price =
                price.map(|(usd_, micros)| Price { currency: if usd_ { usd() } else { Currency::EUR }, micros });
            c.min_sla_permille = sla;
            c.duration_ms = duration_h.map(|h| h * HOUR_MS);
            c.min_units = min_units;
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `query` returns exactly the entries `check` accepts, best first, and
    /// `rank` is a strict total order consistent with price, SLA and freshness.
    #[test]
    fn query_is_the_ranked_set_of_matches(
        specs in prop::collection::vec(offer_spec(), 0..24),
        constraints in constraints_strategy(),
        later_min in 0u64..40,
    ) {
        let mut book = OfferBook::new(&Limits::default());
        for (i, s) in specs.iter().enumerate() {
            let signed = offer_with(s.provider, &format!("o{i}"), |o| {
                o.unit_price_per_hour = Price { currency: if s.usd { usd() } else { Currency::EUR }, micros: s.micros };
                o.sla_permille = s.sla;
                o.issued_at_ms = NOW - s.issued_back_min * MINUTE_MS;
                o.expires_at_ms = NOW + s.ttl_min * MINUTE_MS;
                o.site.country = Country::parse(COUNTRIES[s.country]).unwrap();
                o.units_available = s.units;
                o.flavour.per_unit.vcpu = s.vcpu;
                o.labels = pick(s.label_mask).into_iter().map(String::from).collect();
                o.min_duration_ms = s.min_h * HOUR_MS;
                o.max_duration_ms = s.max_h * HOUR_MS;
            });
            let attested = pick(s.attested_mask);
            prop_assert!(book.insert(signed, labels(&attested), NOW).is_ok());
        }
        let at = NOW + later_min * MINUTE_MS;

        let found = book.query(&constraints, at);
        let mut want: Vec<OfferKey> =
            book.iter().filter(|e| constraints.check(e, at).is_ok()).map(|e| e.signed.offer().key()).collect();
        let mut got = keys(found.iter().copied());
        got.sort();
        want.sort();
        prop_assert_eq!(got, want, "query must return exactly what check accepts");
        for pair in found.windows(2) {
            prop_assert_eq!(matching::rank(pair[0], pair[1]), Ordering::Less);
        }
        let excluded: usize = book.explain(&constraints, at).values().sum();
        prop_assert_eq!(excluded + found.len(), book.len());

        // An oracle for rank over every pair, independent of its implementation.
        let all: Vec<&BookEntry> = book.iter().collect();
        for a in &all {
            for b in &all {
                let (oa, ob) = (a.signed.offer(), b.signed.offer());
                let r = matching::rank(a, b);
                prop_assert_eq!(r, matching::rank(b, a).reverse());
                prop_assert_eq!(r == Ordering::Equal, oa.key() == ob.key());
                let pa = oa.unit_price_per_hour.micros;
                let pb = ob.unit_price_per_hour.micros;
                if pa != pb {
                    prop_assert_eq!(r, pa.cmp(&pb), "cheaper first");
                } else if oa.sla_permille != ob.sla_permille {
                    prop_assert_eq!(r, ob.sla_permille.cmp(&oa.sla_permille), "then higher SLA");
                } else if oa.issued_at_ms != ob.issued_at_ms {
                    prop_assert_eq!(r, ob.issued_at_ms.cmp(&oa.issued_at_ms), "then fresher");
                }
            }
        }
    }
}
