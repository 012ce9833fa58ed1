//! The negotiation state machines of both roles. Each is a plain value: feed
//! it a message or a tick with the current time (and an RNG where it makes
//! ids), get back a [`Step`] of effects. The caller performs them in order:
//! first make every record in `persist` durable (and every record of earlier
//! steps), then send, then report events. Nothing is acknowledged to a peer
//! before it is durable.

mod consumer;
mod outbox;
mod provider;

pub use consumer::{Consumer, ConsumerError, FailReason, PlaceTerms};
pub use provider::Provider;

use std::collections::{HashMap, HashSet};

use crate::ids::{ContractId, HoldId, NegotiationId};
use crate::keys::PublicKey;
use crate::messages::{Message, RejectCode, TerminationReason};
use crate::record::Record;
use crate::rotation::KeyRotation;

/// A message for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Recipient.
    pub to: PublicKey,
    /// The message (the caller seals it with the node identity).
    pub message: Message,
}

/// Which side of a contract this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sells capacity.
    Provider,
    /// Buys capacity.
    Consumer,
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// Turned into a contract.
    Committed,
    /// Released by the consumer.
    Released,
    /// Passed `hold_until` without a commit.
    Expired,
}

/// Something that happened, for metrics, hooks and the admin event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Provider granted a hold.
    HoldGranted {
        /// Hold.
        hold_id: HoldId,
        /// Consumer.
        consumer: PublicKey,
        /// Offer.
        offer_id: String,
        /// Units.
        units: u32,
        /// Until.
        hold_until_ms: u64,
    },
    /// A hold ended.
    HoldEnded {
        /// Hold.
        hold_id: HoldId,
        /// How.
        how: HoldEnd,
    },
    /// Provider refused a proposal.
    ProposalRejected {
        /// Consumer.
        consumer: PublicKey,
        /// Why.
        code: RejectCode,
    },
    /// A contract became active (durable in this node's log).
    ContractActive {
        /// Contract.
        contract_id: ContractId,
        /// This node's role.
        role: Role,
    },
    /// A contract was terminated early.
    ContractTerminated {
        /// Contract.
        contract_id: ContractId,
        /// Why.
        reason: TerminationReason,
        /// This node's role.
        role: Role,
    },
    /// A contract reached its end time.
    ContractEnded {
        /// Contract.
        contract_id: ContractId,
        /// This node's role.
        role: Role,
    },
    /// Consumer: a negotiation produced a durable, countersigned contract.
    Placed {
        /// Negotiation.
        negotiation_id: NegotiationId,
        /// Contract.
        contract_id: ContractId,
    },
    /// Consumer: a negotiation started with [`Consumer::start_hold`] holds
    /// its units at the provider; [`Consumer::commit`] or
    /// [`Consumer::release`] it before `hold_until_ms`.
    Held {
        /// Negotiation.
        negotiation_id: NegotiationId,
        /// The provider's hold.
        hold_id: HoldId,
        /// When the provider lets the hold go, Unix ms (its clock).
        hold_until_ms: u64,
        /// The contract a commit would make (its draft, signed by us only).
        contract_id: ContractId,
    },
    /// Consumer: a hold given up with [`Consumer::release`] is gone: the
    /// provider acknowledged the release, or the hold has passed its end (or
    /// the provider stayed silent to every Release).
    Released {
        /// Negotiation.
        negotiation_id: NegotiationId,
    },
    /// Consumer: a negotiation ended without a contract.
    Failed {
        /// Negotiation.
        negotiation_id: NegotiationId,
        /// Why.
        reason: FailReason,
    },
}

/// Effects of one input, to perform in order: persist, then send, then report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Records to append to the log and make durable before anything else.
    pub persist: Vec<Record>,
    /// Messages to send once `persist` is durable.
    pub send: Vec<Outgoing>,
    /// Events to report once `persist` is durable.
    pub events: Vec<Event>,
}

impl Step {
    /// Appends another step's effects after this one's.
    pub fn extend(&mut self, other: Step) {
        self.persist.extend(other.persist);
        self.send.extend(other.send);
        self.events.extend(other.events);
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty() && self.send.is_empty() && self.events.is_empty()
    }

    fn send(&mut self, to: PublicKey, message: Message) {
        self.send.push(Outgoing { to, message });
    }
}

/// Keys that took over from other keys by key rotation. A contract names
/// the keys its parties had when they signed it; after a party rotates, its
/// messages about that contract come from the new key, which speaks for the
/// old one. Before the first record such a message leaves in the log, the
/// rotation statements that link the two keys go into the log too
/// ([`Record::Succession`]), so the log alone shows who spoke for whom.
#[derive(Debug, Clone, Default)]
pub(crate) struct Successors {
    by_old: HashMap<PublicKey, KeyRotation>,
    /// Old keys whose rotation the log already holds.
    logged: HashSet<PublicKey>,
}

impl Successors {
    /// Longest chain of rotations followed.
    const MAX_CHAIN: usize = 16;

    /// A rotation learned (its signatures checked by whoever hands it over).
    pub(crate) fn insert(&mut self, rotation: KeyRotation) {
        let old = rotation.body().old_key;
        if old != rotation.body().new_key {
            self.by_old.insert(old, rotation);
        }
    }

    /// A rotation read back from the log.
    pub(crate) fn restore(&mut self, rotation: &KeyRotation) {
        self.logged.insert(rotation.body().old_key);
        self.insert(rotation.clone());
    }

    /// The rotations that lead from `named` to `from`: none when they are
    /// the same key, `None` when `from` does not speak for `named`.
    fn chain(&self, named: &PublicKey, from: &PublicKey) -> Option<Vec<&KeyRotation>> {
        let (mut key, mut chain) = (named, Vec::new());
        for _ in 0..=Self::MAX_CHAIN {
            if key == from {
                return Some(chain);
            }
            let rotation = self.by_old.get(key)?;
            chain.push(rotation);
            key = &rotation.body().new_key;
        }
        None
    }

    /// True when `from` is `named`, or a key that took over from it.
    pub(crate) fn speaks_for(&self, named: &PublicKey, from: &PublicKey) -> bool {
        self.chain(named, from).is_some()
    }

    /// The succession records to log before a record that `from` signed
    /// about a contract naming `named`: those the log does not hold yet.
    pub(crate) fn records(&mut self, named: &PublicKey, from: &PublicKey) -> Vec<Record> {
        let fresh: Vec<KeyRotation> = self
            .chain(named, from)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !self.logged.contains(&r.body().old_key))
            .cloned()
            .collect();
        for r in &fresh {
            self.logged.insert(r.body().old_key);
        }
        fresh.into_iter().map(|rotation| Record::Succession { rotation }).collect()
    }
}
