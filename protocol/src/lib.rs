//! The sans-I/O core of Fulcrum.
//!
//! Everything that decides what is true in a federation lives here, with no
//! networking, no storage, no clock and no randomness of its own: time and
//! RNGs come in as arguments and effects go out as values ([`negotiation::Step`]).
//! The node crate is the I/O shell that performs them.
//!
//! - [`keys`], [`envelope`]: identities and domain-separated signed envelopes.
//! - [`offer`], [`book`], [`matching`]: offers, their validation, the offer
//!   book, constraint matching and ranking.
//! - [`placement`]: composite placement as a two-phase commit over several
//!   providers, and the placement records of the consumer's log.
//! - [`planner`]: composite placement: the cheapest split of a request's
//!   replicas over the offer book under a spread policy, or why there is none.
//! - [`negotiation`], [`ledger`], [`contract`], [`messages`]: the two roles'
//!   state machines over a capacity ledger that cannot oversell.
//! - [`merkle`], [`checkpoint`], [`record`]: the agreement log's Merkle tree,
//!   signed checkpoints and record format.
//! - [`membership`]: charters, member certificates and revocations.
//! - [`rotation`]: a node's key handed over to a new key, signed by both.
//! - [`audit`]: the offline audit of a node's agreement log: the export file
//!   format, its writer and its verifier.
//! - [`witness`]: checking other nodes' logs; evidence of rewritten history.

#![warn(missing_docs)]

pub mod audit;
pub mod book;
pub mod checkpoint;
pub mod contract;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod matching;
pub mod membership;
pub mod merkle;
pub mod messages;
pub mod negotiation;
pub mod offer;
pub mod placement;
pub mod planner;
pub mod record;
pub mod rotation;
pub mod witness;

pub use limits::Limits;
