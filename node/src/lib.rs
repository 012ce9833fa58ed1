//! The I/O shell around `fulcrum-protocol`: the daemon `fulcrumd` and the
//! admin CLI `fulcrumctl`. Each folder names what it owns:
//!
//! - [`config`]: `node.toml`, `FULCRUM_*` overrides, data dir and key file.
//! - [`store`]: the agreement log (the commit point) and the sled indexes.
//! - [`net`]: the libp2p swarm: gossip, negotiation and sync protocols.
//! - [`admin`]: the gRPC admin API on a Unix socket, and its client.
//! - [`cli`]: `fulcrumctl` commands and their output.
//! - [`metrics`]: Prometheus metrics, health and readiness over HTTP.
//! - [`hooks`]: provisioning hooks run for every contract event, in log order.
//! - [`charter`]: the federation charter, member certificates and revocations on disk.
//! - [`members`]: federation membership as the daemon enforces it.
//! - [`placement`]: composite placements: the daemon's side of the protocol's
//!   coordinator, and the admin views of placements.
//! - [`daemon`]: the event loop that feeds the protocol engines and performs
//!   their effects in order: persist, then send, then report.

pub mod admin;
pub mod charter;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod hooks;
pub mod members;
pub mod metrics;
pub mod net;
pub mod offer_file;
pub mod placement;
pub mod store;
