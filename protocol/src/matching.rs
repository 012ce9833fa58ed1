//! Constraint matching and ranking of offers for a placement. Runs locally on
//! the offer book; the offering provider stays the authority on what is free.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::book::BookEntry;
use crate::offer::{Country, Price, Resources};

/// How replicas must be spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Anywhere.
    #[default]
    None,
    /// No two replicas on one provider.
    Providers,
    /// No two replicas in one country.
    Countries,
}

/// What an offer must satisfy (the filter part of a placement, also used by
/// `offers list`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Minimum resources per unit.
    pub min_per_unit: Resources,
    /// Allowed countries; empty allows every country.
    pub countries: BTreeSet<Country>,
    /// Labels the offer must carry.
    pub labels: BTreeSet<String>,
    /// When true, each required label must be attested by the provider's
    /// member certificate, not only self-declared.
    pub attested_labels: bool,
    /// Highest acceptable unit price per hour.
    pub max_unit_price: Option<Price>,
    /// Lowest acceptable SLA.
    pub min_sla_permille: u32,
    /// Contract duration the offer must allow, ms.
    pub duration_ms: Option<u64>,
    /// Minimum units the offer must have available.
    pub min_units: u32,
}

/// Why an offer does not match. The first failing constraint is reported, so
/// a planner can explain which constraint excluded what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Mismatch {
    /// Withdrawn (units 0).
    #[error("withdrawn")]
    Withdrawn,
    /// Expired.
    #[error("expired")]
    Expired,
    /// Too few resources per unit.
    #[error("resources per unit too small")]
    Resources,
    /// Country not allowed.
    #[error("country not allowed")]
    Country,
    /// A required label is missing.
    #[error("label {0} missing")]
    Label(String),
    /// A required label is only self-declared.
    #[error("label {0} is self-declared, not attested")]
    LabelNotAttested(String),
    /// Priced in another currency.
    #[error("priced in another currency")]
    Currency,
    /// Too expensive.
    #[error("price above maximum")]
    Price,
    /// SLA too low.
    #[error("SLA below minimum")]
    Sla,
    /// Duration outside the offer's range.
    #[error("duration outside the offer's range")]
    Duration,
    /// Not enough units.
    #[error("not enough units available")]
    Units,
}

impl Constraints {
    /// Checks one book entry at `now_ms`.
    pub fn check(&self, entry: &BookEntry, now_ms: u64) -> Result<(), Mismatch> {
        let offer = entry.signed.offer();
        if offer.is_withdrawal() {
            return Err(Mismatch::Withdrawn);
        }
        if offer.expires_at_ms <= now_ms {
            return Err(Mismatch::Expired);
        }
        if !offer.flavour.per_unit.covers(&self.min_per_unit) {
            return Err(Mismatch::Resources);
        }
        if !self.countries.is_empty() && !self.countries.contains(&offer.site.country) {
            return Err(Mismatch::Country);
        }
        for label in &self.labels {
            if !offer.labels.iter().any(|l| l == label) {
                return Err(Mismatch::Label(label.clone()));
            }
            if self.attested_labels && !entry.attested_labels.contains(label) {
                return Err(Mismatch::LabelNotAttested(label.clone()));
            }
        }
        if let Some(max) = self.max_unit_price {
            if max.currency != offer.unit_price_per_hour.currency {
                return Err(Mismatch::Currency);
            }
            if offer.unit_price_per_hour.micros > max.micros {
                return Err(Mismatch::Price);
            }
        }
        if offer.sla_permille < self.min_sla_permille {
            return Err(Mismatch::Sla);
        }
        if let Some(d) = self.duration_ms
            && (d < offer.min_duration_ms || d > offer.max_duration_ms)
        {
            return Err(Mismatch::Duration);
        }
        if offer.units_available < self.min_units {
            return Err(Mismatch::Units);
        }
        Ok(())
    }
}

/// Ranking order: cheaper first, then higher SLA, then fresher, then by key so
/// the order is total and the same on every node.
pub fn rank(a: &BookEntry, b: &BookEntry) -> Ordering {
    let (oa, ob) = (a.signed.offer(), b.signed.offer());
    oa.unit_price_per_hour
        .micros
        .cmp(&ob.unit_price_per_hour.micros)
        .then_with(|| ob.sla_permille.cmp(&oa.sla_permille))
        .then_with(|| ob.issued_at_ms.cmp(&oa.issued_at_ms))
        .then_with(|| oa.provider.cmp(&ob.provider))
        .then_with(|| oa.offer_id.cmp(&ob.offer_id))
}
