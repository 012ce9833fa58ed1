//! Negotiation invariants under a hostile network: random interleavings of
//! duplicated, reordered, delayed and dropped messages, crashes that lose all
//! volatile state, and clock jumps in both directions. Messages cross the
//! "network" as real signed, encoded envelopes, and logs as real CBOR.
//!
//! Consumers negotiate in both modes: committing as soon as a hold arrives,
//! or stopping at the hold until the test commits or releases it (as a
//! composite placement does), at random points.
//!
//! After every step: no oversell, one contract per hold, and every contract a
//! consumer holds is durable at the provider. At the end, once the network is
//! reliable again: every hold has ended, both sides agree on every contract,
//! and no negotiation reported as failed ever made a contract.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{FEDERATION, HOUR_MS, T0, identity, offer_terms};
use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::Envelope;
use fulcrum_protocol::ids::{ContractId, NegotiationId};
use fulcrum_protocol::keys::PublicKey;
use fulcrum_protocol::messages::TerminationReason;
use fulcrum_protocol::negotiation::{Consumer, Event, PlaceTerms, Provider, Role, Step};
use fulcrum_protocol::offer::{Offer, Price};
use fulcrum_protocol::record::Record;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const OFFER: &str = "fra1-c8m32";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Provider,
    Consumer(usize),
}

#[derive(Debug, Clone)]
struct Packet {
    to: Who,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Start {
        consumer: usize,
        units: u32,
        flexible: bool,
    },
    /// Start a negotiation that stops at the hold.
    StartHeld {
        consumer: usize,
        units: u32,
    },
    /// Commit one of the holds reported so far (if it still holds).
    CommitHeld(usize),
    /// Release one of the holds reported so far (or a proposal still out).
    ReleaseHeld(usize),
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Advance(u64),
    ClockBack(u64),
    CrashProvider,
    CrashConsumer(usize),
    Terminate(usize),
    RaisePrice,
}

fn op(consumers: usize, capacity: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..consumers, 1..=capacity, any::<bool>()).prop_map(|(consumer, units, flexible)| Op::Start { consumer, units, flexible }),
        2 => (0..consumers, 1..=capacity).prop_map(|(consumer, units)| Op::StartHeld { consumer, units }),
        2 => any::<usize>().prop_map(Op::CommitHeld),
        1 => any::<usize>().prop_map(Op::ReleaseHeld),
        10 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Duplicate),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => (0u64..40_000).prop_map(Op::Advance),
        1 => (0u64..10_000).prop_map(Op::ClockBack),
        1 => Just(Op::CrashProvider),
        1 => (0..consumers).prop_map(Op::CrashConsumer),
        1 => (0..consumers).prop_map(Op::Terminate),
        1 => Just(Op::RaisePrice),
    ]
}

struct World {
    now: u64,
    rng: ChaCha8Rng,
    limits: Limits,
    capacity: u32,
    provider: Provider,
    provider_log: Vec<Vec<u8>>,
    consumers: Vec<Consumer>,
    consumer_logs: Vec<Vec<Vec<u8>>>,
    keys: HashMap<PublicKey, Who>,
    net: Vec<Packet>,
    offer: Offer,
    placed: usize,
    /// Negotiations started in explicit mode, by consumer.
    explicit: Vec<(usize, NegotiationId)>,
    /// Negotiations reported as failed.
    failed: HashSet<NegotiationId>,
}

fn decode_log(log: &[Vec<u8>]) -> Vec<Record> {
    log.iter().map(|b| Record::from_cbor(b).expect("log records stay readable")).collect()
}

impl World {
    fn new(seed: u64, consumers: usize, capacity: u32) -> World {
        let limits = Limits { hold_ttl_ms: 20_000, reply_timeout_ms: 3_000, ..Limits::default() };
        let mut provider = Provider::new(identity(1), FEDERATION, limits.clone());
        let (signed, step) = provider.publish(offer_terms(OFFER, "DE", capacity, 1_000_000), T0, 24 * HOUR_MS).unwrap();
        let mut keys = HashMap::new();
        keys.insert(provider.public(), Who::Provider);
        let consumers: Vec<Consumer> = (0..consumers)
            .map(|k| {
                let c = Consumer::new(identity(10 + k as u8), FEDERATION, limits.clone());
                keys.insert(c.public(), Who::Consumer(k));
                c
            })
            .collect();
        let mut w = World {
            now: T0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            limits,
            capacity,
            provider,
            provider_log: Vec::new(),
            consumer_logs: vec![Vec::new(); consumers.len()],
            consumers,
            keys,
            net: Vec::new(),
            offer: signed.offer().clone(),
            placed: 0,
            explicit: Vec::new(),
            failed: HashSet::new(),
        };
        w.apply(Who::Provider, step);
        w
    }

    /// Performs a step as the node shell must: persist, then send, then report.
    fn apply(&mut self, who: Who, step: Step) {
        let log = match who {
            Who::Provider => &mut self.provider_log,
            Who::Consumer(k) => &mut self.consumer_logs[k],
        };
        for record in &step.persist {
            log.push(record.to_cbor().unwrap());
        }
        for out in step.send {
            let identity = match who {
                Who::Provider => self.provider.identity(),
                Who::Consumer(k) => self.consumers[k].identity(),
            };
            let bytes = out.message.seal(identity).encode();
            let to = self.keys[&out.to];
            self.net.push(Packet { to, bytes });
        }
        for event in &step.events {
            match event {
                Event::Placed { negotiation_id, .. } => {
                    self.placed += 1;
                    assert!(!self.failed.contains(negotiation_id), "a failed negotiation was placed");
                }
                Event::Failed { negotiation_id, .. } => {
                    self.failed.insert(*negotiation_id);
                }
                _ => {}
            }
        }
    }

    fn deliver(&mut self, i: usize) {
        if self.net.is_empty() {
            return;
        }
        let p = self.net.remove(i % self.net.len());
        let envelope =
            Envelope::decode(&p.bytes, self.limits.max_envelope_bytes).expect("honest parties send valid envelopes");
        let step = match p.to {
            Who::Provider => self.provider.handle(self.now, &mut self.rng, &envelope),
            Who::Consumer(k) => self.consumers[k].handle(self.now, &mut self.rng, &envelope),
        };
        self.apply(p.to, step);
    }

    fn tick(&mut self) {
        let step = self.provider.tick(self.now);
        self.apply(Who::Provider, step);
        for k in 0..self.consumers.len() {
            let step = self.consumers[k].tick(self.now, &mut self.rng);
            self.apply(Who::Consumer(k), step);
        }
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Start { consumer, units, flexible } => {
                let terms = PlaceTerms {
                    units,
                    min_units: if flexible { 1 } else { units },
                    max_unit_price: Price::eur(2_000_000),
                    start_ms: self.now,
                    duration_ms: 2 * HOUR_MS,
                    deadline_ms: self.now + 20_000,
                };
                let offer = self.offer.clone();
                if let Ok((_, step)) = self.consumers[consumer].start(self.now, &mut self.rng, &offer, terms) {
                    self.apply(Who::Consumer(consumer), step);
                }
            }
            Op::StartHeld { consumer, units } => {
                let terms = PlaceTerms {
                    units,
                    min_units: units,
                    max_unit_price: Price::eur(2_000_000),
                    start_ms: self.now,
                    duration_ms: 2 * HOUR_MS,
                    deadline_ms: self.now + 20_000,
                };
                let offer = self.offer.clone();
                if let Ok((id, step)) = self.consumers[consumer].start_hold(self.now, &mut self.rng, &offer, terms) {
                    assert!(step.persist.is_empty(), "proposing persists nothing");
                    self.explicit.push((consumer, id));
                    self.apply(Who::Consumer(consumer), step);
                }
            }
            Op::CommitHeld(i) | Op::ReleaseHeld(i) if !self.explicit.is_empty() => {
                let (k, id) = self.explicit[i % self.explicit.len()];
                let step = if matches!(op, Op::CommitHeld(_)) {
                    self.consumers[k].commit(self.now, &mut self.rng, id)
                } else {
                    self.consumers[k].release(self.now, &mut self.rng, id)
                };
                if let Some(step) = step {
                    self.apply(Who::Consumer(k), step);
                }
            }
            Op::CommitHeld(_) | Op::ReleaseHeld(_) => {}
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
            Op::CrashProvider => {
                let records = decode_log(&self.provider_log);
                self.provider = Provider::restore(identity(1), FEDERATION, self.limits.clone(), &records, self.now);
            }
            Op::CrashConsumer(k) => {
                let records = decode_log(&self.consumer_logs[k]);
                self.consumers[k] =
                    Consumer::restore(identity(10 + k as u8), FEDERATION, self.limits.clone(), &records, self.now);
            }
            Op::Terminate(k) => {
                let id = self.consumers[k].active_contracts().map(|(id, _)| *id).min();
                if let Some(id) = id
                    && let Some(step) =
                        self.consumers[k].terminate(self.now, &mut self.rng, id, TerminationReason::CustomerRequest)
                {
                    self.apply(Who::Consumer(k), step);
                }
            }
            Op::RaisePrice => {
                let mut terms = self.provider.own_offers().next().unwrap().offer().clone();
                terms.unit_price_per_hour.micros += 250_000;
                let (_, step) = self.provider.publish(terms, self.now, 24 * HOUR_MS).unwrap();
                self.apply(Who::Provider, step);
            }
        }
    }

    /// Contracts in a log that are still active (not terminated or expired).
    fn active_in(log: &[Vec<u8>]) -> HashMap<ContractId, u32> {
        let mut active = HashMap::new();
        for r in decode_log(log) {
            match r {
                Record::Contract { contract } => {
                    active.insert(contract.id(), contract.terms().units);
                }
                Record::Termination { contract_id, .. } | Record::Expiry { contract_id, .. } => {
                    active.remove(&contract_id);
                }
                _ => {}
            }
        }
        active
    }

    fn contracts_in(log: &[Vec<u8>]) -> HashSet<ContractId> {
        decode_log(log)
            .into_iter()
            .filter_map(|r| match r {
                Record::Contract { contract } => Some(contract.id()),
                _ => None,
            })
            .collect()
    }

    fn check_safety(&self) {
        let usage = self.provider.usage(OFFER).unwrap();
        assert!(usage.within_capacity(), "ledger oversold: {usage:?}");
        // Independently of the engine: what the durable log commits to.
        let active: u32 = World::active_in(&self.provider_log).values().sum();
        assert!(active <= self.capacity, "log holds {active} active units, capacity {}", self.capacity);
        let mut holds = HashSet::new();
        for r in decode_log(&self.provider_log) {
            if let Record::Contract { contract } = r {
                assert!(holds.insert(contract.terms().hold_id), "two contracts for one hold");
            }
        }
        let provider_contracts = World::contracts_in(&self.provider_log);
        for (k, log) in self.consumer_logs.iter().enumerate() {
            for id in World::contracts_in(log) {
                assert!(provider_contracts.contains(&id), "consumer {k} holds contract {id} the provider never logged");
            }
        }
    }

    /// Reliable network from here on: deliver everything, let time pass.
    fn settle(&mut self) {
        for _ in 0..200 {
            while !self.net.is_empty() {
                self.deliver(0);
                self.check_safety();
            }
            let busy = self.provider.live_holds() > 0 || self.consumers.iter().any(|c| c.in_flight() > 0);
            if !busy {
                return;
            }
            self.now += 5_000;
            self.tick();
        }
        panic!(
            "did not settle: {} holds, in flight {:?}",
            self.provider.live_holds(),
            self.consumers.iter().map(Consumer::in_flight).collect::<Vec<_>>()
        );
    }
}

fn scenario() -> impl Strategy<Value = (u64, usize, u32, Vec<Op>)> {
    (any::<u64>(), 1usize..=4, 1u32..=8).prop_flat_map(|(seed, consumers, capacity)| {
        (Just(seed), Just(consumers), Just(capacity), proptest::collection::vec(op(consumers, capacity), 1..160))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_oversell_one_contract_per_commit_every_hold_ends((seed, consumers, capacity, ops) in scenario()) {
        let mut w = World::new(seed, consumers, capacity);
        for op in ops {
            w.run(op);
            w.check_safety();
        }
        w.settle();
        prop_assert_eq!(w.provider.live_holds(), 0, "a hold outlived the settling period");
        let provider_contracts = World::contracts_in(&w.provider_log);
        let mut consumer_contracts = HashSet::new();
        for log in &w.consumer_logs {
            consumer_contracts.extend(World::contracts_in(log));
        }
        // Status reconciliation brought both sides to the same answer.
        prop_assert_eq!(&provider_contracts, &consumer_contracts);
        // A negotiation reported as failed made no contract, even late.
        for r in decode_log(&w.provider_log) {
            if let Record::Contract { contract } = r {
                prop_assert!(!w.failed.contains(&contract.terms().negotiation_id), "a failed negotiation made a contract");
            }
        }
        // The rebuilt ledger agrees with the live one.
        let records = decode_log(&w.provider_log);
        let rebuilt = Provider::restore(identity(1), FEDERATION, w.limits.clone(), &records, w.now);
        prop_assert_eq!(rebuilt.usage(OFFER).unwrap().committed, w.provider.usage(OFFER).unwrap().committed);
    }
}

/// The same Commit delivered many times yields one contract and the same
/// countersigned bytes every time.
#[test]
fn duplicate_commits_give_one_identical_contract() {
    let mut w = World::new(7, 1, 4);
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    w.deliver(0); // Propose -> Hold
    w.deliver(0); // Hold -> Commit (consumer persists Pending)
    let commit = w.net[0].clone();
    let mut answers = HashSet::new();
    for _ in 0..5 {
        w.net.push(commit.clone());
        let envelope = Envelope::decode(&commit.bytes, usize::MAX).unwrap();
        let step = w.provider.handle(w.now, &mut w.rng, &envelope);
        answers.insert(step.send[0].message.seal(w.provider.identity()).encode());
        w.apply(Who::Provider, step);
    }
    assert_eq!(answers.len(), 1, "every duplicate gets the same countersigned contract");
    assert_eq!(World::contracts_in(&w.provider_log).len(), 1);
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 2);
    w.settle();
    assert_eq!(w.placed, 1);
}

/// A crash after the provider made the contract durable but before its answer
/// left: the consumer's Status brings it the contract.
#[test]
fn status_reconciles_a_lost_countersignature() {
    let mut w = World::new(9, 1, 4);
    w.run(Op::Start { consumer: 0, units: 3, flexible: false });
    w.deliver(0); // Propose -> Hold
    w.deliver(0); // Hold -> Commit
    w.deliver(0); // Commit -> Countersigned (durable at the provider)
    assert_eq!(w.net.len(), 1);
    w.net.clear(); // the answer is lost
    w.run(Op::CrashProvider);
    w.run(Op::CrashConsumer(0)); // the consumer loses its negotiation too
    assert!(World::contracts_in(&w.consumer_logs[0]).is_empty());
    w.settle();
    assert_eq!(World::contracts_in(&w.consumer_logs[0]), World::contracts_in(&w.provider_log));
    assert_eq!(World::contracts_in(&w.provider_log).len(), 1);
}

/// A hold that is never committed ends at hold_until and frees its units.
#[test]
fn abandoned_hold_expires_and_frees_capacity() {
    let mut w = World::new(11, 1, 2);
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    w.deliver(0); // Propose -> Hold
    w.net.clear(); // Hold lost
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 2);
    w.now += w.limits.hold_ttl_ms;
    let step = w.provider.tick(w.now);
    assert!(step.events.iter().any(|e| matches!(e, Event::HoldEnded { .. })));
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 0);
    assert_eq!(w.provider.live_holds(), 0);
}

/// A Commit delayed in the network while the consumer asks for status: the
/// provider must not answer "unknown" (the consumer would give up while the
/// delayed Commit still makes a contract).
#[test]
fn status_while_commit_is_delayed_does_not_abandon() {
    let mut w = World::new(13, 1, 4);
    w.run(Op::Start { consumer: 0, units: 1, flexible: false });
    w.deliver(0); // Propose -> Hold
    w.deliver(0); // Hold -> Commit, now in flight
    assert_eq!(w.net.len(), 1);
    w.run(Op::Advance(w.limits.reply_timeout_ms)); // consumer asks for status
    assert_eq!(w.net.len(), 2);
    w.deliver(1); // Status answered first: the hold is still alive
    w.settle();
    assert_eq!(w.placed, 1);
    assert_eq!(World::contracts_in(&w.consumer_logs[0]), World::contracts_in(&w.provider_log));
    assert!(decode_log(&w.consumer_logs[0]).iter().all(|r| !matches!(r, Record::Abandoned { .. })));
}

/// Own offers are re-signed with a higher seq once half their life is gone;
/// withdrawn offers are not brought back by re-announcement.
#[test]
fn reannounce_refreshes_live_offers_only() {
    let mut p = Provider::new(identity(1), FEDERATION, Limits::default());
    let ttl = HOUR_MS;
    p.publish(offer_terms("a", "DE", 4, 1_000_000), T0, ttl).unwrap();
    p.publish(offer_terms("b", "FR", 4, 1_000_000), T0, ttl).unwrap();
    p.withdraw("b", T0 + 1, ttl).unwrap();
    assert!(p.reannounce(T0 + ttl / 4, ttl).is_empty(), "nothing is due early");
    let due = p.reannounce(T0 + ttl / 2 + 1, ttl);
    assert_eq!(due.len(), 1);
    let (signed, step) = &due[0];
    assert_eq!((signed.offer().offer_id.as_str(), signed.offer().seq), ("a", 2));
    assert_eq!(signed.offer().expires_at_ms, T0 + ttl / 2 + 1 + ttl);
    assert!(matches!(step.persist.as_slice(), [Record::Offer { .. }]), "persisted before it is gossiped");
    assert_eq!(p.usage("a").unwrap().capacity, 4);
    assert_eq!(p.usage("b").unwrap().capacity, 0);
}

fn propose_from(
    consumer: &fulcrum_protocol::keys::Identity,
    provider: PublicKey,
    n: u8,
    round: u32,
    price: u64,
) -> Envelope {
    use fulcrum_protocol::ids::{NegotiationId, RequestId};
    use fulcrum_protocol::messages::{Message, Propose};
    Message::Propose(Propose {
        request_id: RequestId([n; 16]),
        negotiation_id: NegotiationId([n; 16]),
        round,
        consumer: consumer.public(),
        provider,
        offer_id: OFFER.into(),
        offer_seq: 1,
        units: 1,
        max_unit_price: Price::eur(price),
        start_ms: T0,
        duration_ms: 2 * HOUR_MS,
        expires_at_ms: T0 + 60_000,
    })
    .seal(consumer)
}

fn reject_code(step: &Step) -> Option<fulcrum_protocol::messages::RejectCode> {
    match &step.send.first()?.message {
        fulcrum_protocol::messages::Message::Reject(r) => Some(r.code),
        _ => None,
    }
}

/// One consumer cannot hold more than `max_holds_per_peer` at once, and the
/// provider as a whole keeps at most `max_holds_total`.
#[test]
fn holds_are_bounded_per_consumer_and_in_total() {
    use fulcrum_protocol::messages::RejectCode;
    let limits = Limits { max_holds_per_peer: 3, max_holds_total: 5, ..Limits::default() };
    let mut p = Provider::new(identity(1), FEDERATION, limits);
    p.publish(offer_terms(OFFER, "DE", 100, 1_000_000), T0, HOUR_MS).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let greedy = identity(20);
    for n in 0..3 {
        let step = p.handle(T0, &mut rng, &propose_from(&greedy, p.public(), n, 0, 1_000_000));
        assert_eq!(reject_code(&step), None, "hold {n} is granted");
    }
    let step = p.handle(T0, &mut rng, &propose_from(&greedy, p.public(), 3, 0, 1_000_000));
    assert_eq!(reject_code(&step), Some(RejectCode::TooManyHolds));
    let other = identity(21);
    for n in 10..12 {
        assert_eq!(reject_code(&p.handle(T0, &mut rng, &propose_from(&other, p.public(), n, 0, 1_000_000))), None);
    }
    let third = identity(22);
    let step = p.handle(T0, &mut rng, &propose_from(&third, p.public(), 20, 0, 1_000_000));
    assert_eq!(reject_code(&step), Some(RejectCode::TooManyHolds), "the total is bounded too");
    assert_eq!(p.live_holds(), 5);
    assert_eq!(p.usage(OFFER).unwrap().held, 5);
}

/// A price the consumer does not accept is countered at most
/// `max_counter_rounds` times; after that the answer is a rejection, and a
/// round past the limit is refused outright.
#[test]
fn counter_rounds_are_bounded() {
    use fulcrum_protocol::messages::{Message, RejectCode};
    let limits = Limits::default();
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    p.publish(offer_terms(OFFER, "DE", 10, 1_000_000), T0, HOUR_MS).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let c = identity(20);
    for round in 0..limits.max_counter_rounds {
        let step = p.handle(T0, &mut rng, &propose_from(&c, p.public(), 1, round, 500_000));
        assert!(matches!(step.send[0].message, Message::Counter(_)), "round {round} is countered");
    }
    let last = p.handle(T0, &mut rng, &propose_from(&c, p.public(), 1, limits.max_counter_rounds, 500_000));
    assert_eq!(reject_code(&last), Some(RejectCode::Price));
    let beyond = p.handle(T0, &mut rng, &propose_from(&c, p.public(), 1, limits.max_counter_rounds + 1, 500_000));
    assert_eq!(reject_code(&beyond), Some(RejectCode::TooManyRounds));
    assert_eq!(p.live_holds(), 0);
}

/// One unit at up to 2 EUR per hour, for two hours from T0.
fn one_unit_terms() -> PlaceTerms {
    PlaceTerms {
        units: 1,
        min_units: 1,
        max_unit_price: Price::eur(2_000_000),
        start_ms: T0,
        duration_ms: 2 * HOUR_MS,
        deadline_ms: T0 + 20_000,
    }
}

/// Drives one negotiation to the point where the consumer has sent its Commit.
fn until_commit(p: &mut Provider, c: &mut Consumer, rng: &mut ChaCha8Rng) -> (Step, Envelope) {
    let offer = p.own_offers().next().unwrap().offer().clone();
    let terms = one_unit_terms();
    let (_, step) = c.start(T0, rng, &offer, terms).unwrap();
    let hold = p.handle(T0, rng, &step.send[0].message.seal(c.identity()));
    let hold_env = hold.send[0].message.seal(p.identity());
    (c.handle(T0, rng, &hold_env), hold_env)
}

/// A provider that answers everything with "held" can neither make the
/// consumer resend its Commit more than once per reply timeout nor grow the
/// consumer's state.
#[test]
fn a_provider_that_keeps_saying_held_cannot_grow_consumer_state() {
    use fulcrum_protocol::messages::{ContractState, Message, StatusResponse};
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    p.publish(offer_terms(OFFER, "DE", 4, 1_000_000), T0, HOUR_MS).unwrap();
    let mut c = Consumer::new(identity(20), FEDERATION, limits.clone());
    let (commit, _) = until_commit(&mut p, &mut c, &mut rng);
    let mut rids = vec![commit.send[0].message.request_id()];
    let mut commits = 0;
    let horizon = 60_000u64;
    for now in (T0..T0 + horizon).step_by(10) {
        for rid in std::mem::take(&mut rids) {
            let held = Message::StatusResponse(StatusResponse {
                request_id: rid,
                state: ContractState::Held,
                contract: None,
                hold_until_ms: T0 + horizon,
            })
            .seal(p.identity());
            let step = c.handle(now, &mut rng, &held);
            commits += step.send.iter().filter(|o| matches!(o.message, Message::Commit(_))).count();
            rids.extend(step.send.iter().map(|o| o.message.request_id()));
        }
        rids.extend(c.tick(now, &mut rng).send.iter().map(|o| o.message.request_id()));
        assert!(c.tracked_requests() <= 4, "consumer state grew to {}", c.tracked_requests());
    }
    let bound = (horizon / limits.reply_timeout_ms) as usize + 1;
    assert!(commits <= bound, "{commits} commits resent in {horizon} ms (bound {bound})");
    assert_eq!(c.in_flight(), 1, "the negotiation still waits for a definitive answer");
}

/// A start far in the future, or one whose end overflows, is refused before
/// any capacity is kept.
#[test]
fn far_future_and_overflowing_starts_are_refused() {
    use fulcrum_protocol::ids::{NegotiationId, RequestId};
    use fulcrum_protocol::messages::{Message, Propose, RejectCode};
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    p.publish(offer_terms(OFFER, "DE", 4, 1_000_000), T0, HOUR_MS).unwrap();
    let c = identity(20);
    for (n, start, code) in
        [(1u8, T0 + limits.max_start_lead_ms + 1, RejectCode::Policy), (2, u64::MAX - 10, RejectCode::Malformed)]
    {
        let env = Message::Propose(Propose {
            request_id: RequestId([n; 16]),
            negotiation_id: NegotiationId([n; 16]),
            round: 0,
            consumer: c.public(),
            provider: p.public(),
            offer_id: OFFER.into(),
            offer_seq: 1,
            units: 2,
            max_unit_price: Price::eur(1_000_000),
            start_ms: start,
            duration_ms: 2 * HOUR_MS,
            expires_at_ms: T0 + 60_000,
        })
        .seal(&c);
        let step = p.handle(T0, &mut rng, &env);
        assert_eq!(reject_code(&step), Some(code));
        assert_eq!(p.usage(OFFER).unwrap().held, 0, "nothing stays held");
    }
}

/// A draft for another site (or flavour) than the offer chosen is not signed;
/// the hold is released at once.
#[test]
fn a_draft_for_another_site_is_refused_and_released() {
    use fulcrum_protocol::contract::ContractTerms;
    use fulcrum_protocol::messages::Message;
    use fulcrum_protocol::negotiation::FailReason;
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    p.publish(offer_terms(OFFER, "DE", 4, 1_000_000), T0, HOUR_MS).unwrap();
    let mut c = Consumer::new(identity(20), FEDERATION, limits.clone());
    let offer = p.own_offers().next().unwrap().offer().clone();
    let terms = one_unit_terms();
    let (_, step) = c.start(T0, &mut rng, &offer, terms).unwrap();
    let hold = p.handle(T0, &mut rng, &step.send[0].message.seal(c.identity()));
    let Message::Hold(mut h) = hold.send[0].message.clone() else { panic!("expected a hold") };
    let mut draft = ContractTerms::decode(&h.draft, &limits).unwrap();
    draft.site.country = fulcrum_protocol::offer::Country::parse("RU").unwrap();
    h.draft = draft.encode();
    let step = c.handle(T0, &mut rng, &Message::Hold(h).seal(p.identity()));
    assert!(step.persist.is_empty(), "nothing signed, nothing persisted");
    assert!(matches!(step.send.as_slice(), [o] if matches!(o.message, Message::Release(_))));
    assert!(step.events.iter().any(|e| matches!(e, Event::Failed { reason: FailReason::DraftMismatch(_), .. })));
}

/// A lost Terminate is sent again until the other side acknowledges it, also
/// after the sender restarts; the receiver records the termination once.
#[test]
fn lost_terminations_are_retried_until_acknowledged() {
    let mut w = World::new(17, 1, 4);
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    w.settle();
    assert_eq!(w.placed, 1);
    w.run(Op::Terminate(0));
    assert_eq!(w.net.len(), 1);
    w.net.clear(); // the Terminate is lost
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 2, "the provider has not heard of it");
    w.run(Op::CrashConsumer(0)); // and the consumer restarts before retrying
    w.run(Op::Advance(w.limits.reply_timeout_ms));
    assert_eq!(w.net.len(), 1, "the termination is sent again");
    w.settle();
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 0, "the provider freed the units");
    let terminations =
        |log: &[Vec<u8>]| decode_log(log).iter().filter(|r| matches!(r, Record::Termination { .. })).count();
    assert_eq!(terminations(&w.provider_log), 1);
    assert_eq!(terminations(&w.consumer_logs[0]), 1);
    w.run(Op::Advance(10 * w.limits.reply_timeout_ms));
    assert!(w.net.is_empty(), "acknowledged: nothing more is sent");
}

/// `poll_timeout` names the next instant `tick` has work: a hold's end for the
/// provider, a reply timeout for the consumer; nothing when idle.
#[test]
fn poll_timeout_names_the_next_due_instant() {
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    p.publish(offer_terms(OFFER, "DE", 4, 1_000_000), T0, HOUR_MS).unwrap();
    let mut c = Consumer::new(identity(20), FEDERATION, limits.clone());
    assert_eq!((p.poll_timeout(), c.poll_timeout()), (None, None));
    let offer = p.own_offers().next().unwrap().offer().clone();
    let (_, step) = c.start(T0, &mut rng, &offer, one_unit_terms()).unwrap();
    assert_eq!(c.poll_timeout(), Some(T0 + limits.reply_timeout_ms));
    p.handle(T0, &mut rng, &step.send[0].message.seal(c.identity()));
    assert_eq!(p.poll_timeout(), Some(T0 + limits.hold_ttl_ms));
    assert!(p.tick(T0 + limits.hold_ttl_ms - 1).events.is_empty(), "nothing is due before");
    assert!(!p.tick(T0 + limits.hold_ttl_ms).events.is_empty(), "the hold ends when due");
}

/// Explicit mode: the negotiation stops at the hold and reports it; nothing
/// is persisted or sent until the caller commits, and then the Pending record
/// comes before the Commit as always.
#[test]
fn a_hold_only_negotiation_waits_for_commit() {
    let mut w = World::new(19, 1, 4);
    w.run(Op::StartHeld { consumer: 0, units: 3 });
    w.deliver(0); // Propose -> Hold
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 3);
    let hold = w.net.remove(0);
    let envelope = Envelope::decode(&hold.bytes, usize::MAX).unwrap();
    let step = w.consumers[0].handle(w.now, &mut w.rng, &envelope);
    let (_, id) = w.explicit[0];
    assert!(step.persist.is_empty() && step.send.is_empty(), "a held negotiation does nothing by itself");
    assert!(matches!(step.events.as_slice(), [Event::Held { negotiation_id, .. }] if *negotiation_id == id));
    // A duplicate of the hold is neither released nor reported again.
    let again = w.consumers[0].handle(w.now, &mut w.rng, &envelope);
    assert!(again.is_empty(), "{again:?}");
    // Time passes (less than the hold's life): still held, nothing sent.
    w.run(Op::Advance(w.limits.reply_timeout_ms * 2));
    assert!(w.net.is_empty());
    let step = w.consumers[0].commit(w.now, &mut w.rng, id).expect("holding");
    assert!(matches!(step.persist.as_slice(), [Record::Pending { .. }]));
    assert!(w.consumers[0].commit(w.now, &mut w.rng, id).is_none(), "a second commit is refused");
    assert!(w.consumers[0].release(w.now, &mut w.rng, id).is_none(), "a commit sent cannot be released");
    w.apply(Who::Consumer(0), step);
    w.settle();
    assert_eq!(w.placed, 1);
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 3);
}

/// Releasing a held negotiation frees the provider's units at once, and a
/// lost Release is sent again until the provider acknowledges it.
#[test]
fn a_released_hold_frees_units_even_when_the_release_is_lost() {
    use fulcrum_protocol::messages::Message;
    let mut w = World::new(23, 1, 4);
    w.run(Op::StartHeld { consumer: 0, units: 4 });
    w.deliver(0); // Propose -> Hold
    w.deliver(0); // Hold -> Held
    let (_, id) = w.explicit[0];
    let step = w.consumers[0].release(w.now, &mut w.rng, id).expect("holding");
    assert!(matches!(step.send.as_slice(), [o] if matches!(o.message, Message::Release(_))));
    w.apply(Who::Consumer(0), step);
    w.net.clear(); // the Release is lost
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 4);
    assert!(w.consumers[0].commit(w.now, &mut w.rng, id).is_none(), "a released hold cannot be committed");
    w.run(Op::Advance(w.limits.reply_timeout_ms));
    assert_eq!(w.net.len(), 1, "the Release is sent again");
    w.deliver(0); // Release -> Released
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 0, "units are free before the hold would expire");
    w.deliver(0); // Released -> done
    assert_eq!(w.consumers[0].in_flight(), 0);
    assert!(w.failed.is_empty(), "a release is the caller's decision, not a failure");
}

/// A hold nobody commits fails the negotiation at `hold_until`; a proposal
/// given up before its hold arrives gets that hold released on arrival.
#[test]
fn unclaimed_holds_expire_and_late_holds_are_released() {
    use fulcrum_protocol::messages::Message;
    use fulcrum_protocol::negotiation::FailReason;
    let mut w = World::new(29, 1, 4);
    w.run(Op::StartHeld { consumer: 0, units: 1 });
    w.deliver(0);
    w.deliver(0);
    let (_, id) = w.explicit[0];
    w.now += w.limits.hold_ttl_ms;
    let step = w.consumers[0].tick(w.now, &mut w.rng);
    assert!(matches!(step.events.as_slice(), [Event::Failed { reason: FailReason::HoldExpired, .. }]));
    assert!(w.consumers[0].commit(w.now, &mut w.rng, id).is_none());
    w.tick();
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 0);

    w.run(Op::StartHeld { consumer: 0, units: 2 });
    let (_, late) = w.explicit[1];
    let step = w.consumers[0].release(w.now, &mut w.rng, late).expect("proposing");
    assert!(step.is_empty(), "no hold yet, nothing to release");
    w.deliver(0); // Propose -> Hold, for a negotiation the consumer gave up
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 2);
    let hold = w.net.remove(0);
    let step = w.consumers[0].handle(w.now, &mut w.rng, &Envelope::decode(&hold.bytes, usize::MAX).unwrap());
    assert!(matches!(step.send.as_slice(), [o] if matches!(o.message, Message::Release(_))));
    w.apply(Who::Consumer(0), step);
    w.deliver(0);
    assert_eq!(w.provider.usage(OFFER).unwrap().held, 0);
}

/// A Reject answering a duplicate of the proposal (the provider has no units
/// left once the first copy's hold is committed) must not end a negotiation
/// whose Commit is in flight: that Commit makes a contract.
#[test]
fn a_stale_reject_does_not_fail_a_committing_negotiation() {
    use fulcrum_protocol::messages::{Message, Reject, RejectCode};
    let mut w = World::new(31, 1, 2);
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    let propose = w.net[0].clone();
    w.deliver(0); // Propose -> Hold
    w.deliver(0); // Hold -> Commit in flight
    let Message::Propose(p) = Message::open(&Envelope::decode(&propose.bytes, usize::MAX).unwrap(), &w.limits).unwrap()
    else {
        panic!("expected the proposal")
    };
    let reject = Message::Reject(Reject {
        request_id: p.request_id,
        code: RejectCode::NoCapacity,
        message: "no units left".into(),
    })
    .seal(w.provider.identity());
    let step = w.consumers[0].handle(w.now, &mut w.rng, &reject);
    assert!(step.events.is_empty(), "{step:?}");
    w.settle();
    assert_eq!(w.placed, 1);
    assert!(w.failed.is_empty());
}

/// Expiry records in a log: (contract, when recorded).
fn expiries(log: &[Vec<u8>]) -> Vec<(ContractId, u64)> {
    decode_log(log)
        .into_iter()
        .filter_map(|r| match r {
            Record::Expiry { contract_id, at_ms } => Some((contract_id, at_ms)),
            _ => None,
        })
        .collect()
}

/// A contract ends at its end time on both sides, each with one expiry
/// record and event; a provider that was down at the end frees the units at
/// restore and records the expiry at its first tick; no restart or later
/// tick records it again, and the freed units can be sold again.
#[test]
fn contracts_expire_once_on_both_sides_and_free_their_units() {
    let mut w = World::new(13, 1, 2);
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    w.settle();
    assert_eq!(w.placed, 1);
    let id = *World::contracts_in(&w.provider_log).iter().next().unwrap();
    let end = decode_log(&w.provider_log)
        .iter()
        .find_map(|r| match r {
            Record::Contract { contract } => Some(contract.terms().end_ms),
            _ => None,
        })
        .unwrap();
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 2);

    // Just before the end nothing happens; the tick's deadline is the end.
    w.now = end - 1;
    w.tick();
    assert!(expiries(&w.provider_log).is_empty() && expiries(&w.consumer_logs[0]).is_empty());
    assert_eq!(w.provider.poll_timeout(), Some(end));
    assert_eq!(w.consumers[0].poll_timeout(), Some(end));

    // The consumer, up at the end, records it then.
    w.now = end;
    let step = w.consumers[0].tick(w.now, &mut w.rng);
    assert_eq!(step.persist, [Record::Expiry { contract_id: id, at_ms: end }]);
    assert!(step.events.contains(&Event::ContractEnded { contract_id: id, role: Role::Consumer }), "{step:?}");
    w.apply(Who::Consumer(0), step);

    // The provider was down: at restore the units are free at once, and
    // its first tick records the expiry, at that time.
    w.now = end + 3 * HOUR_MS;
    w.run(Op::CrashProvider);
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 0);
    assert_eq!(w.provider.poll_timeout(), Some(0), "the record is due at once");
    let step = w.provider.tick(w.now);
    assert_eq!(step.persist, [Record::Expiry { contract_id: id, at_ms: end + 3 * HOUR_MS }]);
    assert_eq!(step.events, [Event::ContractEnded { contract_id: id, role: Role::Provider }]);
    w.apply(Who::Provider, step);

    // Once: later ticks and restarts on both sides add nothing.
    for _ in 0..2 {
        w.now += HOUR_MS;
        w.run(Op::CrashProvider);
        w.run(Op::CrashConsumer(0));
        w.tick();
    }
    assert_eq!(expiries(&w.provider_log), [(id, end + 3 * HOUR_MS)]);
    assert_eq!(expiries(&w.consumer_logs[0]), [(id, end)]);
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 0);
    assert_eq!(w.consumers[0].active_contracts().count(), 0);
    // An ended contract cannot be terminated any more.
    assert!(w.consumers[0].terminate(w.now, &mut w.rng, id, TerminationReason::CustomerRequest).is_none());

    // The units are sold again.
    w.run(Op::Start { consumer: 0, units: 2, flexible: false });
    w.settle();
    assert_eq!(w.placed, 2);
    assert_eq!(w.provider.usage(OFFER).unwrap().committed, 2);
    w.check_safety();
}

/// One contract made between provider `p` and consumer `c`; returns the
/// records each side persisted on the way.
fn one_contract(p: &mut Provider, c: &mut Consumer, rng: &mut ChaCha8Rng) -> (ContractId, Vec<Record>, Vec<Record>) {
    let (commit, _) = until_commit(p, c, rng);
    let answer = p.handle(T0, rng, &commit.send[0].message.seal(c.identity()));
    let done = c.handle(T0, rng, &answer.send[0].message.seal(p.identity()));
    let contract_id = done
        .persist
        .iter()
        .find_map(|r| match r {
            Record::Contract { contract } => Some(contract.id()),
            _ => None,
        })
        .expect("the consumer records the countersigned contract");
    let consumer_log = commit.persist.into_iter().chain(done.persist).collect();
    (contract_id, answer.persist, consumer_log)
}

fn terminations(step: &Step) -> usize {
    step.persist.iter().filter(|r| matches!(r, Record::Termination { .. })).count()
}

/// After a party rotates its key, its messages about the contracts its old
/// key made come from the new key: the other party takes them once it has
/// learned the rotation, and refuses them as from a stranger before.
#[test]
fn a_rotated_party_still_speaks_for_its_old_contracts() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let limits = Limits::default();
    let mut p = Provider::new(identity(1), FEDERATION, limits.clone());
    let (_, published) = p.publish(offer_terms(OFFER, "DE", 4, 1_000_000), T0, 24 * HOUR_MS).unwrap();
    let mut c = Consumer::new(identity(10), FEDERATION, limits.clone());
    let (first, mut provider_log, mut consumer_log) = one_contract(&mut p, &mut c, &mut rng);
    let (second, more, more_c) = one_contract(&mut p, &mut c, &mut rng);
    provider_log.splice(0..0, published.persist);
    provider_log.extend(more);
    consumer_log.extend(more_c);

    // The consumer rotates (a restart under the new key) and terminates.
    let (old_c, new_c) = (identity(10).public(), identity(11).public());
    let mut c2 = Consumer::restore_with_keys(identity(11), &[old_c], FEDERATION, limits.clone(), &consumer_log, T0);
    let step = c2.terminate(T0 + 1, &mut rng, first, TerminationReason::CustomerRequest).unwrap();
    let terminate = step.send[0].message.seal(c2.identity());
    let refused = p.handle(T0 + 1, &mut rng, &terminate);
    assert_eq!(reject_code(&refused), Some(fulcrum_protocol::messages::RejectCode::NotAParty));
    assert_eq!(terminations(&refused), 0);
    p.follow_rotation(rotation(10, 11));
    let taken = p.handle(T0 + 1, &mut rng, &terminate);
    assert_eq!(terminations(&taken), 1, "the new key speaks for the old one");
    assert_eq!(taken.send[0].to, new_c, "the acknowledgement goes to the key in use");

    // The provider rotates and terminates the other contract.
    let (old_p, new_p) = (identity(1).public(), identity(2).public());
    let mut p2 = Provider::restore_with_keys(identity(2), &[old_p], FEDERATION, limits, &provider_log, T0);
    let step = p2.terminate(T0 + 2, &mut rng, second, TerminationReason::CustomerRequest).unwrap();
    let terminate = step.send[0].message.seal(p2.identity());
    let refused = c2.handle(T0 + 2, &mut rng, &terminate);
    assert_eq!(terminations(&refused), 0);
    c2.follow_rotation(rotation(1, 2));
    let taken = c2.handle(T0 + 2, &mut rng, &terminate);
    assert_eq!(terminations(&taken), 1);
    // The rotation goes into the log before the termination its new key
    // signed, once: the log alone shows who spoke for whom.
    assert!(matches!(&taken.persist[0], Record::Succession { rotation } if rotation.body().new_key == new_p));
    consumer_log.extend(taken.persist);
    // After a restart the log's succession record is enough: the repeated
    // Terminate is acknowledged, not refused, and nothing is logged twice.
    let mut c3 = Consumer::restore_with_keys(identity(11), &[old_c], FEDERATION, Limits::default(), &consumer_log, T0);
    let again = c3.handle(T0 + 3, &mut rng, &terminate);
    assert!(again.persist.is_empty());
    assert!(matches!(again.send[0].message, fulcrum_protocol::messages::Message::Terminated(_)), "{again:?}");
}

/// A rotation statement handing `old`'s identity (test key) to `new`'s.
fn rotation(old: u8, new: u8) -> fulcrum_protocol::rotation::KeyRotation {
    let body = fulcrum_protocol::rotation::RotationBody {
        federation: FEDERATION.into(),
        old_key: identity(old).public(),
        new_key: identity(new).public(),
        at_ms: T0,
        seq: 1,
        log_size: 0,
        log_root: fulcrum_protocol::merkle::empty_root(),
    };
    fulcrum_protocol::rotation::KeyRotation::sign(&identity(old), &identity(new), body).unwrap()
}
