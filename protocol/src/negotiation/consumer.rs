//! The consumer's side: propose, follow counters within the caller's limits,
//! check the draft, sign and commit, and reconcile by Status after a timeout
//! or a crash. A negotiation that has sent a Commit never "fails" on a timer:
//! only the provider's definitive answer (countersigned, or the hold is gone)
//! ends it, so both sides always reach the same answer.
//!
//! A negotiation started with [`Consumer::start_hold`] stops at the hold
//! ([`Event::Held`]) until the caller decides: [`Consumer::commit`] or
//! [`Consumer::release`]. Composite placements use it to commit only once
//! every provider holds its part.

use std::collections::HashMap;

use rand_core::RngCore;

use super::outbox::TerminationOutbox;
use super::{Event, Outgoing, Role, Step, Successors};
use crate::contract::{ContractTerms, SignedContract};
use crate::envelope::Envelope;
use crate::ids::{ContractId, HoldId, NegotiationId, RequestId};
use crate::keys::{Identity, PublicKey};
use crate::limits::Limits;
use crate::messages::{
    Commit, ContractState, Counter, Hold, Message, Propose, Reject, RejectCode, Release, StatusRequest, StatusResponse,
    StatusTarget, Terminate, Terminated, TerminationReason,
};
use crate::offer::{Flavour, Offer, Price, Site};
use crate::record::Record;
use crate::rotation::KeyRotation;

/// What the consumer wants from one offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceTerms {
    /// Units wanted.
    pub units: u32,
    /// Fewest units acceptable after a counter (equal to `units` for all-or-nothing).
    pub min_units: u32,
    /// Highest acceptable unit price per hour.
    pub max_unit_price: Price,
    /// Wanted start, Unix ms (the provider starts no earlier than its now).
    pub start_ms: u64,
    /// Wanted duration, ms.
    pub duration_ms: u64,
    /// Give up proposing after this time, Unix ms.
    pub deadline_ms: u64,
}

/// Why a negotiation could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// Too many negotiations in flight.
    #[error("too many negotiations in flight ({0})")]
    TooManyNegotiations(usize),
    /// The offer is a withdrawal.
    #[error("offer is withdrawn")]
    OfferWithdrawn,
    /// The offer costs more than the limit.
    #[error("offer price {offer} is above the limit {limit}")]
    PriceAboveLimit {
        /// Offer price.
        offer: Price,
        /// Limit.
        limit: Price,
    },
    /// Units are zero, or min above units.
    #[error("invalid units: want {units}, accept at least {min_units}")]
    BadUnits {
        /// Wanted.
        units: u32,
        /// Minimum.
        min_units: u32,
    },
    /// A node cannot buy from itself.
    #[error("cannot place on this node's own offer")]
    OwnOffer,
}

/// Why a negotiation ended without a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The provider refused.
    Rejected(RejectCode, String),
    /// The provider's counter is outside the consumer's limits.
    CounterOutOfLimits,
    /// The counter rounds ran out.
    TooManyRounds,
    /// The draft does not match what was asked.
    DraftMismatch(String),
    /// No hold was granted before the deadline.
    Deadline,
    /// The hold is gone at the provider: the commit will never happen.
    HoldLost,
    /// A hold kept for [`Consumer::commit`] reached its `hold_until` first.
    HoldExpired,
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Rejected(code, message) => {
                let name = code.as_str_name();
                let name = name.strip_prefix("REJECT_CODE_").unwrap_or(name).to_ascii_lowercase().replace('_', "-");
                write!(f, "rejected ({name}): {message}")
            }
            FailReason::CounterOutOfLimits => f.write_str("countered outside the request's limits"),
            FailReason::TooManyRounds => f.write_str("too many counter rounds"),
            FailReason::DraftMismatch(why) => write!(f, "draft refused: {why}"),
            FailReason::Deadline => f.write_str("no hold before the deadline"),
            FailReason::HoldLost => f.write_str("the hold is gone at the provider"),
            FailReason::HoldExpired => f.write_str("the hold expired before the commit"),
        }
    }
}

/// When a granted hold is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitMode {
    /// At once, as soon as a hold with a good draft arrives.
    OnHold,
    /// When the caller says so ([`Consumer::commit`]).
    Explicit,
}

#[derive(Debug, Clone)]
enum Phase {
    Proposing {
        propose: Propose,
        sent_at_ms: u64,
    },
    /// Explicit mode: a hold with a good draft, signed by us but not sent.
    Held {
        hold_id: HoldId,
        contract: Box<SignedContract>,
        hold_until_ms: u64,
    },
    /// Explicit mode: the caller let the hold go; the Release is sent again
    /// until the provider acknowledges it, the hold would have expired, or
    /// `max_status_attempts` sends went unanswered.
    Releasing {
        hold_id: HoldId,
        release: Release,
        hold_until_ms: u64,
        sent_at_ms: u64,
        attempts: u32,
    },
    Committing {
        hold_id: HoldId,
        contract: Box<SignedContract>,
        /// Last Commit or StatusRequest sent.
        sent_at_ms: u64,
        /// Last Commit sent: a provider saying "held" gets the Commit again
        /// at most once per reply timeout.
        commit_sent_ms: u64,
        /// Status questions asked without an answer that settles it.
        attempts: u32,
    },
}

/// Request ids of one phase whose answers are still accepted; older ones are
/// forgotten, so a negotiation's state stays bounded whatever a peer does.
const MAX_CURRENT_REQUESTS: usize = 4;

#[derive(Debug, Clone)]
struct Negotiation {
    provider: PublicKey,
    terms: PlaceTerms,
    mode: CommitMode,
    phase: Phase,
    /// Where and what the chosen offer was: the draft must match it.
    site: Site,
    flavour: Flavour,
    /// The request ids whose answers the current phase accepts (at most
    /// [`MAX_CURRENT_REQUESTS`]). Answers to older requests (a duplicate of
    /// an earlier proposal, say) are stale and must not move the negotiation.
    current: Vec<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Active,
    Terminated,
    Ended,
}

/// The consumer engine.
#[derive(Debug)]
pub struct Consumer {
    identity: Identity,
    federation: String,
    limits: Limits,
    negotiations: HashMap<NegotiationId, Negotiation>,
    by_request: HashMap<RequestId, NegotiationId>,
    contracts: HashMap<ContractId, (SignedContract, Lifecycle)>,
    terminations: TerminationOutbox,
    /// The keys this node had before its key in use (key rotation).
    previous: Vec<PublicKey>,
    /// Providers' keys that took over from the keys their contracts name.
    successors: Successors,
    /// Contracts found ended at restore whose expiry the log does not hold
    /// yet: the next tick records them.
    unrecorded_ends: Vec<ContractId>,
}

impl Consumer {
    /// A consumer with an empty log.
    pub fn new(identity: Identity, federation: &str, limits: Limits) -> Consumer {
        Consumer {
            identity,
            federation: federation.to_owned(),
            limits,
            negotiations: HashMap::new(),
            by_request: HashMap::new(),
            contracts: HashMap::new(),
            terminations: TerminationOutbox::default(),
            previous: Vec::new(),
            successors: Successors::default(),
            unrecorded_ends: Vec::new(),
        }
    }

    /// Rebuilds from the log. Pending contracts with no outcome become
    /// negotiations that ask the provider for their status at the next tick;
    /// contracts whose end passed while the node was down end, and the next
    /// tick records their expiry.
    pub fn restore<'a>(
        identity: Identity,
        federation: &str,
        limits: Limits,
        records: impl IntoIterator<Item = &'a Record>,
        now_ms: u64,
    ) -> Consumer {
        Consumer::restore_with_keys(identity, &[], federation, limits, records, now_ms)
    }

    /// [`Consumer::restore`] for a node that rotated its key away from
    /// `previous`: the contracts those keys bought stay this consumer's.
    pub fn restore_with_keys<'a>(
        identity: Identity,
        previous: &[PublicKey],
        federation: &str,
        limits: Limits,
        records: impl IntoIterator<Item = &'a Record>,
        now_ms: u64,
    ) -> Consumer {
        let mut c = Consumer::new(identity, federation, limits);
        c.previous = previous.to_vec();
        let me = c.identity.public();
        let mine = |key: &PublicKey| *key == me || previous.contains(key);
        let mut pending: HashMap<ContractId, SignedContract> = HashMap::new();
        for record in records {
            match record {
                Record::Pending { contract } if mine(&contract.terms().consumer) => {
                    pending.insert(contract.id(), contract.clone());
                }
                Record::Abandoned { contract_id } => {
                    pending.remove(contract_id);
                }
                Record::Contract { contract } if mine(&contract.terms().consumer) => {
                    pending.remove(&contract.id());
                    c.contracts.insert(contract.id(), (contract.clone(), Lifecycle::Active));
                }
                Record::Termination { contract_id, envelope } => {
                    if let Some((contract, state)) = c.contracts.get_mut(contract_id) {
                        *state = Lifecycle::Terminated;
                        // Our own termination may never have reached the provider.
                        if mine(&envelope.signer()) {
                            let t = contract.terms();
                            c.terminations.restore(envelope, t.provider, t.end_ms, &c.limits);
                        }
                    }
                }
                Record::Succession { rotation } => {
                    c.successors.restore(rotation);
                }
                Record::Expiry { contract_id, .. } => {
                    if let Some((_, state)) = c.contracts.get_mut(contract_id)
                        && *state == Lifecycle::Active
                    {
                        *state = Lifecycle::Ended;
                    }
                }
                _ => {}
            }
        }
        // Contracts whose end passed while the node was down end here; the
        // next tick records their expiry.
        c.unrecorded_ends = c.end_due_contracts(now_ms);
        for (_, contract) in pending {
            let t = contract.terms();
            let terms = PlaceTerms {
                units: t.units,
                min_units: t.units,
                max_unit_price: t.unit_price_per_hour,
                start_ms: t.start_ms,
                duration_ms: t.end_ms - t.start_ms,
                deadline_ms: now_ms,
            };
            c.negotiations.insert(
                t.negotiation_id,
                Negotiation {
                    provider: t.provider,
                    terms,
                    mode: CommitMode::OnHold,
                    site: t.site.clone(),
                    flavour: t.flavour.clone(),
                    phase: Phase::Committing {
                        hold_id: t.hold_id,
                        contract: Box::new(contract),
                        // Due at once: ask for the outcome on the first tick.
                        sent_at_ms: 0,
                        commit_sent_ms: 0,
                        attempts: 0,
                    },
                    current: Vec::new(),
                },
            );
        }
        c
    }

    /// This consumer's key.
    pub fn public(&self) -> PublicKey {
        self.identity.public()
    }

    /// The identity, for sealing outgoing messages.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Negotiations in flight.
    pub fn in_flight(&self) -> usize {
        self.negotiations.len()
    }

    /// Active contracts this node bought.
    pub fn active_contracts(&self) -> impl Iterator<Item = (&ContractId, &SignedContract)> {
        self.contracts.iter().filter(|(_, (_, s))| *s == Lifecycle::Active).map(|(id, (c, _))| (id, c))
    }

    /// A contract this node holds as consumer.
    pub fn contract(&self, id: &ContractId) -> Option<&SignedContract> {
        self.contracts.get(id).map(|(c, _)| c)
    }

    /// True while a Commit of this contract waits for the provider's answer
    /// (after a restart too: pending records become such negotiations).
    pub fn awaiting(&self, id: &ContractId) -> bool {
        self.negotiations
            .values()
            .any(|n| matches!(&n.phase, Phase::Committing { contract, .. } if contract.id() == *id))
    }

    /// Starts a negotiation for `terms.units` of `offer` that commits as
    /// soon as a hold is granted.
    pub fn start<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        offer: &Offer,
        terms: PlaceTerms,
    ) -> Result<(NegotiationId, Step), ConsumerError> {
        self.begin(now_ms, rng, offer, terms, CommitMode::OnHold)
    }

    /// Starts a negotiation for `terms.units` of `offer` that stops at the
    /// hold: [`Event::Held`] reports it, and nothing is committed until
    /// [`Consumer::commit`]. A hold neither committed nor released fails the
    /// negotiation with [`FailReason::HoldExpired`] at its `hold_until`.
    pub fn start_hold<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        offer: &Offer,
        terms: PlaceTerms,
    ) -> Result<(NegotiationId, Step), ConsumerError> {
        self.begin(now_ms, rng, offer, terms, CommitMode::Explicit)
    }

    fn begin<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        offer: &Offer,
        terms: PlaceTerms,
        mode: CommitMode,
    ) -> Result<(NegotiationId, Step), ConsumerError> {
        // Only proposals count: a negotiation waiting for its commit's outcome
        // cannot be dropped (both sides must reach the same answer) and must
        // not block new placements while an unreachable provider is down.
        let proposing = self.negotiations.values().filter(|n| matches!(n.phase, Phase::Proposing { .. })).count();
        if proposing >= self.limits.max_negotiations {
            return Err(ConsumerError::TooManyNegotiations(self.limits.max_negotiations));
        }
        if offer.provider == self.public() {
            return Err(ConsumerError::OwnOffer);
        }
        if offer.is_withdrawal() {
            return Err(ConsumerError::OfferWithdrawn);
        }
        if terms.units == 0 || terms.min_units == 0 || terms.min_units > terms.units {
            return Err(ConsumerError::BadUnits { units: terms.units, min_units: terms.min_units });
        }
        let price = offer.unit_price_per_hour;
        if price.currency != terms.max_unit_price.currency || price.micros > terms.max_unit_price.micros {
            return Err(ConsumerError::PriceAboveLimit { offer: price, limit: terms.max_unit_price });
        }
        let negotiation_id = NegotiationId::random(rng);
        // Bid the advertised price: a provider that has raised it since will
        // counter, and we accept up to our own limit.
        let propose = Propose {
            request_id: RequestId::random(rng),
            negotiation_id,
            round: 0,
            consumer: self.public(),
            provider: offer.provider,
            offer_id: offer.offer_id.clone(),
            offer_seq: offer.seq,
            units: terms.units,
            max_unit_price: price,
            start_ms: terms.start_ms,
            duration_ms: terms.duration_ms,
            expires_at_ms: terms.deadline_ms.saturating_add(self.limits.hold_ttl_ms),
        };
        self.by_request.insert(propose.request_id, negotiation_id);
        let mut step = Step::default();
        step.send(offer.provider, Message::Propose(propose.clone()));
        self.negotiations.insert(
            negotiation_id,
            Negotiation {
                provider: offer.provider,
                terms,
                mode,
                site: offer.site.clone(),
                flavour: offer.flavour.clone(),
                current: vec![propose.request_id],
                phase: Phase::Proposing { propose, sent_at_ms: now_ms },
            },
        );
        Ok((negotiation_id, step))
    }

    /// Handles one verified envelope from a peer.
    pub fn handle<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, envelope: &Envelope) -> Step {
        let from = envelope.signer();
        let Ok(msg) = Message::open(envelope, &self.limits) else {
            // A malformed answer is treated as no answer: the timer retries.
            return Step::default();
        };
        match msg {
            Message::Hold(h) => self.on_hold(now_ms, rng, from, h),
            Message::Counter(c) => self.on_counter(now_ms, rng, from, c),
            Message::Reject(r) => self.on_reject(from, r),
            Message::Countersigned(c) => self.accept_countersigned(from, c.contract),
            Message::StatusResponse(s) => self.on_status(now_ms, rng, from, s),
            Message::Terminate(t) => self.on_terminate(from, t, envelope),
            Message::Terminated(t) => {
                self.terminations.acknowledged(&t.contract_id);
                Step::default()
            }
            Message::Released(r) => {
                if let Some(id) = self.negotiation_for(from, r.request_id)
                    && matches!(self.negotiations[&id].phase, Phase::Releasing { hold_id, .. } if hold_id == r.hold_id)
                {
                    return self.released(id);
                }
                Step::default()
            }
            Message::Propose(p) => reject_step(from, p.request_id, "a consumer does not accept proposals"),
            Message::Commit(c) => reject_step(from, c.request_id, "a consumer does not accept commits"),
            Message::Release(r) => reject_step(from, r.request_id, "a consumer holds nothing to release"),
            Message::StatusRequest(s) => reject_step(from, s.request_id, "ask the provider for status"),
        }
    }

    fn negotiation_for(&self, from: PublicKey, request_id: RequestId) -> Option<NegotiationId> {
        let id = self.by_request.get(&request_id)?;
        let n = self.negotiations.get(id)?;
        (self.successors.speaks_for(&n.provider, &from) && n.current.contains(&request_id)).then_some(*id)
    }

    /// True when some negotiation has moved past proposing with this hold.
    fn owns_hold(&self, hold_id: HoldId) -> bool {
        self.negotiations.values().any(|n| match &n.phase {
            Phase::Proposing { .. } => false,
            Phase::Held { hold_id: h, .. }
            | Phase::Releasing { hold_id: h, .. }
            | Phase::Committing { hold_id: h, .. } => *h == hold_id,
        })
    }

    fn on_hold<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, from: PublicKey, h: Hold) -> Step {
        let proposing = self.negotiation_for(from, h.request_id).and_then(|id| {
            let n = self.negotiations.get(&id)?;
            match &n.phase {
                Phase::Proposing { propose, .. } => Some((id, propose.clone())),
                Phase::Held { .. } | Phase::Releasing { .. } | Phase::Committing { .. } => None,
            }
        });
        let Some((id, propose)) = proposing else {
            // A hold we no longer want (late, or for an earlier round, or of a
            // finished negotiation): free it now instead of letting it expire.
            // A duplicate of the hold we keep, release or commit is ignored.
            if self.owns_hold(h.hold_id) {
                return Step::default();
            }
            let mut step = Step::default();
            step.send(from, Message::Release(Release { request_id: RequestId::random(rng), hold_id: h.hold_id }));
            return step;
        };
        let terms = self.negotiations[&id].terms;
        let checked = ContractTerms::decode(&h.draft, &self.limits).map_err(|e| e.to_string()).and_then(|draft| {
            self.check_draft(now_ms, &draft, &propose, &terms, &self.negotiations[&id], h.hold_id).map(|()| draft)
        });
        let contract = checked.and_then(|_| {
            SignedContract::sign_as_consumer(&self.identity, h.draft.clone(), &self.limits).map_err(|e| e.to_string())
        });
        let contract = match contract {
            Ok(c) => c,
            Err(why) => {
                let mut step = self.fail(id, FailReason::DraftMismatch(why));
                step.send(from, Message::Release(Release { request_id: RequestId::random(rng), hold_id: h.hold_id }));
                return step;
            }
        };
        if self.negotiations[&id].mode == CommitMode::Explicit {
            // Answers to the proposals are stale from here on: nothing but
            // the caller moves a held negotiation.
            self.enter_phase(id, None);
            if let Some(n) = self.negotiations.get_mut(&id) {
                n.phase = Phase::Held {
                    hold_id: h.hold_id,
                    contract: Box::new(contract.clone()),
                    hold_until_ms: h.hold_until_ms,
                };
            }
            let held = Event::Held {
                negotiation_id: id,
                hold_id: h.hold_id,
                hold_until_ms: h.hold_until_ms,
                contract_id: contract.id(),
            };
            return Step { events: vec![held], ..Step::default() };
        }
        self.send_commit(now_ms, rng, id, from, h.hold_id, contract)
    }

    /// Enters the commit phase: the Pending record first, then the Commit.
    fn send_commit<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        id: NegotiationId,
        to: PublicKey,
        hold_id: HoldId,
        contract: SignedContract,
    ) -> Step {
        let request_id = RequestId::random(rng);
        // Only answers to the Commit (and later Status questions) count now:
        // a Reject of a duplicated proposal must not end a negotiation whose
        // Commit may still make a contract.
        self.enter_phase(id, Some(request_id));
        if let Some(n) = self.negotiations.get_mut(&id) {
            n.phase = Phase::Committing {
                hold_id,
                contract: Box::new(contract.clone()),
                sent_at_ms: now_ms,
                commit_sent_ms: now_ms,
                attempts: 0,
            };
        }
        Step {
            persist: vec![Record::Pending { contract: contract.clone() }],
            send: vec![Outgoing { to, message: Message::Commit(Commit { request_id, hold_id, contract }) }],
            events: Vec::new(),
        }
    }

    /// Commits a negotiation started with [`Consumer::start_hold`] whose
    /// hold was reported by [`Event::Held`]. The Pending record in the step
    /// must be durable before the Commit is sent. None when the negotiation
    /// is not holding (unknown, ended, still proposing or already committing).
    pub fn commit<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, id: NegotiationId) -> Option<Step> {
        let n = self.negotiations.get(&id)?;
        let Phase::Held { hold_id, contract, hold_until_ms } = &n.phase else {
            return None;
        };
        if now_ms >= *hold_until_ms {
            return None;
        }
        let (provider, hold_id, contract) = (n.provider, *hold_id, (**contract).clone());
        Some(self.send_commit(now_ms, rng, id, provider, hold_id, contract))
    }

    /// Gives up a negotiation that has not committed: a granted hold is
    /// released (the Release is sent again until acknowledged or the hold
    /// expires; [`Event::Released`] follows then), a proposal is abandoned at
    /// once, with no event (a hold granted for it later is released on
    /// arrival). None when the negotiation is unknown or committing: a Commit
    /// sent can only end by the provider's answer.
    pub fn release<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, id: NegotiationId) -> Option<Step> {
        let n = self.negotiations.get(&id)?;
        match &n.phase {
            Phase::Committing { .. } => None,
            Phase::Releasing { .. } => Some(Step::default()),
            Phase::Proposing { .. } => {
                self.forget(id);
                Some(Step::default())
            }
            Phase::Held { hold_id, hold_until_ms, .. } => {
                let (provider, hold_id, hold_until_ms) = (n.provider, *hold_id, *hold_until_ms);
                let release = Release { request_id: RequestId::random(rng), hold_id };
                self.enter_phase(id, Some(release.request_id));
                if let Some(n) = self.negotiations.get_mut(&id) {
                    n.phase = Phase::Releasing {
                        hold_id,
                        release: release.clone(),
                        hold_until_ms,
                        sent_at_ms: now_ms,
                        attempts: 1,
                    };
                }
                let mut step = Step::default();
                step.send(provider, Message::Release(release));
                Some(step)
            }
        }
    }

    fn check_draft(
        &self,
        now_ms: u64,
        d: &ContractTerms,
        p: &Propose,
        terms: &PlaceTerms,
        n: &Negotiation,
        hold_id: HoldId,
    ) -> Result<(), String> {
        // The provider starts no earlier than asked and no later than its own
        // now; a start further out would lock our money to a far future date.
        let latest_start = p.start_ms.max(now_ms).saturating_add(self.limits.max_clock_skew_ms);
        let checks: [(bool, &str); 14] = [
            (d.site == n.site, "site"),
            (d.flavour == n.flavour, "flavour"),
            (d.offer_seq >= p.offer_seq, "offer seq"),
            (d.start_ms <= latest_start, "start (too late)"),
            (d.federation == self.federation, "federation"),
            (d.consumer == self.public(), "consumer"),
            (d.provider == p.provider, "provider"),
            (d.negotiation_id == p.negotiation_id, "negotiation id"),
            (d.hold_id == hold_id, "hold id"),
            (d.offer_id == p.offer_id, "offer id"),
            (d.units == p.units, "units"),
            (
                d.unit_price_per_hour.currency == terms.max_unit_price.currency
                    && d.unit_price_per_hour.micros <= terms.max_unit_price.micros,
                "price",
            ),
            (d.end_ms.checked_sub(d.start_ms) == Some(p.duration_ms), "duration"),
            (d.start_ms >= p.start_ms, "start"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(format!("draft {what} differs from the proposal")),
            None => Ok(()),
        }
    }

    fn on_counter<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, from: PublicKey, c: Counter) -> Step {
        let Some(id) = self.negotiation_for(from, c.request_id) else {
            return Step::default();
        };
        let Some(Phase::Proposing { propose, .. }) = self.negotiations.get(&id).map(|n| n.phase.clone()) else {
            return Step::default();
        };
        let terms = self.negotiations[&id].terms;
        if propose.round + 1 > self.limits.max_counter_rounds {
            return self.fail(id, FailReason::TooManyRounds);
        }
        let units = c.units.unwrap_or(propose.units);
        let price = c.unit_price.unwrap_or(propose.max_unit_price);
        let acceptable = units >= terms.min_units
            && units <= propose.units
            && price.currency == terms.max_unit_price.currency
            && price.micros <= terms.max_unit_price.micros;
        if !acceptable {
            return self.fail(id, FailReason::CounterOutOfLimits);
        }
        let next = Propose {
            request_id: RequestId::random(rng),
            round: propose.round + 1,
            units,
            max_unit_price: price,
            ..propose
        };
        self.enter_phase(id, Some(next.request_id));
        let mut step = Step::default();
        step.send(from, Message::Propose(next.clone()));
        if let Some(n) = self.negotiations.get_mut(&id) {
            n.phase = Phase::Proposing { propose: next, sent_at_ms: now_ms };
        }
        step
    }

    fn on_reject(&mut self, from: PublicKey, r: Reject) -> Step {
        let Some(id) = self.negotiation_for(from, r.request_id) else {
            return Step::default();
        };
        // A reject of a Commit is definitive too: the provider creates a
        // contract only on the success path, and answers a repeated Commit of
        // an existing contract with the contract.
        self.fail(id, FailReason::Rejected(r.code, r.message))
    }

    /// Takes a countersigned contract naming this node as consumer. Accepted
    /// even without a matching negotiation (a late answer after a crash): it
    /// carries our own signature, so it binds us and must be in our log.
    fn accept_countersigned(&mut self, from: PublicKey, contract: SignedContract) -> Step {
        let t = contract.terms();
        let mine = t.consumer == self.public() || self.previous.contains(&t.consumer);
        if !self.successors.speaks_for(&t.provider, &from) || !mine || !contract.is_countersigned() {
            return Step::default();
        }
        let id = contract.id();
        if self.contracts.contains_key(&id) {
            return Step::default();
        }
        let negotiation_id = t.negotiation_id;
        // Only the contract we signed for this negotiation closes it.
        let ours = match self.negotiations.get(&negotiation_id).map(|n| &n.phase) {
            Some(Phase::Committing { contract: c, .. }) => c.id() == id,
            _ => false,
        };
        if ours {
            self.forget(negotiation_id);
        }
        self.contracts.insert(id, (contract.clone(), Lifecycle::Active));
        let mut events = vec![Event::ContractActive { contract_id: id, role: Role::Consumer }];
        if ours {
            events.push(Event::Placed { negotiation_id, contract_id: id });
        }
        Step { persist: vec![Record::Contract { contract }], send: Vec::new(), events }
    }

    fn on_status<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, from: PublicKey, s: StatusResponse) -> Step {
        let Some(id) = self.negotiation_for(from, s.request_id) else {
            return Step::default();
        };
        let Some(Phase::Committing { hold_id, contract, commit_sent_ms, attempts, .. }) =
            self.negotiations.get(&id).map(|n| n.phase.clone())
        else {
            return Step::default();
        };
        match (s.state, s.contract) {
            (ContractState::Active | ContractState::Terminated | ContractState::Ended, Some(c))
                if c.id() == contract.id() =>
            {
                self.accept_countersigned(from, c)
            }
            (ContractState::Held, _) => {
                // The hold is alive and our Commit was lost: send it again, at
                // most once per reply timeout whatever the provider says.
                if now_ms < commit_sent_ms.saturating_add(self.limits.reply_timeout_ms) {
                    return Step::default();
                }
                let request_id = RequestId::random(rng);
                self.track(id, request_id);
                if let Some(n) = self.negotiations.get_mut(&id) {
                    n.phase = Phase::Committing {
                        hold_id,
                        contract: contract.clone(),
                        sent_at_ms: now_ms,
                        commit_sent_ms: now_ms,
                        attempts,
                    };
                }
                let mut step = Step::default();
                step.send(from, Message::Commit(Commit { request_id, hold_id, contract: *contract }));
                step
            }
            (ContractState::Unknown, _) => {
                let mut step = self.fail(id, FailReason::HoldLost);
                step.persist.push(Record::Abandoned { contract_id: contract.id() });
                step
            }
            // Anything else (a contract that is not ours) is no answer.
            _ => Step::default(),
        }
    }

    fn on_terminate(&mut self, from: PublicKey, t: Terminate, envelope: &Envelope) -> Step {
        let Some((contract, state)) = self.contracts.get_mut(&t.contract_id) else {
            let mut step = Step::default();
            step.send(
                from,
                Message::Reject(Reject {
                    request_id: t.request_id,
                    code: RejectCode::UnknownContract,
                    message: "no such contract".into(),
                }),
            );
            return step;
        };
        if !self.successors.speaks_for(&contract.terms().provider, &from) {
            return reject_step(from, t.request_id, "not a party to this contract");
        }
        let mut step = Step::default();
        if *state == Lifecycle::Active {
            *state = Lifecycle::Terminated;
            step.persist = self.successors.records(&contract.terms().provider, &from);
            step.persist.push(Record::Termination { contract_id: t.contract_id, envelope: envelope.clone() });
            step.events.push(Event::ContractTerminated {
                contract_id: t.contract_id,
                reason: t.reason,
                role: Role::Consumer,
            });
        }
        step.send(
            from,
            Message::Terminated(Terminated { request_id: t.request_id, contract_id: t.contract_id, at_ms: t.at_ms }),
        );
        step
    }

    /// A provider rotated its key (`rotation`, already checked): messages from the new key
    /// about the contracts `old` made (commits, status, termination) are its
    /// own.
    pub fn follow_rotation(&mut self, rotation: KeyRotation) {
        self.successors.insert(rotation);
    }

    /// Ends a contract early from the consumer's side: persist, then send.
    pub fn terminate<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        contract_id: ContractId,
        reason: TerminationReason,
    ) -> Option<Step> {
        let (contract, state) = self.contracts.get_mut(&contract_id)?;
        if *state != Lifecycle::Active {
            return None;
        }
        *state = Lifecycle::Terminated;
        let (provider, end_ms) = (contract.terms().provider, contract.terms().end_ms);
        let message = Message::Terminate(Terminate {
            request_id: RequestId::random(rng),
            contract_id,
            reason,
            at_ms: now_ms,
            sender: self.public(),
        });
        let envelope = message.seal(&self.identity);
        self.terminations.sent(contract_id, provider, message.clone(), end_ms, now_ms);
        Some(Step {
            persist: vec![Record::Termination { contract_id, envelope }],
            send: vec![Outgoing { to: provider, message }],
            events: vec![Event::ContractTerminated { contract_id, reason, role: Role::Consumer }],
        })
    }

    /// The earliest time at which [`Consumer::tick`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timeout = self.limits.reply_timeout_ms;
        self.negotiations
            .values()
            .map(|n| match &n.phase {
                Phase::Proposing { sent_at_ms, .. } => (sent_at_ms + timeout).min(n.terms.deadline_ms),
                Phase::Held { hold_until_ms, .. } => *hold_until_ms,
                Phase::Releasing { hold_until_ms, sent_at_ms, .. } => (sent_at_ms + timeout).min(*hold_until_ms),
                Phase::Committing { sent_at_ms, attempts, .. } => sent_at_ms + self.status_backoff(*attempts),
            })
            .chain(self.contracts.values().filter(|(_, s)| *s == Lifecycle::Active).map(|(c, _)| c.terms().end_ms))
            .chain((!self.unrecorded_ends.is_empty()).then_some(0))
            .min()
    }

    /// Retries, reconciles and gives up on what is due; ends contracts whose
    /// end time has passed, each with one [`Record::Expiry`] to persist and
    /// an [`Event::ContractEnded`].
    pub fn tick<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Step {
        let mut step = Step::default();
        let timeout = self.limits.reply_timeout_ms;
        let ids: Vec<NegotiationId> = self.negotiations.keys().copied().collect();
        for id in ids {
            let Some(n) = self.negotiations.get(&id) else { continue };
            let provider = n.provider;
            match n.phase.clone() {
                Phase::Proposing { .. } if now_ms >= n.terms.deadline_ms => {
                    step.extend(self.fail(id, FailReason::Deadline));
                }
                Phase::Proposing { propose, sent_at_ms } if now_ms >= sent_at_ms + timeout => {
                    // The provider keeps one hold per negotiation, so sending
                    // the same proposal again is safe.
                    step.send(provider, Message::Propose(propose.clone()));
                    if let Some(n) = self.negotiations.get_mut(&id) {
                        n.phase = Phase::Proposing { propose, sent_at_ms: now_ms };
                    }
                }
                Phase::Held { hold_until_ms, .. } if now_ms >= hold_until_ms => {
                    // The provider has let it go by now; nothing to send.
                    step.extend(self.fail(id, FailReason::HoldExpired));
                }
                // Expired at the provider by now, or the provider is away:
                // either way the hold is not ours any more.
                Phase::Releasing { hold_until_ms, attempts, .. }
                    if now_ms >= hold_until_ms || attempts >= self.limits.max_status_attempts =>
                {
                    step.extend(self.released(id));
                }
                Phase::Releasing { hold_id, release, hold_until_ms, sent_at_ms, attempts }
                    if now_ms >= sent_at_ms + timeout =>
                {
                    step.send(provider, Message::Release(release.clone()));
                    if let Some(n) = self.negotiations.get_mut(&id) {
                        n.phase = Phase::Releasing {
                            hold_id,
                            release,
                            hold_until_ms,
                            sent_at_ms: now_ms,
                            attempts: attempts.saturating_add(1),
                        };
                    }
                }
                Phase::Committing { hold_id, contract, sent_at_ms, commit_sent_ms, attempts }
                    if now_ms >= sent_at_ms + self.status_backoff(attempts) =>
                {
                    let request_id = RequestId::random(rng);
                    self.track(id, request_id);
                    // Ask by hold: "unknown" then means the hold is gone and
                    // no contract was made from it, which is final. (By
                    // contract id it could still mean "Commit not arrived yet".)
                    step.send(
                        provider,
                        Message::StatusRequest(StatusRequest { request_id, target: StatusTarget::Hold(hold_id) }),
                    );
                    if let Some(n) = self.negotiations.get_mut(&id) {
                        n.phase = Phase::Committing {
                            hold_id,
                            contract,
                            sent_at_ms: now_ms,
                            commit_sent_ms,
                            attempts: attempts.saturating_add(1),
                        };
                    }
                }
                _ => {}
            }
        }
        let mut ended = std::mem::take(&mut self.unrecorded_ends);
        ended.extend(self.end_due_contracts(now_ms));
        for contract_id in ended {
            step.persist.push(Record::Expiry { contract_id, at_ms: now_ms });
            step.events.push(Event::ContractEnded { contract_id, role: Role::Consumer });
        }
        step.send.extend(self.terminations.due(now_ms, &self.limits));
        step
    }

    /// Ends the active contracts whose end time has passed; returns them in
    /// the order they ended, for their expiry records.
    fn end_due_contracts(&mut self, now_ms: u64) -> Vec<ContractId> {
        let mut due: Vec<(u64, ContractId)> = self
            .contracts
            .iter()
            .filter(|(_, (c, state))| *state == Lifecycle::Active && c.terms().end_ms <= now_ms)
            .map(|(id, (c, _))| (c.terms().end_ms, *id))
            .collect();
        due.sort_unstable();
        for (_, id) in &due {
            if let Some((_, state)) = self.contracts.get_mut(id) {
                *state = Lifecycle::Ended;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// How long to wait before asking a silent provider again: the reply
    /// timeout for the first `max_status_attempts` questions, then doubling
    /// up to 64 times that, so an unreachable provider costs little.
    fn status_backoff(&self, attempts: u32) -> u64 {
        let extra = attempts.saturating_sub(self.limits.max_status_attempts).min(6);
        self.limits.reply_timeout_ms << extra
    }

    /// Adds a request whose answer the current phase accepts; the oldest is
    /// forgotten beyond [`MAX_CURRENT_REQUESTS`].
    fn track(&mut self, id: NegotiationId, request_id: RequestId) {
        let Some(n) = self.negotiations.get_mut(&id) else { return };
        self.by_request.insert(request_id, id);
        n.current.push(request_id);
        if n.current.len() > MAX_CURRENT_REQUESTS {
            let old = n.current.remove(0);
            self.by_request.remove(&old);
        }
    }

    /// Starts a new phase: answers to earlier requests become stale.
    fn enter_phase(&mut self, id: NegotiationId, request_id: Option<RequestId>) {
        if let Some(n) = self.negotiations.get_mut(&id) {
            for old in n.current.drain(..) {
                self.by_request.remove(&old);
            }
        }
        if let Some(request_id) = request_id {
            self.track(id, request_id);
        }
    }

    fn forget(&mut self, id: NegotiationId) {
        if let Some(n) = self.negotiations.remove(&id) {
            for r in n.current {
                self.by_request.remove(&r);
            }
        }
    }

    /// Request ids this consumer still accepts answers for (bounded).
    pub fn tracked_requests(&self) -> usize {
        self.by_request.len()
    }

    fn released(&mut self, id: NegotiationId) -> Step {
        self.forget(id);
        Step { events: vec![Event::Released { negotiation_id: id }], ..Step::default() }
    }

    fn fail(&mut self, id: NegotiationId, reason: FailReason) -> Step {
        self.forget(id);
        Step { events: vec![Event::Failed { negotiation_id: id, reason }], ..Step::default() }
    }
}

fn reject_step(to: PublicKey, request_id: RequestId, message: &str) -> Step {
    let mut step = Step::default();
    step.send(to, Message::Reject(Reject { request_id, code: RejectCode::Malformed, message: message.into() }));
    step
}
