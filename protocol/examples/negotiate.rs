//! Two parties negotiate a contract in memory with the real protocol core:
//! a provider publishes a signed offer, a consumer finds it in its offer book,
//! they exchange signed, encoded messages until the contract is countersigned,
//! and each side appends it to its agreement log and signs a checkpoint.
//!
//! `cargo run -p fulcrum-protocol --example negotiate`

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;

use fulcrum_protocol::Limits;
use fulcrum_protocol::book::OfferBook;
use fulcrum_protocol::checkpoint::Checkpoint;
use fulcrum_protocol::envelope::Envelope;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::matching::Constraints;
use fulcrum_protocol::merkle::MerkleTree;
use fulcrum_protocol::negotiation::{Consumer, Event, PlaceTerms, Provider, Step};
use fulcrum_protocol::offer::{Country, Flavour, Offer, Price, Resources, SignedOffer, Site};
use fulcrum_protocol::record::Record;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const FEDERATION: &str = "eu-sovereign";
const HOUR_MS: u64 = 3_600_000;

struct Party {
    name: &'static str,
    log: MerkleTree,
    records: usize,
}

impl Party {
    fn persist(&mut self, step: &Step) -> Result<(), Box<dyn Error>> {
        for record in &step.persist {
            self.log.push(&record.to_cbor()?);
            self.records += 1;
            let what = match record {
                Record::Offer { .. } => "offer",
                Record::Contract { .. } => "contract (both signatures)",
                Record::Pending { .. } => "pending contract (consumer signature)",
                Record::Abandoned { .. } => "abandoned",
                Record::Termination { .. } => "termination",
                Record::Evidence { .. } => "evidence",
                Record::Revocation { .. } => "revocation",
                Record::Placement { .. } => "placement",
                Record::Expiry { .. } => "expiry",
                Record::Rotation { .. } => "key rotation",
                Record::Succession { .. } => "another party's key rotation",
            };
            println!("  {:<9} log #{:<2} {what}", self.name, self.records - 1);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let limits = Limits::default();
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let now = 1_790_000_000_000u64;
    let provider_id = Identity::generate(&mut rng);
    let consumer_id = Identity::generate(&mut rng);
    println!("provider  {}", provider_id.public());
    println!("consumer  {}\n", consumer_id.public());

    let mut provider = Provider::new(provider_id, FEDERATION, limits.clone());
    let mut consumer = Consumer::new(consumer_id, FEDERATION, limits.clone());
    let mut p = Party { name: "provider", log: MerkleTree::new(), records: 0 };
    let mut c = Party { name: "consumer", log: MerkleTree::new(), records: 0 };

    // 1. The provider publishes an offer: durable in its log, then gossiped.
    let terms = Offer {
        provider: provider.public(),
        federation: String::new(),
        offer_id: "fra1-c16m64".into(),
        seq: 0,
        issued_at_ms: 0,
        expires_at_ms: 0,
        site: Site {
            country: Country::parse("DE").ok_or("country")?,
            region: "hesse".into(),
            datacenter: "fra1".into(),
        },
        flavour: Flavour {
            name: "c16m64".into(),
            per_unit: Resources { vcpu: 16, memory_mib: 65_536, storage_gib: 400, gpus: BTreeMap::new() },
        },
        units_available: 12,
        unit_price_per_hour: Price::eur(420_000),
        min_duration_ms: HOUR_MS,
        max_duration_ms: 8_760 * HOUR_MS,
        labels: vec!["iso:27001".into(), "jurisdiction:eu-only".into()],
        sla_permille: 999,
    };
    println!("1. provider publishes an offer");
    let (signed, step) = provider.publish(terms, now, HOUR_MS)?;
    p.persist(&step)?;
    let gossip = signed.envelope().encode();
    println!("  gossip    {} bytes, kind offer\n", gossip.len());

    // 2. The consumer validates the gossiped bytes and matches its request.
    println!("2. consumer validates it and matches a request (3 units, >= 8 vCPU, in DE/FR, iso:27001)");
    let received = SignedOffer::verify(&gossip, FEDERATION, now + 40, &limits)?;
    let mut book = OfferBook::new(&limits);
    book.insert(received, BTreeSet::new(), now + 40)?;
    let wanted = Constraints {
        min_per_unit: Resources { vcpu: 8, memory_mib: 32_768, ..Resources::default() },
        countries: ["DE", "FR"].iter().filter_map(|c| Country::parse(c)).collect(),
        labels: ["iso:27001".to_owned()].into_iter().collect(),
        max_unit_price: Some(Price::eur(500_000)),
        duration_ms: Some(720 * HOUR_MS),
        min_units: 3,
        ..Constraints::default()
    };
    let best = book.query(&wanted, now + 50).first().map(|e| e.signed.offer().clone()).ok_or("no match")?;
    println!("  best      {} at {} per unit-hour\n", best.key(), best.unit_price_per_hour);

    // 3. Negotiation: every message sealed, encoded, decoded and verified.
    println!("3. negotiation");
    let place = PlaceTerms {
        units: 3,
        min_units: 3,
        max_unit_price: Price::eur(500_000),
        start_ms: now + 60_000,
        duration_ms: 720 * HOUR_MS,
        deadline_ms: now + 10_000,
    };
    let (_, mut step) = consumer.start(now + 50, &mut rng, &best, place)?;
    let mut to_provider = true;
    let mut t = now + 50;
    let mut contract = None;
    loop {
        let sender = if to_provider { &mut c } else { &mut p };
        sender.persist(&step)?;
        for e in &step.events {
            if let Event::Placed { contract_id, .. } = e {
                contract = consumer.contract(contract_id).cloned();
            }
        }
        let Some(out) = step.send.pop() else { break };
        let from = if to_provider { consumer.identity() } else { provider.identity() };
        let bytes = out.message.seal(from).encode();
        println!(
            "  {} -> {}  {:<14} {} bytes",
            if to_provider { "consumer" } else { "provider" },
            if to_provider { "provider" } else { "consumer" },
            out.message.kind().as_str(),
            bytes.len()
        );
        let envelope = Envelope::decode(&bytes, limits.max_envelope_bytes)?;
        t += 2;
        step =
            if to_provider { provider.handle(t, &mut rng, &envelope) } else { consumer.handle(t, &mut rng, &envelope) };
        to_provider = !to_provider;
    }
    let contract = contract.ok_or("negotiation did not produce a contract")?;
    let terms = contract.terms();
    println!("\n4. contract {}", contract.id());
    println!(
        "  units     {} x {} ({} vCPU, {} MiB each)",
        terms.units, terms.flavour.name, terms.flavour.per_unit.vcpu, terms.flavour.per_unit.memory_mib
    );
    println!("  site      {} / {} / {}", terms.site.country, terms.site.region, terms.site.datacenter);
    println!("  price     {} per unit-hour", terms.unit_price_per_hour);
    println!("  period    {} .. {} (Unix ms)", terms.start_ms, terms.end_ms);
    println!("  consumer signature {}", hex(contract.consumer_signature()));
    println!("  provider signature {}", hex(contract.provider_signature().ok_or("not countersigned")?));
    let usage = provider.usage(&best.offer_id).ok_or("no usage")?;
    println!("  provider capacity: {} units, {} committed, {} free\n", usage.capacity, usage.committed, usage.free());

    // 5. Each side signs a checkpoint of its log (C2SP tlog-checkpoint).
    println!("5. checkpoints");
    for (party, identity) in [(&p, provider.identity()), (&c, consumer.identity())] {
        let origin = format!("fulcrum/{FEDERATION}/{}", identity.public());
        let note =
            Checkpoint { origin: origin.clone(), size: party.log.len(), root: party.log.root(), extensions: vec![] }
                .sign(&origin, identity.signing_key())?;
        note.verify(&origin, &identity.public().verifying_key())?;
        println!("--- {} ---\n{}", party.name, note.to_note());
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
