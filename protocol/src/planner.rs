//! Composite placement planning: the cheapest way to place `units` replicas
//! over the offer book under a spread policy, or one sentence saying why there
//! is none.
//!
//! The planner only decides *where to ask*; the offering providers stay the
//! authority on what is really free. The node takes holds on every allocation
//! of a [`Plan`] in parallel, commits only when all are granted, releases all
//! on any failure, adds the offers that failed to [`PlanRequest::exclude`] and
//! plans again.
//!
//! # Semantics
//!
//! - **Filter.** An offer is a candidate when it passes
//!   [`Constraints::check`] (resources per unit, countries, labels and whether
//!   they must be attested, currency and maximum unit price, minimum SLA,
//!   duration) and its key is not in [`PlanRequest::exclude`].
//!   [`Constraints::min_units`] is ignored: units can be split over offers,
//!   so an offer only needs one unit to be useful.
//! - **Spread.** [`Spread::None`]: units may be split over offers freely, and
//!   one offer may take several units (up to its `units_available`).
//!   [`Spread::Providers`]: no two units on one provider, so every chosen
//!   provider gets exactly one unit. [`Spread::Countries`]: no two units in one
//!   country, so `units` replicas need `units` distinct countries (three
//!   replicas in distinct countries are "in at least two countries"; a policy
//!   of "at least k countries, several units per country" is not offered).
//! - **Cheapest.** The plan minimises the total price per hour
//!   (sum of units times unit price). Ties between plans of equal total are
//!   broken by [`rank`] (higher SLA, then fresher, then offer key), so every
//!   node computes the same plan from the same book.
//! - **Currency.** Prices in different currencies are never added or
//!   compared. With a maximum unit price, only offers in its currency match
//!   (others are excluded as [`Mismatch::Currency`]), so the plan is in that
//!   currency. Without one, each currency is planned separately: when exactly
//!   one currency yields a plan, that is the plan; when several do, the
//!   planner refuses with [`NoPlanReason::AmbiguousCurrency`] rather than pick
//!   a currency for the buyer.
//!
//! Planning sorts the candidates once: O(n log n) for a book of n offers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use crate::book::{BookEntry, OfferBook};
use crate::keys::PublicKey;
use crate::matching::{Constraints, Mismatch, Spread, rank};
use crate::offer::{Country, Currency, Offer, OfferKey, Price};

/// A composite placement request: `units` replicas, each of at least
/// `constraints.min_per_unit`, spread according to `spread`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanRequest {
    /// Replicas to place.
    pub units: u32,
    /// What every chosen offer must satisfy, per unit. `min_units` is ignored
    /// (treated as 1): units are split over offers.
    pub constraints: Constraints,
    /// How replicas must be spread.
    pub spread: Spread,
    /// Offers not to consider, whatever their seq: those already tried that
    /// failed, so that planning again yields the next candidates.
    pub exclude: BTreeSet<OfferKey>,
}

impl PlanRequest {
    /// A request with nothing excluded.
    pub fn new(units: u32, constraints: Constraints, spread: Spread) -> PlanRequest {
        PlanRequest { units, constraints, spread, exclude: BTreeSet::new() }
    }
}

/// Units taken from one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The offer's terms, at the seq the plan was made from (what the node
    /// proposes against).
    pub offer: Offer,
    /// The offering provider (`offer.provider`).
    pub provider: PublicKey,
    /// Where (`offer.site.country`).
    pub country: Country,
    /// Units to take from this offer, at least 1.
    pub units: u32,
    /// Price of one unit for one hour (`offer.unit_price_per_hour`).
    pub unit_price: Price,
}

impl Allocation {
    fn new(offer: &Offer, units: u32) -> Allocation {
        Allocation {
            offer: offer.clone(),
            provider: offer.provider,
            country: offer.site.country,
            units,
            unit_price: offer.unit_price_per_hour,
        }
    }

    /// The offer's key.
    pub fn key(&self) -> OfferKey {
        self.offer.key()
    }
}

/// The cheapest feasible plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One allocation per chosen offer, cheapest first (in [`rank`] order).
    pub allocations: Vec<Allocation>,
    /// The currency of every price in the plan.
    pub currency: Currency,
    /// Sum over allocations of units times unit price, in micro-units of
    /// `currency` per hour.
    pub total_price_micros_per_hour: u64,
}

impl Plan {
    /// Units placed (the request's `units`).
    pub fn units(&self) -> u32 {
        self.allocations.iter().map(|a| a.units).sum()
    }

    /// The total price per hour.
    pub fn total_per_hour(&self) -> Price {
        Price { currency: self.currency, micros: self.total_price_micros_per_hour }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {} per hour:", plural(self.units() as usize, "unit"), self.total_per_hour())?;
        for (i, a) in self.allocations.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} on {} ({}) at {}", a.units, a.key(), a.country, a.unit_price)?;
        }
        Ok(())
    }
}

/// Why the spread policy cannot be met with the candidates there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// [`Spread::None`]: the candidates have fewer units in total.
    Units {
        /// Units the candidates have in total.
        available: u64,
    },
    /// [`Spread::Providers`]: fewer providers have a candidate than units.
    Providers {
        /// Providers with a candidate.
        available: usize,
    },
    /// [`Spread::Countries`]: fewer countries have a candidate than units.
    Countries {
        /// Countries with a candidate, in code order.
        available: Vec<Country>,
    },
}

impl Shortfall {
    fn capacity(&self) -> u64 {
        match self {
            Shortfall::Units { available } => *available,
            Shortfall::Providers { available } => *available as u64,
            Shortfall::Countries { available } => available.len() as u64,
        }
    }
}

/// What kept the planner from a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlanReason {
    /// The request asks for 0 units.
    ZeroUnits,
    /// Not enough candidates for the units under the spread policy.
    Shortfall {
        /// The currency the shortfall is counted in (the one whose
        /// candidates come closest), given only when candidates come in
        /// several currencies.
        currency: Option<Currency>,
        /// What is missing.
        shortfall: Shortfall,
    },
    /// Candidates in several currencies could each make a plan, and prices
    /// in different currencies cannot be compared: the request must name its
    /// currency with a maximum unit price.
    AmbiguousCurrency {
        /// The currencies that could, in code order.
        currencies: Vec<Currency>,
    },
    /// The cheapest plan's total price does not fit in a `u64` of
    /// micro-units per hour (so no plan in that currency does).
    Overflow {
        /// The currency.
        currency: Currency,
    },
}

/// No plan: the reason, and which constraints excluded how many offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPlan {
    /// Units asked for.
    pub units: u32,
    /// Spread asked for.
    pub spread: Spread,
    /// Why there is no plan.
    pub reason: NoPlanReason,
    /// For each reason, how many offers it excluded (the first failing
    /// constraint of each offer, as in [`OfferBook::explain`]).
    pub mismatches: BTreeMap<Mismatch, usize>,
    /// Offers that matched every constraint but are in
    /// [`PlanRequest::exclude`].
    pub excluded: usize,
    /// Candidates: offers that matched and are not excluded.
    pub candidates: usize,
    /// Offers looked at, in total.
    pub offers: usize,
}

impl std::error::Error for NoPlan {}

impl fmt::Display for NoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spread = match self.spread {
            Spread::None => "",
            Spread::Providers => " on distinct providers",
            Spread::Countries => " in distinct countries",
        };
        write!(f, "cannot place {}{spread}: ", plural(self.units as usize, "unit"))?;
        match &self.reason {
            NoPlanReason::ZeroUnits => return f.write_str("a plan needs at least one unit"),
            NoPlanReason::Shortfall { .. } if self.candidates == 0 => f.write_str("no offer matches")?,
            NoPlanReason::Shortfall { currency, shortfall } => {
                let priced = currency.map(|c| format!(" priced in {c}")).unwrap_or_default();
                match shortfall {
                    Shortfall::Units { available } => write!(
                        f,
                        "only {available} {} available in total across {}{priced}",
                        if *available == 1 { "unit is" } else { "units are" },
                        plural(self.candidates, "matching offer"),
                    )?,
                    Shortfall::Providers { available } => write!(
                        f,
                        "only {} {} a matching offer{priced}",
                        plural(*available, "provider"),
                        if *available == 1 { "has" } else { "have" },
                    )?,
                    Shortfall::Countries { available } => {
                        let list: Vec<&str> = available.iter().map(Country::as_str).collect();
                        write!(
                            f,
                            "only {} {} a matching offer{priced} ({})",
                            plural(available.len(), "country"),
                            if available.len() == 1 { "has" } else { "have" },
                            list.join(", "),
                        )?;
                    }
                }
            }
            NoPlanReason::AmbiguousCurrency { currencies } => {
                let list: Vec<&str> = currencies.iter().map(Currency::as_str).collect();
                write!(
                    f,
                    "matching offers in {} could each make a plan and prices in different currencies \
                     cannot be compared; give a maximum unit price in the currency to pay in",
                    list.join(" and ")
                )?;
            }
            NoPlanReason::Overflow { currency } => {
                write!(f, "the cheapest total price per hour overflows 64 bits of {currency} micro-units")?;
            }
        }
        if self.offers == 0 {
            return f.write_str(" (the offer book is empty)");
        }
        let mut parts: Vec<String> =
            self.mismatches.iter().map(|(why, n)| format!("{} ({why})", plural(*n, "offer"))).collect();
        if self.excluded > 0 {
            parts.push(format!("{} (already tried)", plural(self.excluded, "offer")));
        }
        if !parts.is_empty() {
            write!(f, "; excluded: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {noun}s"),
    }
}

/// Plans `request` over every entry of `book` at `now_ms`. See
/// [`plan_entries`].
pub fn plan(book: &OfferBook, request: &PlanRequest, now_ms: u64) -> Result<Plan, NoPlan> {
    plan_entries(book.iter(), request, now_ms)
}

/// Plans `request` over `entries` at `now_ms`: the cheapest feasible plan, or
/// why there is none (see the [module documentation](self) for the rules).
/// `entries` should hold one version per offer key, as a book does (a caller
/// may filter a book's entries, e.g. to leave out its own offers).
///
/// Candidates of one currency are sorted once by [`rank`]; then, in that
/// order:
///
/// - [`Spread::None`]: greedy, each candidate gives as many units as it has
///   until `units` are placed. *This is optimal.* Let p₁ ≤ p₂ ≤ … be the
///   candidates' unit prices in that order, c₁, c₂, … their units and g the
///   greedy allocation, which fills a prefix: gᵢ = min(cᵢ, units − Σ_{j<i} gⱼ).
///   Take any feasible allocation x ≠ g placing the same units. At the first
///   index i where they differ, xᵢ < gᵢ (greedy takes the most it can there,
///   given equal prefixes), and since both place the same units there is a
///   later j with xⱼ > gⱼ ≥ 0. Moving one unit of x from j to i keeps x
///   feasible (xᵢ < gᵢ ≤ cᵢ) and does not raise its price (pᵢ ≤ pⱼ), and it
///   brings x strictly closer to g (Σ|x − g| drops by 2). Repeating reaches g,
///   so price(g) ≤ price(x).
/// - [`Spread::Providers`] / [`Spread::Countries`]: the first candidate seen
///   of each provider (country) is its cheapest, and groups are seen in order
///   of their cheapest; take one unit from each of the first `units` groups.
///   *This is optimal*: a feasible plan puts one unit in each of `units`
///   distinct groups, paying at least each chosen group's cheapest price, and
///   that sum is at least the sum of the `units` smallest group minima, which
///   is what is taken.
///
/// Tie-breaking follows [`rank`], so the result is deterministic. Tombstones
/// and expired offers count as [`Mismatch::Withdrawn`] / [`Mismatch::Expired`]
/// in the explanation, exactly as [`OfferBook::explain`] counts them.
pub fn plan_entries<'a, I>(entries: I, request: &PlanRequest, now_ms: u64) -> Result<Plan, NoPlan>
where
    I: IntoIterator<Item = &'a BookEntry>,
{
    let mut no_plan = NoPlan {
        units: request.units,
        spread: request.spread,
        reason: NoPlanReason::ZeroUnits,
        mismatches: BTreeMap::new(),
        excluded: 0,
        candidates: 0,
        offers: 0,
    };
    if request.units == 0 {
        return Err(no_plan);
    }
    let constraints = Constraints { min_units: 1, ..request.constraints.clone() };
    let mut by_currency: BTreeMap<Currency, Vec<&BookEntry>> = BTreeMap::new();
    for entry in entries {
        no_plan.offers += 1;
        if let Err(why) = constraints.check(entry, now_ms) {
            *no_plan.mismatches.entry(why).or_insert(0) += 1;
            continue;
        }
        let offer = entry.signed.offer();
        if !request.exclude.is_empty() && request.exclude.contains(&offer.key()) {
            no_plan.excluded += 1;
            continue;
        }
        no_plan.candidates += 1;
        by_currency.entry(offer.unit_price_per_hour.currency).or_default().push(entry);
    }

    let several_currencies = by_currency.len() > 1;
    let mut plans: Vec<Plan> = Vec::new();
    let mut overflowed: Option<Currency> = None;
    let mut closest: Option<(Currency, Shortfall)> = None;
    for (currency, candidates) in by_currency {
        match choose(request.units, request.spread, candidates) {
            Ok(picks) => match price(currency, &picks) {
                Some(plan) => plans.push(plan),
                None => overflowed = overflowed.or(Some(currency)),
            },
            Err(shortfall) => {
                if closest.as_ref().is_none_or(|(_, best)| shortfall.capacity() > best.capacity()) {
                    closest = Some((currency, shortfall));
                }
            }
        }
    }

    no_plan.reason = match (plans.len(), overflowed, closest) {
        (1, _, _) => return Ok(plans.remove(0)),
        (n, _, _) if n > 1 => {
            NoPlanReason::AmbiguousCurrency { currencies: plans.iter().map(|p| p.currency).collect() }
        }
        (_, Some(currency), _) => NoPlanReason::Overflow { currency },
        (_, None, Some((currency, shortfall))) => {
            NoPlanReason::Shortfall { currency: several_currencies.then_some(currency), shortfall }
        }
        (_, None, None) => NoPlanReason::Shortfall { currency: None, shortfall: empty_shortfall(request.spread) },
    };
    Err(no_plan)
}

fn empty_shortfall(spread: Spread) -> Shortfall {
    match spread {
        Spread::None => Shortfall::Units { available: 0 },
        Spread::Providers => Shortfall::Providers { available: 0 },
        Spread::Countries => Shortfall::Countries { available: Vec::new() },
    }
}

/// The cheapest allocation of `units` over `candidates` (all of one
/// currency) under `spread`; see [`plan_entries`] for why it is the cheapest.
fn choose(units: u32, spread: Spread, mut candidates: Vec<&BookEntry>) -> Result<Vec<(&Offer, u32)>, Shortfall> {
    candidates.sort_unstable_by(|a, b| rank(a, b));
    let offers = candidates.iter().map(|e| e.signed.offer());
    let mut picks = Vec::new();
    let mut left = units;
    match spread {
        Spread::None => {
            for offer in offers {
                if left == 0 {
                    break;
                }
                let take = offer.units_available.min(left);
                picks.push((offer, take));
                left -= take;
            }
            // Short only after every candidate gave all it has.
            if left > 0 {
                return Err(Shortfall::Units { available: u64::from(units - left) });
            }
        }
        Spread::Providers => {
            let mut seen: HashSet<PublicKey> = HashSet::new();
            for offer in offers {
                if left == 0 {
                    break;
                }
                if seen.insert(offer.provider) {
                    picks.push((offer, 1));
                    left -= 1;
                }
            }
            if left > 0 {
                return Err(Shortfall::Providers { available: seen.len() });
            }
        }
        Spread::Countries => {
            let mut seen: BTreeSet<Country> = BTreeSet::new();
            for offer in offers {
                if left == 0 {
                    break;
                }
                if seen.insert(offer.site.country) {
                    picks.push((offer, 1));
                    left -= 1;
                }
            }
            if left > 0 {
                return Err(Shortfall::Countries { available: seen.into_iter().collect() });
            }
        }
    }
    Ok(picks)
}

/// The plan for `picks`, or None when its total overflows.
fn price(currency: Currency, picks: &[(&Offer, u32)]) -> Option<Plan> {
    let mut total: u64 = 0;
    for (offer, units) in picks {
        total = total.checked_add(u64::from(*units).checked_mul(offer.unit_price_per_hour.micros)?)?;
    }
    Some(Plan {
        allocations: picks.iter().map(|(offer, units)| Allocation::new(offer, *units)).collect(),
        currency,
        total_price_micros_per_hour: total,
    })
}
