//! The provider's side: own offers, holds with expiry, idempotent commit,
//! release, termination and status, over a [`CapacityLedger`]. Holds are
//! volatile (a crash frees them); contracts and offers are rebuilt from the
//! log with [`Provider::restore`].

use std::collections::{BTreeMap, HashMap};

use rand_core::RngCore;

use super::outbox::TerminationOutbox;
use super::{Event, HoldEnd, Role, Step, Successors};
use crate::contract::{ContractTerms, SignedContract};
use crate::envelope::Envelope;
use crate::ids::{ContractId, HoldId, NegotiationId, RequestId};
use crate::keys::{Identity, PublicKey};
use crate::ledger::{CapacityLedger, LedgerError, Usage};
use crate::limits::Limits;
use crate::messages::{
    Commit, ContractState, Counter, Countersigned, Hold, Message, Propose, Reject, RejectCode, Release, Released,
    StatusRequest, StatusResponse, StatusTarget, Terminate, Terminated, TerminationReason,
};
use crate::offer::{Offer, OfferError, SignedOffer};
use crate::record::Record;
use crate::rotation::KeyRotation;

#[derive(Debug, Clone)]
struct LiveHold {
    consumer: PublicKey,
    negotiation_id: NegotiationId,
    round: u32,
    offer_id: String,
    units: u32,
    unit_price: crate::offer::Price,
    hold_until_ms: u64,
    draft: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Active,
    Terminated,
    Ended,
}

#[derive(Debug, Clone)]
struct Held {
    contract: SignedContract,
    state: Lifecycle,
}

/// The provider engine.
#[derive(Debug)]
pub struct Provider {
    identity: Identity,
    federation: String,
    limits: Limits,
    offers: BTreeMap<String, SignedOffer>,
    ledger: CapacityLedger,
    holds: HashMap<HoldId, LiveHold>,
    holds_by_negotiation: HashMap<(PublicKey, NegotiationId), HoldId>,
    holds_per_consumer: HashMap<PublicKey, usize>,
    contracts: HashMap<ContractId, Held>,
    contract_by_hold: HashMap<HoldId, ContractId>,
    terminations: TerminationOutbox,
    /// Consumers' keys that took over from the keys their contracts name.
    successors: Successors,
    accepting: bool,
    /// Contracts found ended at restore whose expiry the log does not hold
    /// yet: the next tick records them.
    unrecorded_ends: Vec<ContractId>,
}

impl Provider {
    /// A provider with no offers and an empty log.
    pub fn new(identity: Identity, federation: &str, limits: Limits) -> Provider {
        Provider {
            identity,
            federation: federation.to_owned(),
            limits,
            offers: BTreeMap::new(),
            ledger: CapacityLedger::default(),
            holds: HashMap::new(),
            holds_by_negotiation: HashMap::new(),
            holds_per_consumer: HashMap::new(),
            contracts: HashMap::new(),
            contract_by_hold: HashMap::new(),
            terminations: TerminationOutbox::default(),
            successors: Successors::default(),
            accepting: true,
            unrecorded_ends: Vec::new(),
        }
    }

    /// Rebuilds the durable state from the log (in log order). Holds are not
    /// in the log: a crash releases them, which can only free capacity.
    /// Contracts whose end passed while the node was down end here, freeing
    /// their units; the next [`Provider::tick`] records their expiry.
    pub fn restore<'a>(
        identity: Identity,
        federation: &str,
        limits: Limits,
        records: impl IntoIterator<Item = &'a Record>,
        now_ms: u64,
    ) -> Provider {
        Provider::restore_with_keys(identity, &[], federation, limits, records, now_ms)
    }

    /// [`Provider::restore`] for a node that rotated its key away from
    /// `previous`: the contracts those keys made stay this provider's (their
    /// units stay committed, their terminations are still answered), while
    /// their offers are retired with them and not restored.
    pub fn restore_with_keys<'a>(
        identity: Identity,
        previous: &[PublicKey],
        federation: &str,
        limits: Limits,
        records: impl IntoIterator<Item = &'a Record>,
        now_ms: u64,
    ) -> Provider {
        let mut p = Provider::new(identity, federation, limits);
        let me = p.identity.public();
        let mine = |key: &PublicKey| *key == me || previous.contains(key);
        for record in records {
            match record {
                Record::Offer { envelope } if envelope.signer() == me => {
                    if let Ok(signed) = SignedOffer::from_envelope(envelope.clone(), &p.limits) {
                        p.install_offer(signed);
                    }
                }
                Record::Contract { contract } if mine(&contract.terms().provider) => {
                    let id = contract.id();
                    if p.contracts.contains_key(&id) {
                        continue;
                    }
                    p.contract_by_hold.insert(contract.terms().hold_id, id);
                    p.ledger.restore_committed(&contract.terms().offer_id, contract.terms().units);
                    p.contracts.insert(id, Held { contract: contract.clone(), state: Lifecycle::Active });
                }
                Record::Termination { contract_id, envelope } => {
                    p.finish(*contract_id, Lifecycle::Terminated);
                    // Our own termination may never have reached the consumer.
                    if mine(&envelope.signer())
                        && let Some(held) = p.contracts.get(contract_id)
                    {
                        let t = held.contract.terms();
                        let (to, end_ms) = (t.consumer, t.end_ms);
                        p.terminations.restore(envelope, to, end_ms, &p.limits);
                    }
                }
                Record::Succession { rotation } => {
                    p.successors.restore(rotation);
                }
                Record::Expiry { contract_id, .. } => {
                    p.finish(*contract_id, Lifecycle::Ended);
                }
                _ => {}
            }
        }
        // Contracts whose end passed while the node was down: their units
        // are free now, and the next tick records their expiry.
        p.unrecorded_ends = p.end_due_contracts(now_ms);
        p
    }

    /// This provider's key.
    pub fn public(&self) -> PublicKey {
        self.identity.public()
    }

    /// The identity, for sealing outgoing messages.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn install_offer(&mut self, signed: SignedOffer) {
        let offer = signed.offer();
        if let Some(current) = self.offers.get(&offer.offer_id)
            && current.offer().seq >= offer.seq
        {
            return;
        }
        self.ledger.set_capacity(&offer.offer_id, offer.units_available);
        self.offers.insert(offer.offer_id.clone(), signed);
    }

    /// Publishes (or replaces) an own offer. The caller fills in the terms;
    /// provider, federation, seq and lifetime are set here. The record must be
    /// durable before the offer is gossiped.
    pub fn publish(&mut self, mut terms: Offer, now_ms: u64, ttl_ms: u64) -> Result<(SignedOffer, Step), OfferError> {
        terms.provider = self.public();
        terms.federation = self.federation.clone();
        terms.seq = self.offers.get(&terms.offer_id).map_or(1, |o| o.offer().seq + 1);
        terms.issued_at_ms = now_ms;
        terms.expires_at_ms = now_ms.saturating_add(ttl_ms);
        // One validator for all offers, ours included.
        let checked = Offer::from_wire(terms.to_wire(), &self.limits)?;
        let signed = checked.sign(&self.identity);
        self.install_offer(signed.clone());
        let step = Step { persist: vec![Record::Offer { envelope: signed.envelope().clone() }], ..Step::default() };
        Ok((signed, step))
    }

    /// Withdraws an own offer (units 0, higher seq). Contracts stay.
    pub fn withdraw(&mut self, offer_id: &str, now_ms: u64, ttl_ms: u64) -> Result<(SignedOffer, Step), OfferError> {
        let mut terms =
            self.offers.get(offer_id).ok_or(OfferError::Missing("offer (no such own offer)"))?.offer().clone();
        terms.units_available = 0;
        self.publish(terms, now_ms, ttl_ms)
    }

    /// Own offers that expire within half their lifetime, re-signed with a
    /// higher seq so peers never see them lapse.
    pub fn reannounce(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<(SignedOffer, Step)> {
        let due: Vec<Offer> = self
            .offers
            .values()
            .map(SignedOffer::offer)
            .filter(|o| !o.is_withdrawal() && o.expires_at_ms.saturating_sub(now_ms) <= ttl_ms / 2)
            .cloned()
            .collect();
        due.into_iter().filter_map(|o| self.publish(o, now_ms, ttl_ms).ok()).collect()
    }

    /// The current version of every own offer.
    pub fn own_offers(&self) -> impl Iterator<Item = &SignedOffer> {
        self.offers.values()
    }

    /// Capacity usage of one own offer.
    pub fn usage(&self, offer_id: &str) -> Option<Usage> {
        self.ledger.usage(offer_id)
    }

    /// Number of live holds.
    pub fn live_holds(&self) -> usize {
        self.holds.len()
    }

    /// Stops granting holds (shutdown); commits of live holds still complete.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// The earliest time at which [`Provider::tick`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let holds = self.holds.values().map(|h| h.hold_until_ms);
        let ends = self.contracts.values().filter(|h| h.state == Lifecycle::Active).map(|h| h.contract.terms().end_ms);
        let unrecorded = (!self.unrecorded_ends.is_empty()).then_some(0);
        holds.chain(ends).chain(unrecorded).min()
    }

    /// Expires holds and ends contracts that are due: each ended contract
    /// gets one [`Record::Expiry`] to persist and an [`Event::ContractEnded`].
    pub fn tick(&mut self, now_ms: u64) -> Step {
        let mut step = Step::default();
        let due: Vec<HoldId> =
            self.holds.iter().filter(|(_, h)| h.hold_until_ms <= now_ms).map(|(id, _)| *id).collect();
        for hold_id in due {
            self.drop_hold(hold_id);
            step.events.push(Event::HoldEnded { hold_id, how: HoldEnd::Expired });
        }
        let mut ended = std::mem::take(&mut self.unrecorded_ends);
        ended.extend(self.end_due_contracts(now_ms));
        for contract_id in ended {
            step.persist.push(Record::Expiry { contract_id, at_ms: now_ms });
            step.events.push(Event::ContractEnded { contract_id, role: Role::Provider });
        }
        step.send.extend(self.terminations.due(now_ms, &self.limits));
        step
    }

    /// Ends the active contracts whose end time has passed, freeing their
    /// units; returns them in the order they ended, for their expiry records.
    fn end_due_contracts(&mut self, now_ms: u64) -> Vec<ContractId> {
        let mut due: Vec<(u64, ContractId)> = self
            .contracts
            .iter()
            .filter(|(_, h)| h.state == Lifecycle::Active && h.contract.terms().end_ms <= now_ms)
            .map(|(id, h)| (h.contract.terms().end_ms, *id))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).filter(|id| self.finish(*id, Lifecycle::Ended)).collect()
    }

    /// Moves an active contract to a final state and frees its units.
    fn finish(&mut self, id: ContractId, state: Lifecycle) -> bool {
        let Some(held) = self.contracts.get_mut(&id) else {
            return false;
        };
        if held.state != Lifecycle::Active {
            return false;
        }
        held.state = state;
        let t = held.contract.terms();
        self.ledger.end(&t.offer_id, t.units);
        true
    }

    fn drop_hold(&mut self, hold_id: HoldId) -> Option<LiveHold> {
        let hold = self.holds.remove(&hold_id)?;
        self.ledger.release(&hold.offer_id, hold.units);
        self.holds_by_negotiation.remove(&(hold.consumer, hold.negotiation_id));
        if let Some(n) = self.holds_per_consumer.get_mut(&hold.consumer) {
            *n -= 1;
            if *n == 0 {
                self.holds_per_consumer.remove(&hold.consumer);
            }
        }
        Some(hold)
    }

    /// Handles one verified envelope from a peer.
    pub fn handle<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, envelope: &Envelope) -> Step {
        let from = envelope.signer();
        let msg = match Message::open(envelope, &self.limits) {
            Ok(m) => m,
            Err(e) => return reject(from, RequestId([0; 16]), RejectCode::Malformed, e.to_string()),
        };
        let request_id = msg.request_id();
        let mut step = match msg {
            Message::Propose(p) => self.on_propose(now_ms, rng, from, p),
            Message::Commit(c) => self.on_commit(now_ms, from, c),
            Message::Release(r) => self.on_release(from, r),
            Message::StatusRequest(s) => self.on_status(from, s),
            Message::Terminate(t) => self.on_terminate(from, t, envelope),
            // Answers to a Terminate this provider sent: nothing more to do.
            Message::Terminated(t) => {
                self.terminations.acknowledged(&t.contract_id);
                Step::default()
            }
            Message::Reject(_) => Step::default(),
            other => {
                reject(from, request_id, RejectCode::Malformed, format!("a provider does not accept {}", other.kind()))
            }
        };
        if let Some(Message::Reject(r)) = step.send.first().map(|o| &o.message)
            && r.request_id == request_id
        {
            let code = r.code;
            step.events.push(Event::ProposalRejected { consumer: from, code });
        }
        step
    }

    fn on_propose<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, from: PublicKey, p: Propose) -> Step {
        let rid = p.request_id;
        if p.consumer != from || p.provider != self.public() {
            return reject(from, rid, RejectCode::NotAParty, "proposal is not between the signer and this provider");
        }
        if !self.accepting {
            return reject(from, rid, RejectCode::ShuttingDown, "provider is shutting down");
        }
        if p.expires_at_ms <= now_ms {
            return reject(from, rid, RejectCode::Expired, "proposal expired");
        }
        if p.round > self.limits.max_counter_rounds {
            return reject(from, rid, RejectCode::TooManyRounds, "too many counter rounds");
        }
        // One hold per negotiation: a duplicate of the proposal that holds
        // gets the same hold; a stale round is refused; a newer round
        // replaces the hold.
        let mut replaced = None;
        if let Some(hold_id) = self.holds_by_negotiation.get(&(from, p.negotiation_id)).copied()
            && let Some(h) = self.holds.get(&hold_id)
        {
            if p.round == h.round {
                return reply(
                    from,
                    Message::Hold(Hold {
                        request_id: rid,
                        hold_id,
                        unit_price: h.unit_price,
                        hold_until_ms: h.hold_until_ms,
                        draft: h.draft.clone(),
                    }),
                );
            }
            if p.round < h.round {
                return reject(from, rid, RejectCode::Malformed, "a later round of this negotiation holds already");
            }
            self.drop_hold(hold_id);
            replaced = Some(hold_id);
        }
        let mut step = self.grant(now_ms, rng, from, p);
        if let Some(hold_id) = replaced {
            step.events.push(Event::HoldEnded { hold_id, how: HoldEnd::Released });
        }
        step
    }

    fn grant<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, from: PublicKey, p: Propose) -> Step {
        let rid = p.request_id;
        let Some(offer) = self.offers.get(&p.offer_id).map(|s| s.offer().clone()) else {
            return reject(from, rid, RejectCode::UnknownOffer, "no such offer");
        };
        if offer.is_withdrawal() {
            return reject(from, rid, RejectCode::OfferWithdrawn, "offer withdrawn");
        }
        if p.offer_seq > offer.seq {
            return reject(from, rid, RejectCode::StaleOffer, "offer seq was never issued");
        }
        if p.units == 0 || p.units > self.limits.max_units {
            return reject(from, rid, RejectCode::Malformed, "units out of range");
        }
        if p.duration_ms < offer.min_duration_ms || p.duration_ms > offer.max_duration_ms {
            return reject(from, rid, RejectCode::Duration, "duration outside the offer's range");
        }
        let consumer_holds = self.holds_per_consumer.get(&from).copied().unwrap_or(0);
        if consumer_holds >= self.limits.max_holds_per_peer || self.holds.len() >= self.limits.max_holds_total {
            return reject(from, rid, RejectCode::TooManyHolds, "too many live holds");
        }
        let rounds_left = p.round < self.limits.max_counter_rounds;
        let price = offer.unit_price_per_hour;
        if p.max_unit_price.currency != price.currency || p.max_unit_price.micros < price.micros {
            if rounds_left && p.max_unit_price.currency == price.currency {
                return reply(
                    from,
                    Message::Counter(Counter {
                        request_id: rid,
                        negotiation_id: p.negotiation_id,
                        units: None,
                        unit_price: Some(price),
                    }),
                );
            }
            return reject(from, rid, RejectCode::Price, format!("unit price is {price}"));
        }
        if let Err(e) = self.ledger.try_hold(&offer.offer_id, p.units) {
            return match e {
                LedgerError::NoCapacity { free } if free > 0 && rounds_left => reply(
                    from,
                    Message::Counter(Counter {
                        request_id: rid,
                        negotiation_id: p.negotiation_id,
                        units: Some(free),
                        unit_price: None,
                    }),
                ),
                e => reject(from, rid, RejectCode::NoCapacity, e.to_string()),
            };
        }
        // Units are held from here on; every path below must keep or drop the hold.
        let start_ms = p.start_ms.max(now_ms);
        // A contract starting far in the future would lock units for years,
        // and an end past u64 would never end.
        let Some(end_ms) = start_ms.checked_add(p.duration_ms) else {
            self.ledger.release(&offer.offer_id, p.units);
            return reject(from, rid, RejectCode::Malformed, "contract end overflows");
        };
        if start_ms > now_ms.saturating_add(self.limits.max_start_lead_ms) {
            self.ledger.release(&offer.offer_id, p.units);
            return reject(from, rid, RejectCode::Policy, "start is too far in the future");
        }
        let hold_id = HoldId::random(rng);
        let hold_until_ms = now_ms.saturating_add(self.limits.hold_ttl_ms).min(p.expires_at_ms);
        let draft = ContractTerms {
            federation: self.federation.clone(),
            provider: self.public(),
            consumer: from,
            offer_id: offer.offer_id.clone(),
            offer_seq: offer.seq,
            hold_id,
            negotiation_id: p.negotiation_id,
            site: offer.site.clone(),
            flavour: offer.flavour.clone(),
            units: p.units,
            unit_price_per_hour: price,
            start_ms,
            end_ms,
            created_at_ms: now_ms,
        }
        .encode();
        self.holds.insert(
            hold_id,
            LiveHold {
                consumer: from,
                negotiation_id: p.negotiation_id,
                round: p.round,
                offer_id: offer.offer_id.clone(),
                units: p.units,
                unit_price: price,
                hold_until_ms,
                draft: draft.clone(),
            },
        );
        self.holds_by_negotiation.insert((from, p.negotiation_id), hold_id);
        *self.holds_per_consumer.entry(from).or_insert(0) += 1;
        let mut step =
            reply(from, Message::Hold(Hold { request_id: rid, hold_id, unit_price: price, hold_until_ms, draft }));
        step.events.push(Event::HoldGranted {
            hold_id,
            consumer: from,
            offer_id: offer.offer_id,
            units: p.units,
            hold_until_ms,
        });
        step
    }

    fn on_commit(&mut self, now_ms: u64, from: PublicKey, c: Commit) -> Step {
        let rid = c.request_id;
        let terms = c.contract.terms();
        if terms.consumer != from || terms.provider != self.public() || terms.hold_id != c.hold_id {
            return reject(from, rid, RejectCode::NotAParty, "contract is not between the signer and this provider");
        }
        let id = c.contract.id();
        // Idempotent: the same commit again gets the same countersigned contract.
        if let Some(held) = self.contracts.get(&id) {
            return reply(
                from,
                Message::Countersigned(Countersigned { request_id: rid, contract: held.contract.clone() }),
            );
        }
        let Some(hold) = self.holds.get(&c.hold_id) else {
            return reject(from, rid, RejectCode::UnknownHold, "no live hold with this id");
        };
        if hold.consumer != from {
            return reject(from, rid, RejectCode::NotAParty, "hold belongs to another consumer");
        }
        if hold.hold_until_ms <= now_ms {
            self.drop_hold(c.hold_id);
            let mut step = reject(from, rid, RejectCode::HoldExpired, "hold expired");
            step.events.push(Event::HoldEnded { hold_id: c.hold_id, how: HoldEnd::Expired });
            return step;
        }
        if hold.draft != c.contract.body() {
            return reject(from, rid, RejectCode::DraftMismatch, "contract differs from the draft");
        }
        let signed = match c.contract.countersign(&self.identity) {
            Ok(s) => s,
            Err(e) => return reject(from, rid, RejectCode::NotAParty, e.to_string()),
        };
        let Some(hold) = self.holds.remove(&c.hold_id) else {
            return reject(from, rid, RejectCode::UnknownHold, "no live hold with this id");
        };
        self.holds_by_negotiation.remove(&(hold.consumer, hold.negotiation_id));
        if let Some(n) = self.holds_per_consumer.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.holds_per_consumer.remove(&from);
            }
        }
        self.ledger.commit(&hold.offer_id, hold.units);
        self.contract_by_hold.insert(c.hold_id, id);
        self.contracts.insert(id, Held { contract: signed.clone(), state: Lifecycle::Active });
        Step {
            persist: vec![Record::Contract { contract: signed.clone() }],
            send: vec![super::Outgoing {
                to: from,
                message: Message::Countersigned(Countersigned { request_id: rid, contract: signed }),
            }],
            events: vec![
                Event::HoldEnded { hold_id: c.hold_id, how: HoldEnd::Committed },
                Event::ContractActive { contract_id: id, role: Role::Provider },
            ],
        }
    }

    fn on_release(&mut self, from: PublicKey, r: Release) -> Step {
        let mut step = reply(from, Message::Released(Released { request_id: r.request_id, hold_id: r.hold_id }));
        if self.holds.get(&r.hold_id).is_some_and(|h| h.consumer == from) {
            self.drop_hold(r.hold_id);
            step.events.push(Event::HoldEnded { hold_id: r.hold_id, how: HoldEnd::Released });
        }
        step
    }

    fn on_status(&self, from: PublicKey, s: StatusRequest) -> Step {
        let rid = s.request_id;
        let contract_state = |id: &ContractId| {
            self.contracts.get(id).map(|h| {
                let state = match h.state {
                    Lifecycle::Active => ContractState::Active,
                    Lifecycle::Terminated => ContractState::Terminated,
                    Lifecycle::Ended => ContractState::Ended,
                };
                (state, h.contract.clone())
            })
        };
        let (state, contract, hold_until_ms) = match s.target {
            StatusTarget::Contract(id) => match contract_state(&id) {
                Some((state, c)) => (state, Some(c), 0),
                None => (ContractState::Unknown, None, 0),
            },
            StatusTarget::Hold(hold_id) => match self.holds.get(&hold_id) {
                Some(h) if h.consumer == from => (ContractState::Held, None, h.hold_until_ms),
                _ => match self.contract_by_hold.get(&hold_id).and_then(contract_state) {
                    Some((state, c)) => (state, Some(c), 0),
                    None => (ContractState::Unknown, None, 0),
                },
            },
        };
        if let Some(c) = &contract
            && !self.successors.speaks_for(&c.terms().consumer, &from)
        {
            return reject(from, rid, RejectCode::NotAParty, "not a party to this contract");
        }
        reply(from, Message::StatusResponse(StatusResponse { request_id: rid, state, contract, hold_until_ms }))
    }

    fn on_terminate(&mut self, from: PublicKey, t: Terminate, envelope: &Envelope) -> Step {
        let Some(held) = self.contracts.get(&t.contract_id) else {
            return reject(from, t.request_id, RejectCode::UnknownContract, "no such contract");
        };
        if !self.successors.speaks_for(&held.contract.terms().consumer, &from) {
            return reject(from, t.request_id, RejectCode::NotAParty, "not a party to this contract");
        }
        let ack =
            Message::Terminated(Terminated { request_id: t.request_id, contract_id: t.contract_id, at_ms: t.at_ms });
        if held.state != Lifecycle::Active {
            return reply(from, ack);
        }
        let consumer = held.contract.terms().consumer;
        self.finish(t.contract_id, Lifecycle::Terminated);
        let mut step = reply(from, ack);
        step.persist = self.successors.records(&consumer, &from);
        step.persist.push(Record::Termination { contract_id: t.contract_id, envelope: envelope.clone() });
        step.events.push(Event::ContractTerminated {
            contract_id: t.contract_id,
            reason: t.reason,
            role: Role::Provider,
        });
        step
    }

    /// A consumer rotated its key (`rotation`, already checked): messages from the new key
    /// about the contracts `old` made (status, termination) are its own.
    pub fn follow_rotation(&mut self, rotation: KeyRotation) {
        self.successors.insert(rotation);
    }

    /// Ends a contract early from the provider's side. Persist the returned
    /// record, then send the Terminate.
    pub fn terminate<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        contract_id: ContractId,
        reason: TerminationReason,
    ) -> Option<Step> {
        let terms = self.contracts.get(&contract_id)?.contract.terms();
        let (consumer, end_ms) = (terms.consumer, terms.end_ms);
        if !self.finish(contract_id, Lifecycle::Terminated) {
            return None;
        }
        let message = Message::Terminate(Terminate {
            request_id: RequestId::random(rng),
            contract_id,
            reason,
            at_ms: now_ms,
            sender: self.public(),
        });
        let envelope = message.seal(&self.identity);
        self.terminations.sent(contract_id, consumer, message.clone(), end_ms, now_ms);
        Some(Step {
            persist: vec![Record::Termination { contract_id, envelope }],
            send: vec![super::Outgoing { to: consumer, message }],
            events: vec![Event::ContractTerminated { contract_id, reason, role: Role::Provider }],
        })
    }
}

fn reply(to: PublicKey, message: Message) -> Step {
    let mut step = Step::default();
    step.send(to, message);
    step
}

fn reject(to: PublicKey, request_id: RequestId, code: RejectCode, message: impl Into<String>) -> Step {
    reply(to, Message::Reject(Reject { request_id, code, message: message.into() }))
}
