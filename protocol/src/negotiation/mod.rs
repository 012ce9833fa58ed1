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

use crate::ids::{ContractId, HoldId, NegotiationId};
use crate::keys::PublicKey;
use crate::messages::{Message, RejectCode, TerminationReason};
use crate::record::Record;

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
