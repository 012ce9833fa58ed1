//! The daemon's side of composite placement: turns an admin `Place` request
//! into the protocol's [`PlacementTerms`], drives the [`Coordinator`] with
//! the consumer engine's events, answers the caller once the placement's
//! final record is durable, and builds the admin views of placements.

use std::collections::HashMap;

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::OfferBook;
use fulcrum_protocol::ids::{ContractId, PlacementId};
use fulcrum_protocol::matching::Constraints;
use fulcrum_protocol::negotiation::{Consumer, Event, Step};
use fulcrum_protocol::placement::{
    self, Coordinator, Output, PlacementRecord, PlacementState, PlacementTerms, allocation_to_wire, spread_from_wire,
};
use fulcrum_protocol::record::Record;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::daemon::contract_view;
use crate::store::index::{Index, PlacementEntry};

/// Where the answer to a `Place` request goes.
pub type PlaceReply = oneshot::Sender<Result<wire::PlaceResult, String>>;

/// What the daemon's state a placement call needs, borrowed for the call.
#[derive(Debug)]
pub struct Engines<'a> {
    /// Unix ms.
    pub now: u64,
    /// The consumer engine the placements negotiate with.
    pub consumer: &'a mut Consumer,
    /// For negotiation and placement ids.
    pub rng: &'a mut StdRng,
    /// The offer book the plans are made from.
    pub book: &'a OfferBook,
    /// For the contract views of an answer.
    pub index: &'a Index,
}

/// An answer to send once every effect queued before it is durable.
#[derive(Debug)]
pub struct Answer {
    /// The caller.
    pub reply: PlaceReply,
    /// What to tell it.
    pub result: Result<wire::PlaceResult, String>,
}

/// Effects of a placement call: perform `step` as any engine step, then
/// send each answer once `step` is durable.
#[derive(Debug, Default)]
pub struct Effects {
    /// Records to persist, messages to send, events to report.
    pub step: Step,
    /// Callers to answer after that.
    pub answers: Vec<Answer>,
}

/// Placements in flight and the callers waiting for them.
#[derive(Debug)]
pub struct Placements {
    coordinator: Coordinator,
    waiting: HashMap<PlacementId, PlaceReply>,
}

impl Placements {
    /// Rebuilt from the log: placements a restart interrupted are ended at
    /// the next tick, and contracts of ended placements that still appear
    /// are terminated.
    pub fn restore(limits: Limits, records: &[Record]) -> Placements {
        Placements { coordinator: Coordinator::restore(limits, records), waiting: HashMap::new() }
    }

    /// Starts a placement (or only plans it, for a dry run). `constraints`
    /// are the request's filters as the daemon parsed them.
    pub fn place(
        &mut self,
        e: Engines<'_>,
        req: wire::PlaceRequest,
        constraints: Constraints,
        deadline_ms: u64,
        reply: PlaceReply,
    ) -> Effects {
        let answer = |reply, result| Effects { step: Step::default(), answers: vec![Answer { reply, result }] };
        if req.units == 0 {
            return answer(reply, Err("--units must be at least 1".to_owned()));
        }
        let mut min_per_unit = constraints.min_per_unit;
        for g in req.min_per_unit.iter().flat_map(|m| &m.gpus) {
            min_per_unit.gpus.insert(g.model.clone(), g.count);
        }
        let terms = PlacementTerms {
            units: req.units,
            spread: spread_from_wire(req.spread),
            min_per_unit,
            countries: constraints.countries,
            labels: constraints.labels,
            attested_labels: constraints.attested_labels,
            min_sla_permille: req.min_sla_permille,
            max_unit_price: constraints.max_unit_price,
            start_ms: if req.start_ms == 0 { e.now } else { req.start_ms },
            duration_ms: if req.duration_ms == 0 { 720 * 3_600_000 } else { req.duration_ms },
        };
        if req.dry_run {
            let result = match placement::plan(e.book, e.consumer.public(), &terms.plan_request(), e.now) {
                Ok(plan) => wire::PlaceResult {
                    explanation: format!("dry run: {plan}"),
                    plan: plan.allocations.iter().map(allocation_to_wire).collect(),
                    ..wire::PlaceResult::default()
                },
                Err(no_plan) => wire::PlaceResult { explanation: no_plan.to_string(), ..wire::PlaceResult::default() },
            };
            return answer(reply, Ok(result));
        }
        match self.coordinator.start(e.now, e.rng, e.consumer, e.book, terms, deadline_ms) {
            Ok((id, out)) => {
                info!(placement = %id, units = req.units, "placing");
                self.waiting.insert(id, reply);
                self.effects(e.index, e.now, out)
            }
            Err(no_plan) => {
                let result = wire::PlaceResult { explanation: no_plan.to_string(), ..wire::PlaceResult::default() };
                answer(reply, Ok(result))
            }
        }
    }

    /// Feeds an event of the consumer engine.
    pub fn on_event(&mut self, e: Engines<'_>, event: &Event) -> Effects {
        let out = self.coordinator.on_event(e.now, e.rng, e.consumer, e.book, event);
        self.effects(e.index, e.now, out)
    }

    /// Ends overdue placements, plans again where a retry waited long
    /// enough, and repairs what a restart left behind.
    pub fn tick(&mut self, e: Engines<'_>) -> Effects {
        let out = self.coordinator.tick(e.now, e.rng, e.consumer, e.book);
        self.effects(e.index, e.now, out)
    }

    fn effects(&mut self, index: &Index, now: u64, out: Output) -> Effects {
        let Output { step, finished } = out;
        let mut answers = Vec::new();
        for record in finished {
            match record.state {
                PlacementState::Complete => info!(placement = %record.id, contracts = record.contracts.len(), "placed"),
                state => {
                    warn!(placement = %record.id, state = state.as_str(), reason = %record.reason, "placement ended")
                }
            }
            if let Some(reply) = self.waiting.remove(&record.id) {
                answers.push(Answer { reply, result: place_result(index, now, &record) });
            }
        }
        Effects { step, answers }
    }
}

/// The answer to `Place` for a placement that ended: its contracts when it
/// is complete, and otherwise why not.
fn place_result(index: &Index, now: u64, record: &PlacementRecord) -> Result<wire::PlaceResult, String> {
    let mut result = wire::PlaceResult {
        placement_id: record.id.to_vec(),
        placement_state: record.state.as_str().to_owned(),
        ..wire::PlaceResult::default()
    };
    if record.state == PlacementState::Complete {
        result.contracts = contract_views(index, now, &record.contracts)?;
    } else {
        result.explanation = format!("placement {} {}: {}", record.id, record.state.as_str(), record.reason);
    }
    Ok(result)
}

fn contract_views(index: &Index, now: u64, ids: &[ContractId]) -> Result<Vec<wire::ContractView>, String> {
    ids.iter()
        .map(|id| {
            let entry = index.contract(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("no contract {id}"))?;
            contract_view(*id, &entry, now)
        })
        .collect()
}

/// The admin view of an indexed placement, with its contracts as they stand.
pub fn placement_view(index: &Index, entry: &PlacementEntry, now: u64) -> Result<wire::PlacementView, String> {
    let r = &entry.record;
    Ok(wire::PlacementView {
        placement_id: r.id.to_vec(),
        state: r.state.as_str().to_owned(),
        terms: Some(r.terms.to_wire()),
        // A `committing` record names contracts that may not exist yet.
        contracts: if r.state == PlacementState::Committing {
            let made: Vec<ContractId> =
                r.contracts.iter().copied().filter(|id| index.contract(id).is_ok_and(|c| c.is_some())).collect();
            contract_views(index, now, &made)?
        } else {
            contract_views(index, now, &r.contracts)?
        },
        unresolved: r.unresolved.iter().map(ContractId::to_vec).collect(),
        attempts: r.attempts,
        reason: r.reason.clone(),
        started_at_ms: r.started_at_ms,
        updated_at_ms: r.at_ms,
        log_index: entry.log_index,
    })
}
