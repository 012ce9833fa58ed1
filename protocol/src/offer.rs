//! Capacity offers: one flavour at one site, sold in whole units. Owns the
//! domain types, their conversion to and from the wire, and every check an
//! offer must pass before it is believed or forwarded.

use std::collections::BTreeMap;
use std::fmt;

use fulcrum_proto::v1 as wire;
use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::keys::{Identity, KeyError, PublicKey};
use crate::limits::Limits;

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The envelope itself is bad (size, kind, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The provider key inside the offer is bad.
    #[error("bad provider key: {0}")]
    ProviderKey(KeyError),
    /// Signed by someone other than the provider it names.
    #[error("offer for provider {provider} is signed by {signer}")]
    SignerMismatch {
        /// Provider named in the offer.
        provider: PublicKey,
        /// Who signed.
        signer: PublicKey,
    },
    /// Offer of another federation.
    #[error("offer is for federation {got:?}, this node is in {expected:?}")]
    WrongFederation {
        /// Our federation.
        expected: String,
        /// The offer's.
        got: String,
    },
    /// A required field is absent.
    #[error("offer field {0} is missing")]
    Missing(&'static str),
    /// A text field is empty, too long or has characters we do not allow.
    #[error("offer field {field} is invalid: {reason}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Too many labels or GPU kinds.
    #[error("offer has {count} {what}, at most {max} allowed")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// How many.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// `expires_at` is not after `issued_at`, or the lifetime exceeds the limit.
    #[error("offer lifetime {issued_at_ms}..{expires_at_ms} is invalid (max ttl {max_ttl_ms} ms)")]
    BadLifetime {
        /// Issued at.
        issued_at_ms: u64,
        /// Expires at.
        expires_at_ms: u64,
        /// Limit.
        max_ttl_ms: u64,
    },
    /// Already expired at `now`.
    #[error("offer expired at {expires_at_ms}, now is {now_ms}")]
    Expired {
        /// Expiry.
        expires_at_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// Issued further in the future than the allowed clock skew.
    #[error("offer issued at {issued_at_ms} is in the future (now {now_ms})")]
    FutureDated {
        /// Issued at.
        issued_at_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// min duration above max duration, or zero max duration.
    #[error("offer durations are invalid: min {min_ms} ms, max {max_ms} ms")]
    BadDurations {
        /// Minimum.
        min_ms: u64,
        /// Maximum.
        max_ms: u64,
    },
    /// units over the limit.
    #[error("offer has {units} units, at most {max} allowed")]
    TooManyUnits {
        /// Units.
        units: u32,
        /// Limit.
        max: u32,
    },
    /// SLA over 1000 permille.
    #[error("SLA of {0} permille is over 1000")]
    BadSla(u32),
}

fn check_text(field: &'static str, s: &str, max: usize, allow_empty: bool) -> Result<(), OfferError> {
    if s.is_empty() && !allow_empty {
        return Err(OfferError::BadField { field, reason: "empty".into() });
    }
    if s.len() > max {
        return Err(OfferError::BadField { field, reason: format!("{} bytes, at most {max}", s.len()) });
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(OfferError::BadField { field, reason: format!("contains {c:?}") });
    }
    Ok(())
}

/// ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses two ASCII letters (either case); stores upper case.
    pub fn parse(s: &str) -> Option<Country> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            Some(Country([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
        } else {
            None
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an offer's capacity is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Site {
    /// Country.
    pub country: Country,
    /// Provider's region name.
    pub region: String,
    /// Provider's datacenter name.
    pub datacenter: String,
}

/// Resources of one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Storage in GiB.
    pub storage_gib: u64,
    /// GPUs by model.
    pub gpus: BTreeMap<String, u32>,
}

impl Resources {
    /// True when every resource of `self` is at least that of `min`.
    pub fn covers(&self, min: &Resources) -> bool {
        self.vcpu >= min.vcpu
            && self.memory_mib >= min.memory_mib
            && self.storage_gib >= min.storage_gib
            && min.gpus.iter().all(|(model, n)| self.gpus.get(model).copied().unwrap_or(0) >= *n)
    }
}

/// A named flavour (like an instance type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flavour {
    /// Name, e.g. `c8m32`.
    pub name: String,
    /// Resources per unit.
    pub per_unit: Resources,
}

/// A price in integer micro-units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Price {
    /// ISO 4217 code, upper case.
    pub currency: Currency,
    /// Micro-units.
    pub micros: u64,
}

impl Price {
    /// A price in EUR micro-units.
    pub fn eur(micros: u64) -> Price {
        Price { currency: Currency::EUR, micros }
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06} {}", self.micros / 1_000_000, self.micros % 1_000_000, self.currency)
    }
}

/// ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The euro.
    pub const EUR: Currency = Currency(*b"EUR");

    /// Parses three upper-case ASCII letters.
    pub fn parse(s: &str) -> Option<Currency> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) { Some(Currency([b[0], b[1], b[2]])) } else { None }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one offer of one provider across its seq numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OfferKey {
    /// The provider.
    pub provider: PublicKey,
    /// Stable per-flavour id chosen by the provider.
    pub offer_id: String,
}

impl fmt::Display for OfferKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider.short(), self.offer_id)
    }
}

/// The terms of an offer (the body of an envelope of kind `offer`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    /// Offering provider.
    pub provider: PublicKey,
    /// Federation name.
    pub federation: String,
    /// Stable id of this flavour at this site.
    pub offer_id: String,
    /// Strictly increasing; a higher seq replaces a lower one.
    pub seq: u64,
    /// Unix ms.
    pub issued_at_ms: u64,
    /// Unix ms.
    pub expires_at_ms: u64,
    /// Where.
    pub site: Site,
    /// What one unit is.
    pub flavour: Flavour,
    /// Units on offer; 0 is a withdrawal.
    pub units_available: u32,
    /// Price of one unit for one hour.
    pub unit_price_per_hour: Price,
    /// Shortest contract, ms.
    pub min_duration_ms: u64,
    /// Longest contract, ms.
    pub max_duration_ms: u64,
    /// Certifications and attestations, e.g. `iso:27001`.
    pub labels: Vec<String>,
    /// Availability SLA in permille.
    pub sla_permille: u32,
}

impl Offer {
    /// The key that names this offer across seqs.
    pub fn key(&self) -> OfferKey {
        OfferKey { provider: self.provider, offer_id: self.offer_id.clone() }
    }

    /// True when this is a withdrawal.
    pub fn is_withdrawal(&self) -> bool {
        self.units_available == 0
    }

    /// The wire message.
    pub fn to_wire(&self) -> wire::Offer {
        wire::Offer {
            provider: self.provider.to_bytes().to_vec(),
            federation: self.federation.clone(),
            offer_id: self.offer_id.clone(),
            seq: self.seq,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            site: Some(site_to_wire(&self.site)),
            flavour: Some(flavour_to_wire(&self.flavour)),
            units_available: self.units_available,
            unit_price_per_hour: Some(price_to_wire(&self.unit_price_per_hour)),
            min_duration_ms: self.min_duration_ms,
            max_duration_ms: self.max_duration_ms,
            labels: self.labels.clone(),
            sla_permille: self.sla_permille,
        }
    }

    /// Parses and checks everything that does not depend on time or federation.
    pub fn from_wire(w: wire::Offer, limits: &Limits) -> Result<Offer, OfferError> {
        let provider = PublicKey::from_bytes(&w.provider).map_err(OfferError::ProviderKey)?;
        check_text("federation", &w.federation, limits.max_text_len, false)?;
        check_text("offer_id", &w.offer_id, limits.max_text_len, false)?;
        let site = site_from_wire(w.site.ok_or(OfferError::Missing("site"))?, limits)?;
        let flavour = flavour_from_wire(w.flavour.ok_or(OfferError::Missing("flavour"))?, limits)?;
        let unit_price_per_hour =
            price_from_wire(w.unit_price_per_hour.ok_or(OfferError::Missing("unit_price_per_hour"))?)?;
        if w.labels.len() > limits.max_labels {
            return Err(OfferError::TooMany { what: "labels", count: w.labels.len(), max: limits.max_labels });
        }
        for l in &w.labels {
            check_text("labels", l, limits.max_text_len, false)?;
        }
        if w.expires_at_ms <= w.issued_at_ms || w.expires_at_ms - w.issued_at_ms > limits.max_offer_ttl_ms {
            return Err(OfferError::BadLifetime {
                issued_at_ms: w.issued_at_ms,
                expires_at_ms: w.expires_at_ms,
                max_ttl_ms: limits.max_offer_ttl_ms,
            });
        }
        if w.units_available > limits.max_units {
            return Err(OfferError::TooManyUnits { units: w.units_available, max: limits.max_units });
        }
        // A withdrawal carries no meaningful durations; anything else must.
        if w.units_available > 0
            && (w.max_duration_ms == 0
                || w.min_duration_ms > w.max_duration_ms
                || w.max_duration_ms > limits.max_duration_ms)
        {
            return Err(OfferError::BadDurations { min_ms: w.min_duration_ms, max_ms: w.max_duration_ms });
        }
        if w.sla_permille > 1000 {
            return Err(OfferError::BadSla(w.sla_permille));
        }
        Ok(Offer {
            provider,
            federation: w.federation,
            offer_id: w.offer_id,
            seq: w.seq,
            issued_at_ms: w.issued_at_ms,
            expires_at_ms: w.expires_at_ms,
            site,
            flavour,
            units_available: w.units_available,
            unit_price_per_hour,
            min_duration_ms: w.min_duration_ms,
            max_duration_ms: w.max_duration_ms,
            labels: w.labels,
            sla_permille: w.sla_permille,
        })
    }

    /// Checks what depends on time and federation.
    pub fn check_current(&self, federation: &str, now_ms: u64, limits: &Limits) -> Result<(), OfferError> {
        if self.federation != federation {
            return Err(OfferError::WrongFederation { expected: federation.to_owned(), got: self.federation.clone() });
        }
        if self.expires_at_ms <= now_ms {
            return Err(OfferError::Expired { expires_at_ms: self.expires_at_ms, now_ms });
        }
        if self.issued_at_ms > now_ms.saturating_add(limits.max_clock_skew_ms) {
            return Err(OfferError::FutureDated { issued_at_ms: self.issued_at_ms, now_ms });
        }
        Ok(())
    }

    /// Signs this offer with the provider's identity.
    pub fn sign(&self, identity: &Identity) -> SignedOffer {
        let envelope = Envelope::seal_message(identity, Kind::Offer, &self.to_wire());
        SignedOffer { envelope, offer: self.clone() }
    }
}

/// An offer together with the envelope that proves it. Constructing one
/// checks the signature, the signer and the structure; time and federation are
/// checked by [`SignedOffer::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOffer {
    envelope: Envelope,
    offer: Offer,
}

impl SignedOffer {
    /// Checks an envelope that claims to carry an offer (structure and signer only).
    pub fn from_envelope(envelope: Envelope, limits: &Limits) -> Result<SignedOffer, OfferError> {
        if envelope.body().len() > limits.max_offer_bytes {
            return Err(EnvelopeError::BodyTooLarge {
                kind: Kind::Offer,
                len: envelope.body().len(),
                max: limits.max_offer_bytes,
            }
            .into());
        }
        let w: wire::Offer = envelope.open(Kind::Offer)?;
        let offer = Offer::from_wire(w, limits)?;
        if offer.provider != envelope.signer() {
            return Err(OfferError::SignerMismatch { provider: offer.provider, signer: envelope.signer() });
        }
        Ok(SignedOffer { envelope, offer })
    }

    /// Full validation of offer bytes from a peer: size, signature, signer,
    /// structure, federation, expiry and clock skew.
    pub fn verify(bytes: &[u8], federation: &str, now_ms: u64, limits: &Limits) -> Result<SignedOffer, OfferError> {
        let envelope = Envelope::decode(bytes, limits.max_envelope_bytes)?;
        let signed = SignedOffer::from_envelope(envelope, limits)?;
        signed.offer.check_current(federation, now_ms, limits)?;
        Ok(signed)
    }

    /// The terms.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The signed envelope, verbatim.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

pub(crate) fn site_to_wire(s: &Site) -> wire::Site {
    wire::Site { country: s.country.as_str().to_owned(), region: s.region.clone(), datacenter: s.datacenter.clone() }
}

pub(crate) fn site_from_wire(w: wire::Site, limits: &Limits) -> Result<Site, OfferError> {
    let country = Country::parse(&w.country).ok_or_else(|| OfferError::BadField {
        field: "site.country",
        reason: format!("{:?} is not an ISO 3166-1 alpha-2 code", w.country.chars().take(8).collect::<String>()),
    })?;
    check_text("site.region", &w.region, limits.max_text_len, true)?;
    check_text("site.datacenter", &w.datacenter, limits.max_text_len, true)?;
    Ok(Site { country, region: w.region, datacenter: w.datacenter })
}

pub(crate) fn resources_to_wire(r: &Resources) -> wire::Resources {
    wire::Resources {
        vcpu: r.vcpu,
        memory_mib: r.memory_mib,
        storage_gib: r.storage_gib,
        gpus: r.gpus.iter().map(|(model, count)| wire::GpuCount { model: model.clone(), count: *count }).collect(),
    }
}

pub(crate) fn resources_from_wire(w: wire::Resources, limits: &Limits) -> Result<Resources, OfferError> {
    if w.gpus.len() > limits.max_gpu_kinds {
        return Err(OfferError::TooMany { what: "GPU models", count: w.gpus.len(), max: limits.max_gpu_kinds });
    }
    let mut gpus = BTreeMap::new();
    for g in w.gpus {
        check_text("gpus.model", &g.model, limits.max_text_len, false)?;
        if gpus.insert(g.model, g.count).is_some() {
            return Err(OfferError::BadField { field: "gpus", reason: "a GPU model is listed twice".into() });
        }
    }
    Ok(Resources { vcpu: w.vcpu, memory_mib: w.memory_mib, storage_gib: w.storage_gib, gpus })
}

pub(crate) fn flavour_to_wire(f: &Flavour) -> wire::Flavour {
    wire::Flavour { name: f.name.clone(), per_unit: Some(resources_to_wire(&f.per_unit)) }
}

pub(crate) fn flavour_from_wire(w: wire::Flavour, limits: &Limits) -> Result<Flavour, OfferError> {
    check_text("flavour.name", &w.name, limits.max_text_len, false)?;
    let per_unit = resources_from_wire(w.per_unit.ok_or(OfferError::Missing("flavour.per_unit"))?, limits)?;
    Ok(Flavour { name: w.name, per_unit })
}

pub(crate) fn price_to_wire(p: &Price) -> wire::Price {
    wire::Price { currency: p.currency.as_str().to_owned(), micros: p.micros }
}

pub(crate) fn price_from_wire(w: wire::Price) -> Result<Price, OfferError> {
    let currency = Currency::parse(&w.currency).ok_or_else(|| OfferError::BadField {
        field: "price.currency",
        reason: format!("{:?} is not an ISO 4217 code", w.currency.chars().take(8).collect::<String>()),
    })?;
    Ok(Price { currency, micros: w.micros })
}
