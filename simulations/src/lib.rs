//! `fulcrum-sim`, the network simulation harness: many real nodes in one
//! process under scripted workloads and faults, with a report.
//!
//! Not built yet. The crate exists so the workspace has its final shape and
//! dependency direction (`node` <- `simulations`); until the harness lands,
//! the negotiation invariants under faults are exercised by the property
//! tests in `protocol/tests/negotiation.rs` and by the multi-process tests in
//! `tests/`.
