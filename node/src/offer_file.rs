//! The offer file: one TOML file per flavour at a site, as a provider operator
//! writes it for `fulcrumctl offers publish`. Owns its schema, its checks, its
//! conversion to the unsigned wire `Offer`, and the exact price and duration parsers.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::offer::{Country, Currency};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Offer files are a few hundred bytes; the cap keeps a mistaken path (a log,
/// a device) from being read whole.
const MAX_OFFER_FILE_BYTES: u64 = 1024 * 1024;

/// SLA assumed when the file names none.
pub const DEFAULT_SLA_PERMILLE: u32 = 990;

/// One offer file, exactly as written (see `configs/offers/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferFile {
    /// Stable id of this flavour at this site; publishing it again replaces the offer.
    pub offer_id: String,
    /// Units offered to the federation.
    pub units: u32,
    /// Certifications and attestations, e.g. `iso:27001`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Availability SLA in permille.
    #[serde(default = "default_sla_permille")]
    pub sla_permille: u32,
    /// Lifetime of each announcement (`"1h"`); the daemon re-announces before
    /// it expires. Absent: the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_duration_string")]
    pub ttl: Option<String>,
    /// Where the capacity is.
    pub site: SiteSpec,
    /// What one unit is.
    pub flavour: FlavourSpec,
    /// What one unit costs.
    pub price: PriceSpec,
    /// Contract durations accepted.
    pub duration: DurationSpec,
}

fn default_sla_permille() -> u32 {
    DEFAULT_SLA_PERMILLE
}

/// `[site]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
    /// Provider's region name.
    pub region: String,
    /// Provider's datacenter name.
    pub datacenter: String,
}

/// `[flavour]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavourSpec {
    /// Flavour name, e.g. `c8m32`.
    pub name: String,
    /// Virtual CPUs per unit.
    pub vcpu: u32,
    /// Memory per unit, MiB.
    pub memory_mib: u64,
    /// Storage per unit, GiB.
    pub storage_gib: u64,
    /// GPUs per unit by model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: BTreeMap<String, u32>,
}

/// `[price]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Price of one unit for one hour, as a decimal string so it stays exact.
    #[serde(deserialize_with = "price_string")]
    pub per_unit_hour: String,
}

/// `[duration]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationSpec {
    /// Shortest contract, e.g. `"1h"`.
    #[serde(deserialize_with = "duration_string")]
    pub min: String,
    /// Longest contract, e.g. `"8760h"`.
    #[serde(deserialize_with = "duration_string")]
    pub max: String,
}

/// Why an offer file was refused. Every variant names the file, and the field
/// when there is one, in a single line.
#[derive(Debug, thiserror::Error)]
pub enum OfferFileError {
    /// The file could not be read.
    #[error("cannot read offer file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is far larger than any offer file.
    #[error("offer file {} is larger than {max} bytes; is this the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Limit.
        max: u64,
    },
    /// Not valid TOML, or not the schema (unknown or missing field, wrong type).
    #[error("{origin}: {}{}{message}", location_prefix(*location), field_prefix(field.as_deref()))]
    Toml {
        /// The file (or "offer file" for text without a name).
        origin: String,
        /// 1-based line and column, when TOML reported a position.
        location: Option<(usize, usize)>,
        /// The key at that position, e.g. `price.per_unit_hour`, when it can be told.
        field: Option<String>,
        /// TOML's own message.
        message: String,
    },
    /// A field has a value the offer cannot have.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The file (or "offer file").
        origin: String,
        /// Dotted field name, e.g. `site.country`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

fn location_prefix(location: Option<(usize, usize)>) -> String {
    location.map(|(line, column)| format!("line {line}, column {column}: ")).unwrap_or_default()
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("{f}: ")).unwrap_or_default()
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing given.
    #[error("empty duration: use a whole number with a unit (ms, s, m, h, d), e.g. 90s, 30m, 720h, 7d")]
    Empty,
    /// Not `<number><unit>` pieces.
    #[error("{0:?} is not a duration: use whole numbers with a unit (ms, s, m, h, d), e.g. 90s, 30m, 720h, 7d, 1h30m")]
    Malformed(String),
    /// Does not fit in 64-bit milliseconds.
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Why a price string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Nothing given.
    #[error("empty price: use a decimal amount such as 0.42")]
    Empty,
    /// Not `digits[.digits]`.
    #[error("{0:?} is not a price: use a decimal amount such as 0.42 (digits, one optional '.', no sign or unit)")]
    Malformed(String),
    /// Finer than a micro-unit, which no price can be.
    #[error("price {0:?} has more than 6 decimals; prices are exact to the micro-unit (0.000001)")]
    TooPrecise(String),
    /// Does not fit in 64-bit micro-units.
    #[error("price {0:?} is too large")]
    Overflow(String),
}

/// Parses `"90s"`, `"30m"`, `"720h"`, `"7d"`, `"250ms"` or sums of them
/// (`"1h30m"`) into milliseconds, exactly, refusing anything that overflows.
pub fn parse_duration_ms(s: &str) -> Result<u64, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(s.to_owned());
    let overflow = || DurationError::Overflow(s.to_owned());
    let bytes = s.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        let mut n: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(bytes[i] - b'0'))).ok_or_else(overflow)?;
            i += 1;
        }
        if i == digits_start {
            return Err(malformed());
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u64 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        total = n.checked_mul(unit_ms).and_then(|ms| total.checked_add(ms)).ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Parses a decimal amount (`"0.42"`, `"12"`, `"0.000001"`) into integer
/// micro-units, exactly: no floats, at most 6 decimals, no overflow.
pub fn parse_price_micros(s: &str) -> Result<u64, PriceError> {
    if s.is_empty() {
        return Err(PriceError::Empty);
    }
    let (whole, frac) = match s.split_once('.') {
        Some((whole, frac)) => (whole, Some(frac)),
        None => (s, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(PriceError::Malformed(s.to_owned()));
    }
    let frac = frac.unwrap_or("");
    if frac.len() > 6 {
        return Err(PriceError::TooPrecise(s.to_owned()));
    }
    let overflow = || PriceError::Overflow(s.to_owned());
    let mut micros: u64 = 0;
    for b in whole.bytes() {
        micros = micros.checked_mul(10).and_then(|m| m.checked_add(u64::from(b - b'0'))).ok_or_else(overflow)?;
    }
    micros = micros.checked_mul(1_000_000).ok_or_else(overflow)?;
    let mut frac_micros: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    micros.checked_add(frac_micros).ok_or_else(overflow)
}

/// Formats integer micro-units as `"0.420000"`, the inverse of [`parse_price_micros`].
pub fn format_micros(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Reads and checks an offer file. Returns the unsigned wire offer (provider,
/// federation, seq and timestamps left for the daemon) and the TTL in ms.
pub fn load_offer_file(path: &Path) -> Result<(wire::Offer, Option<u64>), OfferFileError> {
    let read_err = |source| OfferFileError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_OFFER_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_OFFER_FILE_BYTES {
        return Err(OfferFileError::TooLarge { path: path.to_owned(), max: MAX_OFFER_FILE_BYTES });
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})"))))?;
    parse_named(&text, &path.display().to_string())
}

/// Checks offer file text; errors name the origin "offer file".
pub fn parse_offer_file(text: &str) -> Result<(wire::Offer, Option<u64>), OfferFileError> {
    parse_named(text, "offer file")
}

fn parse_named(text: &str, origin: &str) -> Result<(wire::Offer, Option<u64>), OfferFileError> {
    let file: OfferFile = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
    file.to_wire(origin)
}

impl OfferFile {
    /// Checks every field and builds the unsigned wire offer and TTL (ms).
    /// `origin` names the file in errors.
    pub fn to_wire(&self, origin: &str) -> Result<(wire::Offer, Option<u64>), OfferFileError> {
        let limits = Limits::default();
        let invalid =
            |field: &'static str, reason: String| OfferFileError::Invalid { origin: origin.to_owned(), field, reason };
        let text =
            |field: &'static str, value: &str| check_text(value, limits.max_text_len).map_err(|r| invalid(field, r));

        text("offer_id", &self.offer_id)?;
        if self.units == 0 {
            return Err(invalid(
                "units",
                "must be at least 1 (withdraw an offer with 'fulcrumctl offers withdraw')".into(),
            ));
        }
        if self.units > limits.max_units {
            return Err(invalid("units", format!("{} is over the limit of {}", self.units, limits.max_units)));
        }
        if self.labels.len() > limits.max_labels {
            return Err(invalid("labels", format!("{} labels, at most {}", self.labels.len(), limits.max_labels)));
        }
        for (i, label) in self.labels.iter().enumerate() {
            text("labels", label)?;
            if self.labels[..i].contains(label) {
                return Err(invalid("labels", format!("{label:?} is listed twice")));
            }
        }
        if self.sla_permille > 1000 {
            return Err(invalid("sla_permille", format!("{} is over 1000 (999 means 99.9%)", self.sla_permille)));
        }
        let ttl_ms = match &self.ttl {
            None => None,
            Some(ttl) => {
                let ms = parse_duration_ms(ttl).map_err(|e| invalid("ttl", e.to_string()))?;
                if ms == 0 || ms > limits.max_offer_ttl_ms {
                    return Err(invalid(
                        "ttl",
                        format!("must be more than 0 and at most {}", format_duration_ms(limits.max_offer_ttl_ms)),
                    ));
                }
                Some(ms)
            }
        };

        let country = Country::parse(&self.site.country).ok_or_else(|| {
            invalid("site.country", format!("{:?} is not an ISO 3166-1 alpha-2 code such as DE", self.site.country))
        })?;
        text("site.region", &self.site.region)?;
        text("site.datacenter", &self.site.datacenter)?;

        text("flavour.name", &self.flavour.name)?;
        if self.flavour.vcpu == 0 {
            return Err(invalid("flavour.vcpu", "must be at least 1".into()));
        }
        if self.flavour.memory_mib == 0 {
            return Err(invalid("flavour.memory_mib", "must be at least 1".into()));
        }
        if self.flavour.gpus.len() > limits.max_gpu_kinds {
            return Err(invalid(
                "flavour.gpus",
                format!("{} GPU models, at most {}", self.flavour.gpus.len(), limits.max_gpu_kinds),
            ));
        }
        for (model, count) in &self.flavour.gpus {
            text("flavour.gpus", model)?;
            if *count == 0 {
                return Err(invalid("flavour.gpus", format!("{model:?} has count 0; leave it out instead")));
            }
        }

        let currency = Currency::parse(&self.price.currency).ok_or_else(|| {
            invalid("price.currency", format!("{:?} is not an ISO 4217 code such as EUR", self.price.currency))
        })?;
        let micros =
            parse_price_micros(&self.price.per_unit_hour).map_err(|e| invalid("price.per_unit_hour", e.to_string()))?;

        let min_ms = parse_duration_ms(&self.duration.min).map_err(|e| invalid("duration.min", e.to_string()))?;
        let max_ms = parse_duration_ms(&self.duration.max).map_err(|e| invalid("duration.max", e.to_string()))?;
        if max_ms == 0 {
            return Err(invalid("duration.max", "must be more than 0".into()));
        }
        if max_ms > limits.max_duration_ms {
            return Err(invalid(
                "duration.max",
                format!("{} is over the limit of {}", self.duration.max, format_duration_ms(limits.max_duration_ms)),
            ));
        }
        if min_ms > max_ms {
            return Err(invalid(
                "duration.min",
                format!("{} is longer than duration.max ({})", self.duration.min, self.duration.max),
            ));
        }

        let offer = wire::Offer {
            provider: Vec::new(),
            federation: String::new(),
            offer_id: self.offer_id.clone(),
            seq: 0,
            issued_at_ms: 0,
            expires_at_ms: 0,
            site: Some(wire::Site {
                country: country.as_str().to_owned(),
                region: self.site.region.clone(),
                datacenter: self.site.datacenter.clone(),
            }),
            flavour: Some(wire::Flavour {
                name: self.flavour.name.clone(),
                per_unit: Some(wire::Resources {
                    vcpu: self.flavour.vcpu,
                    memory_mib: self.flavour.memory_mib,
                    storage_gib: self.flavour.storage_gib,
                    gpus: self
                        .flavour
                        .gpus
                        .iter()
                        .map(|(model, count)| wire::GpuCount { model: model.clone(), count: *count })
                        .collect(),
                }),
            }),
            units_available: self.units,
            unit_price_per_hour: Some(wire::Price { currency: currency.as_str().to_owned(), micros }),
            min_duration_ms: min_ms,
            max_duration_ms: max_ms,
            labels: self.labels.clone(),
            sla_permille: self.sla_permille,
        };
        Ok((offer, ttl_ms))
    }
}

/// The same rules the protocol applies to identifiers and labels, checked
/// here so an operator hears about them before the daemon refuses the offer.
fn check_text(value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max_len {
        return Err(format!("{} bytes, at most {max_len}", value.len()));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{value:?} contains {c:?}; no whitespace or control characters allowed"));
    }
    Ok(())
}

/// Formats milliseconds in the largest unit that divides them exactly, so the
/// result parses back with [`parse_duration_ms`].
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Turns toml's multi-line report into one line that keeps its message and
/// position and adds the key at that position.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> OfferFileError {
    let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    let span = e.span();
    let location = span.as_ref().and_then(|s| line_column(text, s.start));
    // A missing field is named by the message; the span then covers its parent table.
    let field = span.and_then(|s| {
        if message.starts_with("missing field") { table_at(text, s.start) } else { key_at(text, s.start) }
    });
    OfferFileError::Toml { origin: origin.to_owned(), location, field, message }
}

fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// The dotted key whose line holds `offset`, e.g. `price.per_unit_hour`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    if let Some(header) = table_header(line) {
        return Some(header.to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    Some(match table_before(text, line_start) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

/// The table whose header is at or before `offset`.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text.get(offset..)?.find('\n').map_or(text.len(), |i| offset + i);
    table_before(text, line_end)
}

fn table_before(text: &str, end: usize) -> Option<String> {
    text.get(..end)?.lines().rev().find_map(|l| table_header(l.trim())).map(str::to_owned)
}

fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?.trim_start_matches('[');
    let (name, _) = inner.split_once(']')?;
    Some(name.trim())
}

/// A visitor that takes only a string and says what string it wanted, so a
/// float price gets "expected a quoted decimal string", not just "a string".
struct QuotedString(&'static str);

impl Visitor<'_> for QuotedString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

const PRICE_EXPECTED: &str = "a quoted decimal string such as \"0.42\" (prices are exact, never floats)";
const DURATION_EXPECTED: &str = "a quoted duration such as \"90s\", \"30m\", \"720h\" or \"7d\"";

fn price_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(QuotedString(PRICE_EXPECTED))
}

fn duration_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(QuotedString(DURATION_EXPECTED))
}

fn optional_duration_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    duration_string(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
offer_id = "fra1-c8m32"
units = 24
labels = ["iso:27001"]
sla_permille = 999
ttl = "1h"

[site]
country = "DE"
region = "hesse"
datacenter = "fra1"

[flavour]
name = "c8m32"
vcpu = 8
memory_mib = 32768
storage_gib = 200
gpus = { "nvidia-l40s" = 2 }

[price]
currency = "EUR"
per_unit_hour = "0.42"

[duration]
min = "1h"
max = "8760h"
"#;

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/offers")
    }

    #[test]
    fn good_file_becomes_the_unsigned_wire_offer() {
        let (offer, ttl) = parse_offer_file(GOOD).unwrap();
        assert_eq!(ttl, Some(3_600_000));
        assert!(offer.provider.is_empty() && offer.federation.is_empty());
        assert_eq!((offer.seq, offer.issued_at_ms, offer.expires_at_ms), (0, 0, 0));
        assert_eq!(offer.offer_id, "fra1-c8m32");
        assert_eq!(offer.units_available, 24);
        assert_eq!(offer.unit_price_per_hour, Some(wire::Price { currency: "EUR".into(), micros: 420_000 }));
        assert_eq!((offer.min_duration_ms, offer.max_duration_ms), (3_600_000, 8760 * 3_600_000));
        assert_eq!(offer.labels, ["iso:27001"]);
        assert_eq!(offer.sla_permille, 999);
        let site = offer.site.unwrap();
        assert_eq!((site.country.as_str(), site.region.as_str(), site.datacenter.as_str()), ("DE", "hesse", "fra1"));
        let per_unit = offer.flavour.unwrap().per_unit.unwrap();
        assert_eq!((per_unit.vcpu, per_unit.memory_mib, per_unit.storage_gib), (8, 32768, 200));
        assert_eq!(per_unit.gpus, [wire::GpuCount { model: "nvidia-l40s".into(), count: 2 }]);
    }

    #[test]
    fn optional_fields_take_their_defaults() {
        let text = GOOD
            .replace("labels = [\"iso:27001\"]\n", "")
            .replace("sla_permille = 999\n", "")
            .replace("ttl = \"1h\"\n", "")
            .replace("gpus = { \"nvidia-l40s\" = 2 }\n", "");
        let (offer, ttl) = parse_offer_file(&text).unwrap();
        assert_eq!(ttl, None);
        assert!(offer.labels.is_empty());
        assert_eq!(offer.sla_permille, DEFAULT_SLA_PERMILLE);
        assert!(offer.flavour.unwrap().per_unit.unwrap().gpus.is_empty());
    }

    #[test]
    fn example_files_parse() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(examples_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (offer, _) = load_offer_file(&path).unwrap_or_else(|e| panic!("{e}"));
                names.push(offer.offer_id);
            }
        }
        names.sort();
        assert_eq!(names.len(), 3, "expected the three example offers, got {names:?}");
    }

    #[test]
    fn the_gpu_and_labelled_examples_say_what_they_claim() {
        let (fr, _) = load_offer_file(&examples_dir().join("fr-memory.toml")).unwrap();
        assert!(fr.labels.contains(&"gaia-x:level-2".to_owned()));
        assert!(fr.labels.contains(&"jurisdiction:eu-only".to_owned()));
        let (nl, _) = load_offer_file(&examples_dir().join("nl-gpu.toml")).unwrap();
        let gpus = nl.flavour.unwrap().per_unit.unwrap().gpus;
        assert_eq!(gpus, [wire::GpuCount { model: "nvidia-l40s".into(), count: 2 }]);
    }

    /// Each bad file must fail with a one-line error that names the field.
    #[test]
    fn bad_files_name_the_field() {
        let cases: &[(&str, String, &str)] = &[
            ("unknown field", GOOD.replace("units = 24", "units = 24\ncolour = \"blue\""), "colour"),
            (
                "unknown field in a table",
                GOOD.replace("region = \"hesse\"", "region = \"hesse\"\nzone = \"a\""),
                "site.zone",
            ),
            ("missing [site]", cut_table(GOOD, "site"), "missing field `site`"),
            ("missing site.country", GOOD.replace("country = \"DE\"\n", ""), "site: missing field `country`"),
            ("bad country", GOOD.replace("\"DE\"", "\"DEU\""), "site.country"),
            ("bad currency", GOOD.replace("\"EUR\"", "\"eur\""), "price.currency"),
            (
                "price with 7 decimals",
                GOOD.replace("\"0.42\"", "\"0.4200001\""),
                "price.per_unit_hour: price \"0.4200001\" has more than 6 decimals",
            ),
            (
                "float price",
                GOOD.replace("\"0.42\"", "0.42"),
                "price.per_unit_hour: invalid type: floating point `0.42`, expected a quoted decimal string",
            ),
            ("negative price", GOOD.replace("\"0.42\"", "\"-0.42\""), "price.per_unit_hour"),
            (
                "min > max duration",
                GOOD.replace("min = \"1h\"", "min = \"9000h\""),
                "duration.min: 9000h is longer than duration.max",
            ),
            ("bad duration", GOOD.replace("max = \"8760h\"", "max = \"1 year\""), "duration.max"),
            (
                "integer duration",
                GOOD.replace("max = \"8760h\"", "max = 8760"),
                "duration.max: invalid type: integer `8760`",
            ),
            ("zero units", GOOD.replace("units = 24", "units = 0"), "units: must be at least 1"),
            ("negative units", GOOD.replace("units = 24", "units = -3"), "units: invalid value: integer `-3`"),
            ("sla over 1000", GOOD.replace("sla_permille = 999", "sla_permille = 1001"), "sla_permille"),
            ("empty offer id", GOOD.replace("\"fra1-c8m32\"", "\"\""), "offer_id: must not be empty"),
            ("empty region", GOOD.replace("\"hesse\"", "\"\""), "site.region: must not be empty"),
            ("label with whitespace", GOOD.replace("\"iso:27001\"", "\"iso 27001\""), "labels"),
            ("zero ttl", GOOD.replace("ttl = \"1h\"", "ttl = \"0s\""), "ttl"),
            ("zero gpus", GOOD.replace("\"nvidia-l40s\" = 2", "\"nvidia-l40s\" = 0"), "flavour.gpus"),
            ("zero vcpu", GOOD.replace("vcpu = 8", "vcpu = 0"), "flavour.vcpu"),
            ("malformed TOML", GOOD.replace("vcpu = 8", "vcpu = = 8"), "line 15, column"),
        ];
        for (name, text, needle) in cases {
            let err = parse_offer_file(text).expect_err(name).to_string();
            assert!(err.contains(needle), "{name}: {err:?} does not contain {needle:?}");
            assert!(err.starts_with("offer file: "), "{name}: {err:?}");
            assert!(!err.contains('\n'), "{name}: error is not one line: {err:?}");
        }
    }

    #[test]
    fn toml_errors_keep_their_position() {
        let err = parse_offer_file(&GOOD.replace("\"0.42\"", "0.42")).unwrap_err().to_string();
        assert!(err.starts_with("offer file: line 22, column 17: price.per_unit_hour: "), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = load_offer_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.toml") && err.starts_with("cannot read offer file"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, GOOD.replace("\"DE\"", "\"Germany\"")).unwrap();
        let err = load_offer_file(&bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: site.country: ", bad.display())), "{err}");
    }

    fn cut_table(text: &str, table: &str) -> String {
        let header = format!("[{table}]");
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with('[') {
                skipping = line == header;
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn durations() {
        let ok = [
            ("90s", 90_000),
            ("30m", 1_800_000),
            ("720h", 2_592_000_000),
            ("7d", 604_800_000),
            ("250ms", 250),
            ("1h30m", 5_400_000),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration_ms(s), Ok(ms), "{s}");
            if ms > 0 {
                assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
            }
        }
        assert_eq!(parse_duration_ms(""), Err(DurationError::Empty));
        for bad in ["10", "h", "1.5h", "-1h", "1 h", " 1h", "1y", "1H", "1h ", "1hh", "m5"] {
            assert_eq!(parse_duration_ms(bad), Err(DurationError::Malformed(bad.into())), "{bad}");
        }
        assert_eq!(parse_duration_ms("18446744073709551615ms"), Ok(u64::MAX));
        for big in ["18446744073709551616ms", "213503982335d", "99999999999999999999999s", "18446744073709551615ms1ms"]
        {
            assert_eq!(parse_duration_ms(big), Err(DurationError::Overflow(big.into())), "{big}");
        }
    }

    #[test]
    fn prices() {
        let ok = [
            ("0.42", 420_000),
            ("0", 0),
            ("12", 12_000_000),
            ("0.000001", 1),
            ("1.5", 1_500_000),
            ("007.100000", 7_100_000),
            ("18446744073709.551615", u64::MAX),
        ];
        for (s, micros) in ok {
            assert_eq!(parse_price_micros(s), Ok(micros), "{s}");
            assert_eq!(parse_price_micros(&format_micros(micros)), Ok(micros));
        }
        assert_eq!(format_micros(420_000), "0.420000");
        assert_eq!(parse_price_micros(""), Err(PriceError::Empty));
        for bad in [".5", "5.", "-1", "+1", "1,5", "1e3", "0.4 ", "EUR 1", "1.2.3", "0x10", "٣"] {
            assert_eq!(parse_price_micros(bad), Err(PriceError::Malformed(bad.into())), "{bad}");
        }
        assert_eq!(parse_price_micros("0.4200001"), Err(PriceError::TooPrecise("0.4200001".into())));
        assert_eq!(parse_price_micros("0.4200000"), Err(PriceError::TooPrecise("0.4200000".into())));
        for big in ["18446744073709.551616", "18446744073710", "99999999999999999999999"] {
            assert_eq!(parse_price_micros(big), Err(PriceError::Overflow(big.into())), "{big}");
        }
    }
}
