//! Protocol benchmarks: `cargo bench -p fulcrum-protocol`. Figures are kept in
//! BENCHMARKS.md with the machine and date they were measured on.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::hint::black_box;

use common::{FEDERATION, HOUR_MS, T0, identity, offer_terms};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::OfferBook;
use fulcrum_protocol::envelope::{Envelope, Kind, signing_input};
use fulcrum_protocol::keys::{Identity, verify_batch};
use fulcrum_protocol::matching::Constraints;
use fulcrum_protocol::merkle::MerkleTree;
use fulcrum_protocol::negotiation::{Consumer, PlaceTerms, Provider, Step};
use fulcrum_protocol::offer::{Country, Price, Resources, SignedOffer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn signatures(c: &mut Criterion) {
    let id = identity(1);
    let body = vec![0x5a; 300];
    let env = Envelope::seal(&id, Kind::Offer, body.clone());
    let bytes = env.encode();
    c.bench_function("sign (300-byte body)", |b| b.iter(|| Envelope::seal(&id, Kind::Offer, black_box(body.clone()))));
    c.bench_function("verify (decode + verify_strict)", |b| {
        b.iter(|| Envelope::decode(black_box(&bytes), usize::MAX).unwrap())
    });
    let signers: Vec<Identity> = (0..64).map(|i| identity(i as u8 + 1)).collect();
    let envs: Vec<Envelope> = signers.iter().map(|s| Envelope::seal(s, Kind::Offer, body.clone())).collect();
    let inputs: Vec<Vec<u8>> = envs.iter().map(|e| signing_input(e.kind(), e.body())).collect();
    let msgs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let sigs: Vec<[u8; 64]> = envs.iter().map(|e| *e.signature()).collect();
    let keys: Vec<_> = envs.iter().map(Envelope::signer).collect();
    let mut g = c.benchmark_group("batch verify");
    g.throughput(Throughput::Elements(64));
    g.bench_function("64 signatures", |b| b.iter(|| assert!(verify_batch(&msgs, &sigs, &keys))));
    g.finish();
}

fn offers(c: &mut Criterion) {
    let limits = Limits::default();
    let id = identity(1);
    let mut o = offer_terms("fra1-c8m32", "DE", 10, 1_000_000);
    o.provider = id.public();
    o.federation = FEDERATION.into();
    o.seq = 1;
    o.issued_at_ms = T0;
    o.expires_at_ms = T0 + HOUR_MS;
    let bytes = o.sign(&id).envelope().encode();
    c.bench_function("offer validation (full verify)", |b| {
        b.iter(|| SignedOffer::verify(black_box(&bytes), FEDERATION, T0, &limits).unwrap())
    });

    // 100,000 offers from 400 providers in 10 countries.
    let countries = ["DE", "FR", "NL", "IT", "ES", "PL", "SE", "FI", "AT", "BE"];
    let mut book = OfferBook::new(&limits);
    for p in 0..400u32 {
        let provider = Identity::from_secret_bytes(&{
            let mut s = [7u8; 32];
            s[..4].copy_from_slice(&p.to_le_bytes());
            s
        });
        for i in 0..250u32 {
            let mut o = offer_terms(&format!("o{i}"), countries[(p as usize + i as usize) % 10], 16, 0);
            o.provider = provider.public();
            o.federation = FEDERATION.into();
            o.seq = 1;
            o.issued_at_ms = T0;
            o.expires_at_ms = T0 + HOUR_MS;
            o.unit_price_per_hour = Price::eur(500_000 + u64::from((p * 7919 + i * 104_729) % 1_000_000));
            o.flavour.per_unit.vcpu = 2 << (i % 5);
            book.insert(o.sign(&provider), BTreeSet::new(), T0).unwrap();
        }
    }
    assert_eq!(book.len(), 100_000);
    let constraints = Constraints {
        min_per_unit: Resources { vcpu: 8, memory_mib: 16_384, ..Resources::default() },
        countries: ["DE", "FR"].iter().map(|c| Country::parse(c).unwrap()).collect(),
        labels: ["iso:27001".to_owned()].into_iter().collect(),
        max_unit_price: Some(Price::eur(1_200_000)),
        min_units: 4,
        ..Constraints::default()
    };
    let found = book.query(&constraints, T0 + 1).len();
    assert!(found > 1000, "query should match a realistic share, got {found}");
    c.bench_function("offer-book query (100,000 offers)", |b| {
        b.iter(|| book.query(black_box(&constraints), T0 + 1).len())
    });
}

fn merkle(c: &mut Criterion) {
    let mut tree = MerkleTree::new();
    for i in 0..1_000_000u64 {
        tree.push(&i.to_le_bytes());
    }
    let n = tree.len();
    let mut growing = tree.clone();
    c.bench_function("merkle append (tree of 1,000,000)", |b| b.iter(|| growing.push(black_box(b"one more record"))));
    c.bench_function("merkle root (1,000,000 leaves)", |b| b.iter(|| tree.root()));
    c.bench_function("merkle inclusion proof (1,000,000 leaves)", |b| {
        b.iter(|| tree.inclusion_proof(black_box(123_457), n).unwrap())
    });
    c.bench_function("merkle consistency proof (500,001 -> 1,000,000)", |b| {
        b.iter(|| tree.consistency_proof(black_box(500_001), n).unwrap())
    });
}

/// One full negotiation, both roles in memory, every message sealed, encoded,
/// decoded and verified as it would be on the wire.
fn negotiation(c: &mut Criterion) {
    let limits = Limits::default();
    let mut provider = Provider::new(identity(1), FEDERATION, limits.clone());
    let (signed, _) =
        provider.publish(offer_terms("fra1-c8m32", "DE", limits.max_units, 1_000_000), T0, HOUR_MS).unwrap();
    let offer = signed.offer().clone();
    let mut consumer = Consumer::new(identity(2), FEDERATION, limits.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    c.bench_function("full negotiation (propose, hold, commit, countersign)", |b| {
        b.iter(|| {
            let terms = PlaceTerms {
                units: 1,
                min_units: 1,
                max_unit_price: Price::eur(1_000_000),
                start_ms: T0,
                duration_ms: HOUR_MS,
                deadline_ms: T0 + 10_000,
            };
            let (_, mut step) = consumer.start(T0, &mut rng, &offer, terms).unwrap();
            let mut to_provider = true;
            let mut placed = false;
            while let Some(out) = step.send.pop() {
                let sender = if to_provider { consumer.identity() } else { provider.identity() };
                let bytes = out.message.seal(sender).encode();
                let env = Envelope::decode(&bytes, limits.max_envelope_bytes).unwrap();
                let next: Step =
                    if to_provider { provider.handle(T0, &mut rng, &env) } else { consumer.handle(T0, &mut rng, &env) };
                placed |= next.events.iter().any(|e| matches!(e, fulcrum_protocol::negotiation::Event::Placed { .. }));
                step = next;
                to_provider = !to_provider;
            }
            assert!(placed);
        })
    });
}

criterion_group!(benches, signatures, offers, merkle, negotiation);
criterion_main!(benches);
