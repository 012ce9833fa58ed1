//! The composite placement planner: the user story, every spread policy and
//! constraint in every plan, optimality against an exhaustive search over
//! every allocation of small random books, currency handling, `exclude`, and
//! the one-sentence explanation when nothing fits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::{HOUR_MS, T0, identity, signed_offer};
use fulcrum_protocol::Limits;
use fulcrum_protocol::book::{BookEntry, OfferBook};
use fulcrum_protocol::matching::{Constraints, Mismatch, Spread};
use fulcrum_protocol::offer::{Country, Currency, Offer, OfferKey, Price, Resources};
use fulcrum_protocol::planner::{self, NoPlan, NoPlanReason, Plan, PlanRequest, Shortfall};
use proptest::prelude::*;

/// Offers are issued at T0 and live one hour; plans are made a minute later.
const NOW: u64 = T0 + 60_000;
const GAIA_X_2: &str = "gaia-x:level-2";
const ISO: &str = "iso:27001";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn country(s: &str) -> Country {
    Country::parse(s).unwrap()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn countries(items: &[&str]) -> BTreeSet<Country> {
    items.iter().map(|s| country(s)).collect()
}

fn key(seed: u8, offer_id: &str) -> OfferKey {
    OfferKey { provider: identity(seed).public(), offer_id: offer_id.to_owned() }
}

/// A book entry for an offer of provider `seed`: the fixture offer (8 vCPU,
/// 32 GiB, label iso:27001, SLA 999, 1 h to 720 h) in `country` with `units`
/// at `price_micros` EUR, changed by `f`, signed by the provider, with
/// `attested` as the labels its member certificate vouches for.
fn entry(
    seed: u8,
    offer_id: &str,
    country_code: &str,
    units: u32,
    price_micros: u64,
    attested: &[&str],
    f: impl FnOnce(&mut Offer),
) -> BookEntry {
    let id = identity(seed);
    let mut o = signed_offer(&id, offer_id, units, price_micros, T0);
    o.site.country = country(country_code);
    f(&mut o);
    let signed = o.sign(&id);
    let retain_until_ms = signed.offer().expires_at_ms;
    BookEntry { signed, attested_labels: set(attested), received_at_ms: T0, retain_until_ms }
}

/// A 16 vCPU / 64 GiB offer labelled gaia-x:level-2 and iso:27001, of which
/// `attested` are attested, changed by `f`.
fn big(
    seed: u8,
    offer_id: &str,
    country_code: &str,
    units: u32,
    price_micros: u64,
    attested: &[&str],
    f: impl FnOnce(&mut Offer),
) -> BookEntry {
    entry(seed, offer_id, country_code, units, price_micros, attested, |o| {
        o.flavour.name = "c16m64".into();
        o.flavour.per_unit.vcpu = 16;
        o.flavour.per_unit.memory_mib = 65_536;
        o.labels = vec![GAIA_X_2.into(), ISO.into()];
        f(o);
    })
}

fn book(entries: &[BookEntry]) -> OfferBook {
    let mut book = OfferBook::new(&Limits::default());
    for e in entries {
        book.insert(e.signed.clone(), e.attested_labels.clone(), T0).unwrap();
    }
    book
}

/// (offer key, units) of every allocation, in plan order.
fn picks(plan: &Plan) -> Vec<(OfferKey, u32)> {
    plan.allocations.iter().map(|a| (a.key(), a.units)).collect()
}

/// The user story's constraints: 16 vCPU / 64 GiB per unit in the EU on
/// attested Gaia-X level 2 providers, at most 0.50 EUR per unit and hour,
/// SLA 99.5 %, for 720 hours.
fn eu_gaia_x() -> Constraints {
    Constraints {
        min_per_unit: Resources { vcpu: 16, memory_mib: 65_536, ..Resources::default() },
        countries: countries(&["AT", "BE", "DE", "DK", "ES", "FI", "FR", "IE", "IT", "NL", "PL", "SE"]),
        labels: set(&[GAIA_X_2]),
        attested_labels: true,
        max_unit_price: Some(Price::eur(500_000)),
        min_sla_permille: 995,
        duration_ms: Some(720 * HOUR_MS),
        min_units: 0,
    }
}

/// The user story's market: three EU countries with attested Gaia-X level 2
/// offers, and cheaper offers that each miss one constraint.
fn market() -> Vec<BookEntry> {
    let none = |_: &mut Offer| {};
    vec![
        big(1, "fra1-c16m64", "DE", 2, 400_000, &[GAIA_X_2, ISO], none),
        big(2, "par1-c16m64", "FR", 4, 420_000, &[GAIA_X_2], none),
        big(3, "ams1-c16m64", "NL", 8, 450_000, &[GAIA_X_2], none),
        big(4, "ber1-c16m64", "DE", 8, 410_000, &[GAIA_X_2], none),
        // Cheaper, but Gaia-X level 2 is only self-declared.
        big(5, "muc1-c16m64", "DE", 8, 300_000, &[ISO], none),
        // Cheapest, outside the EU.
        big(6, "nyc1-c16m64", "US", 8, 200_000, &[GAIA_X_2], none),
        // Too small a unit.
        entry(7, "lyo1-c8m32", "FR", 8, 100_000, &[GAIA_X_2], |o| o.labels = vec![GAIA_X_2.into()]),
        // Too expensive.
        big(8, "mad1-c16m64", "ES", 8, 900_000, &[GAIA_X_2], none),
        // SLA too low.
        big(9, "waw1-c16m64", "PL", 8, 350_000, &[GAIA_X_2], |o| o.sla_permille = 990),
    ]
}

fn no_plan(entries: &[BookEntry], request: &PlanRequest) -> NoPlan {
    planner::plan_entries(entries, request, NOW).expect_err("expected no plan")
}

// ---------------------------------------------------------------------------
// The user story
// ---------------------------------------------------------------------------

/// "3 replicas of 16 vCPU / 64 GiB in at least 2 EU countries on Gaia-X
/// level 2 providers, at the best price, in one request."
#[test]
fn user_story_three_replicas_in_eu_countries_on_gaia_x_level_2() {
    let market = market();
    let book = book(&market);
    let request = PlanRequest::new(3, eu_gaia_x(), Spread::Countries);
    let plan = planner::plan(&book, &request, NOW).unwrap();

    // The cheapest admissible offer of each of the three cheapest countries.
    assert_eq!(picks(&plan), vec![(key(1, "fra1-c16m64"), 1), (key(2, "par1-c16m64"), 1), (key(3, "ams1-c16m64"), 1)]);
    assert_eq!(plan.currency, Currency::EUR);
    assert_eq!(plan.total_price_micros_per_hour, 400_000 + 420_000 + 450_000);
    assert_eq!(plan.units(), 3);
    let in_countries: BTreeSet<Country> = plan.allocations.iter().map(|a| a.country).collect();
    assert!(in_countries.len() >= 2);
    assert_eq!(in_countries, countries(&["DE", "FR", "NL"]));
    for a in &plan.allocations {
        assert_eq!(a.provider, a.offer.provider);
        assert_eq!(a.unit_price, a.offer.unit_price_per_hour);
        assert!(book.get(&a.key()).unwrap().attested_labels.contains(GAIA_X_2));
    }
    assert_eq!(
        plan.to_string(),
        format!(
            "3 units for 1.270000 EUR per hour: 1 on {} (DE) at 0.400000 EUR, 1 on {} (FR) at 0.420000 EUR, \
             1 on {} (NL) at 0.450000 EUR",
            key(1, "fra1-c16m64"),
            key(2, "par1-c16m64"),
            key(3, "ams1-c16m64"),
        )
    );

    // Same request, other spreads.
    let on_providers =
        planner::plan(&book, &PlanRequest { spread: Spread::Providers, ..request.clone() }, NOW).unwrap();
    assert_eq!(
        picks(&on_providers),
        vec![(key(1, "fra1-c16m64"), 1), (key(4, "ber1-c16m64"), 1), (key(2, "par1-c16m64"), 1)]
    );
    assert_eq!(on_providers.total_price_micros_per_hour, 1_230_000);
    let anywhere = planner::plan(&book, &PlanRequest { spread: Spread::None, ..request.clone() }, NOW).unwrap();
    assert_eq!(picks(&anywhere), vec![(key(1, "fra1-c16m64"), 2), (key(4, "ber1-c16m64"), 1)]);
    assert_eq!(anywhere.total_price_micros_per_hour, 1_210_000);
}

/// `countries` spread means no two units in one country: with only two
/// countries admissible, three replicas cannot be placed, and the planner says
/// so, naming the countries and what excluded the others.
#[test]
fn countries_spread_needs_one_country_per_unit() {
    let mut market = market();
    market.retain(|e| e.signed.offer().site.country != country("NL"));
    let request = PlanRequest::new(3, eu_gaia_x(), Spread::Countries);
    let why = no_plan(&market, &request);
    assert_eq!(
        why.reason,
        NoPlanReason::Shortfall {
            currency: None,
            shortfall: Shortfall::Countries { available: vec![country("DE"), country("FR")] }
        }
    );
    assert_eq!(
        why.to_string(),
        "cannot place 3 units in distinct countries: only 2 countries have a matching offer (DE, FR); \
         excluded: 1 offer (resources per unit too small), 1 offer (country not allowed), \
         1 offer (label gaia-x:level-2 is self-declared, not attested), 1 offer (price above maximum), \
         1 offer (SLA below minimum)"
    );
    // Two replicas fit.
    let plan = planner::plan_entries(&market, &PlanRequest::new(2, eu_gaia_x(), Spread::Countries), NOW).unwrap();
    assert_eq!(picks(&plan), vec![(key(1, "fra1-c16m64"), 1), (key(2, "par1-c16m64"), 1)]);
}

// ---------------------------------------------------------------------------
// Constraints, exclude, currency
// ---------------------------------------------------------------------------

/// A self-declared label never satisfies an attested constraint, however
/// cheap the offer; without `attested_labels` it does.
#[test]
fn self_declared_label_never_satisfies_attested_constraint() {
    let cheap_self_declared = entry(1, "cheap", "DE", 5, 100_000, &[], |o| o.labels = vec![GAIA_X_2.into()]);
    let dear_attested = entry(2, "dear", "DE", 5, 300_000, &[GAIA_X_2], |o| o.labels = vec![GAIA_X_2.into()]);
    let attested = Constraints { labels: set(&[GAIA_X_2]), attested_labels: true, ..Constraints::default() };
    let request = PlanRequest::new(2, attested.clone(), Spread::None);

    let plan = planner::plan_entries([&cheap_self_declared, &dear_attested], &request, NOW).unwrap();
    assert_eq!(picks(&plan), vec![(key(2, "dear"), 2)]);

    let why = no_plan(std::slice::from_ref(&cheap_self_declared), &request);
    assert_eq!(why.mismatches, BTreeMap::from([(Mismatch::LabelNotAttested(GAIA_X_2.into()), 1)]));
    assert_eq!(
        why.to_string(),
        "cannot place 2 units: no offer matches; excluded: 1 offer (label gaia-x:level-2 is self-declared, not attested)"
    );

    let declared = PlanRequest::new(2, Constraints { attested_labels: false, ..attested }, Spread::None);
    let plan = planner::plan_entries([&cheap_self_declared, &dear_attested], &declared, NOW).unwrap();
    assert_eq!(picks(&plan), vec![(key(1, "cheap"), 2)]);
}

/// `exclude` removes offers (whatever their seq) from consideration, so a
/// re-plan after a failed hold yields the next candidates.
#[test]
fn exclude_removes_offers_and_replanning_yields_the_next_candidates() {
    let market = market();
    let mut request = PlanRequest::new(3, eu_gaia_x(), Spread::Providers);
    let first = planner::plan_entries(&market, &request, NOW).unwrap();
    assert_eq!(picks(&first), vec![(key(1, "fra1-c16m64"), 1), (key(4, "ber1-c16m64"), 1), (key(2, "par1-c16m64"), 1)]);

    // The hold on provider 4's offer failed.
    request.exclude.insert(key(4, "ber1-c16m64"));
    let second = planner::plan_entries(&market, &request, NOW).unwrap();
    assert_eq!(
        picks(&second),
        vec![(key(1, "fra1-c16m64"), 1), (key(2, "par1-c16m64"), 1), (key(3, "ams1-c16m64"), 1)]
    );
    assert!(second.allocations.iter().all(|a| !request.exclude.contains(&a.key())));

    // Then provider 1's as well: only two admissible providers are left.
    request.exclude.insert(key(1, "fra1-c16m64"));
    let why = no_plan(&market, &request);
    assert_eq!(why.excluded, 2);
    assert_eq!(why.candidates, 2);
    assert_eq!(
        why.reason,
        NoPlanReason::Shortfall { currency: None, shortfall: Shortfall::Providers { available: 2 } }
    );
    let text = why.to_string();
    assert!(text.starts_with("cannot place 3 units on distinct providers: only 2 providers have a matching offer; "));
    assert!(text.ends_with(", 2 offers (already tried)"), "{text}");

    // Excluding every admissible offer leaves nothing, and says so.
    request.exclude.extend([key(2, "par1-c16m64"), key(3, "ams1-c16m64")]);
    let why = no_plan(&market, &request);
    assert_eq!(why.candidates, 0);
    assert!(why.to_string().starts_with("cannot place 3 units on distinct providers: no offer matches; "));
}

/// Every constraint that excludes an offer is named with its count, and the
/// spread shortfall is stated for each policy.
#[test]
fn explanations_name_constraints_and_shortfall() {
    let now_expired = entry(1, "old", "DE", 5, 100_000, &[], |o| o.expires_at_ms = NOW);
    let withdrawn = entry(1, "gone", "DE", 0, 100_000, &[], |_| {});
    let no_label = entry(2, "plain", "DE", 5, 100_000, &[], |o| o.labels.clear());
    let short_duration = entry(2, "short", "DE", 5, 100_000, &[], |o| o.max_duration_ms = 24 * HOUR_MS);
    let in_usd = entry(3, "usd", "DE", 5, 100_000, &[], |o| o.unit_price_per_hour.currency = usd());
    let ok_de = entry(4, "de", "DE", 1, 200_000, &[], |_| {});
    let ok_fr = entry(4, "fr", "FR", 1, 200_000, &[], |_| {});
    let entries = [now_expired, withdrawn, no_label, short_duration, in_usd, ok_de, ok_fr];
    let constraints = Constraints {
        labels: set(&[ISO]),
        max_unit_price: Some(Price::eur(250_000)),
        duration_ms: Some(48 * HOUR_MS),
        ..Constraints::default()
    };
    let excluded = " excluded: 1 offer (withdrawn), 1 offer (expired), 1 offer (label iso:27001 missing), \
                    1 offer (priced in another currency), 1 offer (duration outside the offer's range)";

    let why = no_plan(&entries, &PlanRequest::new(3, constraints.clone(), Spread::None));
    assert_eq!(why.reason, NoPlanReason::Shortfall { currency: None, shortfall: Shortfall::Units { available: 2 } });
    assert_eq!(
        why.mismatches,
        BTreeMap::from([
            (Mismatch::Withdrawn, 1),
            (Mismatch::Expired, 1),
            (Mismatch::Label(ISO.into()), 1),
            (Mismatch::Currency, 1),
            (Mismatch::Duration, 1),
        ])
    );
    assert_eq!(why.offers, 7);
    assert_eq!(
        why.to_string(),
        format!("cannot place 3 units: only 2 units are available in total across 2 matching offers;{excluded}")
    );

    let why = no_plan(&entries, &PlanRequest::new(2, constraints.clone(), Spread::Providers));
    assert_eq!(
        why.to_string(),
        format!("cannot place 2 units on distinct providers: only 1 provider has a matching offer;{excluded}")
    );

    let why = no_plan(&entries, &PlanRequest::new(3, constraints.clone(), Spread::Countries));
    assert_eq!(
        why.to_string(),
        format!(
            "cannot place 3 units in distinct countries: only 2 countries have a matching offer (DE, FR);{excluded}"
        )
    );

    // The per-reason counts are those of OfferBook::explain on the same book
    // (min_units aside: the planner splits units over offers).
    let explained = book(&entries[2..]).explain(&Constraints { min_units: 1, ..constraints.clone() }, NOW);
    let why = planner::plan(&book(&entries[2..]), &PlanRequest::new(9, constraints, Spread::None), NOW).unwrap_err();
    assert_eq!(why.mismatches, explained);

    // An empty book, and a request for nothing.
    let why = no_plan(&[], &PlanRequest::new(1, Constraints::default(), Spread::None));
    assert_eq!(why.to_string(), "cannot place 1 unit: no offer matches (the offer book is empty)");
    let why = no_plan(&entries, &PlanRequest::new(0, Constraints::default(), Spread::None));
    assert_eq!(why.reason, NoPlanReason::ZeroUnits);
    assert_eq!(why.to_string(), "cannot place 0 units: a plan needs at least one unit");
}

/// Prices in different currencies are never combined or compared: a max
/// price picks the currency; without one, a single feasible currency is
/// planned and several feasible currencies are refused.
#[test]
fn currencies_are_never_mixed_or_compared() {
    let eur = entry(1, "eur", "DE", 1, 300_000, &[], |_| {});
    let usd_a = entry(2, "usd-a", "DE", 1, 100_000, &[], |o| o.unit_price_per_hour.currency = usd());
    let usd_b = entry(3, "usd-b", "FR", 1, 100_000, &[], |o| o.unit_price_per_hour.currency = usd());
    let eur_b = entry(4, "eur-b", "FR", 1, 300_000, &[], |_| {});

    // One EUR unit and one USD unit are not two units.
    let unpriced = |units| PlanRequest::new(units, Constraints::default(), Spread::None);
    let why = no_plan(&[eur.clone(), usd_a.clone()], &unpriced(2));
    assert_eq!(
        why.reason,
        NoPlanReason::Shortfall { currency: Some(Currency::EUR), shortfall: Shortfall::Units { available: 1 } }
    );
    assert_eq!(
        why.to_string(),
        "cannot place 2 units: only 1 unit is available in total across 2 matching offers priced in EUR"
    );

    // Only USD can make two units: the plan is in USD.
    let plan = planner::plan_entries(&[eur.clone(), usd_a.clone(), usd_b.clone()], &unpriced(2), NOW).unwrap();
    assert_eq!(plan.currency, usd());
    assert_eq!(plan.total_per_hour(), Price { currency: usd(), micros: 200_000 });

    // Both can: refused, whatever the numbers.
    let all = [eur.clone(), usd_a, usd_b, eur_b];
    let why = no_plan(&all, &unpriced(2));
    assert_eq!(why.reason, NoPlanReason::AmbiguousCurrency { currencies: vec![Currency::EUR, usd()] });
    assert_eq!(
        why.to_string(),
        "cannot place 2 units: matching offers in EUR and USD could each make a plan and prices in different \
         currencies cannot be compared; give a maximum unit price in the currency to pay in"
    );

    // A max price names the currency.
    let in_eur = PlanRequest::new(
        2,
        Constraints { max_unit_price: Some(Price::eur(u64::MAX)), ..Constraints::default() },
        Spread::None,
    );
    let plan = planner::plan_entries(&all, &in_eur, NOW).unwrap();
    assert_eq!(plan.currency, Currency::EUR);
    assert_eq!(picks(&plan), vec![(key(1, "eur"), 1), (key(4, "eur-b"), 1)]);
}

/// A total that does not fit in u64 is refused, not wrapped.
#[test]
fn total_price_overflow_is_refused() {
    let dear = entry(1, "dear", "DE", 4, u64::MAX / 2, &[], |_| {});
    let request = PlanRequest::new(2, Constraints::default(), Spread::None);
    let plan = planner::plan_entries([&dear], &PlanRequest { units: 1, ..request.clone() }, NOW).unwrap();
    assert_eq!(plan.total_price_micros_per_hour, u64::MAX / 2);
    let why = no_plan(std::slice::from_ref(&dear), &PlanRequest { units: 3, ..request });
    assert_eq!(why.reason, NoPlanReason::Overflow { currency: Currency::EUR });
    assert_eq!(
        why.to_string(),
        "cannot place 3 units: the cheapest total price per hour overflows 64 bits of EUR micro-units"
    );
}

/// Equal prices: the higher SLA wins, then the offer key; the plan does not
/// depend on the order of the book.
#[test]
fn ties_are_broken_by_rank() {
    let low_sla = entry(1, "a", "DE", 1, 100_000, &[], |o| o.sla_permille = 990);
    let high_sla = entry(2, "b", "DE", 1, 100_000, &[], |_| {});
    let same_1 = entry(3, "c", "DE", 1, 100_000, &[], |_| {});
    let entries = [low_sla, high_sla, same_1];
    let request = PlanRequest::new(2, Constraints::default(), Spread::None);
    let plan = planner::plan_entries(&entries, &request, NOW).unwrap();
    let mut expected = vec![(key(2, "b"), 1), (key(3, "c"), 1)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(picks(&plan), expected);
    let reversed: Vec<&BookEntry> = entries.iter().rev().collect();
    assert_eq!(planner::plan_entries(reversed, &request, NOW).unwrap(), plan);
}

// ---------------------------------------------------------------------------
// Random books
// ---------------------------------------------------------------------------

const COUNTRIES: [&str; 6] = ["DE", "FR", "NL", "AT", "IT", "US"];
const LABELS: [&str; 2] = [GAIA_X_2, ISO];
const PRICES: [u64; 4] = [100_000, 200_000, 300_000, 450_000];
const SLAS: [u32; 3] = [990, 995, 999];

/// One random offer.
#[derive(Debug, Clone)]
struct Spec {
    provider: u8,
    country: usize,
    units: u32,
    price: usize,
    usd: bool,
    /// Bitmask over LABELS of the labels carried, and of those attested.
    labels: u8,
    attested: u8,
    sla: usize,
    vcpu16: bool,
    expired: bool,
    short: bool,
}

fn spec(providers: u8, max_units: u32) -> impl Strategy<Value = Spec> {
    (
        (1u8..=providers, 0..COUNTRIES.len(), prop_oneof![1 => Just(0u32), 6 => 1..=max_units], 0..PRICES.len()),
        (
            prop::bool::weighted(0.15),
            prop_oneof![1 => 0u8..3, 2 => Just(3u8)],
            prop_oneof![1 => 0u8..3, 2 => Just(3u8)],
            0..SLAS.len(),
        ),
        (any::<bool>(), prop::bool::weighted(0.05), prop::bool::weighted(0.1)),
    )
        .prop_map(|((provider, country, units, price), (usd, labels, attested, sla), (vcpu16, expired, short))| {
            Spec {
                provider,
                country,
                units,
                price,
                usd,
                labels,
                attested: attested & labels,
                sla,
                vcpu16,
                expired,
                short,
            }
        })
}

fn pick_labels(mask: u8) -> Vec<&'static str> {
    LABELS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, l)| *l).collect()
}

fn build(specs: &[Spec]) -> Vec<BookEntry> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let attested = pick_labels(s.attested);
            entry(s.provider, &format!("o{i}"), COUNTRIES[s.country], s.units, PRICES[s.price], &attested, |o| {
                o.labels = pick_labels(s.labels).into_iter().map(String::from).collect();
                if s.usd {
                    o.unit_price_per_hour.currency = usd();
                }
                o.sla_permille = SLAS[s.sla];
                if s.vcpu16 {
                    o.flavour.per_unit.vcpu = 16;
                }
                if s.expired {
                    o.expires_at_ms = NOW;
                }
                if s.short {
                    o.max_duration_ms = 24 * HOUR_MS;
                }
            })
        })
        .collect()
}

/// A random request over a book of offers with `keys`, excluding some.
fn request(keys: Vec<OfferKey>, max_units: u32) -> impl Strategy<Value = PlanRequest> {
    (
        (1..=max_units, prop_oneof![Just(Spread::None), Just(Spread::Providers), Just(Spread::Countries)]),
        (
            prop_oneof![1 => Just(0u8), 1 => 1u8..64],
            prop_oneof![2 => Just(0u8), 1 => 1u8..4],
            any::<bool>(),
            prop_oneof![2 => Just(0usize), 3 => Just(2), 1 => Just(1), 1 => Just(3)],
        ),
        (
            prop_oneof![2 => Just(0usize), 1 => 1..=SLAS.len()],
            prop::bool::weighted(0.2),
            prop_oneof![Just(None), Just(Some(HOUR_MS)), Just(Some(48 * HOUR_MS))],
        ),
        prop::collection::vec(prop::bool::weighted(0.1), keys.len()),
    )
        .prop_map(
            move |((units, spread), (countries, labels, attested, price), (sla, vcpu16, duration_ms), exclude)| {
                let max_unit_price = match price {
                    0 => None,
                    1 => Some(Price::eur(250_000)),
                    2 => Some(Price::eur(1_000_000)),
                    _ => Some(Price { currency: usd(), micros: 300_000 }),
                };
                let constraints = Constraints {
                    min_per_unit: Resources { vcpu: if vcpu16 { 16 } else { 8 }, ..Resources::default() },
                    countries: COUNTRIES
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| countries & (1 << i) != 0)
                        .map(|(_, c)| country(c))
                        .collect(),
                    labels: pick_labels(labels).into_iter().map(String::from).collect(),
                    attested_labels: attested,
                    max_unit_price,
                    min_sla_permille: if sla == 0 { 0 } else { SLAS[sla - 1] },
                    duration_ms,
                    // Ignored by the planner.
                    min_units: 1_000,
                };
                let exclude = keys.iter().zip(exclude).filter(|(_, x)| *x).map(|(k, _)| k.clone()).collect();
                PlanRequest { units, constraints, spread, exclude }
            },
        )
}

/// Whether `entry` may take a unit of `request`, written out independently of
/// `Constraints::check`.
fn admissible(entry: &BookEntry, request: &PlanRequest) -> bool {
    let o = entry.signed.offer();
    let c = &request.constraints;
    o.units_available > 0
        && o.expires_at_ms > NOW
        && !request.exclude.contains(&o.key())
        && o.flavour.per_unit.vcpu >= c.min_per_unit.vcpu
        && o.flavour.per_unit.memory_mib >= c.min_per_unit.memory_mib
        && (c.countries.is_empty() || c.countries.contains(&o.site.country))
        && c.labels.iter().all(|l| o.labels.contains(l) && (!c.attested_labels || entry.attested_labels.contains(l)))
        && c.max_unit_price.is_none_or(|max| {
            max.currency == o.unit_price_per_hour.currency && o.unit_price_per_hour.micros <= max.micros
        })
        && o.sla_permille >= c.min_sla_permille
        && c.duration_ms.is_none_or(|d| o.min_duration_ms <= d && d <= o.max_duration_ms)
}

/// Checks everything a plan promises: the units, each offer's capacity, one
/// currency, the total, the spread, and every constraint.
fn check_plan(plan: &Plan, entries: &[BookEntry], request: &PlanRequest) -> Result<(), TestCaseError> {
    let by_key: BTreeMap<OfferKey, &BookEntry> = entries.iter().map(|e| (e.signed.offer().key(), e)).collect();
    prop_assert_eq!(plan.units(), request.units);
    let mut total: u64 = 0;
    let mut keys = HashSet::new();
    for a in &plan.allocations {
        let e = by_key[&a.key()];
        prop_assert_eq!(&a.offer, e.signed.offer());
        prop_assert!(keys.insert(a.key()), "offer {} allocated twice", a.key());
        prop_assert!(a.units >= 1 && a.units <= a.offer.units_available);
        prop_assert_eq!(a.provider, a.offer.provider);
        prop_assert_eq!(a.country, a.offer.site.country);
        prop_assert_eq!(a.unit_price, a.offer.unit_price_per_hour);
        prop_assert_eq!(a.unit_price.currency, plan.currency);
        prop_assert!(admissible(e, request), "allocated inadmissible offer {}", a.key());
        // The constraints again, one by one, for the reader.
        let c = &request.constraints;
        prop_assert!(c.countries.is_empty() || c.countries.contains(&a.country));
        for l in &c.labels {
            prop_assert!(a.offer.labels.contains(l));
            if c.attested_labels {
                prop_assert!(e.attested_labels.contains(l), "label {} only self-declared", l);
            }
        }
        if let Some(max) = c.max_unit_price {
            prop_assert_eq!(max.currency, a.unit_price.currency);
            prop_assert!(a.unit_price.micros <= max.micros);
        }
        prop_assert!(a.offer.sla_permille >= c.min_sla_permille);
        prop_assert!(!request.exclude.contains(&a.key()));
        total += u64::from(a.units) * a.unit_price.micros;
    }
    prop_assert_eq!(plan.total_price_micros_per_hour, total);
    match request.spread {
        Spread::None => {}
        Spread::Providers => {
            let providers: HashSet<_> = plan.allocations.iter().map(|a| a.provider).collect();
            prop_assert_eq!(providers.len(), plan.allocations.len());
            prop_assert!(plan.allocations.iter().all(|a| a.units == 1));
        }
        Spread::Countries => {
            let in_countries: HashSet<_> = plan.allocations.iter().map(|a| a.country).collect();
            prop_assert_eq!(in_countries.len(), plan.allocations.len());
            prop_assert!(plan.allocations.iter().all(|a| a.units == 1));
        }
    }
    Ok(())
}

/// What an exhaustive search says: the cheapest total over every allocation
/// of every currency, or no plan.
#[derive(Debug, PartialEq, Eq)]
enum Best {
    Plan(Currency, u64),
    None,
    Ambiguous,
}

/// Tries every allocation x (0 ≤ xᵢ ≤ capacityᵢ, Σ xᵢ = units, spread
/// respected) over the admissible offers of each currency.
fn exhaustive(entries: &[BookEntry], request: &PlanRequest) -> Best {
    let currencies: BTreeSet<Currency> =
        entries.iter().map(|e| e.signed.offer().unit_price_per_hour.currency).collect();
    let mut found = Vec::new();
    for currency in currencies {
        let offers: Vec<&Offer> = entries
            .iter()
            .filter(|e| admissible(e, request) && e.signed.offer().unit_price_per_hour.currency == currency)
            .map(|e| e.signed.offer())
            .collect();
        let mut best = None;
        search(&offers, request, 0, request.units, &mut Vec::new(), 0, &mut best);
        if let Some(total) = best {
            found.push((currency, total));
        }
    }
    match found.as_slice() {
        [] => Best::None,
        [(currency, total)] => Best::Plan(*currency, *total),
        _ => Best::Ambiguous,
    }
}

fn search<'a>(
    offers: &[&'a Offer],
    request: &PlanRequest,
    i: usize,
    left: u32,
    taken: &mut Vec<&'a Offer>,
    cost: u64,
    best: &mut Option<u64>,
) {
    if left == 0 {
        *best = Some(best.map_or(cost, |b| b.min(cost)));
        return;
    }
    let Some(offer) = offers.get(i) else { return };
    let max = match request.spread {
        Spread::None => offer.units_available.min(left),
        Spread::Providers => u32::from(!taken.iter().any(|t| t.provider == offer.provider)),
        Spread::Countries => u32::from(!taken.iter().any(|t| t.site.country == offer.site.country)),
    };
    for x in 0..=max {
        if x > 0 {
            taken.push(offer);
        }
        search(offers, request, i + 1, left - x, taken, cost + u64::from(x) * offer.unit_price_per_hour.micros, best);
        if x > 0 {
            taken.pop();
        }
    }
}

/// A book of `offers` offers from up to `providers` providers, and a request
/// for up to `max_units` units.
fn book_and_request(
    offers: std::ops::RangeInclusive<usize>,
    providers: u8,
    max_units: u32,
) -> impl Strategy<Value = (Vec<Spec>, PlanRequest)> {
    prop::collection::vec(spec(providers, max_units), offers).prop_flat_map(move |specs| {
        let keys = specs.iter().enumerate().map(|(i, s)| key(s.provider, &format!("o{i}"))).collect();
        (Just(specs), request(keys, max_units))
    })
}

proptest! {
    // The exhaustive search is cheap on books this small: many cases.
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Optimality: on small books (≤ 6 offers, ≤ 4 units), for every spread,
    /// the planner finds a plan exactly when an exhaustive search over all
    /// allocations does, at the same total, in the same currency; the plan
    /// keeps every promise and does not depend on the order of the book.
    #[test]
    fn plan_is_optimal_against_exhaustive_search((specs, request) in book_and_request(2..=6, 4, 4)) {
        let entries = build(&specs);
        let got = planner::plan_entries(&entries, &request, NOW);
        let want = exhaustive(&entries, &request);
        match (&got, &want) {
            (Ok(plan), Best::Plan(currency, total)) => {
                check_plan(plan, &entries, &request)?;
                prop_assert_eq!(plan.currency, *currency);
                prop_assert_eq!(plan.total_price_micros_per_hour, *total);
            }
            (Err(why), Best::None) => {
                let is_shortfall = matches!(why.reason, NoPlanReason::Shortfall { .. });
                prop_assert!(is_shortfall, "{}", why);
            }
            (Err(why), Best::Ambiguous) => {
                let is_ambiguous = matches!(why.reason, NoPlanReason::AmbiguousCurrency { .. });
                prop_assert!(is_ambiguous, "{}", why);
            }
            _ => prop_assert!(false, "planner {:?}, exhaustive search {:?}", got, want),
        }
        let reversed: Vec<&BookEntry> = entries.iter().rev().collect();
        prop_assert_eq!(planner::plan_entries(reversed, &request, NOW), got);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every plan over larger random books respects its spread policy.
    #[test]
    fn spread_holds_in_every_plan((specs, request) in book_and_request(0..=40, 10, 8)) {
        let entries = build(&specs);
        if let Ok(plan) = planner::plan_entries(&entries, &request, NOW) {
            check_plan(&plan, &entries, &request)?;
        }
    }

    /// Every plan respects labels (attested ones only when attested), countries,
    /// price and currency, SLA, resources, duration and `exclude`; and when there
    /// is no plan, the explanation accounts for every offer.
    #[test]
    fn constraints_hold_in_every_plan((specs, request) in book_and_request(0..=40, 10, 8)) {
        let entries = build(&specs);
        match planner::plan_entries(&entries, &request, NOW) {
            Ok(plan) => check_plan(&plan, &entries, &request)?,
            Err(why) => {
                let mismatched: usize = why.mismatches.values().sum();
                prop_assert_eq!(mismatched + why.excluded + why.candidates, entries.len());
                prop_assert_eq!(why.offers, entries.len());
                let admissible_count = entries.iter().filter(|e| admissible(e, &request)).count();
                prop_assert_eq!(why.candidates, admissible_count);
                let text = why.to_string();
                prop_assert!(text.starts_with(&format!("cannot place {} unit", request.units)), "{}", text);
                for reason in why.mismatches.keys() {
                    prop_assert!(text.contains(&format!("({reason})")), "{} does not name {}", text, reason);
                }
            }
        }
    }
}
