//! Composite placement: one request, several providers, all or nothing. The
//! [`Coordinator`] runs each placement as a two-phase commit over the
//! consumer engine, and its [`PlacementRecord`]s in the consumer's log say
//! how every placement ended.
//!
//! # Semantics
//!
//! 1. **Plan.** The [`planner`] picks the cheapest set of offers in the local
//!    book that fits the [`PlacementTerms`] (this node's own offers left out).
//! 2. **Hold.** Every chosen offer gets a proposal at once, in explicit
//!    commit mode ([`Consumer::start_hold`]). Counters within the request's
//!    limits (a price up to the maximum unit price, never fewer units) are
//!    accepted by the engine. Each proposal has a slice of the deadline.
//! 3. **Retry.** When any proposal fails (a rejection, a counter outside the
//!    limits, no answer in its slice, a hold that expired) every other hold
//!    is released, the failed offer is excluded, and the placement plans
//!    again, until the deadline. Proposals of the abandoned attempt still
//!    unanswered are waited for first (a hold they bring is released at
//!    once, and waited for until the release is acknowledged), so that the
//!    next attempt never competes with its own holds.
//!    Every attempt excludes at least one offer, so attempts are bounded by
//!    the book.
//! 4. **Commit.** Once every hold is granted, a `committing` record naming
//!    every contract about to be committed is made durable together with
//!    the engine's Pending records, and then all Commits are sent. From here
//!    on nothing is retried: a Commit can only end by the provider's answer.
//! 5. **Outcome.** Every provider countersigned: the placement is
//!    `complete`. Some did and another refused (its hold expired, say):
//!    the contracts obtained are terminated with reason
//!    `placement-incomplete` and the placement is `partial-repaired` (or
//!    `failed` when nothing was obtained). An answer still missing
//!    [`COMMIT_GRACE_FACTOR`] reply timeouts after the deadline counts as a
//!    refusal; the record lists that commit as *unresolved*, and if the
//!    provider did countersign it (it may have, then become unreachable),
//!    the contract is terminated with the same reason when it reaches us.
//! 6. **Crash.** A placement whose last record is `committing` when the node
//!    starts was interrupted: everything it obtained (or obtains later) is
//!    terminated with `placement-incomplete`, and a final record says so.
//!
//! What "all or nothing" guarantees: a placement reported `complete` holds
//! one active contract per allocation of a plan that met every constraint
//! and the spread policy; any other outcome leaves no contract of it active
//! once the unreachable providers come back. What it cannot guarantee: that
//! a provider which countersigned and then became unreachable learns of the
//! termination before it comes back; until then it keeps the units (and the
//! termination is retried until it acknowledges).

use std::collections::{BTreeSet, HashMap, HashSet};

use fulcrum_proto::v1 as wire;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::book::OfferBook;
use crate::ids::{ContractId, NegotiationId, PlacementId};
use crate::keys::PublicKey;
use crate::limits::Limits;
use crate::matching::{Constraints, Spread};
use crate::messages::TerminationReason;
use crate::negotiation::{Consumer, Event, PlaceTerms, Role, Step};
use crate::offer::{Country, OfferKey, Price, Resources, price_to_wire, resources_to_wire};
use crate::planner::{self, Allocation, NoPlan, Plan, PlanRequest};
use crate::record::Record;

/// Commits may be answered this many reply timeouts after the deadline.
pub const COMMIT_GRACE_FACTOR: u64 = 4;
/// Failures remembered per placement for its explanation.
const MAX_FAILURES_KEPT: usize = 16;
/// Longest explanation kept in a record, in bytes.
const MAX_REASON_BYTES: usize = 2_048;

/// What a placement asks for; kept in its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTerms {
    /// Replicas.
    pub units: u32,
    /// How replicas are spread.
    pub spread: Spread,
    /// Resources per unit, at least.
    pub min_per_unit: Resources,
    /// Allowed countries; empty allows every country.
    pub countries: BTreeSet<Country>,
    /// Required labels.
    pub labels: BTreeSet<String>,
    /// Whether the labels must be attested by the provider's certificate.
    pub attested_labels: bool,
    /// Lowest acceptable SLA, permille.
    pub min_sla_permille: u32,
    /// Highest acceptable unit price per hour (also the limit for counters).
    pub max_unit_price: Option<Price>,
    /// Contract start, Unix ms.
    pub start_ms: u64,
    /// Contract duration, ms.
    pub duration_ms: u64,
}

impl PlacementTerms {
    /// The planner's request, with nothing excluded.
    pub fn plan_request(&self) -> PlanRequest {
        let constraints = Constraints {
            min_per_unit: self.min_per_unit.clone(),
            countries: self.countries.clone(),
            labels: self.labels.clone(),
            attested_labels: self.attested_labels,
            max_unit_price: self.max_unit_price,
            min_sla_permille: self.min_sla_permille,
            duration_ms: Some(self.duration_ms),
            min_units: 1,
        };
        PlanRequest::new(self.units, constraints, self.spread)
    }

    /// The admin API's view.
    pub fn to_wire(&self) -> wire::PlacementTerms {
        wire::PlacementTerms {
            units: self.units,
            spread: spread_to_wire(self.spread) as i32,
            min_per_unit: Some(resources_to_wire(&self.min_per_unit)),
            countries: self.countries.iter().map(|c| c.as_str().to_owned()).collect(),
            labels: self.labels.iter().cloned().collect(),
            attested_labels: self.attested_labels,
            min_sla_permille: self.min_sla_permille,
            max_unit_price: self.max_unit_price.as_ref().map(price_to_wire),
            start_ms: self.start_ms,
            duration_ms: self.duration_ms,
        }
    }
}

/// The wire form of a spread policy.
pub fn spread_to_wire(spread: Spread) -> wire::Spread {
    match spread {
        Spread::None => wire::Spread::None,
        Spread::Providers => wire::Spread::Providers,
        Spread::Countries => wire::Spread::Countries,
    }
}

/// The spread policy of a wire value (unknown values spread nothing).
pub fn spread_from_wire(spread: i32) -> Spread {
    match wire::Spread::try_from(spread) {
        Ok(wire::Spread::Providers) => Spread::Providers,
        Ok(wire::Spread::Countries) => Spread::Countries,
        Ok(wire::Spread::None) | Err(_) => Spread::None,
    }
}

/// The admin API's view of one allocation of a plan.
pub fn allocation_to_wire(a: &Allocation) -> wire::PlannedAllocation {
    let offer = a.offer.to_wire();
    wire::PlannedAllocation {
        provider: offer.provider,
        offer_id: offer.offer_id,
        offer_seq: offer.seq,
        site: offer.site,
        units: a.units,
        unit_price: Some(price_to_wire(&a.unit_price)),
    }
}

/// Where a placement stands, as its records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementState {
    /// Every hold was granted; the Commits are about to be sent.
    Committing,
    /// One active contract per allocation.
    Complete,
    /// No contract was obtained (and none will stay).
    Failed,
    /// Some contracts were obtained and then terminated with reason
    /// `placement-incomplete`.
    PartialRepaired,
}

impl PlacementState {
    /// `complete`, `partial-repaired`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementState::Committing => "committing",
            PlacementState::Complete => "complete",
            PlacementState::Failed => "failed",
            PlacementState::PartialRepaired => "partial-repaired",
        }
    }

    /// True for the states that end a placement.
    pub fn is_final(self) -> bool {
        self != PlacementState::Committing
    }
}

/// A placement's record in the consumer's log. The last record of an id is
/// its state. It carries no signature: it binds no one but this node, and
/// every contract it names is a signed record of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// The placement.
    pub id: PlacementId,
    /// Where it stands.
    pub state: PlacementState,
    /// What was asked.
    pub terms: PlacementTerms,
    /// `committing`: the contracts whose Commits follow; `complete`: its
    /// contracts; `partial-repaired`: the contracts obtained and terminated;
    /// `failed`: none. Every contract of a final record is earlier in the log.
    pub contracts: Vec<ContractId>,
    /// Commits with no answer when the placement ended: if any of them
    /// turns into a contract, it is terminated with `placement-incomplete`.
    pub unresolved: Vec<ContractId>,
    /// Plans tried.
    pub attempts: u32,
    /// Why it is not complete (empty when it is).
    pub reason: String,
    /// When the placement started, Unix ms.
    pub started_at_ms: u64,
    /// When this record was written, Unix ms.
    pub at_ms: u64,
}

/// What the caller must do after a [`Coordinator`] call: perform `step` as
/// any engine step (persist, then send, then report its events to the
/// engines and back to [`Coordinator::on_event`]); the placements in
/// `finished` are over once `step` is durable (their final records are in it).
#[derive(Debug, Default)]
pub struct Output {
    /// Effects.
    pub step: Step,
    /// Final records written by this call.
    pub finished: Vec<PlacementRecord>,
}

impl Output {
    fn extend(&mut self, other: Output) {
        self.step.extend(other.step);
        self.finished.extend(other.finished);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Proposing,
    Held { contract_id: ContractId },
    Committing { contract_id: ContractId },
    Placed { contract_id: ContractId },
    Failed,
}

/// One allocation of the current plan and its negotiation.
#[derive(Debug, Clone)]
struct Leg {
    negotiation_id: NegotiationId,
    key: OfferKey,
    state: LegState,
}

#[derive(Debug)]
struct Job {
    terms: PlacementTerms,
    request: PlanRequest,
    deadline_ms: u64,
    started_at_ms: u64,
    attempts: u32,
    /// The current attempt; empty while waiting to plan again.
    legs: Vec<Leg>,
    /// Negotiations of an abandoned attempt not over yet: proposals still
    /// unanswered, holds whose release is not acknowledged. The next attempt
    /// waits for them (a reply timeout at most): their holds would keep the
    /// very units it may ask the same providers for, and a Release can
    /// arrive after a Propose sent later.
    draining: HashSet<NegotiationId>,
    /// When the current wait for `draining` began.
    draining_since_ms: u64,
    committing: bool,
    failures: Vec<String>,
}

impl Job {
    fn failed(&mut self, what: String) {
        if self.failures.len() < MAX_FAILURES_KEPT {
            self.failures.push(what);
        }
    }

    fn reason(&self, head: &str) -> String {
        let mut reason = head.to_owned();
        if !self.failures.is_empty() {
            reason.push_str("; tried: ");
            reason.push_str(&self.failures.join("; "));
        }
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        reason
    }
}

/// The placements of one consumer in flight, and the contracts of ended
/// placements still to be terminated should they appear.
#[derive(Debug)]
pub struct Coordinator {
    limits: Limits,
    jobs: HashMap<PlacementId, Job>,
    by_negotiation: HashMap<NegotiationId, PlacementId>,
    /// Contracts of ended placements to terminate when they become active.
    orphans: HashSet<ContractId>,
    /// Placements a restart interrupted while committing, to end at the
    /// next tick.
    interrupted: Vec<PlacementRecord>,
}

impl Coordinator {
    /// A coordinator with nothing in flight.
    pub fn new(limits: Limits) -> Coordinator {
        Coordinator {
            limits,
            jobs: HashMap::new(),
            by_negotiation: HashMap::new(),
            orphans: HashSet::new(),
            interrupted: Vec::new(),
        }
    }

    /// Rebuilds from the log: unresolved commits of ended placements, and
    /// placements interrupted while committing (ended at the next tick).
    pub fn restore<'a>(limits: Limits, records: impl IntoIterator<Item = &'a Record>) -> Coordinator {
        let mut c = Coordinator::new(limits);
        let mut last: HashMap<PlacementId, &PlacementRecord> = HashMap::new();
        for record in records {
            if let Record::Placement { placement } = record {
                c.orphans.extend(placement.unresolved.iter().copied());
                last.insert(placement.id, placement);
            }
        }
        c.interrupted = last.into_values().filter(|p| !p.state.is_final()).cloned().collect();
        c.interrupted.sort_by_key(|p| p.started_at_ms);
        c
    }

    /// Placements in flight.
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// Starts a placement: plans over `book` at `now_ms` and proposes to
    /// every chosen offer. Err when nothing fits at all (nothing was tried
    /// and nothing is recorded). The placement may already be over in the
    /// output (every proposal failed to start and nothing else fits).
    pub fn start<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        book: &OfferBook,
        terms: PlacementTerms,
        deadline_ms: u64,
    ) -> Result<(PlacementId, Output), NoPlan> {
        let request = terms.plan_request();
        let plan = plan(book, consumer.public(), &request, now_ms)?;
        let id = PlacementId::random(rng);
        let job = Job {
            terms,
            request,
            deadline_ms,
            started_at_ms: now_ms,
            attempts: 0,
            legs: Vec::new(),
            draining: HashSet::new(),
            draining_since_ms: 0,
            committing: false,
            failures: Vec::new(),
        };
        self.jobs.insert(id, job);
        let out = self.launch(now_ms, rng, consumer, book, id, Some(plan));
        Ok((id, out))
    }

    /// Feeds an event of the consumer engine (every event may be passed).
    pub fn on_event<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        book: &OfferBook,
        event: &Event,
    ) -> Output {
        match event {
            Event::Held { negotiation_id, contract_id, .. } => {
                let Some(id) = self.by_negotiation.get(negotiation_id).copied() else {
                    return Output::default();
                };
                if self.jobs.get(&id).is_some_and(|j| j.draining.contains(negotiation_id)) {
                    // A hold for an abandoned attempt: released, and still
                    // drained until the release is acknowledged (the next
                    // attempt may ask the same provider, and its Propose
                    // could overtake the Release).
                    return match consumer.release(now_ms, rng, *negotiation_id) {
                        Some(step) if !step.is_empty() => Output { step, finished: Vec::new() },
                        other => {
                            let mut out = Output { step: other.unwrap_or_default(), finished: Vec::new() };
                            out.extend(self.drained(now_ms, rng, consumer, book, id, negotiation_id));
                            out
                        }
                    };
                }
                self.set_leg(negotiation_id, LegState::Held { contract_id: *contract_id });
                self.commit_when_held(now_ms, rng, consumer, id)
            }
            Event::Placed { negotiation_id, contract_id } => {
                self.set_leg(negotiation_id, LegState::Placed { contract_id: *contract_id });
                match self.by_negotiation.get(negotiation_id).copied() {
                    Some(id) => self.finish_when_answered(now_ms, rng, consumer, id),
                    None => Output::default(),
                }
            }
            Event::Failed { negotiation_id, reason } => {
                let Some(id) = self.by_negotiation.get(negotiation_id).copied() else {
                    return Output::default();
                };
                let Some(job) = self.jobs.get_mut(&id) else { return Output::default() };
                if job.draining.contains(negotiation_id) {
                    return self.drained(now_ms, rng, consumer, book, id, negotiation_id);
                }
                let Some(leg) = job.legs.iter_mut().find(|l| l.negotiation_id == *negotiation_id) else {
                    return Output::default();
                };
                leg.state = LegState::Failed;
                let key = leg.key.clone();
                job.failed(format!("{key}: {reason}"));
                if job.committing {
                    return self.finish_when_answered(now_ms, rng, consumer, id);
                }
                // Before any commit: let everything go, plan without it.
                job.request.exclude.insert(key);
                let mut out = self.abandon_attempt(now_ms, rng, consumer, id);
                if self.jobs.get(&id).is_some_and(|j| j.draining.is_empty()) {
                    out.extend(self.launch(now_ms, rng, consumer, book, id, None));
                }
                out
            }
            Event::Released { negotiation_id } => match self.by_negotiation.get(negotiation_id).copied() {
                Some(id) if self.jobs.get(&id).is_some_and(|j| j.draining.contains(negotiation_id)) => {
                    self.drained(now_ms, rng, consumer, book, id, negotiation_id)
                }
                _ => Output::default(),
            },
            Event::ContractActive { contract_id, role: Role::Consumer } if self.orphans.contains(contract_id) => {
                let mut out = Output::default();
                self.repair_orphan(now_ms, rng, consumer, *contract_id, &mut out);
                out
            }
            _ => Output::default(),
        }
    }

    /// Ends what is overdue: placements past their deadline (with the grace
    /// for Commits), placements a restart interrupted, and orphaned
    /// contracts that became active; and plans again for placements that
    /// waited a reply timeout for their abandoned negotiations (a provider
    /// that went away never acknowledges a release).
    pub fn tick<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        book: &OfferBook,
    ) -> Output {
        let mut out = Output::default();
        for interrupted in std::mem::take(&mut self.interrupted) {
            out.extend(self.end_interrupted(now_ms, rng, consumer, interrupted));
        }
        let wait = self.limits.reply_timeout_ms;
        let stalled: Vec<PlacementId> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.legs.is_empty() && !j.draining.is_empty() && now_ms >= j.draining_since_ms.saturating_add(wait)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            out.extend(self.release_all(now_ms, rng, consumer, id));
            out.extend(self.launch(now_ms, rng, consumer, book, id, None));
        }
        let grace = self.limits.reply_timeout_ms.saturating_mul(COMMIT_GRACE_FACTOR);
        let overdue: Vec<PlacementId> = self
            .jobs
            .iter()
            .filter(|(_, j)| now_ms >= if j.committing { j.deadline_ms.saturating_add(grace) } else { j.deadline_ms })
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            out.extend(self.end_overdue(now_ms, rng, consumer, id));
        }
        let orphans: Vec<ContractId> = self.orphans.iter().copied().collect();
        for contract_id in orphans {
            self.repair_orphan(now_ms, rng, consumer, contract_id, &mut out);
        }
        out
    }

    /// A proposal of an abandoned attempt was answered; the next attempt
    /// starts once none is left.
    fn drained<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        book: &OfferBook,
        id: PlacementId,
        negotiation_id: &NegotiationId,
    ) -> Output {
        self.by_negotiation.remove(negotiation_id);
        let Some(job) = self.jobs.get_mut(&id) else { return Output::default() };
        job.draining.remove(negotiation_id);
        if job.draining.is_empty() && job.legs.is_empty() {
            return self.launch(now_ms, rng, consumer, book, id, None);
        }
        Output::default()
    }

    fn set_leg(&mut self, negotiation_id: &NegotiationId, state: LegState) {
        let Some(id) = self.by_negotiation.get(negotiation_id) else { return };
        if let Some(leg) =
            self.jobs.get_mut(id).and_then(|j| j.legs.iter_mut().find(|l| l.negotiation_id == *negotiation_id))
        {
            leg.state = state;
        }
    }

    /// Plans (unless `plan` is given) and proposes to every allocation, until
    /// an attempt is under way, nothing fits, or the deadline has passed.
    fn launch<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        book: &OfferBook,
        id: PlacementId,
        mut plan_given: Option<Plan>,
    ) -> Output {
        let mut out = Output::default();
        // Each proposal gets a slice of the deadline, so one provider that
        // never answers cannot use up the whole placement.
        let slice = self.limits.reply_timeout_ms.saturating_mul(3).max(1_000);
        loop {
            let Some(job) = self.jobs.get_mut(&id) else { return out };
            if now_ms >= job.deadline_ms {
                out.extend(self.finish(now_ms, rng, consumer, id, Vec::new(), "the deadline passed"));
                return out;
            }
            let plan = match plan_given.take() {
                Some(plan) => plan,
                None => match self::plan(book, consumer.public(), &job.request, now_ms) {
                    Ok(plan) => plan,
                    Err(no_plan) => {
                        let head = no_plan.to_string();
                        out.extend(self.finish(now_ms, rng, consumer, id, Vec::new(), &head));
                        return out;
                    }
                },
            };
            job.attempts += 1;
            job.legs.clear();
            let max_unit_price =
                job.terms.max_unit_price.unwrap_or(Price { currency: plan.currency, micros: u64::MAX });
            let mut refused = None;
            for allocation in &plan.allocations {
                let terms = PlaceTerms {
                    units: allocation.units,
                    min_units: allocation.units,
                    max_unit_price,
                    start_ms: job.terms.start_ms,
                    duration_ms: job.terms.duration_ms,
                    deadline_ms: job.deadline_ms.min(now_ms.saturating_add(slice)),
                };
                match consumer.start_hold(now_ms, rng, &allocation.offer, terms) {
                    Ok((negotiation_id, step)) => {
                        out.step.extend(step);
                        job.legs.push(Leg { negotiation_id, key: allocation.key(), state: LegState::Proposing });
                        self.by_negotiation.insert(negotiation_id, id);
                    }
                    Err(e) => {
                        refused = Some((allocation.key(), e.to_string()));
                        break;
                    }
                }
            }
            let Some((key, why)) = refused else { return out };
            job.failed(format!("{key}: {why}"));
            job.request.exclude.insert(key);
            out.extend(self.abandon_attempt(now_ms, rng, consumer, id));
            if self.jobs.get(&id).is_some_and(|j| !j.draining.is_empty()) {
                return out;
            }
        }
    }

    /// Gives up the current attempt before any commit: holds are released
    /// at once, proposals still out are drained (their holds, if any, are
    /// released when they arrive).
    fn abandon_attempt<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
    ) -> Output {
        let mut out = Output::default();
        let Some(job) = self.jobs.get_mut(&id) else { return out };
        job.draining_since_ms = now_ms;
        for leg in job.legs.drain(..) {
            match leg.state {
                LegState::Proposing => {
                    job.draining.insert(leg.negotiation_id);
                }
                LegState::Held { .. } => match consumer.release(now_ms, rng, leg.negotiation_id) {
                    Some(step) => {
                        out.step.extend(step);
                        job.draining.insert(leg.negotiation_id);
                    }
                    None => {
                        self.by_negotiation.remove(&leg.negotiation_id);
                    }
                },
                LegState::Committing { .. } | LegState::Placed { .. } | LegState::Failed => {
                    self.by_negotiation.remove(&leg.negotiation_id);
                }
            }
        }
        out
    }

    /// Lets go of everything not committing, for good: holds are released,
    /// proposals abandoned (a hold granted later is released on arrival).
    fn release_all<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
    ) -> Output {
        let mut out = self.abandon_attempt(now_ms, rng, consumer, id);
        let Some(job) = self.jobs.get_mut(&id) else { return out };
        for negotiation_id in job.draining.drain() {
            self.by_negotiation.remove(&negotiation_id);
            if let Some(step) = consumer.release(now_ms, rng, negotiation_id) {
                out.step.extend(step);
            }
        }
        out
    }

    /// Commits every leg once all of them hold: the `committing` record and
    /// the Pending records first, then the Commits.
    fn commit_when_held<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
    ) -> Output {
        let mut out = Output::default();
        let Some(job) = self.jobs.get_mut(&id) else { return out };
        if job.committing || job.legs.is_empty() || !job.legs.iter().all(|l| matches!(l.state, LegState::Held { .. })) {
            return out;
        }
        job.committing = true;
        let contracts: Vec<ContractId> = job
            .legs
            .iter()
            .filter_map(|l| match l.state {
                LegState::Held { contract_id } => Some(contract_id),
                _ => None,
            })
            .collect();
        out.step.persist.push(Record::Placement {
            placement: PlacementRecord {
                id,
                state: PlacementState::Committing,
                terms: job.terms.clone(),
                contracts,
                unresolved: Vec::new(),
                attempts: job.attempts,
                reason: String::new(),
                started_at_ms: job.started_at_ms,
                at_ms: now_ms,
            },
        });
        let mut lost = false;
        for leg in &mut job.legs {
            let LegState::Held { contract_id } = leg.state else { continue };
            match consumer.commit(now_ms, rng, leg.negotiation_id) {
                Some(step) => {
                    out.step.extend(step);
                    leg.state = LegState::Committing { contract_id };
                }
                None => {
                    // Expired just now: the engine reports it no more.
                    leg.state = LegState::Failed;
                    lost = true;
                }
            }
        }
        if lost {
            job.failed("a hold expired before the commit".to_owned());
            out.extend(self.finish_when_answered(now_ms, rng, consumer, id));
        }
        out
    }

    /// Ends a committing placement once every Commit has its answer.
    fn finish_when_answered<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
    ) -> Output {
        let Some(job) = self.jobs.get(&id) else { return Output::default() };
        if !job.committing || job.legs.iter().any(|l| matches!(l.state, LegState::Committing { .. })) {
            return Output::default();
        }
        let complete = job.legs.iter().all(|l| matches!(l.state, LegState::Placed { .. }));
        let head = if complete { "" } else { "a provider refused its commit" };
        self.finish(now_ms, rng, consumer, id, Vec::new(), head)
    }

    /// Ends a placement past its deadline: before any commit, every hold is
    /// released; after, Commits still unanswered count as refused.
    fn end_overdue<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
    ) -> Output {
        let Some(job) = self.jobs.get(&id) else { return Output::default() };
        if !job.committing {
            let mut out = self.release_all(now_ms, rng, consumer, id);
            out.extend(self.finish(now_ms, rng, consumer, id, Vec::new(), "the deadline passed"));
            return out;
        }
        let unresolved: Vec<ContractId> = job
            .legs
            .iter()
            .filter_map(|l| match l.state {
                LegState::Committing { contract_id } => Some(contract_id),
                _ => None,
            })
            .collect();
        let head = "no answer to a commit before the deadline";
        self.finish(now_ms, rng, consumer, id, unresolved, head)
    }

    /// Writes the final record: `complete` when every leg placed; otherwise
    /// every contract obtained is terminated first.
    fn finish<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        id: PlacementId,
        unresolved: Vec<ContractId>,
        head: &str,
    ) -> Output {
        let mut out = Output::default();
        let Some(job) = self.jobs.remove(&id) else { return out };
        for negotiation_id in job.legs.iter().map(|l| &l.negotiation_id).chain(&job.draining) {
            self.by_negotiation.remove(negotiation_id);
        }
        let placed: Vec<ContractId> = job
            .legs
            .iter()
            .filter_map(|l| match l.state {
                LegState::Placed { contract_id } => Some(contract_id),
                _ => None,
            })
            .collect();
        let complete = job.committing && unresolved.is_empty() && placed.len() == job.legs.len();
        let state = if complete {
            PlacementState::Complete
        } else {
            for contract_id in &placed {
                if let Some(step) =
                    consumer.terminate(now_ms, rng, *contract_id, TerminationReason::PlacementIncomplete)
                {
                    out.step.extend(step);
                }
            }
            if placed.is_empty() { PlacementState::Failed } else { PlacementState::PartialRepaired }
        };
        self.orphans.extend(unresolved.iter().copied());
        let record = PlacementRecord {
            id,
            state,
            terms: job.terms.clone(),
            contracts: placed,
            unresolved,
            attempts: job.attempts,
            reason: if complete { String::new() } else { job.reason(head) },
            started_at_ms: job.started_at_ms,
            at_ms: now_ms,
        };
        out.step.persist.push(Record::Placement { placement: record.clone() });
        out.finished.push(record);
        out
    }

    /// Ends a placement found `committing` at start-up: what it obtained is
    /// terminated, what is still in flight will be when it arrives.
    fn end_interrupted<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        mut record: PlacementRecord,
    ) -> Output {
        let mut out = Output::default();
        let mut repaired = Vec::new();
        let mut unresolved = Vec::new();
        for contract_id in std::mem::take(&mut record.contracts) {
            if let Some(step) = consumer.terminate(now_ms, rng, contract_id, TerminationReason::PlacementIncomplete) {
                out.step.extend(step);
                repaired.push(contract_id);
            } else if consumer.contract(&contract_id).is_some() {
                // Already ended or terminated: nothing left to repair.
                repaired.push(contract_id);
            } else if consumer.awaiting(&contract_id) {
                unresolved.push(contract_id);
            }
        }
        self.orphans.extend(unresolved.iter().copied());
        record.state = if repaired.is_empty() { PlacementState::Failed } else { PlacementState::PartialRepaired };
        record.contracts = repaired;
        record.unresolved = unresolved;
        record.reason = "the node restarted while the placement was committing".to_owned();
        record.at_ms = now_ms;
        out.step.persist.push(Record::Placement { placement: record.clone() });
        out.finished.push(record);
        out
    }

    /// Terminates an orphaned contract once it is active; forgets it when it
    /// can no longer appear.
    fn repair_orphan<R: RngCore + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        consumer: &mut Consumer,
        contract_id: ContractId,
        out: &mut Output,
    ) {
        if let Some(step) = consumer.terminate(now_ms, rng, contract_id, TerminationReason::PlacementIncomplete) {
            out.step.extend(step);
            self.orphans.remove(&contract_id);
        } else if consumer.contract(&contract_id).is_some() || !consumer.awaiting(&contract_id) {
            self.orphans.remove(&contract_id);
        }
    }
}

/// The cheapest plan over `book` without `me`'s own offers.
pub fn plan(book: &OfferBook, me: PublicKey, request: &PlanRequest, now_ms: u64) -> Result<Plan, NoPlan> {
    planner::plan_entries(book.iter().filter(|e| e.signed.offer().provider != me), request, now_ms)
}
