//! Parsers for command-line values, used by clap so a bad value is a usage
//! error (exit 2) named after its flag, before the daemon is contacted.

use fulcrum_protocol::offer::Country;

use super::time::parse_rfc3339_ms;
use crate::offer_file::{parse_duration_ms, parse_price_micros};

/// `--country DE`: ISO 3166-1 alpha-2, stored upper case.
pub fn country(s: &str) -> Result<String, String> {
    Country::parse(s)
        .map(|c| c.as_str().to_owned())
        .ok_or_else(|| format!("{s:?} is not a two-letter ISO 3166-1 country code such as DE"))
}

/// `--label iso:27001`: the protocol's rules for labels.
pub fn label(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a label cannot be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} contains whitespace; labels look like iso:27001"));
    }
    Ok(s.to_owned())
}

/// `--max-unit-price 0.45`: exact EUR micro-units.
pub fn price_eur(s: &str) -> Result<u64, String> {
    parse_price_micros(s).map_err(|e| e.to_string())
}

/// `--duration 720h`: must be more than zero.
pub fn duration(s: &str) -> Result<u64, String> {
    match parse_duration_ms(s) {
        Ok(0) => Err("the duration must be more than 0".into()),
        Ok(ms) => Ok(ms),
        Err(e) => Err(e.to_string()),
    }
}

/// `--gpu nvidia-l40s=2`.
pub fn gpu(s: &str) -> Result<(String, u32), String> {
    let bad = || format!("{s:?} is not MODEL=COUNT, e.g. nvidia-l40s=2");
    let (model, count) = s.split_once('=').ok_or_else(bad)?;
    let count: u32 = count.parse().map_err(|_| bad())?;
    if model.is_empty() || model.chars().any(char::is_whitespace) || count == 0 {
        return Err(bad());
    }
    Ok((model.to_owned(), count))
}

/// When a placement should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Unix ms.
    At(u64),
    /// This long after the command runs, ms.
    In(u64),
}

impl Start {
    /// Unix ms, relative to `now_ms`.
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            Start::At(ms) => ms,
            Start::In(ms) => now_ms.saturating_add(ms),
        }
    }
}

/// `--start 2025-11-23T08:00:00Z` or `--start +10m`.
pub fn start(s: &str) -> Result<Start, String> {
    if let Some(rel) = s.strip_prefix('+') {
        return parse_duration_ms(rel).map(Start::In).map_err(|e| e.to_string());
    }
    parse_rfc3339_ms(s)
        .map(Start::At)
        .ok_or_else(|| format!("{s:?} is neither an RFC 3339 time (2025-11-23T08:00:00Z) nor +DURATION (+10m)"))
}

/// A contract named on the command line: the full id, or a prefix to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractRef {
    /// All 32 bytes.
    Id(Vec<u8>),
    /// At least 8 lower-case hex digits.
    Prefix(String),
}

/// Contract ids are 64 hex digits; a prefix of 8 or more is resolved against
/// `contracts list`.
pub fn contract_ref(s: &str) -> Result<ContractRef, String> {
    let lower = s.to_ascii_lowercase();
    if !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a contract id (64 hex digits, or a unique prefix of 8 or more)"));
    }
    match lower.len() {
        64 => hex::decode(&lower).map(ContractRef::Id).map_err(|e| e.to_string()),
        8..=63 => Ok(ContractRef::Prefix(lower)),
        n => Err(format!("{s:?} has {n} hex digits; give the 64-digit contract id or a unique prefix of 8 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_normalised() {
        assert_eq!(country("de"), Ok("DE".into()));
        assert!(country("DEU").is_err());
        assert!(country("D1").is_err());
    }

    #[test]
    fn contract_refs() {
        let full = "AB".repeat(32);
        assert_eq!(contract_ref(&full), Ok(ContractRef::Id(vec![0xab; 32])));
        assert_eq!(contract_ref("DEADBEEF"), Ok(ContractRef::Prefix("deadbeef".into())));
        assert!(contract_ref("deadbee").is_err());
        assert!(contract_ref(&"a".repeat(65)).is_err());
        assert!(contract_ref("deadbeefxx").is_err());
    }

    #[test]
    fn starts() {
        assert_eq!(start("+10m"), Ok(Start::In(600_000)));
        assert_eq!(start("1970-01-01T00:00:01Z"), Ok(Start::At(1000)));
        assert!(start("tomorrow").is_err());
        assert!(start("+ten").is_err());
        assert_eq!(Start::In(5).resolve(10), 15);
    }

    #[test]
    fn gpus_and_durations() {
        assert_eq!(gpu("nvidia-l40s=2"), Ok(("nvidia-l40s".into(), 2)));
        for bad in ["nvidia", "=2", "x=0", "x=-1", "x=two"] {
            assert!(gpu(bad).is_err(), "{bad}");
        }
        assert_eq!(duration("720h"), Ok(2_592_000_000));
        assert!(duration("0h").is_err());
        assert!(price_eur("0.1234567").is_err());
        assert_eq!(price_eur("0.45"), Ok(450_000));
    }
}
