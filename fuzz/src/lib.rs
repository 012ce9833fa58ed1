//! Fuzz targets for every decoder of Fulcrum that reads outside bytes. The
//! target bodies live in two files that the regression tests of the
//! `protocol` and `node` crates include as they are, so that every saved
//! input is replayed by a plain `cargo test` (no nightly toolchain needed).
//!
//! Run them with `scripts/fuzz.sh [SECONDS_PER_TARGET]`.

pub mod node_targets;
pub mod protocol_targets;

/// Every target: its name, whether its regression inputs live under
/// `protocol/tests/fuzz-regressions` (else `node/tests/fuzz-regressions`),
/// and its body.
pub const TARGETS: [(&str, bool, fn(&[u8])); 11] = [
    ("wire", true, protocol_targets::wire),
    ("envelope", true, protocol_targets::envelope),
    ("record", true, protocol_targets::record),
    ("checkpoint", true, protocol_targets::checkpoint),
    ("export", true, protocol_targets::export),
    ("log", false, node_targets::log),
    ("backup", false, node_targets::backup),
    ("config", false, node_targets::config),
    ("offer_file", false, node_targets::offer_file),
    ("charter", false, node_targets::charter),
    ("membership", false, node_targets::membership),
];
