//! The provider's capacity ledger: per offer, the units it has, the units
//! held and the units under active contracts. Every grant goes through
//! [`CapacityLedger::try_hold`], which is the one place oversell is prevented.

use std::collections::BTreeMap;

/// Usage of one offer's capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Units the provider has for this offer.
    pub capacity: u32,
    /// Units under live holds.
    pub held: u32,
    /// Units under active contracts.
    pub committed: u32,
}

impl Usage {
    /// Units that can still be held.
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.held.saturating_add(self.committed))
    }

    /// True when held plus committed does not exceed capacity.
    pub fn within_capacity(&self) -> bool {
        u64::from(self.held) + u64::from(self.committed) <= u64::from(self.capacity)
    }
}

/// Why a hold could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No such offer.
    #[error("no capacity is registered for offer {0}")]
    UnknownOffer(String),
    /// Not enough free units.
    #[error("only {free} units free")]
    NoCapacity {
        /// Units that are free.
        free: u32,
    },
}

/// Capacity by offer id.
#[derive(Debug, Clone, Default)]
pub struct CapacityLedger {
    offers: BTreeMap<String, Usage>,
}

impl CapacityLedger {
    /// Sets what the provider has for an offer. Lowering it below what is in
    /// use is allowed (a withdrawal sets 0); it only stops new holds.
    pub fn set_capacity(&mut self, offer_id: &str, capacity: u32) {
        self.offers.entry(offer_id.to_owned()).or_default().capacity = capacity;
    }

    /// Takes `units` as held, or refuses when that would exceed capacity.
    pub fn try_hold(&mut self, offer_id: &str, units: u32) -> Result<(), LedgerError> {
        let usage = self.offers.get_mut(offer_id).ok_or_else(|| LedgerError::UnknownOffer(offer_id.to_owned()))?;
        if units > usage.free() {
            return Err(LedgerError::NoCapacity { free: usage.free() });
        }
        usage.held += units;
        Ok(())
    }

    /// Gives back held units (release or expiry).
    pub fn release(&mut self, offer_id: &str, units: u32) {
        if let Some(u) = self.offers.get_mut(offer_id) {
            u.held = u.held.saturating_sub(units);
        }
    }

    /// Turns held units into committed units.
    pub fn commit(&mut self, offer_id: &str, units: u32) {
        if let Some(u) = self.offers.get_mut(offer_id) {
            u.held = u.held.saturating_sub(units);
            u.committed = u.committed.saturating_add(units);
        }
    }

    /// Counts an active contract found in the log at start-up.
    pub fn restore_committed(&mut self, offer_id: &str, units: u32) {
        let u = self.offers.entry(offer_id.to_owned()).or_default();
        u.committed = u.committed.saturating_add(units);
    }

    /// Frees the units of a contract that ended or was terminated.
    pub fn end(&mut self, offer_id: &str, units: u32) {
        if let Some(u) = self.offers.get_mut(offer_id) {
            u.committed = u.committed.saturating_sub(units);
        }
    }

    /// Usage of one offer.
    pub fn usage(&self, offer_id: &str) -> Option<Usage> {
        self.offers.get(offer_id).copied()
    }

    /// Every offer's usage.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Usage)> {
        self.offers.iter().map(|(k, v)| (k.as_str(), v))
    }
}
