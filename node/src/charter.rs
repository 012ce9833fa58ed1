//! The federation charter (`federation.toml`) and the files of the offline
//! authority workflow (`fulcrumctl federation ...`): certificate and
//! revocation requests, one authority's signature over a request, and the
//! assembled member certificates and revocations the daemon loads.
//!
//! Every file is TOML, strict (unknown fields are refused) and meant to be
//! read and diffed by people. Keys, hashes and signatures are lower-case hex.
//! Times are RFC 3339 in UTC. Every file but the charter says what it is in
//! `kind`, so handing one tool another tool's file gives a clear error.
//!
//! # The charter
//!
//! ```toml
//! name = "eu-sovereign"          # 1 to 128 printable characters, no spaces
//! threshold = 2                  # k: 0 (open federation) up to the number of authorities
//! authorities = [                # Ed25519 public keys, 64 hex digits each, distinct
//!     "3b6a27bc...",
//!     "8a88e3dd...",
//!     "d75a9801...",
//! ]
//! ```
//!
//! `threshold` is required (a charter never becomes open by omission);
//! `authorities` may be left out only when it would be empty.
//!
//! # Requests: what the authorities sign
//!
//! A request holds the exact bytes the authorities sign in `body` (hex of the
//! protobuf `MemberCertificateBody` or `RevocationBody`), and the same content
//! as readable fields above it. The readable fields must say exactly what the
//! body says; a file where they differ was edited and is refused. Bodies are
//! never re-encoded: what was signed is what is assembled.
//!
//! ```toml
//! kind = "member-certificate-request"
//! federation = "eu-sovereign"
//! member = "<member node public key, hex>"
//! organisation = "Example Cloud GmbH"
//! country = "DE"
//! labels = ["gaia-x:level-2", "iso:27001"]
//! not_before = "2025-11-23T08:00:00Z"
//! not_after = "2026-11-23T08:00:00Z"
//! serial = 4182736455
//! body = "<hex>"
//! ```
//!
//! ```toml
//! kind = "revocation-request"
//! federation = "eu-sovereign"
//! member = "<hex>"
//! revoked_at = "2026-01-05T10:00:00Z"
//! reason = "left the federation"
//! body = "<hex>"
//! ```
//!
//! # Signatures: one authority, one request
//!
//! ```toml
//! kind = "member-certificate-signature"   # or "revocation-signature"
//! federation = "eu-sovereign"
//! member = "<hex>"
//! request_sha256 = "<SHA-256 of the request's body bytes, hex>"
//! authority = "<the signing authority's public key, hex>"
//! signature = "<Ed25519 signature, 128 hex digits>"
//! ```
//!
//! The signature is the protocol's detached signature (kind
//! `member-certificate` or `revocation`) over the body bytes.
//!
//! # Certificates and revocations: what the daemon loads
//!
//! ```toml
//! kind = "member-certificate"
//! federation = "eu-sovereign"
//! member = "<hex>"
//! organisation = "Example Cloud GmbH"
//! country = "DE"
//! labels = ["gaia-x:level-2", "iso:27001"]
//! not_before = "2025-11-23T08:00:00Z"
//! not_after = "2026-11-23T08:00:00Z"
//! serial = 4182736455
//! signed_by = ["<authority hex>", "<authority hex>"]
//! certificate = "<hex of the protobuf MemberCertificate: body and signatures>"
//! ```
//!
//! ```toml
//! kind = "revocation"
//! federation = "eu-sovereign"
//! member = "<hex>"
//! revoked_at = "2026-01-05T10:00:00Z"
//! reason = "left the federation"
//! signed_by = ["<authority hex>", "<authority hex>"]
//! revocation = "<hex of the protobuf Revocation: body and signatures>"
//! ```
//!
//! Only `certificate` and `revocation` count: they are the wire form that is
//! gossiped and verified. The other fields are there for people and must
//! agree with them. Loading checks form and agreement only; whether k
//! authorities of a charter signed, and the validity window, are checked with
//! [`MemberCertificate::verify`] and [`Revocation::verify`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::{Kind, verify_detached};
use fulcrum_protocol::keys::{PublicKey, SIGNATURE_LEN};
use fulcrum_protocol::membership::{
    CertificateBody, Charter, MemberCertificate, MembershipError, Revocation, RevocationBody,
};
use fulcrum_protocol::offer::Country;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::cli::time::{format_rfc3339, parse_rfc3339_ms};

/// These files are a few hundred bytes; the cap keeps a mistaken path (a log,
/// a device) from being read whole.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// What a federation file is, from its `kind` field (the charter has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `federation.toml`.
    Charter,
    /// A member's request for a certificate.
    CertificateRequest,
    /// One authority's signature over a certificate request.
    CertificateSignature,
    /// An assembled member certificate.
    Certificate,
    /// A drafted revocation, for the authorities to sign.
    RevocationRequest,
    /// One authority's signature over a revocation request.
    RevocationSignature,
    /// An assembled revocation.
    Revocation,
}

impl FileKind {
    const TAGGED: [FileKind; 6] = [
        FileKind::CertificateRequest,
        FileKind::CertificateSignature,
        FileKind::Certificate,
        FileKind::RevocationRequest,
        FileKind::RevocationSignature,
        FileKind::Revocation,
    ];

    /// The value of `kind` in files of this kind.
    pub fn tag(self) -> &'static str {
        match self {
            FileKind::Charter => "charter",
            FileKind::CertificateRequest => "member-certificate-request",
            FileKind::CertificateSignature => "member-certificate-signature",
            FileKind::Certificate => "member-certificate",
            FileKind::RevocationRequest => "revocation-request",
            FileKind::RevocationSignature => "revocation-signature",
            FileKind::Revocation => "revocation",
        }
    }

    /// "a member certificate request", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Charter => "a federation charter",
            FileKind::CertificateRequest => "a member certificate request",
            FileKind::CertificateSignature => "an authority's signature on a member certificate request",
            FileKind::Certificate => "a member certificate",
            FileKind::RevocationRequest => "a revocation request",
            FileKind::RevocationSignature => "an authority's signature on a revocation request",
            FileKind::Revocation => "a revocation",
        }
    }

    fn from_tag(tag: &str) -> Option<FileKind> {
        FileKind::TAGGED.into_iter().find(|k| k.tag() == tag)
    }
}

/// Why a charter or workflow file was refused. Each variant displays as one
/// line naming the file, and the field when there is one.
#[derive(Debug, thiserror::Error)]
pub enum CharterError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Far larger than any such file.
    #[error("{} is larger than {max} bytes; is this the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Limit.
        max: u64,
    },
    /// Not TOML, or not this schema (unknown or missing field, wrong type).
    #[error("{origin}: {}{}{message}", location_prefix(*location), field_prefix(field.as_deref()))]
    Toml {
        /// The file.
        origin: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// The key at that position, when it can be told.
        field: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A field has a value the file cannot have.
    #[error("{origin}: {}{field}: {reason}", location_prefix(*location))]
    Invalid {
        /// The file.
        origin: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// The field, e.g. `threshold`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Another kind of file than the one expected.
    #[error("{origin} is {}, not {}", found.describe(), expected.describe())]
    WrongKind {
        /// The file.
        origin: String,
        /// What was wanted.
        expected: FileKind,
        /// What it is.
        found: FileKind,
    },
}

fn location_prefix(location: Option<(usize, usize)>) -> String {
    location.map(|(line, column)| format!("line {line}, column {column}: ")).unwrap_or_default()
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("{f}: ")).unwrap_or_default()
}

fn invalid(origin: &str, location: Option<(usize, usize)>, field: &str, reason: impl Into<String>) -> CharterError {
    CharterError::Invalid { origin: origin.to_owned(), location, field: field.to_owned(), reason: reason.into() }
}

// ---------------------------------------------------------------------------
// The charter
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharterToml {
    name: Spanned<String>,
    threshold: Spanned<usize>,
    #[serde(default)]
    authorities: Vec<Spanned<String>>,
}

/// Reads and checks a charter file: a valid name, distinct well-formed
/// authority keys, and a threshold no larger than the number of authorities.
pub fn load_charter(path: &Path) -> Result<Charter, CharterError> {
    parse_charter(&read_text(path)?, &path.display().to_string())
}

/// Checks charter text; errors name `origin`.
pub fn parse_charter(text: &str, origin: &str) -> Result<Charter, CharterError> {
    expect_kind(text, origin, FileKind::Charter)?;
    let file: CharterToml = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
    let at = |span: Range<usize>| line_column(text, span.start);

    let name = file.name.get_ref().clone();
    if let Err(e) = (Charter { name: name.clone(), authorities: Vec::new(), threshold: 0 }).validate() {
        let reason = match e {
            MembershipError::BadCharter(reason) => reason,
            other => other.to_string(),
        };
        return Err(invalid(origin, at(file.name.span()), "name", format!("{name:?}: {reason}")));
    }

    let mut authorities: Vec<PublicKey> = Vec::with_capacity(file.authorities.len());
    for (i, entry) in file.authorities.iter().enumerate() {
        let key = PublicKey::from_hex(entry.get_ref()).map_err(|e| {
            invalid(
                origin,
                at(entry.span()),
                "authorities",
                format!(
                    "entry {} {:?} is not an Ed25519 public key ({e}); give 64 hex digits as printed by 'fulcrumctl federation authority-key'",
                    i + 1,
                    entry.get_ref()
                ),
            )
        })?;
        if let Some(j) = authorities.iter().position(|k| *k == key) {
            return Err(invalid(
                origin,
                at(entry.span()),
                "authorities",
                format!("entry {} repeats entry {} ({key}); list each authority once", i + 1, j + 1),
            ));
        }
        authorities.push(key);
    }

    let threshold = *file.threshold.get_ref();
    if threshold > authorities.len() {
        return Err(invalid(
            origin,
            at(file.threshold.span()),
            "threshold",
            format!(
                "{threshold} is more than the {} authorities listed; k must be at most the number of authorities (0 makes an open federation)",
                authorities.len()
            ),
        ));
    }
    let charter = Charter { name, authorities, threshold };
    // Everything validate() checks was checked above with the field named;
    // this keeps the two in step should the protocol add a rule.
    charter.validate().map_err(|e| invalid(origin, None, "charter", e.to_string()))?;
    Ok(charter)
}

/// The charter as a commented `federation.toml`. `notes[i]`, when not empty,
/// is written as a comment after authority `i` (e.g. the key file it came from).
pub fn render_charter(charter: &Charter, notes: &[String]) -> String {
    let mut out = String::new();
    out.push_str("# Fulcrum federation charter (made by 'fulcrumctl federation init').\n");
    out.push_str("# Every member node of the federation loads the same charter.\n\n");
    out.push_str("# Federation name: the same in every member's node.toml.\n");
    let _ = writeln!(out, "name = {}\n", quote(&charter.name));
    if charter.is_open() {
        out.push_str("# Signatures of distinct authorities needed to admit or revoke a member.\n");
        out.push_str("# 0: an open federation, anyone may join (for development only).\n");
    } else {
        let _ = writeln!(
            out,
            "# Signatures of distinct authorities needed to admit or revoke a member:\n# {} of the {} below.",
            charter.threshold,
            charter.authorities.len()
        );
    }
    let _ = writeln!(out, "threshold = {}\n", charter.threshold);
    out.push_str("# Public keys (Ed25519, hex) of the admission authorities. They sign offline\n");
    out.push_str("# with 'fulcrumctl federation member sign' and 'fulcrumctl federation revoke sign'.\n");
    if charter.authorities.is_empty() {
        out.push_str("authorities = []\n");
    } else {
        out.push_str("authorities = [\n");
        for (i, key) in charter.authorities.iter().enumerate() {
            match notes.get(i).filter(|n| !n.is_empty()) {
                Some(note) => {
                    let _ = writeln!(out, "    \"{key}\", # {}", one_line(note));
                }
                None => {
                    let _ = writeln!(out, "    \"{key}\",");
                }
            }
        }
        out.push_str("]\n");
    }
    out
}

// ---------------------------------------------------------------------------
// Certificate requests
// ---------------------------------------------------------------------------

/// A member certificate request: the body the authorities sign, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    body: CertificateBody,
    body_bytes: Vec<u8>,
}

impl CertificateRequest {
    /// Encodes `body`, refusing what the protocol would refuse.
    pub fn new(body: &CertificateBody) -> Result<CertificateRequest, MembershipError> {
        let body_bytes = body.encode();
        let body = CertificateBody::decode(&body_bytes, &Limits::default())?;
        Ok(CertificateRequest { body, body_bytes })
    }

    /// What it says.
    pub fn body(&self) -> &CertificateBody {
        &self.body
    }

    /// The exact bytes the authorities sign.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// SHA-256 of the body bytes: names the request in signature files.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.body_bytes).into()
    }

    /// The request file.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str("# Fulcrum member certificate request (made by 'fulcrumctl federation member request').\n");
        out.push_str("# Each authority checks the fields below, then signs with\n");
        out.push_str("#   fulcrumctl federation member sign --charter federation.toml \\\n");
        out.push_str("#     --authority-key AUTHORITY.key THIS_FILE --out sig-AUTHORITY.toml\n");
        out.push_str("# `body` is the exact bytes signed (protobuf MemberCertificateBody, hex); the\n");
        out.push_str("# fields must say the same. Do not edit this file: make a new request.\n");
        let _ = writeln!(out, "kind = {}", quote(FileKind::CertificateRequest.tag()));
        write_certificate_fields(&mut out, &self.body);
        let _ = writeln!(out, "body = \"{}\"", hex::encode(&self.body_bytes));
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequestToml {
    #[allow(dead_code)]
    kind: String,
    federation: String,
    member: String,
    organisation: String,
    country: String,
    #[serde(default)]
    labels: Vec<String>,
    not_before: String,
    not_after: String,
    serial: u64,
    body: String,
}

/// Reads a certificate request, checking its fields agree with its body.
pub fn load_certificate_request(path: &Path) -> Result<CertificateRequest, CharterError> {
    parse_certificate_request(&read_text(path)?, &path.display().to_string())
}

fn parse_certificate_request(text: &str, origin: &str) -> Result<CertificateRequest, CharterError> {
    let file: CertificateRequestToml = parse_kind(text, origin, FileKind::CertificateRequest)?;
    let body_bytes = hex_field(origin, "body", &file.body)?;
    let body = CertificateBody::decode(&body_bytes, &Limits::default())
        .map_err(|e| invalid(origin, None, "body", format!("{e}; the file is damaged: make a new request")))?;
    check_certificate_fields(
        origin,
        &CertificateFields {
            federation: &file.federation,
            member: &file.member,
            organisation: &file.organisation,
            country: &file.country,
            labels: &file.labels,
            not_before: &file.not_before,
            not_after: &file.not_after,
            serial: file.serial,
        },
        &body,
    )?;
    Ok(CertificateRequest { body, body_bytes })
}

// ---------------------------------------------------------------------------
// Revocation requests
// ---------------------------------------------------------------------------

/// A drafted revocation: the body the authorities sign, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRequest {
    body: RevocationBody,
    body_bytes: Vec<u8>,
}

impl RevocationRequest {
    /// Encodes `body`, refusing what the protocol would refuse.
    pub fn new(body: &RevocationBody) -> Result<RevocationRequest, MembershipError> {
        let body_bytes = body.encode();
        let body = Revocation::assemble(body_bytes.clone(), Vec::new())?.body().clone();
        Ok(RevocationRequest { body, body_bytes })
    }

    /// What it says.
    pub fn body(&self) -> &RevocationBody {
        &self.body
    }

    /// The exact bytes the authorities sign.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// SHA-256 of the body bytes: names the request in signature files.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.body_bytes).into()
    }

    /// The request file.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str("# Fulcrum revocation request (made by 'fulcrumctl federation revoke request').\n");
        out.push_str("# Each authority checks the fields below, then signs with\n");
        out.push_str("#   fulcrumctl federation revoke sign --charter federation.toml \\\n");
        out.push_str("#     --authority-key AUTHORITY.key THIS_FILE --out revoke-sig-AUTHORITY.toml\n");
        out.push_str("# `body` is the exact bytes signed (protobuf RevocationBody, hex); the fields\n");
        out.push_str("# must say the same. Do not edit this file: make a new request.\n");
        let _ = writeln!(out, "kind = {}", quote(FileKind::RevocationRequest.tag()));
        write_revocation_fields(&mut out, &self.body);
        let _ = writeln!(out, "body = \"{}\"", hex::encode(&self.body_bytes));
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationRequestToml {
    #[allow(dead_code)]
    kind: String,
    federation: String,
    member: String,
    revoked_at: String,
    reason: String,
    body: String,
}

/// Reads a revocation request, checking its fields agree with its body.
pub fn load_revocation_request(path: &Path) -> Result<RevocationRequest, CharterError> {
    parse_revocation_request(&read_text(path)?, &path.display().to_string())
}

fn parse_revocation_request(text: &str, origin: &str) -> Result<RevocationRequest, CharterError> {
    let file: RevocationRequestToml = parse_kind(text, origin, FileKind::RevocationRequest)?;
    let body_bytes = hex_field(origin, "body", &file.body)?;
    let body = Revocation::assemble(body_bytes.clone(), Vec::new())
        .map_err(|e| invalid(origin, None, "body", format!("{e}; the file is damaged: make a new request")))?
        .body()
        .clone();
    check_revocation_fields(
        origin,
        &RevocationFields {
            federation: &file.federation,
            member: &file.member,
            revoked_at: &file.revoked_at,
            reason: &file.reason,
        },
        &body,
    )?;
    Ok(RevocationRequest { body, body_bytes })
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// What a signature file signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// A member certificate request.
    Certificate,
    /// A revocation request.
    Revocation,
}

impl Signed {
    /// The protocol's signature kind (domain separation).
    pub fn kind(self) -> Kind {
        match self {
            Signed::Certificate => Kind::MemberCertificate,
            Signed::Revocation => Kind::Revocation,
        }
    }

    /// The kind of the signature file.
    pub fn file_kind(self) -> FileKind {
        match self {
            Signed::Certificate => FileKind::CertificateSignature,
            Signed::Revocation => FileKind::RevocationSignature,
        }
    }
}

/// One authority's signature over one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// Certificate or revocation.
    pub signed: Signed,
    /// Federation of the request.
    pub federation: String,
    /// Member the request is about.
    pub member: PublicKey,
    /// SHA-256 of the request's body bytes.
    pub request_sha256: [u8; 32],
    /// The signing authority.
    pub authority: PublicKey,
    /// Detached signature over the body bytes.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignatureFile {
    /// Whether the signature verifies over `body_bytes`.
    pub fn verifies(&self, body_bytes: &[u8]) -> bool {
        verify_detached(&self.authority, self.signed.kind(), body_bytes, &self.signature)
    }

    /// The signature file.
    pub fn to_toml(&self) -> String {
        let what = match self.signed {
            Signed::Certificate => "member certificate request",
            Signed::Revocation => "revocation request",
        };
        let mut out = String::new();
        let _ = writeln!(out, "# A Fulcrum authority's signature on a {what}.");
        out.push_str("# Hand it to whoever assembles the result with 'fulcrumctl federation ... assemble'.\n");
        let _ = writeln!(out, "kind = {}", quote(self.signed.file_kind().tag()));
        let _ = writeln!(out, "federation = {}", quote(&self.federation));
        let _ = writeln!(out, "member = \"{}\"", self.member);
        out.push_str("# SHA-256 of the signed request's body bytes.\n");
        let _ = writeln!(out, "request_sha256 = \"{}\"", hex::encode(self.request_sha256));
        let _ = writeln!(out, "authority = \"{}\"", self.authority);
        let _ = writeln!(out, "signature = \"{}\"", hex::encode(self.signature));
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureToml {
    #[allow(dead_code)]
    kind: String,
    federation: String,
    member: String,
    request_sha256: String,
    authority: String,
    signature: String,
}

/// Reads a signature file of the given kind.
pub fn load_signature(path: &Path, signed: Signed) -> Result<SignatureFile, CharterError> {
    parse_signature(&read_text(path)?, &path.display().to_string(), signed)
}

fn parse_signature(text: &str, origin: &str, signed: Signed) -> Result<SignatureFile, CharterError> {
    let file: SignatureToml = parse_kind(text, origin, signed.file_kind())?;
    let fixed = |field: &str, value: &str, len: usize| -> Result<Vec<u8>, CharterError> {
        let bytes = hex_field(origin, field, value)?;
        if bytes.len() != len {
            return Err(invalid(origin, None, field, format!("{} bytes, expected {len}", bytes.len())));
        }
        Ok(bytes)
    };
    let digest = fixed("request_sha256", &file.request_sha256, 32)?;
    let signature = fixed("signature", &file.signature, SIGNATURE_LEN)?;
    Ok(SignatureFile {
        signed,
        federation: file.federation,
        member: key_field(origin, "member", &file.member)?,
        request_sha256: digest.try_into().unwrap_or([0; 32]),
        authority: key_field(origin, "authority", &file.authority)?,
        signature: signature.try_into().unwrap_or([0; SIGNATURE_LEN]),
    })
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// The certificate file (see the module docs).
pub fn render_certificate(cert: &MemberCertificate) -> String {
    let mut out = String::new();
    out.push_str("# Fulcrum member certificate (made by 'fulcrumctl federation member assemble').\n");
    out.push_str("# `certificate` is what counts: the protobuf MemberCertificate (body and\n");
    out.push_str("# authority signatures), hex. The other fields are for people and must agree\n");
    out.push_str("# with it. Check it with 'fulcrumctl federation verify --charter federation.toml FILE'.\n");
    let _ = writeln!(out, "kind = {}", quote(FileKind::Certificate.tag()));
    write_certificate_fields(&mut out, cert.body());
    let _ = writeln!(out, "signed_by = {}", key_list(cert.signatures().iter().map(|(k, _)| k)));
    let _ = writeln!(out, "certificate = \"{}\"", hex::encode(cert.encode()));
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateToml {
    #[allow(dead_code)]
    kind: String,
    federation: String,
    member: String,
    organisation: String,
    country: String,
    #[serde(default)]
    labels: Vec<String>,
    not_before: String,
    not_after: String,
    serial: u64,
    signed_by: Vec<String>,
    certificate: String,
}

/// Reads a member certificate file: well-formed, and its readable fields
/// agree with the signed certificate. Whether it is valid in a federation
/// is [`MemberCertificate::verify`]'s to say.
pub fn load_certificate(path: &Path) -> Result<MemberCertificate, CharterError> {
    parse_certificate(&read_text(path)?, &path.display().to_string())
}

fn parse_certificate(text: &str, origin: &str) -> Result<MemberCertificate, CharterError> {
    let file: CertificateToml = parse_kind(text, origin, FileKind::Certificate)?;
    let bytes = hex_field(origin, "certificate", &file.certificate)?;
    let cert = MemberCertificate::decode(&bytes, &Limits::default())
        .map_err(|e| invalid(origin, None, "certificate", format!("{e}; the file is damaged: assemble it again")))?;
    check_certificate_fields(
        origin,
        &CertificateFields {
            federation: &file.federation,
            member: &file.member,
            organisation: &file.organisation,
            country: &file.country,
            labels: &file.labels,
            not_before: &file.not_before,
            not_after: &file.not_after,
            serial: file.serial,
        },
        cert.body(),
    )?;
    check_signers(origin, &file.signed_by, cert.signatures().iter().map(|(k, _)| *k))?;
    Ok(cert)
}

// ---------------------------------------------------------------------------
// Revocations
// ---------------------------------------------------------------------------

/// The revocation file (see the module docs).
pub fn render_revocation(revocation: &Revocation) -> String {
    let mut out = String::new();
    out.push_str("# Fulcrum revocation (made by 'fulcrumctl federation revoke assemble').\n");
    out.push_str("# `revocation` is what counts: the protobuf Revocation (body and authority\n");
    out.push_str("# signatures), hex. The other fields are for people and must agree with it.\n");
    out.push_str("# Check it with 'fulcrumctl federation verify --charter federation.toml FILE'.\n");
    let _ = writeln!(out, "kind = {}", quote(FileKind::Revocation.tag()));
    write_revocation_fields(&mut out, revocation.body());
    let _ = writeln!(out, "signed_by = {}", key_list(revocation_signers(revocation).iter()));
    let _ = writeln!(out, "revocation = \"{}\"", hex::encode(revocation.encode()));
    out
}

/// The authorities whose signatures a revocation carries (valid or not).
pub fn revocation_signers(revocation: &Revocation) -> Vec<PublicKey> {
    // Revocation has no accessor for its signatures; its wire form has them.
    use prost::Message as _;
    fulcrum_proto::v1::Revocation::decode(revocation.encode().as_slice())
        .map(|w| w.signatures.iter().filter_map(|s| PublicKey::from_bytes(&s.authority).ok()).collect())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationToml {
    #[allow(dead_code)]
    kind: String,
    federation: String,
    member: String,
    revoked_at: String,
    reason: String,
    signed_by: Vec<String>,
    revocation: String,
}

/// Reads a revocation file: well-formed, and its readable fields agree with
/// the signed revocation. Whether k authorities signed it is
/// [`Revocation::verify`]'s to say.
pub fn load_revocation(path: &Path) -> Result<Revocation, CharterError> {
    parse_revocation(&read_text(path)?, &path.display().to_string())
}

fn parse_revocation(text: &str, origin: &str) -> Result<Revocation, CharterError> {
    let file: RevocationToml = parse_kind(text, origin, FileKind::Revocation)?;
    let bytes = hex_field(origin, "revocation", &file.revocation)?;
    let revocation = Revocation::decode(&bytes, &Limits::default())
        .map_err(|e| invalid(origin, None, "revocation", format!("{e}; the file is damaged: assemble it again")))?;
    check_revocation_fields(
        origin,
        &RevocationFields {
            federation: &file.federation,
            member: &file.member,
            revoked_at: &file.revoked_at,
            reason: &file.reason,
        },
        revocation.body(),
    )?;
    check_signers(origin, &file.signed_by, revocation_signers(&revocation).into_iter())?;
    Ok(revocation)
}

// ---------------------------------------------------------------------------
// Any file
// ---------------------------------------------------------------------------

/// Any federation file, as [`load_any`] found it.
#[derive(Debug, Clone)]
pub enum FederationFile {
    /// `federation.toml`.
    Charter(Charter),
    /// A member certificate request.
    CertificateRequest(CertificateRequest),
    /// A signature on a certificate or revocation request.
    Signature(SignatureFile),
    /// A member certificate.
    Certificate(MemberCertificate),
    /// A revocation request.
    RevocationRequest(RevocationRequest),
    /// A revocation.
    Revocation(Revocation),
}

/// Reads whichever federation file `path` is, by its `kind`.
pub fn load_any(path: &Path) -> Result<FederationFile, CharterError> {
    parse_any(&read_text(path)?, &path.display().to_string())
}

/// Checks the text of whichever federation file it is, by its `kind`;
/// errors name `origin`.
pub fn parse_any(text: &str, origin: &str) -> Result<FederationFile, CharterError> {
    Ok(match detect_kind(text, origin)? {
        FileKind::Charter => FederationFile::Charter(parse_charter(text, origin)?),
        FileKind::CertificateRequest => FederationFile::CertificateRequest(parse_certificate_request(text, origin)?),
        FileKind::CertificateSignature => {
            FederationFile::Signature(parse_signature(text, origin, Signed::Certificate)?)
        }
        FileKind::Certificate => FederationFile::Certificate(parse_certificate(text, origin)?),
        FileKind::RevocationRequest => FederationFile::RevocationRequest(parse_revocation_request(text, origin)?),
        FileKind::RevocationSignature => FederationFile::Signature(parse_signature(text, origin, Signed::Revocation)?),
        FileKind::Revocation => FederationFile::Revocation(parse_revocation(text, origin)?),
    })
}

// ---------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------

/// Unix ms as RFC 3339 UTC, exact: milliseconds are written when there are any.
pub fn timestamp(ms: u64) -> String {
    let whole = if ms < 1000 { "1970-01-01T00:00:00Z".to_owned() } else { format_rfc3339(ms - ms % 1000) };
    match ms % 1000 {
        0 => whole,
        frac => format!("{}.{frac:03}Z", whole.trim_end_matches('Z')),
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn key_list<'a>(keys: impl Iterator<Item = &'a PublicKey>) -> String {
    let keys: Vec<String> = keys.map(|k| format!("\"{k}\"")).collect();
    match keys.len() {
        0 => "[]".to_owned(),
        1 => format!("[{}]", keys[0]),
        _ => format!("[\n    {},\n]", keys.join(",\n    ")),
    }
}

fn write_certificate_fields(out: &mut String, body: &CertificateBody) {
    let labels: Vec<String> = body.labels.iter().map(|l| quote(l)).collect();
    let _ = writeln!(out, "federation = {}", quote(&body.federation));
    out.push_str("# The member's node key (Ed25519, hex).\n");
    let _ = writeln!(out, "member = \"{}\"", body.member);
    let _ = writeln!(out, "organisation = {}", quote(&body.organisation));
    let _ = writeln!(out, "country = {}", quote(body.country.as_str()));
    out.push_str("# Labels the authorities vouch for.\n");
    let _ = writeln!(out, "labels = [{}]", labels.join(", "));
    let _ = writeln!(out, "not_before = {}", quote(&timestamp(body.not_before_ms)));
    let _ = writeln!(out, "not_after = {}", quote(&timestamp(body.not_after_ms)));
    let _ = writeln!(out, "serial = {}", body.serial);
}

fn write_revocation_fields(out: &mut String, body: &RevocationBody) {
    let _ = writeln!(out, "federation = {}", quote(&body.federation));
    out.push_str("# The revoked member's node key (Ed25519, hex).\n");
    let _ = writeln!(out, "member = \"{}\"", body.member);
    let _ = writeln!(out, "revoked_at = {}", quote(&timestamp(body.revoked_at_ms)));
    let _ = writeln!(out, "reason = {}", quote(&body.reason));
}

/// The readable fields of a certificate or certificate request.
struct CertificateFields<'a> {
    federation: &'a str,
    member: &'a str,
    organisation: &'a str,
    country: &'a str,
    labels: &'a [String],
    not_before: &'a str,
    not_after: &'a str,
    serial: u64,
}

fn edited(origin: &str, field: &str, says: &str, signed: &str) -> CharterError {
    invalid(
        origin,
        None,
        field,
        format!(
            "the file says {says} but its signed bytes say {signed}; it was edited after it was made (make it again instead of editing it)"
        ),
    )
}

fn check_certificate_fields(
    origin: &str,
    f: &CertificateFields<'_>,
    body: &CertificateBody,
) -> Result<(), CharterError> {
    if f.federation != body.federation {
        return Err(edited(origin, "federation", &quote(f.federation), &quote(&body.federation)));
    }
    if key_field(origin, "member", f.member)? != body.member {
        return Err(edited(origin, "member", f.member, &body.member.to_string()));
    }
    if f.organisation != body.organisation {
        return Err(edited(origin, "organisation", &quote(f.organisation), &quote(&body.organisation)));
    }
    if Country::parse(f.country) != Some(body.country) {
        return Err(edited(origin, "country", &quote(f.country), &quote(body.country.as_str())));
    }
    let labels: BTreeSet<String> = f.labels.iter().cloned().collect();
    if labels != body.labels || labels.len() != f.labels.len() {
        let show =
            |l: &mut dyn Iterator<Item = &String>| format!("[{}]", l.map(|s| quote(s)).collect::<Vec<_>>().join(", "));
        return Err(edited(origin, "labels", &show(&mut f.labels.iter()), &show(&mut body.labels.iter())));
    }
    check_time(origin, "not_before", f.not_before, body.not_before_ms)?;
    check_time(origin, "not_after", f.not_after, body.not_after_ms)?;
    if f.serial != body.serial {
        return Err(edited(origin, "serial", &f.serial.to_string(), &body.serial.to_string()));
    }
    Ok(())
}

/// The readable fields of a revocation or revocation request.
struct RevocationFields<'a> {
    federation: &'a str,
    member: &'a str,
    revoked_at: &'a str,
    reason: &'a str,
}

fn check_revocation_fields(origin: &str, f: &RevocationFields<'_>, body: &RevocationBody) -> Result<(), CharterError> {
    if f.federation != body.federation {
        return Err(edited(origin, "federation", &quote(f.federation), &quote(&body.federation)));
    }
    if key_field(origin, "member", f.member)? != body.member {
        return Err(edited(origin, "member", f.member, &body.member.to_string()));
    }
    check_time(origin, "revoked_at", f.revoked_at, body.revoked_at_ms)?;
    if f.reason != body.reason {
        return Err(edited(origin, "reason", &quote(f.reason), &quote(&body.reason)));
    }
    Ok(())
}

fn check_time(origin: &str, field: &str, says: &str, signed_ms: u64) -> Result<(), CharterError> {
    let signed = timestamp(signed_ms);
    if says == signed || parse_rfc3339_ms(says) == Some(signed_ms) {
        return Ok(());
    }
    Err(edited(origin, field, &quote(says), &quote(&signed)))
}

fn check_signers(origin: &str, says: &[String], signed: impl Iterator<Item = PublicKey>) -> Result<(), CharterError> {
    let signed: Vec<PublicKey> = signed.collect();
    let listed = says.iter().map(|s| key_field(origin, "signed_by", s)).collect::<Result<Vec<_>, _>>()?;
    if listed != signed {
        let show = |keys: &[PublicKey]| key_list(keys.iter()).replace('\n', " ");
        return Err(edited(origin, "signed_by", &show(&listed), &show(&signed)));
    }
    Ok(())
}

fn hex_field(origin: &str, field: &str, value: &str) -> Result<Vec<u8>, CharterError> {
    hex::decode(value.trim()).map_err(|e| invalid(origin, None, field, format!("not hex ({e}); the file is damaged")))
}

fn key_field(origin: &str, field: &str, value: &str) -> Result<PublicKey, CharterError> {
    PublicKey::from_hex(value)
        .map_err(|e| invalid(origin, None, field, format!("{value:?} is not an Ed25519 public key ({e})")))
}

/// Reads a file of at most [`MAX_FILE_BYTES`] as UTF-8.
fn read_text(path: &Path) -> Result<String, CharterError> {
    let read_err = |source| CharterError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CharterError::TooLarge { path: path.to_owned(), max: MAX_FILE_BYTES });
    }
    String::from_utf8(bytes)
        .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})"))))
}

/// What a file says it is: its `kind`, or a charter when it has none.
fn detect_kind(text: &str, origin: &str) -> Result<FileKind, CharterError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
    let tags = || FileKind::TAGGED.iter().map(|k| k.tag()).collect::<Vec<_>>().join(", ");
    match table.get("kind") {
        None if ["name", "threshold", "authorities"].iter().any(|k| table.contains_key(*k)) => Ok(FileKind::Charter),
        None => Err(invalid(
            origin,
            None,
            "kind",
            format!(
                "missing; not a Fulcrum federation file (a charter has name, threshold and authorities; other files name their kind: {})",
                tags()
            ),
        )),
        Some(toml::Value::String(tag)) => FileKind::from_tag(tag)
            .ok_or_else(|| invalid(origin, None, "kind", format!("{tag:?} is not one of: {}", tags()))),
        Some(_) => Err(invalid(origin, None, "kind", format!("must be a string, one of: {}", tags()))),
    }
}

fn expect_kind(text: &str, origin: &str, expected: FileKind) -> Result<(), CharterError> {
    let found = match detect_kind(text, origin) {
        // A charter with none of its fields still gets "missing field name".
        Err(_) if expected == FileKind::Charter && !text_has_kind(text) => FileKind::Charter,
        other => other?,
    };
    if found != expected {
        return Err(CharterError::WrongKind { origin: origin.to_owned(), expected, found });
    }
    Ok(())
}

fn text_has_kind(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).map(|t| t.contains_key("kind")).unwrap_or(true)
}

fn parse_kind<T: DeserializeOwned>(text: &str, origin: &str, expected: FileKind) -> Result<T, CharterError> {
    expect_kind(text, origin, expected)?;
    toml::from_str(text).map_err(|e| toml_error(text, origin, &e))
}

/// Turns toml's multi-line report into one line with its position and, when
/// the position is on a `key = value` line, the key.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> CharterError {
    let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    // A missing field has no place of its own (toml points at its table).
    let span = if message.starts_with("missing field") { None } else { e.span() };
    let location = span.as_ref().and_then(|s| line_column(text, s.start));
    let field = if message.starts_with("unknown field") { None } else { span.and_then(|s| key_at(text, s.start)) };
    CharterError::Toml { origin: origin.to_owned(), location, field, message }
}

fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// The key of the `key = value` line holding `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() || key.starts_with('#') || key.contains(char::is_whitespace) {
        return None;
    }
    Some(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_protocol::keys::Identity;

    fn key(seed: u8) -> PublicKey {
        Identity::from_secret_bytes(&[seed; 32]).public()
    }

    fn charter_text(threshold: usize, keys: &[PublicKey]) -> String {
        render_charter(&Charter { name: "eu-sovereign".into(), authorities: keys.to_vec(), threshold }, &[])
    }

    #[test]
    fn rendered_charters_parse_back() {
        for (threshold, keys) in [(0, vec![]), (0, vec![key(1)]), (2, vec![key(1), key(2), key(3)])] {
            let text = charter_text(threshold, &keys);
            let charter = parse_charter(&text, "federation.toml").unwrap();
            assert_eq!(charter.authorities, keys);
            assert_eq!(charter.threshold, threshold);
        }
        let notes = vec!["a1.key".to_owned(), String::new()];
        let c = Charter { name: "x".into(), authorities: vec![key(1), key(2)], threshold: 1 };
        let text = render_charter(&c, &notes);
        assert!(text.contains("# a1.key"), "{text}");
        assert_eq!(parse_charter(&text, "f").unwrap(), c);
    }

    #[test]
    fn charter_errors_name_the_field_and_line() {
        let e = parse_charter("name = \"x\"\nthreshold = 3\nauthorities = []\n", "f.toml").unwrap_err().to_string();
        assert!(e.starts_with("f.toml: line 2, column 13: threshold: 3 is more than the 0 authorities"), "{e}");
        let e = parse_charter("name = \"a b\"\nthreshold = 0\n", "f.toml").unwrap_err().to_string();
        assert!(e.contains("name: \"a b\""), "{e}");
        let e = parse_charter("threshold = 0\n", "f.toml").unwrap_err().to_string();
        assert!(e.contains("missing field `name`"), "{e}");
        let e = parse_charter("name = \"x\"\n", "f.toml").unwrap_err().to_string();
        assert!(e.contains("missing field `threshold`"), "{e}");
        let e = parse_charter("name = \"x\"\nthreshold = \"2\"\n", "f.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("threshold:"), "{e}");
        let e = parse_charter("", "f.toml").unwrap_err().to_string();
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn timestamps_are_exact() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_763_884_800_250), "2025-11-23T08:00:00.250Z");
        for ms in [0, 5, 1000, 1_763_884_800_000, 1_763_884_800_250] {
            assert_eq!(parse_rfc3339_ms(&timestamp(ms)), Some(ms));
        }
    }

    #[test]
    fn requests_round_trip_and_refuse_edits() {
        let body = CertificateBody {
            federation: "eu-sovereign".into(),
            member: key(9),
            organisation: "Example \"Cloud\" GmbH".into(),
            country: Country::parse("DE").unwrap(),
            labels: ["iso:27001".to_owned(), "gaia-x:level-2".to_owned()].into_iter().collect(),
            not_before_ms: 1_763_884_800_000,
            not_after_ms: 1_795_420_800_000,
            serial: 42,
        };
        let request = CertificateRequest::new(&body).unwrap();
        let text = request.to_toml();
        assert_eq!(parse_certificate_request(&text, "r").unwrap(), request);
        let edited = text.replace("serial = 42", "serial = 43");
        let e = parse_certificate_request(&edited, "r").unwrap_err().to_string();
        assert!(e.contains("serial: the file says 43 but its signed bytes say 42"), "{e}");
        let e = parse_charter(&text, "r").unwrap_err().to_string();
        assert_eq!(e, "r is a member certificate request, not a federation charter");

        let rbody = RevocationBody {
            federation: "eu-sovereign".into(),
            member: key(9),
            revoked_at_ms: 1_763_884_800_001,
            reason: "left".into(),
        };
        let rr = RevocationRequest::new(&rbody).unwrap();
        assert_eq!(parse_revocation_request(&rr.to_toml(), "r").unwrap(), rr);
    }
}
