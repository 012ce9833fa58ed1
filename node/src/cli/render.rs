//! Human output: aligned tables and key/value blocks built from the views.
//! Tables shorten keys to 8 hex digits; single-record views print them whole
//! so they can be copied.

use std::fmt::Write as _;

use super::time::{format_rfc3339, format_span, now_ms};
use super::view::{
    ContractView, EventView, OfferView, PeerView, PlaceView, PlacementView, PlannedView, StatusView, short,
};
use crate::offer_file::{format_duration_ms, format_micros};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns sized to their widest cell, two spaces apart.
#[derive(Debug)]
struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[(&'static str, Align)]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), cell)) in self.headers.iter().zip(row).enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key   value` lines with the values aligned.
fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{k:width$}  {v}");
    }
    out
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() { "-".to_owned() } else { s.to_owned() }
}

fn permille(p: u32) -> String {
    format!("{}.{}%", p / 10, p % 10)
}

/// `fulcrumctl status`.
pub fn status(s: &StatusView) -> String {
    let listen = if s.listen_addrs.is_empty() { "-".to_owned() } else { s.listen_addrs.join(", ") };
    key_values(&[
        ("node key", dash_if_empty(&s.node_key)),
        ("peer id", dash_if_empty(&s.peer_id)),
        ("federation", dash_if_empty(&s.federation)),
        ("version", dash_if_empty(&s.version)),
        ("uptime", format_span(s.uptime_ms)),
        ("listen addrs", listen),
        ("peers", format!("{} connected", s.connected_peers)),
        ("offers", format!("{} known, {} own", s.offers_known, s.offers_own)),
        ("contracts", format!("{} active", s.contracts_active)),
        ("log size", format!("{} records", s.log_size)),
        ("log root", dash_if_empty(&s.log_root)),
        (
            "checkpoint",
            format!("size {}; {} logs witnessed, {} evidence", s.checkpoint_size, s.witnessed_nodes, s.evidence),
        ),
        ("membership", membership_line(s)),
    ])
}

fn membership_line(s: &StatusView) -> String {
    let mut line = dash_if_empty(&s.membership);
    if s.certificate_not_after_ms > 0 {
        line.push_str(&format!(" (certificate valid until {})", format_rfc3339(s.certificate_not_after_ms)));
    }
    if s.members_known > 0 {
        line.push_str(&format!("; {} member certificates known", s.members_known));
    }
    line
}

/// `fulcrumctl peers`.
pub fn peers(peers: &[PeerView]) -> String {
    if peers.is_empty() {
        return "no peers connected\n".to_owned();
    }
    let now = now_ms();
    let mut t = Table::new(&[
        ("PEER ID", Align::Left),
        ("CONNECTED", Align::Right),
        ("SCORE", Align::Right),
        ("LOG", Align::Right),
        ("EVIDENCE", Align::Right),
        ("ADDRESSES", Align::Left),
    ]);
    for p in peers {
        let since = if p.connected_since_ms == 0 {
            "-".to_owned()
        } else {
            format_span(now.saturating_sub(p.connected_since_ms))
        };
        let evidence = if p.evidence == 0 { "-".to_owned() } else { format!("{} (!)", p.evidence) };
        t.push(vec![
            p.peer_id.clone(),
            since,
            p.score.to_string(),
            p.log_size.to_string(),
            evidence,
            p.addrs.join(", "),
        ]);
    }
    t.render()
}

/// `fulcrumctl offers list`. Self-declared labels carry a `*`.
pub fn offers(offers: &[OfferView]) -> String {
    if offers.is_empty() {
        return "no offers match\n".to_owned();
    }
    let mut t = Table::new(&[
        ("PROVIDER", Align::Left),
        ("OFFER", Align::Left),
        ("SITE", Align::Left),
        ("FLAVOUR", Align::Left),
        ("VCPU", Align::Right),
        ("MEM MiB", Align::Right),
        ("DISK GiB", Align::Right),
        ("GPUS", Align::Left),
        ("UNITS", Align::Right),
        ("PRICE/UNIT-HOUR", Align::Right),
        ("SLA", Align::Right),
        ("LABELS", Align::Left),
        ("EXPIRES", Align::Left),
    ]);
    let mut self_declared = false;
    for o in offers {
        let labels: Vec<String> = o
            .labels
            .iter()
            .map(|l| {
                if o.attested_labels.contains(l) {
                    l.clone()
                } else {
                    self_declared = true;
                    format!("{l}*")
                }
            })
            .collect();
        let (name, vcpu, mem, disk, gpus) = match &o.flavour {
            Some(f) => {
                (f.name.clone(), f.vcpu.to_string(), f.memory_mib.to_string(), f.storage_gib.to_string(), f.gpus_text())
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        t.push(vec![
            short(&o.provider).to_owned(),
            o.offer_id.clone(),
            o.site.as_ref().map_or("-".to_owned(), |s| s.path()),
            name,
            vcpu,
            mem,
            disk,
            gpus,
            o.units_available.to_string(),
            o.unit_price_per_hour.as_ref().map_or("-".to_owned(), ToString::to_string),
            permille(o.sla_permille),
            if labels.is_empty() { "-".to_owned() } else { labels.join(",") },
            format_rfc3339(o.expires_at_ms),
        ]);
    }
    let mut out = t.render();
    if self_declared {
        out.push_str("* self-declared: not backed by the provider's member certificate\n");
    }
    out
}

/// The one-line answer to `offers publish` and `offers withdraw`.
pub fn offer_line(verb: &str, o: &OfferView) -> String {
    let what = match (&o.flavour, &o.site) {
        (Some(f), Some(s)) => format!(": {} x {} in {}", o.units_available, f.name, s.path()),
        _ => String::new(),
    };
    let price = o.unit_price_per_hour.as_ref().map(|p| format!(" at {p} per unit-hour")).unwrap_or_default();
    let expires =
        if o.expires_at_ms == 0 { String::new() } else { format!(", expires {}", format_rfc3339(o.expires_at_ms)) };
    if o.units_available == 0 {
        format!("{verb} offer {} (seq {})\n", o.offer_id, o.seq)
    } else {
        format!("{verb} offer {} (seq {}){what}{price}{expires}\n", o.offer_id, o.seq)
    }
}

fn contracts_table(contracts: &[ContractView]) -> String {
    let mut t = Table::new(&[
        ("CONTRACT", Align::Left),
        ("STATE", Align::Left),
        ("ROLE", Align::Left),
        ("PEER", Align::Left),
        ("OFFER", Align::Left),
        ("SITE", Align::Left),
        ("FLAVOUR", Align::Left),
        ("UNITS", Align::Right),
        ("PRICE/UNIT-HOUR", Align::Right),
        ("START", Align::Left),
        ("END", Align::Left),
    ]);
    for c in contracts {
        let t_ = c.terms.as_ref();
        t.push(vec![
            short(&c.contract_id).to_owned(),
            c.state.clone(),
            dash_if_empty(&c.role),
            c.counterparty().map_or("-", short).to_owned(),
            t_.map_or("-".to_owned(), |t| t.offer_id.clone()),
            t_.and_then(|t| t.site.as_ref()).map_or("-".to_owned(), |s| s.path()),
            t_.and_then(|t| t.flavour.as_ref()).map_or("-".to_owned(), |f| f.name.clone()),
            t_.map_or("-".to_owned(), |t| t.units.to_string()),
            t_.and_then(|t| t.unit_price_per_hour.as_ref()).map_or("-".to_owned(), ToString::to_string),
            t_.map_or("-".to_owned(), |t| format_rfc3339(t.start_ms)),
            t_.map_or("-".to_owned(), |t| format_rfc3339(t.end_ms)),
        ]);
    }
    t.render()
}

/// `fulcrumctl contracts list`.
pub fn contracts(contracts: &[ContractView]) -> String {
    if contracts.is_empty() {
        return "no contracts\n".to_owned();
    }
    contracts_table(contracts)
}

/// Total units and, when every contract is priced in one currency, the
/// exact cost per hour.
fn totals(contracts: &[ContractView]) -> String {
    let mut units: u64 = 0;
    let mut per_hour: Option<(String, u128)> = None;
    let mut one_currency = true;
    for t in contracts.iter().filter_map(|c| c.terms.as_ref()) {
        units += u64::from(t.units);
        if let Some(p) = &t.unit_price_per_hour {
            let cost = u128::from(t.units) * u128::from(p.micros);
            match &mut per_hour {
                None => per_hour = Some((p.currency.clone(), cost)),
                Some((cur, sum)) if *cur == p.currency => *sum += cost,
                Some(_) => one_currency = false,
            }
        }
    }
    let n = contracts.len();
    let mut line = format!("{units} units in {n} contract{}", if n == 1 { "" } else { "s" });
    if let (true, Some((currency, sum))) = (one_currency, per_hour)
        && let Ok(sum) = u64::try_from(sum)
    {
        let _ = write!(line, ", {} {currency} per hour", format_micros(sum));
    }
    line
}

/// `fulcrumctl place`, when something was placed or planned.
pub fn place(p: &PlaceView) -> String {
    let mut out = String::new();
    if p.dry_run {
        out.push_str("plan (dry run: nothing was negotiated)\n");
        if !p.plan.is_empty() {
            out.push_str(&plan_table(&p.plan));
            let _ = writeln!(out, "{}", p.explanation.trim_start_matches("dry run: ").trim_end());
            return out;
        }
    }
    if !p.placement_id.is_empty() {
        let _ = writeln!(out, "placement {}: {}", p.placement_id, dash_if_empty(&p.placement_state));
    }
    if p.contracts.is_empty() {
        // Only a dry run gets here: its explanation is the whole answer.
        let why = p.explanation.trim_end();
        let _ = writeln!(out, "{}", if why.is_empty() { "no offer fits the request" } else { why });
        return out;
    }
    out.push_str(&contracts_table(&p.contracts));
    let _ = writeln!(out, "{}", totals(&p.contracts));
    if !p.explanation.is_empty() {
        let _ = writeln!(out, "note: {}", p.explanation.trim_end());
    }
    out
}

fn plan_table(plan: &[PlannedView]) -> String {
    let mut t = Table::new(&[
        ("PROVIDER", Align::Left),
        ("OFFER", Align::Left),
        ("SITE", Align::Left),
        ("UNITS", Align::Right),
        ("PRICE/UNIT-HOUR", Align::Right),
    ]);
    for a in plan {
        t.push(vec![
            short(&a.provider).to_owned(),
            format!("{} (seq {})", a.offer_id, a.offer_seq),
            a.site.as_ref().map_or("-".to_owned(), |s| s.path()),
            a.units.to_string(),
            a.unit_price.as_ref().map_or("-".to_owned(), ToString::to_string),
        ]);
    }
    t.render()
}

/// `fulcrumctl placements list`.
pub fn placements(placements: &[PlacementView]) -> String {
    if placements.is_empty() {
        return "no placements\n".to_owned();
    }
    let mut t = Table::new(&[
        ("PLACEMENT", Align::Left),
        ("STATE", Align::Left),
        ("UNITS", Align::Right),
        ("SPREAD", Align::Left),
        ("CONTRACTS", Align::Left),
        ("STARTED", Align::Left),
    ]);
    for p in placements {
        let active = p.contracts.iter().filter(|c| c.state == "active").count();
        t.push(vec![
            short(&p.placement_id).to_owned(),
            p.state.clone(),
            p.units.to_string(),
            p.spread.clone(),
            format!("{} ({active} active)", p.contracts.len()),
            format_rfc3339(p.started_at_ms),
        ]);
    }
    t.render()
}

/// `fulcrumctl placements show`: what was asked, how it ended, its contracts.
pub fn placement(p: &PlacementView) -> String {
    let list = |items: &[String]| if items.is_empty() { "any".to_owned() } else { items.join(", ") };
    let labels = if p.labels.is_empty() {
        "-".to_owned()
    } else {
        format!("{}{}", p.labels.join(", "), if p.attested_labels { " (attested)" } else { "" })
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("placement", p.placement_id.clone()),
        ("state", p.state.clone()),
        ("units", format!("{}, spread {}", p.units, p.spread)),
        ("countries", list(&p.countries)),
        ("labels", labels),
        ("min SLA", permille(p.min_sla_permille)),
        ("max price", p.max_unit_price.as_ref().map_or("-".to_owned(), |m| format!("{m} per unit-hour"))),
        ("start", format_rfc3339(p.start_ms)),
        ("duration", format_duration_ms(p.duration_ms)),
        ("attempts", p.attempts.to_string()),
        ("started", format_rfc3339(p.started_at_ms)),
        ("updated", format_rfc3339(p.updated_at_ms)),
        ("log index", p.log_index.to_string()),
    ];
    if !p.reason.is_empty() {
        pairs.push(("reason", p.reason.clone()));
    }
    if !p.unresolved.is_empty() {
        pairs.push(("unresolved", p.unresolved.join(", ")));
    }
    let mut out = key_values(&pairs);
    if !p.contracts.is_empty() {
        out.push('\n');
        out.push_str(&contracts_table(&p.contracts));
        let _ = writeln!(out, "{}", totals(&p.contracts));
    }
    out
}

/// `fulcrumctl contracts show`: every term, both signatures.
pub fn contract(c: &ContractView) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("contract", dash_if_empty(&c.contract_id)),
        ("state", c.state.clone()),
        ("role", dash_if_empty(&c.role)),
        ("log index", c.log_index.to_string()),
    ];
    if let Some(t) = &c.terms {
        pairs.extend([
            ("federation", dash_if_empty(&t.federation)),
            ("provider", dash_if_empty(&t.provider)),
            ("consumer", dash_if_empty(&t.consumer)),
            ("offer", format!("{} (seq {})", t.offer_id, t.offer_seq)),
            ("site", t.site.as_ref().map_or("-".to_owned(), |s| s.path())),
        ]);
        if let Some(f) = &t.flavour {
            let mut what =
                format!("{}: {} vcpu, {} MiB memory, {} GiB storage", f.name, f.vcpu, f.memory_mib, f.storage_gib);
            if !f.gpus.is_empty() {
                let _ = write!(what, ", gpus {}", f.gpus_text());
            }
            pairs.push(("flavour", what));
        } else {
            pairs.push(("flavour", "-".to_owned()));
        }
        pairs.push(("units", t.units.to_string()));
        pairs.push(("unit price", t.unit_price_per_hour.as_ref().map_or("-".to_owned(), |p| format!("{p} per hour"))));
        let length = t.end_ms.checked_sub(t.start_ms).filter(|_| t.start_ms > 0).map(format_duration_ms);
        pairs.extend([
            ("start", format_rfc3339(t.start_ms)),
            ("end", format!("{}{}", format_rfc3339(t.end_ms), length.map(|l| format!(" ({l})")).unwrap_or_default())),
            ("created", format_rfc3339(t.created_at_ms)),
            ("hold id", dash_if_empty(&t.hold_id)),
            ("negotiation id", dash_if_empty(&t.negotiation_id)),
        ]);
    } else {
        pairs.push(("terms", "(not available)".to_owned()));
    }
    pairs.push(("consumer signature", c.consumer_signature.clone().unwrap_or_else(|| "(none)".to_owned())));
    pairs.push(("provider signature", c.provider_signature.clone().unwrap_or_else(|| "(none)".to_owned())));
    key_values(&pairs)
}

/// One line per `contracts watch` event; fixed widths since later lines
/// cannot realign earlier ones.
pub fn event(e: &EventView) -> String {
    let mut line = format!("{}  {:<12}", format_rfc3339(e.at_ms), e.event);
    if let Some(c) = &e.contract {
        let _ = write!(line, "  {:<8}  {:<10}  {:<8}", short(&c.contract_id), c.state, dash_if_empty(&c.role));
        if let Some(t) = &c.terms {
            let flavour = t.flavour.as_ref().map_or("-", |f| f.name.as_str());
            let site = t.site.as_ref().map_or("-".to_owned(), |s| s.path());
            let _ = write!(line, "  {} x {flavour} in {site}", t.units);
            if let Some(p) = &t.unit_price_per_hour {
                let _ = write!(line, " at {p}");
            }
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("A", Align::Left), ("NUMBER", Align::Right), ("C", Align::Left)]);
        t.push(vec!["long-value".into(), "7".into(), "x".into()]);
        t.push(vec!["s".into(), "12345678".into(), "".into()]);
        assert_eq!(t.render(), "A             NUMBER  C\nlong-value         7  x\ns           12345678\n");
    }

    #[test]
    fn permille_reads_as_percent() {
        assert_eq!(permille(999), "99.9%");
        assert_eq!(permille(1000), "100.0%");
        assert_eq!(permille(0), "0.0%");
    }
}
