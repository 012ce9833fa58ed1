//! Composite placement, all or nothing, under a hostile network: several
//! consumers, each running a [`Coordinator`] over its consumer engine, race
//! for the units of a few providers while messages are duplicated, reordered
//! and dropped, clocks jump, and providers and consumers crash and restart
//! from their logs. Messages cross the "network" as real signed envelopes.
//!
//! After every step: no provider oversells. At the end, once the network is
//! reliable again and every deadline has passed: no hold is left, every
//! contract active at a provider belongs to a placement its consumer
//! recorded as complete, every complete placement has all its contracts
//! active on both sides and meets its spread and label constraints, and
//! every placement that did not complete has none active anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use common::{FEDERATION, HOUR_MS, T0, identity, offer_terms};
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::OfferBook;
use fulcrum_protocol::contract::SignedContract;
use fulcrum_protocol::envelope::Envelope;
use fulcrum_protocol::ids::{ContractId, PlacementId};
use fulcrum_protocol::keys::PublicKey;
use fulcrum_protocol::matching::Spread;
use fulcrum_protocol::messages::TerminationReason;
use fulcrum_protocol::negotiation::{Consumer, Provider, Step};
use fulcrum_protocol::offer::{Country, Price, Resources};
use fulcrum_protocol::placement::{COMMIT_GRACE_FACTOR, Coordinator, PlacementRecord, PlacementState, PlacementTerms};
use fulcrum_protocol::record::Record;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const OFFER: &str = "c8m32";
const COUNTRIES: [&str; 4] = ["DE", "FR", "DE", "NL"];
const GAIA: &str = "gaia-x:level-2";
const DEADLINE_MS: u64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Provider(usize),
    Consumer(usize),
}

#[derive(Debug, Clone)]
struct Packet {
    from: Who,
    to: Who,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Place { consumer: usize, units: u32, spread: Spread, gaia: Option<bool>, cheap: bool },
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Advance(u64),
    ClockBack(u64),
    CrashProvider(usize),
    CrashConsumer(usize),
}

fn spread() -> impl Strategy<Value = Spread> {
    prop_oneof![Just(Spread::None), Just(Spread::Providers), Just(Spread::Countries)]
}

fn op(consumers: usize, providers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..consumers, 1u32..=3, spread(), proptest::option::of(any::<bool>()), any::<bool>())
            .prop_map(|(consumer, units, spread, gaia, cheap)| Op::Place { consumer, units, spread, gaia, cheap }),
        14 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Duplicate),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => (0u64..8_000).prop_map(Op::Advance),
        1 => (0u64..5_000).prop_map(Op::ClockBack),
        1 => (0..providers).prop_map(Op::CrashProvider),
        1 => (0..consumers).prop_map(Op::CrashConsumer),
    ]
}

struct World {
    now: u64,
    rng: ChaCha8Rng,
    limits: Limits,
    capacity: Vec<u32>,
    providers: Vec<Provider>,
    provider_logs: Vec<Vec<Vec<u8>>>,
    consumers: Vec<Consumer>,
    coordinators: Vec<Coordinator>,
    books: Vec<OfferBook>,
    consumer_logs: Vec<Vec<Vec<u8>>>,
    keys: HashMap<PublicKey, Who>,
    net: Vec<Packet>,
    /// Final records reported by the coordinators.
    finished: Vec<PlacementRecord>,
    /// Every placement started, by consumer.
    started: Vec<(usize, PlacementId)>,
    /// How long a placement may take.
    deadline_ms: u64,
}

fn decode_log(log: &[Vec<u8>]) -> Vec<Record> {
    log.iter().map(|b| Record::from_cbor(b).expect("log records stay readable")).collect()
}

fn provider_seed(i: usize) -> u8 {
    1 + i as u8
}

fn consumer_seed(k: usize) -> u8 {
    40 + k as u8
}

impl World {
    fn new(seed: u64, consumers: usize, capacity: Vec<u32>) -> World {
        let limits = Limits { hold_ttl_ms: 20_000, reply_timeout_ms: 3_000, ..Limits::default() };
        World::with_limits(seed, consumers, capacity, limits)
    }

    fn with_limits(seed: u64, consumers: usize, capacity: Vec<u32>, limits: Limits) -> World {
        let mut keys = HashMap::new();
        let mut providers = Vec::new();
        let mut signed = Vec::new();
        let mut provider_logs = Vec::new();
        for (i, units) in capacity.iter().enumerate() {
            let mut p = Provider::new(identity(provider_seed(i)), FEDERATION, limits.clone());
            let mut terms = offer_terms(OFFER, COUNTRIES[i % COUNTRIES.len()], *units, 1_000_000 + 100_000 * i as u64);
            if i % 2 == 0 {
                terms.labels.push(GAIA.into());
            }
            let (s, step) = p.publish(terms, T0, 24 * HOUR_MS).unwrap();
            provider_logs.push(step.persist.iter().map(|r| r.to_cbor().unwrap()).collect());
            keys.insert(p.public(), Who::Provider(i));
            signed.push(s);
            providers.push(p);
        }
        let mut books = Vec::new();
        let mut consumer_engines = Vec::new();
        let mut coordinators = Vec::new();
        for k in 0..consumers {
            let c = Consumer::new(identity(consumer_seed(k)), FEDERATION, limits.clone());
            keys.insert(c.public(), Who::Consumer(k));
            consumer_engines.push(c);
            coordinators.push(Coordinator::new(limits.clone()));
            let mut book = OfferBook::new(&limits);
            for (i, s) in signed.iter().enumerate() {
                // Provider 0's certificate vouches for its gaia-x label.
                let attested = if i == 0 { BTreeSet::from([GAIA.to_owned()]) } else { BTreeSet::new() };
                book.insert(s.clone(), attested, T0).unwrap();
            }
            books.push(book);
        }
        World {
            now: T0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            limits,
            capacity,
            providers,
            provider_logs,
            consumer_logs: vec![Vec::new(); consumers],
            consumers: consumer_engines,
            coordinators,
            books,
            keys,
            net: Vec::new(),
            finished: Vec::new(),
            started: Vec::new(),
            deadline_ms: DEADLINE_MS,
        }
    }

    /// Performs a step as the node shell must: persist, then send, then
    /// report (a consumer's events go to its coordinator, whose effects are
    /// performed the same way).
    fn apply(&mut self, who: Who, step: Step) {
        let log = match who {
            Who::Provider(i) => &mut self.provider_logs[i],
            Who::Consumer(k) => &mut self.consumer_logs[k],
        };
        for record in &step.persist {
            log.push(record.to_cbor().unwrap());
        }
        for out in step.send {
            let identity = match who {
                Who::Provider(i) => self.providers[i].identity(),
                Who::Consumer(k) => self.consumers[k].identity(),
            };
            let bytes = out.message.seal(identity).encode();
            let to = self.keys[&out.to];
            self.net.push(Packet { from: who, to, bytes });
        }
        if let Who::Consumer(k) = who {
            for event in step.events {
                let out = self.coordinators[k].on_event(
                    self.now,
                    &mut self.rng,
                    &mut self.consumers[k],
                    &self.books[k],
                    &event,
                );
                self.finished.extend(out.finished);
                self.apply(who, out.step);
            }
        }
    }

    fn deliver(&mut self, i: usize) {
        if self.net.is_empty() {
            return;
        }
        let p = self.net.remove(i % self.net.len());
        let envelope = Envelope::decode(&p.bytes, self.limits.max_envelope_bytes).expect("honest parties");
        let step = match p.to {
            Who::Provider(i) => self.providers[i].handle(self.now, &mut self.rng, &envelope),
            Who::Consumer(k) => self.consumers[k].handle(self.now, &mut self.rng, &envelope),
        };
        self.apply(p.to, step);
    }

    fn tick(&mut self) {
        for i in 0..self.providers.len() {
            let step = self.providers[i].tick(self.now);
            self.apply(Who::Provider(i), step);
        }
        for k in 0..self.consumers.len() {
            let step = self.consumers[k].tick(self.now, &mut self.rng);
            self.apply(Who::Consumer(k), step);
            let out = self.coordinators[k].tick(self.now, &mut self.rng, &mut self.consumers[k], &self.books[k]);
            self.finished.extend(out.finished);
            self.apply(Who::Consumer(k), out.step);
        }
    }

    /// Starts a placement at consumer `k`; None when nothing fits at all.
    fn start(&mut self, k: usize, terms: PlacementTerms) -> Option<PlacementId> {
        let deadline = self.now + self.deadline_ms;
        let (id, out) = self.coordinators[k]
            .start(self.now, &mut self.rng, &mut self.consumers[k], &self.books[k], terms, deadline)
            .ok()?;
        self.started.push((k, id));
        self.finished.extend(out.finished);
        self.apply(Who::Consumer(k), out.step);
        Some(id)
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Place { consumer, units, spread, gaia, cheap } => {
                let terms = PlacementTerms {
                    labels: gaia.map(|_| GAIA.to_owned()).into_iter().collect(),
                    attested_labels: gaia == Some(true),
                    // The two most expensive providers are out when cheap.
                    max_unit_price: cheap.then(|| Price::eur(1_150_000)),
                    ..terms(self.now, units, spread)
                };
                self.start(consumer, terms);
            }
            Op::Deliver(i) => self.deliver(i),
            Op::Duplicate(i) => {
                if !self.net.is_empty() {
                    let p = self.net[i % self.net.len()].clone();
                    self.net.push(p);
                }
            }
            Op::Drop(i) => {
                if !self.net.is_empty() {
                    let n = self.net.len();
                    self.net.remove(i % n);
                }
            }
            Op::Advance(ms) => {
                self.now += ms;
                self.tick();
            }
            Op::ClockBack(ms) => {
                self.now -= ms.min(self.now - T0);
                self.tick();
            }
            Op::CrashProvider(i) => {
                let records = decode_log(&self.provider_logs[i]);
                self.providers[i] =
                    Provider::restore(identity(provider_seed(i)), FEDERATION, self.limits.clone(), &records, self.now);
            }
            Op::CrashConsumer(k) => {
                let records = decode_log(&self.consumer_logs[k]);
                let id = identity(consumer_seed(k));
                self.consumers[k] = Consumer::restore(id, FEDERATION, self.limits.clone(), &records, self.now);
                self.coordinators[k] = Coordinator::restore(self.limits.clone(), &records);
            }
        }
    }

    /// Contracts active (made, not terminated) in a log, by id.
    fn active_in(log: &[Vec<u8>]) -> HashMap<ContractId, SignedContract> {
        let mut active = HashMap::new();
        for r in decode_log(log) {
            match r {
                Record::Contract { contract } => {
                    active.insert(contract.id(), contract);
                }
                Record::Termination { contract_id, .. } => {
                    active.remove(&contract_id);
                }
                _ => {}
            }
        }
        active
    }

    fn check_safety(&self) {
        for (i, p) in self.providers.iter().enumerate() {
            let usage = p.usage(OFFER).unwrap();
            assert!(usage.within_capacity(), "provider {i} oversold: {usage:?}");
            let units: u32 = World::active_in(&self.provider_logs[i]).values().map(|c| c.terms().units).sum();
            assert!(units <= self.capacity[i], "provider {i} log holds {units} active units of {}", self.capacity[i]);
        }
    }

    /// Reliable network from here on, and time enough for every deadline.
    fn settle(&mut self) {
        for _ in 0..400 {
            while !self.net.is_empty() {
                self.deliver(0);
                self.check_safety();
            }
            let busy = self.providers.iter().any(|p| p.live_holds() > 0)
                || self.consumers.iter().any(|c| c.in_flight() > 0)
                || self.coordinators.iter().any(|c| c.in_flight() > 0);
            if !busy {
                // Lost terminations are retried until acknowledged, backing
                // off up to 64 reply timeouts: give them that long.
                for _ in 0..3 {
                    self.now += 64 * self.limits.reply_timeout_ms;
                    self.tick();
                    while !self.net.is_empty() {
                        self.deliver(0);
                    }
                }
                return;
            }
            self.now += 2_000;
            self.tick();
        }
        panic!(
            "did not settle: holds {:?}, negotiations {:?}, placements {:?}",
            self.providers.iter().map(Provider::live_holds).collect::<Vec<_>>(),
            self.consumers.iter().map(Consumer::in_flight).collect::<Vec<_>>(),
            self.coordinators.iter().map(Coordinator::in_flight).collect::<Vec<_>>(),
        );
    }

    /// The last record of every placement in consumer `k`'s log.
    fn placements(&self, k: usize) -> HashMap<PlacementId, PlacementRecord> {
        let mut last = HashMap::new();
        for r in decode_log(&self.consumer_logs[k]) {
            if let Record::Placement { placement } = r {
                last.insert(placement.id, placement);
            }
        }
        last
    }

    fn check_all_or_nothing(&self) {
        let mut provider_active: HashMap<ContractId, (usize, SignedContract)> = HashMap::new();
        for (i, log) in self.provider_logs.iter().enumerate() {
            for (id, c) in World::active_in(log) {
                provider_active.insert(id, (i, c));
            }
        }
        let mut complete_contracts = HashSet::new();
        for k in 0..self.consumers.len() {
            let consumer_active = World::active_in(&self.consumer_logs[k]);
            for p in self.placements(k).values() {
                assert!(p.state.is_final(), "placement {} never ended: {p:?}", p.id);
                if p.state != PlacementState::Complete {
                    for id in p.contracts.iter().chain(&p.unresolved) {
                        assert!(!provider_active.contains_key(id), "{} left {id} active: {p:?}", p.state.as_str());
                        assert!(!consumer_active.contains_key(id), "{} kept {id}: {p:?}", p.state.as_str());
                    }
                    continue;
                }
                let t = &p.terms;
                let mut units = 0;
                let (mut providers, mut countries) = (HashSet::new(), HashSet::<Country>::new());
                for id in &p.contracts {
                    let (i, c) = provider_active.get(id).unwrap_or_else(|| panic!("complete but {id} not active"));
                    assert!(consumer_active.contains_key(id), "complete but {id} not active at the consumer");
                    let terms = c.terms();
                    units += terms.units;
                    providers.insert(terms.provider);
                    countries.insert(terms.site.country);
                    if !t.labels.is_empty() {
                        assert_eq!(i % 2, 0, "provider {i} has no {GAIA} label");
                        if t.attested_labels {
                            assert_eq!(*i, 0, "provider {i}'s {GAIA} label is not attested");
                        }
                    }
                    if let Some(max) = t.max_unit_price {
                        assert!(terms.unit_price_per_hour.micros <= max.micros, "{p:?}");
                    }
                    complete_contracts.insert(*id);
                }
                assert_eq!(units, t.units, "{p:?}");
                match t.spread {
                    Spread::None => {}
                    Spread::Providers => assert_eq!(providers.len(), p.contracts.len(), "{p:?}"),
                    Spread::Countries => assert_eq!(countries.len(), p.contracts.len(), "{p:?}"),
                }
            }
        }
        for (id, (i, _)) in &provider_active {
            assert!(complete_contracts.contains(id), "provider {i} keeps {id}, part of no complete placement");
        }
        // Every placement that reached its commit phase has a final record;
        // the others were lost in a crash before it and left only holds.
        for (k, id) in &self.started {
            let reported = self.finished.iter().any(|f| f.id == *id);
            if reported {
                assert!(self.placements(*k).get(id).is_some_and(|p| p.state.is_final()));
            }
        }
    }
}

/// `units` replicas of 4 vCPU for two hours from `now`, at any price.
fn terms(now: u64, units: u32, spread: Spread) -> PlacementTerms {
    PlacementTerms {
        units,
        spread,
        min_per_unit: Resources { vcpu: 4, ..Resources::default() },
        countries: BTreeSet::new(),
        labels: BTreeSet::new(),
        attested_labels: false,
        min_sla_permille: 0,
        max_unit_price: None,
        start_ms: now,
        duration_ms: 2 * HOUR_MS,
    }
}

fn scenario() -> impl Strategy<Value = (u64, usize, Vec<u32>, Vec<Op>)> {
    (any::<u64>(), 1usize..=3, proptest::collection::vec(1u32..=3, 2..=4)).prop_flat_map(
        |(seed, consumers, capacity)| {
            let providers = capacity.len();
            (Just(seed), Just(consumers), Just(capacity), proptest::collection::vec(op(consumers, providers), 1..200))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn placements_are_all_or_nothing_and_never_oversell((seed, consumers, capacity, ops) in scenario()) {
        let mut w = World::new(seed, consumers, capacity);
        for op in ops {
            w.run(op);
            w.check_safety();
        }
        w.settle();
        prop_assert!(w.providers.iter().all(|p| p.live_holds() == 0), "a hold outlived the placements");
        w.check_all_or_nothing();
    }
}

fn place(w: &mut World, k: usize, units: u32, spread: Spread) -> Option<PlacementId> {
    let before = w.started.len();
    w.run(Op::Place { consumer: k, units, spread, gaia: None, cheap: false });
    (w.started.len() > before).then(|| w.started[before].1)
}

fn deliver_all(w: &mut World) {
    while !w.net.is_empty() {
        w.deliver(0);
    }
}

fn final_state(w: &World, k: usize, id: PlacementId) -> Option<PlacementRecord> {
    w.placements(k).remove(&id).filter(|p| p.state.is_final())
}

/// The user story: three replicas in distinct countries over three
/// providers end as three contracts in one placement record.
#[test]
fn three_replicas_in_three_countries_are_one_complete_placement() {
    let mut w = World::new(1, 1, vec![2, 2, 2, 2]);
    let id = place(&mut w, 0, 3, Spread::Countries).unwrap();
    deliver_all(&mut w);
    let p = final_state(&w, 0, id).expect("finished");
    assert_eq!(p.state, PlacementState::Complete, "{p:?}");
    assert_eq!(p.contracts.len(), 3);
    w.check_all_or_nothing();
    // The committing record came first, naming the same contracts.
    let records: Vec<PlacementRecord> = decode_log(&w.consumer_logs[0])
        .into_iter()
        .filter_map(|r| match r {
            Record::Placement { placement } => Some(placement),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].state, PlacementState::Committing);
    let (mut a, mut b) = (records[0].contracts.clone(), p.contracts.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// A provider that refuses makes the placement release the other holds at
/// once and move on to the next candidate.
#[test]
fn a_refusal_releases_the_other_holds_and_moves_to_the_next_candidate() {
    // One unit each; provider 0 is the cheapest, then 1, then 2.
    let mut w = World::new(2, 2, vec![1, 1, 1]);
    // Consumer 1 asks for provider 0's unit just before consumer 0 asks for
    // two units on distinct providers (planned on providers 0 and 1).
    let first = place(&mut w, 1, 1, Spread::None).unwrap();
    let second = place(&mut w, 0, 2, Spread::Providers).unwrap();
    deliver_all(&mut w);
    let (a, b) = (final_state(&w, 1, first).unwrap(), final_state(&w, 0, second).unwrap());
    assert_eq!(a.state, PlacementState::Complete, "{a:?}");
    assert_eq!(b.state, PlacementState::Complete, "{b:?}");
    assert_eq!(b.attempts, 2, "provider 0 refused, so providers 1 and 2 were planned next: {b:?}");
    assert!(w.providers.iter().all(|p| p.live_holds() == 0), "the first attempt's hold was released");
    w.check_all_or_nothing();
}

/// A provider that never answers: the placement gives up on it after its
/// slice of the deadline, releases the hold it got elsewhere, and completes
/// with the next candidate, well within the deadline.
#[test]
fn a_silent_provider_costs_one_slice_then_the_next_candidate_is_used() {
    let mut w = World::new(3, 1, vec![1, 1, 1]);
    let id = place(&mut w, 0, 2, Spread::Providers).unwrap();
    // Provider 1 (second cheapest) never hears anything.
    let started = w.now;
    for _ in 0..20 {
        w.net.retain(|p| p.to != Who::Provider(1));
        deliver_all(&mut w);
        if final_state(&w, 0, id).is_some() {
            break;
        }
        w.run(Op::Advance(1_000));
    }
    let p = final_state(&w, 0, id).expect("finished");
    assert_eq!(p.state, PlacementState::Complete, "{p:?}");
    assert!(w.now - started < DEADLINE_MS, "took {} ms", w.now - started);
    assert_eq!(w.providers[1].live_holds(), 0);
    w.settle();
    w.check_all_or_nothing();
}

/// A provider that countersigns and then becomes unreachable: when the
/// deadline (and its grace for commits) passes, the contract obtained from
/// the other provider is terminated and the placement is recorded as
/// partial-repaired; the lost contract is terminated as soon as
/// reconciliation brings it.
#[test]
fn a_provider_lost_after_commit_is_repaired_and_its_contract_terminated_later() {
    let mut w = World::new(4, 1, vec![1, 1, 1]);
    let id = place(&mut w, 0, 2, Spread::Providers).unwrap();
    // Everything flows until provider 1 has made its contract durable; its
    // answer is lost and it is unreachable from then on.
    let countersigned = |w: &World| World::active_in(&w.provider_logs[1]).len() == 1;
    while !w.net.is_empty() {
        let p = w.net.remove(0);
        if countersigned(&w) && (p.from == Who::Provider(1) || p.to == Who::Provider(1)) {
            continue;
        }
        w.net.insert(0, p);
        w.deliver(0);
    }
    assert!(countersigned(&w));
    for _ in 0..15 {
        w.run(Op::Advance(3_000));
        w.net.retain(|p| p.to != Who::Provider(1));
        deliver_all(&mut w);
    }
    let p = final_state(&w, 0, id).expect("ended after the deadline");
    assert_eq!(p.state, PlacementState::PartialRepaired, "{p:?}");
    assert_eq!((p.contracts.len(), p.unresolved.len()), (1, 1));
    assert_eq!(World::active_in(&w.provider_logs[0]).len(), 0, "provider 0's contract is terminated");
    w.settle();
    let terminations =
        decode_log(&w.consumer_logs[0]).into_iter().filter(|r| matches!(r, Record::Termination { .. })).count();
    assert_eq!(terminations, 2, "both contracts end with placement-incomplete");
    w.check_all_or_nothing();
}

/// A consumer that restarts while committing ends the placement on its
/// first tick: what it obtained is terminated.
#[test]
fn a_consumer_restart_while_committing_repairs_the_placement() {
    let mut w = World::new(5, 1, vec![1, 1, 1]);
    let id = place(&mut w, 0, 3, Spread::Providers).unwrap();
    // Until the commits are out and two of the three are answered.
    while !decode_log(&w.consumer_logs[0]).iter().any(|r| matches!(r, Record::Placement { .. })) {
        w.deliver(0);
    }
    let mut answered = 0;
    while answered < 2 {
        let before = World::active_in(&w.consumer_logs[0]).len();
        w.deliver(0);
        answered += World::active_in(&w.consumer_logs[0]).len() - before;
    }
    w.run(Op::CrashConsumer(0));
    w.run(Op::Advance(1));
    let p = final_state(&w, 0, id).expect("ended after the restart");
    assert_eq!(p.state, PlacementState::PartialRepaired, "{p:?}");
    w.settle();
    w.check_all_or_nothing();
    let reasons: Vec<TerminationReason> = decode_log(&w.consumer_logs[0])
        .into_iter()
        .filter_map(|r| match r {
            Record::Termination { envelope, .. } => {
                match fulcrum_protocol::messages::Message::open(&envelope, &w.limits) {
                    Ok(fulcrum_protocol::messages::Message::Terminate(t)) => Some(t.reason),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert!(!reasons.is_empty() && reasons.iter().all(|r| *r == TerminationReason::PlacementIncomplete));
}

/// Before asking a provider again, a new attempt waits until its earlier
/// hold there is released (a Release and a later Propose may arrive in
/// either order, and the old hold would keep the units asked for).
#[test]
fn a_retry_waits_for_its_releases() {
    use fulcrum_protocol::messages::Message;
    let kind = |p: &Packet| {
        let envelope = Envelope::decode(&p.bytes, usize::MAX).unwrap();
        Message::open(&envelope, &Limits::default()).unwrap().kind()
    };
    let mut w = World::new(6, 1, vec![1, 1, 1]);
    let id = place(&mut w, 0, 2, Spread::Providers).unwrap();
    // Provider 0 grants its hold; provider 1 never answers.
    w.net.retain(|p| p.to != Who::Provider(1));
    deliver_all(&mut w);
    assert_eq!(w.providers[0].live_holds(), 1);
    for _ in 0..4 {
        w.run(Op::Advance(3_000));
        w.net.retain(|p| p.to != Who::Provider(1));
        if w.net.iter().any(|p| p.to == Who::Provider(0)) {
            break;
        }
    }
    // The attempt failed: the Release to provider 0 is out, nothing else.
    let to_0: Vec<_> = w.net.iter().filter(|p| p.to == Who::Provider(0)).map(kind).collect();
    assert_eq!(to_0.len(), 1, "{to_0:?}");
    assert_eq!(to_0[0].as_str(), "release");
    assert!(w.net.iter().all(|p| p.to != Who::Provider(2)), "proposed before the release was acknowledged");
    deliver_all(&mut w);
    let p = final_state(&w, 0, id).expect("finished");
    assert_eq!(p.state, PlacementState::Complete, "{p:?}");
    assert_eq!(p.attempts, 2);
    w.check_all_or_nothing();
}

/// Provider `i` republishes its offer at `micros` per unit-hour; the
/// consumers' books keep the price they saw before.
fn reprice(w: &mut World, i: usize, micros: u64) {
    let mut offer = w.providers[i].own_offers().find(|s| s.offer().offer_id == OFFER).unwrap().offer().clone();
    offer.unit_price_per_hour.micros = micros;
    let (_, step) = w.providers[i].publish(offer, w.now, 24 * HOUR_MS).unwrap();
    w.apply(Who::Provider(i), step);
}

/// Delivers everything in flight, in order, without letting time pass;
/// messages to `unreachable` are lost. Calls `watch` after every delivery,
/// with the packet delivered.
fn deliver_watching(w: &mut World, unreachable: &[Who], mut watch: impl FnMut(&World, &Packet)) {
    loop {
        w.net.retain(|p| !unreachable.contains(&p.to));
        let Some(packet) = w.net.first().cloned() else { return };
        w.deliver(0);
        watch(w, &packet);
    }
}

/// The unit price of every Counter delivered, with its sender.
fn deliver_noting_counters(w: &mut World) -> Vec<(Who, Option<Price>)> {
    let mut counters = Vec::new();
    deliver_watching(w, &[], |_, p| {
        if let fulcrum_protocol::messages::Message::Counter(c) = message(p) {
            counters.push((p.from, c.unit_price));
        }
    });
    counters
}

/// The message a packet carries.
fn message(p: &Packet) -> fulcrum_protocol::messages::Message {
    let envelope = Envelope::decode(&p.bytes, usize::MAX).unwrap();
    fulcrum_protocol::messages::Message::open(&envelope, &Limits::default()).unwrap()
}

/// The price of every contract active at consumer `k`, by provider.
fn prices_by_provider(w: &World, k: usize) -> HashMap<PublicKey, Price> {
    World::active_in(&w.consumer_logs[k])
        .values()
        .map(|c| (c.terms().provider, c.terms().unit_price_per_hour))
        .collect()
}

/// Runs placement `id` of consumer 0 with `unreachable` providers, time
/// moving in half-second ticks, until its final record is written; then
/// delivers what is in flight at that moment (time standing still). Returns
/// the record and the most holds each provider had at once on the way.
fn run_to_the_end(w: &mut World, id: PlacementId, unreachable: &[Who]) -> (PlacementRecord, Vec<usize>) {
    let started = w.now;
    let grace = COMMIT_GRACE_FACTOR * w.limits.reply_timeout_ms;
    let mut most = vec![0; w.providers.len()];
    let mut watch = |w: &World, _: &Packet| {
        for (i, p) in w.providers.iter().enumerate() {
            most[i] = most[i].max(p.live_holds());
        }
    };
    loop {
        deliver_watching(w, unreachable, &mut watch);
        if let Some(p) = final_state(w, 0, id) {
            return (p, most);
        }
        assert!(w.now < started + w.deadline_ms + grace, "still not over at the deadline and its grace");
        w.run(Op::Advance(500));
    }
}

/// Every candidate fails and no alternative is left: two replicas on
/// distinct providers, where provider 1 refuses and provider 2 never hears
/// anything, so provider 0 cannot be paired with anyone. The placement ends
/// `failed` within its deadline and the commit grace, and at that moment no
/// provider holds anything: the holds provider 0 granted were released, not
/// left to expire (their time to live is thirty times the deadline).
#[test]
fn when_every_candidate_fails_the_placement_fails_in_time_and_no_hold_is_left() {
    let limits = Limits { hold_ttl_ms: 600_000, reply_timeout_ms: 3_000, ..Limits::default() };
    let mut w = World::with_limits(7, 1, vec![1, 1, 1], limits);
    w.providers[1].stop_accepting();
    let started = w.now;
    let id = w.start(0, terms(w.now, 2, Spread::Providers)).unwrap();
    let (p, most) = run_to_the_end(&mut w, id, &[Who::Provider(2)]);
    assert_eq!(p.state, PlacementState::Failed, "{p:?}");
    assert_eq!(p.attempts, 2, "providers 0+1, then 0+2: {p:?}");
    assert!(p.contracts.is_empty() && p.unresolved.is_empty(), "{p:?}");
    let grace = COMMIT_GRACE_FACTOR * w.limits.reply_timeout_ms;
    assert!(p.at_ms <= started + DEADLINE_MS + grace, "ended {} ms after the start", p.at_ms - started);
    assert!(w.now < started + w.limits.hold_ttl_ms, "no hold can have expired yet");
    assert_eq!(most[0], 1, "provider 0 granted holds");
    let holds: Vec<usize> = w.providers.iter().map(Provider::live_holds).collect();
    assert_eq!(holds, [0, 0, 0], "holds left when the placement failed");
    assert!(w.consumers[0].in_flight() == 0 && w.coordinators[0].in_flight() == 0);
    w.settle();
    w.check_all_or_nothing();
}

/// Every candidate fails within the deadline, with silent candidates still
/// untried: the deadline ends the placement `failed`, and the hold provider
/// 0 granted to the last attempt is released then, not left to expire.
#[test]
fn when_the_deadline_passes_on_failing_candidates_no_hold_is_left() {
    let limits = Limits { hold_ttl_ms: 600_000, reply_timeout_ms: 3_000, ..Limits::default() };
    let mut w = World::with_limits(8, 1, vec![1, 1, 1, 1], limits);
    // Each silent provider costs a slice of three reply timeouts: the
    // deadline passes while provider 3 is being waited for.
    w.deadline_ms = 12_000;
    w.providers[1].stop_accepting();
    let started = w.now;
    let id = w.start(0, terms(w.now, 2, Spread::Providers)).unwrap();
    let (p, most) = run_to_the_end(&mut w, id, &[Who::Provider(2), Who::Provider(3)]);
    assert_eq!(p.state, PlacementState::Failed, "{p:?}");
    assert_eq!(p.attempts, 3, "providers 0+1, 0+2, then 0+3: {p:?}");
    let grace = COMMIT_GRACE_FACTOR * w.limits.reply_timeout_ms;
    assert!(p.at_ms <= started + w.deadline_ms + grace, "ended {} ms after the start", p.at_ms - started);
    assert!(w.now < started + w.limits.hold_ttl_ms, "no hold can have expired yet");
    assert_eq!(most[0], 1, "provider 0 granted holds");
    let holds: Vec<usize> = w.providers.iter().map(Provider::live_holds).collect();
    assert_eq!(holds, [0, 0, 0, 0], "holds left when the placement failed");
    w.settle();
    w.check_all_or_nothing();
}

/// Provider 0 raised its price after the consumer's book saw its offer, so
/// it counters the proposal with the new price. Within the request's
/// maximum unit price the counter is accepted without asking anyone, and
/// the contract is made at the counter price.
#[test]
fn a_counter_within_the_maximum_price_is_accepted_at_its_price() {
    let mut w = World::new(9, 1, vec![1, 1, 1]);
    reprice(&mut w, 0, 1_120_000);
    // The book: provider 0 at 1.00, 1 at 1.10, 2 at 1.20 (too dear).
    let max = Price::eur(1_150_000);
    let id = w.start(0, PlacementTerms { max_unit_price: Some(max), ..terms(w.now, 2, Spread::Providers) }).unwrap();
    let counters = deliver_noting_counters(&mut w);
    assert_eq!(counters, [(Who::Provider(0), Some(Price::eur(1_120_000)))]);
    let p = final_state(&w, 0, id).expect("finished");
    assert_eq!(p.state, PlacementState::Complete, "{p:?}");
    assert_eq!(p.attempts, 1, "{p:?}");
    let prices = prices_by_provider(&w, 0);
    assert_eq!(prices.len(), 2, "{prices:?}");
    assert_eq!(prices[&w.providers[0].public()], Price::eur(1_120_000), "contracted at the counter price");
    assert_eq!(prices[&w.providers[1].public()], Price::eur(1_100_000));
    w.check_all_or_nothing();
}

/// Provider 0 raised its price beyond the request's maximum unit price: its
/// counter is refused, and the placement moves on to the next candidate
/// (releasing the hold it got meanwhile first, so that the retry never
/// competes with it).
#[test]
fn a_counter_above_the_maximum_price_is_refused_and_the_next_candidate_used() {
    let mut w = World::new(10, 1, vec![1, 1, 1]);
    reprice(&mut w, 0, 1_300_000);
    // The book: provider 0 at 1.00, 1 at 1.10, 2 at 1.20; all within 1.25.
    let max = Price::eur(1_250_000);
    let id = w.start(0, PlacementTerms { max_unit_price: Some(max), ..terms(w.now, 2, Spread::Providers) }).unwrap();
    // Provider 1's hold arrives after the counter failed the attempt: the
    // retry asks provider 1 again only once that hold is released.
    let mut counters = Vec::new();
    deliver_watching(&mut w, &[], |w, p| {
        use fulcrum_protocol::messages::Message;
        if let Message::Counter(c) = message(p) {
            counters.push((p.from, c.unit_price));
        }
        let to_1: Vec<Message> = w.net.iter().filter(|p| p.to == Who::Provider(1)).map(message).collect();
        let release = to_1.iter().any(|m| matches!(m, Message::Release(_)));
        let propose = to_1.iter().any(|m| matches!(m, Message::Propose(_)));
        assert!(!(release && propose), "proposed again before the release was acknowledged");
    });
    assert_eq!(counters, [(Who::Provider(0), Some(Price::eur(1_300_000)))]);
    let p = final_state(&w, 0, id).expect("finished");
    assert_eq!(p.state, PlacementState::Complete, "{p:?}");
    assert_eq!(p.attempts, 2, "providers 0+1, then 1+2: {p:?}");
    let prices = prices_by_provider(&w, 0);
    assert_eq!(prices.len(), 2, "{prices:?}");
    assert_eq!(prices[&w.providers[1].public()], Price::eur(1_100_000));
    assert_eq!(prices[&w.providers[2].public()], Price::eur(1_200_000));
    assert!(World::active_in(&w.provider_logs[0]).is_empty(), "no contract at the refused counter");
    assert!(w.providers.iter().all(|p| p.live_holds() == 0));
    w.check_all_or_nothing();
}
