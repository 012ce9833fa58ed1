//! The offer book: every node's cache of the federation's current offers,
//! keyed by (provider, offer_id), where a higher seq replaces a lower one and a
//! withdrawal stays as a tombstone until it expires, so an older seq cannot
//! bring a withdrawn offer back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::keys::PublicKey;
use crate::limits::Limits;
use crate::matching::{Constraints, Mismatch, rank};
use crate::offer::{OfferKey, SignedOffer};

/// An offer as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookEntry {
    /// The signed offer, verbatim.
    pub signed: SignedOffer,
    /// The offer's labels that the provider's member certificate vouches for.
    pub attested_labels: BTreeSet<String>,
    /// When this node learned this seq, Unix ms.
    pub received_at_ms: u64,
    /// The book keeps the entry until then: at least its own expiry, and at
    /// least the expiry of every older seq it replaced, so that no replay of
    /// an older, still valid seq can bring back what this one replaced.
    pub retain_until_ms: u64,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First time this offer is seen.
    New,
    /// Replaced an older seq.
    Replaced {
        /// The seq that was replaced.
        previous_seq: u64,
    },
    /// A withdrawal replaced a live offer (or arrived first).
    Withdrawn,
    /// The same signed offer again (gossip duplicate).
    Duplicate,
}

/// Why the book refused an offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// An older (or equal) seq than the one held.
    #[error("offer {key} seq {got} is not newer than seq {have}")]
    Stale {
        /// Which offer.
        key: OfferKey,
        /// Seq held.
        have: u64,
        /// Seq received.
        got: u64,
    },
    /// The same seq with different content: the provider signed two versions.
    #[error("offer {key} seq {seq} was signed twice with different terms")]
    Equivocation {
        /// Which offer.
        key: OfferKey,
        /// The seq.
        seq: u64,
    },
    /// The provider already has as many offers as allowed.
    #[error("provider {provider} already has {max} offers")]
    ProviderFull {
        /// Which provider.
        provider: PublicKey,
        /// Limit.
        max: usize,
    },
    /// The book is full.
    #[error("offer book is full ({max} offers)")]
    BookFull {
        /// Limit.
        max: usize,
    },
    /// Already expired.
    #[error("offer {key} is expired")]
    Expired {
        /// Which offer.
        key: OfferKey,
    },
}

/// The offer book.
#[derive(Debug, Clone, Default)]
pub struct OfferBook {
    entries: BTreeMap<OfferKey, BookEntry>,
    per_provider: HashMap<PublicKey, usize>,
    max_per_provider: usize,
    max_total: usize,
}

impl OfferBook {
    /// An empty book with the given limits.
    pub fn new(limits: &Limits) -> OfferBook {
        OfferBook {
            entries: BTreeMap::new(),
            per_provider: HashMap::new(),
            max_per_provider: limits.max_offers_per_provider,
            max_total: limits.max_offers_total,
        }
    }

    /// Inserts a signed offer that has already passed [`SignedOffer::verify`].
    pub fn insert(
        &mut self,
        signed: SignedOffer,
        attested_labels: BTreeSet<String>,
        now_ms: u64,
    ) -> Result<Inserted, BookError> {
        let offer = signed.offer();
        let key = offer.key();
        if offer.expires_at_ms <= now_ms {
            return Err(BookError::Expired { key });
        }
        let withdrawal = offer.is_withdrawal();
        let mut retain_until_ms = offer.expires_at_ms;
        let outcome = match self.entries.get(&key) {
            Some(held) => {
                retain_until_ms = retain_until_ms.max(held.retain_until_ms);
                let have = held.signed.offer().seq;
                if offer.seq == have {
                    return if held.signed.envelope().body() == signed.envelope().body() {
                        Ok(Inserted::Duplicate)
                    } else {
                        Err(BookError::Equivocation { key, seq: have })
                    };
                }
                if offer.seq < have {
                    return Err(BookError::Stale { key, have, got: offer.seq });
                }
                if withdrawal { Inserted::Withdrawn } else { Inserted::Replaced { previous_seq: have } }
            }
            None => {
                let count = self.per_provider.get(&key.provider).copied().unwrap_or(0);
                if count >= self.max_per_provider {
                    return Err(BookError::ProviderFull { provider: key.provider, max: self.max_per_provider });
                }
                if self.entries.len() >= self.max_total {
                    return Err(BookError::BookFull { max: self.max_total });
                }
                *self.per_provider.entry(key.provider).or_insert(0) += 1;
                if withdrawal { Inserted::Withdrawn } else { Inserted::New }
            }
        };
        self.entries.insert(key, BookEntry { signed, attested_labels, received_at_ms: now_ms, retain_until_ms });
        Ok(outcome)
    }

    /// Drops every entry (offers and tombstones) past its retention at
    /// `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.expire_keys(now_ms).len()
    }

    /// Like [`OfferBook::expire`], returning the keys dropped (to prune
    /// copies of the book kept elsewhere).
    pub fn expire_keys(&mut self, now_ms: u64) -> Vec<OfferKey> {
        let expired: Vec<OfferKey> =
            self.entries.iter().filter(|(_, e)| e.retain_until_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        for key in &expired {
            self.remove(key);
        }
        expired
    }

    /// Removes one offer, whatever its state (e.g. its provider was revoked).
    pub fn remove(&mut self, key: &OfferKey) -> Option<BookEntry> {
        let removed = self.entries.remove(key)?;
        if let Some(n) = self.per_provider.get_mut(&key.provider) {
            *n -= 1;
            if *n == 0 {
                self.per_provider.remove(&key.provider);
            }
        }
        Some(removed)
    }

    /// Removes every offer of a provider; returns how many.
    pub fn remove_provider(&mut self, provider: &PublicKey) -> usize {
        let keys: Vec<OfferKey> = self.entries.keys().filter(|k| k.provider == *provider).cloned().collect();
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    /// One offer.
    pub fn get(&self, key: &OfferKey) -> Option<&BookEntry> {
        self.entries.get(key)
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live (not withdrawn, not expired) offers.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &BookEntry> {
        self.entries.values().filter(move |e| {
            let o = e.signed.offer();
            !o.is_withdrawal() && o.expires_at_ms > now_ms
        })
    }

    /// Every entry in key order, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = &BookEntry> {
        self.entries.values()
    }

    /// Offers matching `constraints`, best first.
    pub fn query(&self, constraints: &Constraints, now_ms: u64) -> Vec<&BookEntry> {
        let mut found: Vec<&BookEntry> =
            self.entries.values().filter(|e| constraints.check(e, now_ms).is_ok()).collect();
        found.sort_by(|a, b| rank(a, b));
        found
    }

    /// For each reason, how many offers it excluded: the explanation when
    /// nothing fits.
    pub fn explain(&self, constraints: &Constraints, now_ms: u64) -> BTreeMap<Mismatch, usize> {
        let mut why = BTreeMap::new();
        for e in self.entries.values() {
            if let Err(m) = constraints.check(e, now_ms) {
                *why.entry(m).or_insert(0) += 1;
            }
        }
        why
    }

    /// One page of the book for offer-book sync, in key order after `after`.
    /// Returns the page and the key to continue from (None when done).
    pub fn page(&self, after: Option<&OfferKey>, max: usize) -> (Vec<&SignedOffer>, Option<OfferKey>) {
        use std::ops::Bound;
        let start = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut iter = self.entries.range((start, Bound::Unbounded));
        let page: Vec<(&OfferKey, &BookEntry)> = iter.by_ref().take(max.max(1)).collect();
        let next = if iter.next().is_some() { page.last().map(|(k, _)| (*k).clone()) } else { None };
        (page.into_iter().map(|(_, e)| &e.signed).collect(), next)
    }
}
