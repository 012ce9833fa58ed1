//! C2SP tlog-checkpoint notes: the text form of a signed Merkle tree head,
//! Ed25519 signing and verification per C2SP signed-note, and strict,
//! bounded parsing of the notes peers send.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::keys::{Identity, PublicKey};
use crate::merkle::Hash;

/// The largest note, in bytes, that [`SignedCheckpoint::parse`] accepts and
/// [`Checkpoint::sign`] produces.
pub const MAX_NOTE_BYTES: usize = 8192;

/// The most signature lines a note may carry; signed-note requires
/// accepting at least 16.
pub const MAX_SIGNATURES: usize = 16;

/// The most extension lines a checkpoint may carry.
pub const MAX_EXTENSIONS: usize = 16;

/// Signed-note signature type byte for Ed25519, part of the key ID hash.
const ED25519_TYPE: u8 = 0x01;

/// Every signature line starts with an em dash (U+2014) and a space.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// Key ID and signature, the payload of an Ed25519 signature line.
const ED25519_PAYLOAD_LEN: usize = 4 + 64;

/// Length of standard base64 for 32 bytes, padding included.
const ROOT_BASE64_LEN: usize = 44;

/// Why a checkpoint could not be signed, a note could not be parsed, or a
/// signature was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// The note is longer than [`MAX_NOTE_BYTES`].
    #[error("note is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The note's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The note bytes are not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note contains a control character other than newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// The note does not end with a newline.
    #[error("note does not end with a newline")]
    MissingFinalNewline,
    /// No blank line separates the text from the signatures.
    #[error("note has no blank line before its signatures")]
    MissingBlankLine,
    /// An empty line inside the text (or among the signatures, which makes
    /// the separating blank line appear to fall after it).
    #[error("note has an empty line where none may be")]
    UnexpectedBlankLine,
    /// The text has fewer than the three lines origin, size and root.
    #[error("checkpoint text needs origin, size and root lines")]
    TooFewLines,
    /// The origin line is empty or not printable.
    #[error("checkpoint origin is empty or not printable")]
    BadOrigin,
    /// The size line is not a canonical decimal that fits in a u64.
    #[error("checkpoint size is not a canonical decimal u64")]
    BadSize,
    /// The root line is not the standard base64 of exactly 32 bytes.
    #[error("checkpoint root is not the base64 of 32 bytes")]
    BadRoot,
    /// An extension line is empty or holds a control character.
    #[error("checkpoint extension line is empty or holds a control character")]
    BadExtension,
    /// More than [`MAX_EXTENSIONS`] extension lines.
    #[error("checkpoint has {count} extension lines, more than the {max} allowed")]
    TooManyExtensions {
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The note has a blank line but no signature lines after it.
    #[error("note has no signature lines")]
    NoSignatures,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has {count} signature lines, more than the {max} allowed")]
    TooManySignatures {
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A signature line is not `— <key name> <base64 of key ID and signature>`.
    #[error("signature line {index} is malformed")]
    MalformedSignatureLine {
        /// Position of the line among the signature lines, from 0.
        index: usize,
    },
    /// A key name given to sign or verify is empty or holds whitespace or '+'.
    #[error("key name is empty or contains whitespace, '+' or a control character")]
    BadKeyName,
    /// No signature line carries the expected key name and key ID.
    #[error("no signature from the expected key")]
    NoMatchingSignature,
    /// A signature line names the expected key but its signature is invalid.
    #[error("signature from the expected key does not verify")]
    BadSignature,
    /// The origin is not `fulcrum/<federation>/<node key>` for this federation.
    #[error("checkpoint origin is not the agreement log of a node of this federation")]
    ForeignOrigin,
}

/// The origin of a node's agreement log, also the key name its checkpoints
/// are signed under: `fulcrum/<federation>/<node key in hex>`.
pub fn node_origin(federation: &str, key: &PublicKey) -> String {
    format!("fulcrum/{federation}/{key}")
}

/// Signs a checkpoint of this node's agreement log.
pub fn sign_node_checkpoint(
    identity: &Identity,
    federation: &str,
    size: u64,
    root: Hash,
) -> Result<SignedCheckpoint, CheckpointError> {
    let origin = node_origin(federation, &identity.public());
    Checkpoint { origin: origin.clone(), size, root, extensions: Vec::new() }.sign(&origin, identity.signing_key())
}

/// Parses a node's checkpoint note and checks that its origin names a node
/// of `federation` and that this node signed it. Returns the node's key.
pub fn verify_node_checkpoint(note: &str, federation: &str) -> Result<(PublicKey, SignedCheckpoint), CheckpointError> {
    let signed = SignedCheckpoint::parse(note)?;
    let origin = &signed.checkpoint().origin;
    let key = origin
        .strip_prefix("fulcrum/")
        .and_then(|rest| rest.strip_prefix(federation))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|hex| PublicKey::from_hex(hex).ok())
        .filter(|key| *origin == node_origin(federation, key))
        .ok_or(CheckpointError::ForeignOrigin)?;
    signed.verify(origin, &key.verifying_key())?;
    Ok((key, signed))
}

/// A transparency log checkpoint: the log's origin, a tree size and the
/// Merkle root at that size, plus optional opaque extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Identifies the log; conventionally a schema-less URL.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 6962 root of the tree at `size`.
    pub root: Hash,
    /// Opaque extra lines, each non-empty; signed along with the rest.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root and each extension, every
    /// line ending in a newline. This is exactly what gets signed.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Signs the checkpoint as a note with an Ed25519 key named `key_name`.
    ///
    /// Refuses a checkpoint that [`SignedCheckpoint::parse`] would refuse,
    /// so that whatever is signed can be read back by peers.
    pub fn sign(&self, key_name: &str, key: &SigningKey) -> Result<SignedCheckpoint, CheckpointError> {
        if !is_valid_key_name(key_name) {
            return Err(CheckpointError::BadKeyName);
        }
        self.validate()?;
        let text = self.to_text();
        let signature = sign_text(key_name, key, &text);
        let signed = SignedCheckpoint {
            checkpoint: self.clone(),
            signature_block: signature.to_line(),
            signatures: vec![signature],
            text,
        };
        let len = signed.note_len();
        if len > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len, max: MAX_NOTE_BYTES });
        }
        Ok(signed)
    }

    fn validate(&self) -> Result<(), CheckpointError> {
        if !is_valid_origin(&self.origin) {
            return Err(CheckpointError::BadOrigin);
        }
        if self.extensions.len() > MAX_EXTENSIONS {
            return Err(CheckpointError::TooManyExtensions { count: self.extensions.len(), max: MAX_EXTENSIONS });
        }
        if !self.extensions.iter().all(|line| is_valid_extension(line)) {
            return Err(CheckpointError::BadExtension);
        }
        Ok(())
    }
}

/// One Ed25519 signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The signer's key ID; see [`key_id`].
    pub key_id: [u8; 4],
    /// The Ed25519 signature over the note text.
    pub signature: [u8; 64],
}

impl NoteSignature {
    fn to_line(&self) -> String {
        let mut payload = [0u8; ED25519_PAYLOAD_LEN];
        payload[..4].copy_from_slice(&self.key_id);
        payload[4..].copy_from_slice(&self.signature);
        format!("{SIGNATURE_LINE_PREFIX}{} {}\n", self.name, STANDARD.encode(payload))
    }
}

/// A checkpoint together with the note it was read from or signed into.
///
/// Holding the exact text keeps verification independent of how the
/// checkpoint would be re-encoded; strict parsing makes the two agree anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    text: String,
    signatures: Vec<NoteSignature>,
    // The signature lines exactly as received, so a note relays unchanged,
    // including lines of other algorithms that `signatures` cannot hold.
    signature_block: String,
}

impl SignedCheckpoint {
    /// Parses a checkpoint note, rejecting anything not in canonical form.
    ///
    /// Signatures are only checked for shape here; call
    /// [`verify`](Self::verify) before trusting the checkpoint. Lines
    /// whose payload is not 4 + 64 bytes belong to other signature
    /// algorithms: they are kept for [`to_note`](Self::to_note) but not
    /// listed in [`signatures`](Self::signatures).
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len: note.len(), max: MAX_NOTE_BYTES });
        }
        // Signed-note forbids control characters other than newline. That
        // also guarantees no 0x00 byte in any checkpoint text, which keeps
        // checkpoint signatures domain-separated from the project's other
        // signed messages, all of which contain a 0x00 byte.
        if note.chars().any(|c| c != '\n' && (c < ' ' || c == '\u{7f}')) {
            return Err(CheckpointError::ControlCharacter);
        }
        if !note.ends_with('\n') {
            return Err(CheckpointError::MissingFinalNewline);
        }
        // The last blank line is the separator, so a stray one among the
        // signatures moves signature lines into the text, where the no-empty-
        // lines rule catches it.
        let blank = note.rfind("\n\n").ok_or(CheckpointError::MissingBlankLine)?;
        let (text, signature_block) = note.split_at(blank + 1);
        let signature_block = signature_block.strip_prefix('\n').unwrap_or(signature_block);
        let checkpoint = parse_text(text)?;
        let signatures = parse_signature_block(signature_block)?;
        Ok(Self { checkpoint, text: text.to_owned(), signatures, signature_block: signature_block.to_owned() })
    }

    /// Parses a note received as bytes; see [`parse`](Self::parse). The
    /// size limit is applied before anything else is looked at.
    pub fn parse_bytes(note: &[u8]) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len: note.len(), max: MAX_NOTE_BYTES });
        }
        let note = std::str::from_utf8(note).map_err(|_| CheckpointError::NotUtf8)?;
        Self::parse(note)
    }

    /// Checks that the note carries a valid signature by the Ed25519 key
    /// `key` under the name `key_name`.
    ///
    /// Signatures by other keys are ignored, as signed-note requires. If
    /// several lines match the key, every one of them must verify.
    pub fn verify(&self, key_name: &str, key: &VerifyingKey) -> Result<(), CheckpointError> {
        if !is_valid_key_name(key_name) {
            return Err(CheckpointError::BadKeyName);
        }
        let id = key_id(key_name, key);
        let mut matched = false;
        for line in self.signatures.iter().filter(|s| s.name == key_name && s.key_id == id) {
            let signature = Signature::from_bytes(&line.signature);
            key.verify_strict(self.text.as_bytes(), &signature).map_err(|_| CheckpointError::BadSignature)?;
            matched = true;
        }
        if matched { Ok(()) } else { Err(CheckpointError::NoMatchingSignature) }
    }

    /// The full note: text, blank line, signature lines.
    pub fn to_note(&self) -> String {
        let mut note = String::with_capacity(self.note_len());
        note.push_str(&self.text);
        note.push('\n');
        note.push_str(&self.signature_block);
        note
    }

    /// The checkpoint the note carries.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signed note text, ending in a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The Ed25519-shaped signature lines, verified or not, in note order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    fn note_len(&self) -> usize {
        self.text.len() + 1 + self.signature_block.len()
    }
}

/// The signed-note key ID of an Ed25519 key: the first four bytes of
/// SHA-256(name || 0x0A || 0x01 || public key).
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519_TYPE]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn sign_text(key_name: &str, key: &SigningKey, text: &str) -> NoteSignature {
    NoteSignature {
        name: key_name.to_owned(),
        key_id: key_id(key_name, &key.verifying_key()),
        signature: key.sign(text.as_bytes()).to_bytes(),
    }
}

/// Parses the note text, which ends in a newline.
fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
    let body = text.strip_suffix('\n').ok_or(CheckpointError::MissingFinalNewline)?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.iter().any(|line| line.is_empty()) {
        return Err(CheckpointError::UnexpectedBlankLine);
    }
    let (origin, size, root, extensions) = match lines.as_slice() {
        [origin, size, root, extensions @ ..] => (*origin, *size, *root, extensions),
        _ => return Err(CheckpointError::TooFewLines),
    };
    if !is_valid_origin(origin) {
        return Err(CheckpointError::BadOrigin);
    }
    let size = parse_size(size)?;
    let root = parse_root(root)?;
    if extensions.len() > MAX_EXTENSIONS {
        return Err(CheckpointError::TooManyExtensions { count: extensions.len(), max: MAX_EXTENSIONS });
    }
    if !extensions.iter().all(|line| is_valid_extension(line)) {
        return Err(CheckpointError::BadExtension);
    }
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        extensions: extensions.iter().map(|line| (*line).to_owned()).collect(),
    })
}

fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    // u64's FromStr alone would take "+7" and "007"; only the canonical
    // spelling may pass, so that one checkpoint has one text.
    let canonical =
        !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::BadSize);
    }
    line.parse().map_err(|_| CheckpointError::BadSize)
}

fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    if line.len() != ROOT_BASE64_LEN {
        return Err(CheckpointError::BadRoot);
    }
    // The standard engine insists on canonical padding and zero trailing
    // bits, so no two spellings decode to the same root.
    let bytes = STANDARD.decode(line).map_err(|_| CheckpointError::BadRoot)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| CheckpointError::BadRoot)
}

/// Parses the signature lines that follow the blank line.
fn parse_signature_block(block: &str) -> Result<Vec<NoteSignature>, CheckpointError> {
    let Some(body) = block.strip_suffix('\n') else {
        return Err(CheckpointError::NoSignatures);
    };
    let count = body.split('\n').count();
    if count > MAX_SIGNATURES {
        return Err(CheckpointError::TooManySignatures { count, max: MAX_SIGNATURES });
    }
    let mut signatures = Vec::with_capacity(count);
    for (index, line) in body.split('\n').enumerate() {
        let malformed = CheckpointError::MalformedSignatureLine { index };
        let rest = line.strip_prefix(SIGNATURE_LINE_PREFIX).ok_or(malformed.clone())?;
        let (name, encoded) = rest.split_once(' ').ok_or(malformed.clone())?;
        if !is_valid_key_name(name) {
            return Err(malformed);
        }
        let payload = STANDARD.decode(encoded).map_err(|_| malformed.clone())?;
        // A key ID with nothing after it is no signature at all.
        let Some((key_id, signature)) = payload.split_first_chunk::<4>() else {
            return Err(malformed);
        };
        if signature.is_empty() {
            return Err(malformed);
        }
        // Other algorithms' signatures (cosignatures, ML-DSA, ...) have other
        // lengths. They come from keys this module cannot know, and
        // signed-note says to ignore those, so they are only kept as text.
        if let Ok(signature) = <[u8; 64]>::try_from(signature) {
            signatures.push(NoteSignature { name: name.to_owned(), key_id: *key_id, signature });
        }
    }
    Ok(signatures)
}

/// Signed-note key names: non-empty, no Unicode whitespace, no '+'. Control
/// characters are refused too, since no note may contain them.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

/// Origins must be printable: operators read them and peers compare them,
/// so nothing may hide in them. Plain spaces are allowed inside (the spec
/// only discourages them) but not at either end.
fn is_valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && origin.trim() == origin
        && origin.chars().all(|c| !c.is_control() && (c == ' ' || !c.is_whitespace()) && !is_invisible(c))
}

/// Extension lines are opaque, but must still be lines: non-empty and free
/// of control characters.
fn is_valid_extension(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(char::is_control)
}

/// Format characters that display as nothing or reorder the text around
/// them, so that two different origins could look the same.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MerkleTree, leaf_hash};
    use proptest::prelude::*;

    const NAME: &str = "log.fulcrum.example/test";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint(size: u64) -> Checkpoint {
        let mut tree = MerkleTree::new();
        for i in 0..size {
            tree.push(&i.to_be_bytes());
        }
        Checkpoint { origin: NAME.to_owned(), size, root: tree.root(), extensions: Vec::new() }
    }

    fn signed_note(cp: &Checkpoint, name: &str, key: &SigningKey) -> String {
        cp.sign(name, key).unwrap().to_note()
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn sign_to_note_parse_verify_round_trip() {
        let key = key(1);
        for cp in [
            checkpoint(0),
            checkpoint(5),
            Checkpoint { extensions: vec!["ext one".into(), "ext-two: ✓".into()], ..checkpoint(3) },
        ] {
            let signed = cp.sign(NAME, &key).unwrap();
            assert_eq!(signed.checkpoint(), &cp);
            assert_eq!(signed.text(), cp.to_text());
            signed.verify(NAME, &key.verifying_key()).unwrap();

            let note = signed.to_note();
            let parsed = SignedCheckpoint::parse(&note).unwrap();
            assert_eq!(parsed, signed);
            assert_eq!(parsed.to_note(), note);
            assert_eq!(parsed.checkpoint().to_text(), parsed.text());
            parsed.verify(NAME, &key.verifying_key()).unwrap();
            assert_eq!(SignedCheckpoint::parse_bytes(note.as_bytes()), Ok(parsed));
        }
    }

    #[test]
    fn note_layout_is_exactly_as_specified() {
        let key = key(2);
        let cp = Checkpoint { extensions: vec!["x".into()], ..checkpoint(5) };
        let text = format!("{NAME}\n5\n{}\nx\n", b64(&cp.root));
        assert_eq!(cp.to_text(), text);

        // Key ID and signature rebuilt here from their definitions.
        let mut kid_input = NAME.as_bytes().to_vec();
        kid_input.push(b'\n');
        kid_input.push(0x01);
        kid_input.extend_from_slice(key.verifying_key().as_bytes());
        let kid = &Sha256::digest(&kid_input)[..4];
        let mut payload = kid.to_vec();
        payload.extend_from_slice(&key.sign(text.as_bytes()).to_bytes());
        let want = format!("{text}\n\u{2014} {NAME} {}\n", b64(&payload));

        let signed = cp.sign(NAME, &key).unwrap();
        assert_eq!(signed.to_note(), want);
        assert_eq!(signed.signatures().len(), 1);
        assert_eq!(signed.signatures()[0].key_id.as_slice(), kid);
        assert_eq!(signed.signatures()[0].name, NAME);
    }

    #[test]
    fn key_id_known_answer() {
        // RFC 8032 section 7.1 TEST 1 key; the expected ID is the first four
        // bytes of `sha256sum` over "example.com/log\n\x01" || public key,
        // computed outside this code.
        let secret: [u8; 32] =
            unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").try_into().unwrap();
        let key = SigningKey::from_bytes(&secret).verifying_key();
        assert_eq!(
            key.as_bytes().as_slice(),
            unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        assert_eq!(key_id("example.com/log", &key), [0xcc, 0x71, 0x46, 0x70]);
        assert_ne!(key_id("example.com/log2", &key), key_id("example.com/log", &key));
    }

    #[test]
    fn interoperates_with_the_go_signed_note_example() {
        // The example of golang.org/x/mod/sumdb/note: its signer and verifier
        // keys carry the type byte 0x01 before the seed and public key.
        let signer = STANDARD.decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz").unwrap();
        let verifier = STANDARD.decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").unwrap();
        assert_eq!((signer[0], verifier[0]), (0x01, 0x01));
        let key = SigningKey::from_bytes(&signer[1..].try_into().unwrap());
        assert_eq!(key.verifying_key().as_bytes().as_slice(), &verifier[1..]);
        assert_eq!(key_id("PeterNeumann", &key.verifying_key()), [0xc7, 0x4f, 0x20, 0xa3]);

        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let line = sign_text("PeterNeumann", &key, text).to_line();
        assert_eq!(
            line,
            "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
    }

    #[test]
    fn parses_the_c2sp_checkpoint_example() {
        let note = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
                    \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let parsed = SignedCheckpoint::parse(note).unwrap();
        assert_eq!(parsed.checkpoint().origin, "example.com/behind-the-sofa");
        assert_eq!(parsed.checkpoint().size, 20852163);
        assert_eq!(
            parsed.checkpoint().root.as_slice(),
            unhex("0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62")
        );
        assert_eq!(parsed.signatures().len(), 1);
        assert_eq!(parsed.signatures()[0].key_id, [0x03, 0x3d, 0xe0, 0xae]);
        assert_eq!(parsed.to_note(), note);
    }

    #[test]
    fn verification_fails_for_other_keys_and_names() {
        let key = key(3);
        let signed = checkpoint(7).sign(NAME, &key).unwrap();
        let other = self::key(4).verifying_key();
        assert_eq!(signed.verify(NAME, &other), Err(CheckpointError::NoMatchingSignature));
        assert_eq!(
            signed.verify("log.fulcrum.example/other", &key.verifying_key()),
            Err(CheckpointError::NoMatchingSignature)
        );
        for bad_name in ["", "has space", "has+plus", "tab\tname", "nbsp\u{a0}name"] {
            assert_eq!(signed.verify(bad_name, &key.verifying_key()), Err(CheckpointError::BadKeyName));
        }
        // A line that claims the right name and key ID but carries a
        // signature made by some other key.
        let mut forged = signed.clone();
        let impostor = sign_text(NAME, &self::key(4), signed.text());
        forged.signatures[0].signature = impostor.signature;
        assert_eq!(forged.verify(NAME, &key.verifying_key()), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn any_changed_byte_of_the_note_is_caught() {
        let key = key(5);
        let verifying = key.verifying_key();
        let note = signed_note(&checkpoint(3), "k", &key);
        let (mut unparsed, mut unverified) = (0, 0);
        for position in 0..note.len() {
            for mask in [0x01u8, 0x20] {
                let mut bytes = note.clone().into_bytes();
                bytes[position] ^= mask;
                match SignedCheckpoint::parse_bytes(&bytes) {
                    Err(_) => unparsed += 1,
                    Ok(parsed) => {
                        assert!(parsed.verify("k", &verifying).is_err(), "byte {position} ^ {mask:#x} still verifies");
                        unverified += 1;
                    }
                }
            }
        }
        // Both defences should have been exercised.
        assert!(unparsed > 0 && unverified > 0, "{unparsed} {unverified}");
    }

    #[test]
    fn a_note_re_signed_over_a_different_root_fails_with_the_original_key() {
        let original = key(6);
        let attacker = key(7);
        let honest = checkpoint(8).sign(NAME, &original).unwrap();
        let mut altered = honest.checkpoint().clone();
        altered.root = leaf_hash(b"rewritten history");

        // Signed by another key under the same name: parses, does not verify.
        let resigned = SignedCheckpoint::parse(&signed_note(&altered, NAME, &attacker)).unwrap();
        assert_eq!(resigned.checkpoint().root, altered.root);
        assert_eq!(resigned.verify(NAME, &original.verifying_key()), Err(CheckpointError::NoMatchingSignature));
        resigned.verify(NAME, &attacker.verifying_key()).unwrap();

        // The honest signature line moved onto the altered text.
        let honest_line = honest.signatures()[0].to_line();
        let transplanted = format!("{}\n{honest_line}", altered.to_text());
        let parsed = SignedCheckpoint::parse(&transplanted).unwrap();
        assert_eq!(parsed.verify(NAME, &original.verifying_key()), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn unknown_signers_are_ignored_and_kept() {
        let key = key(8);
        let cp = checkpoint(9);
        let note = signed_note(&cp, NAME, &key);
        let text = cp.to_text();
        let witness = sign_text("witness.example/w1", &self::key(9), &text).to_line();
        // Same name as ours but another key, hence another key ID.
        let namesake = sign_text(NAME, &self::key(10), &text).to_line();
        // A timestamped cosignature has an 8-byte timestamp before the
        // signature: a valid line of an algorithm this module does not use.
        let mut cosig = vec![1, 2, 3, 4];
        cosig.extend_from_slice(&[0u8; 72]);
        let cosig_line = format!("\u{2014} witness.example/w2 {}\n", b64(&cosig));

        let note = format!("{note}{witness}{namesake}{cosig_line}");
        let parsed = SignedCheckpoint::parse(&note).unwrap();
        assert_eq!(parsed.signatures().len(), 3);
        parsed.verify(NAME, &key.verifying_key()).unwrap();
        parsed.verify("witness.example/w1", &self::key(9).verifying_key()).unwrap();
        assert_eq!(parsed.to_note(), note);

        // Unknown signers first, ours last: order does not matter.
        let reordered = format!("{text}\n{witness}{cosig_line}{}", &note[text.len() + 1..]);
        SignedCheckpoint::parse(&reordered).unwrap().verify(NAME, &key.verifying_key()).unwrap();
    }

    #[test]
    fn a_bad_signature_from_the_expected_key_rejects_the_note() {
        let key = key(11);
        let cp = checkpoint(2);
        let good = signed_note(&cp, NAME, &key);
        let mut bad = sign_text(NAME, &key, &cp.to_text());
        bad.signature[0] ^= 1;
        let note = format!("{good}{}", bad.to_line());
        let parsed = SignedCheckpoint::parse(&note).unwrap();
        assert_eq!(parsed.verify(NAME, &key.verifying_key()), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn malformed_notes_give_their_specific_error() {
        use CheckpointError as E;
        let key = key(12);
        let cp = checkpoint(4);
        let root = b64(&cp.root);
        let line = sign_text(NAME, &key, &cp.to_text()).to_line();
        let good = format!("{NAME}\n4\n{root}\n\n{line}");
        assert!(SignedCheckpoint::parse(&good).is_ok());
        let sig = |s: &str| format!("{NAME}\n4\n{root}\n\n{s}");
        let text = |origin: &str, size: &str, root: &str| format!("{origin}\n{size}\n{root}\n\n{line}");
        let payload = &line[line.rfind(' ').unwrap() + 1..line.len() - 1];
        let short_root = b64(&[7u8; 31]);
        let long_root = b64(&[7u8; 33]);
        // 'Z' is 0b011001: its two low bits would fall past the 32nd byte,
        // and canonical base64 requires them to be zero.
        let noncanonical_root = format!("{}Z=", &root[..42]);
        let unpadded_root = root.trim_end_matches('=').to_owned();
        let url_root = b64(&[0xfb; 32]).replace('+', "-").replace('/', "_");

        let cases: Vec<(&str, String, CheckpointError)> = vec![
            ("empty", String::new(), E::MissingFinalNewline),
            ("no final newline", good.trim_end_matches('\n').to_owned(), E::MissingFinalNewline),
            ("no blank line", format!("{NAME}\n4\n{root}\n{line}"), E::MissingBlankLine),
            ("just a newline", "\n".into(), E::MissingBlankLine),
            ("two blank lines", format!("{NAME}\n4\n{root}\n\n\n{line}"), E::UnexpectedBlankLine),
            ("blank line in text", format!("{NAME}\n\n4\n{root}\n\n{line}"), E::UnexpectedBlankLine),
            ("blank line among signatures", format!("{good}\n{line}"), E::UnexpectedBlankLine),
            ("trailing blank line", format!("{good}\n"), E::UnexpectedBlankLine),
            ("leading blank line", format!("\n{good}"), E::UnexpectedBlankLine),
            ("CRLF line ends", good.replace('\n', "\r\n"), E::ControlCharacter),
            ("NUL", good.replacen("test", "te\0st", 1), E::ControlCharacter),
            ("tab", good.replacen("test", "te\tst", 1), E::ControlCharacter),
            ("DEL", good.replacen("test", "te\u{7f}st", 1), E::ControlCharacter),
            ("two lines", format!("{NAME}\n4\n\n{line}"), E::TooFewLines),
            ("one line", format!("{NAME}\n\n{line}"), E::TooFewLines),
            ("origin with C1 control", text("a\u{85}b", "4", &root), E::BadOrigin),
            ("origin with bidi override", text("a\u{202e}b", "4", &root), E::BadOrigin),
            ("origin with zero-width space", text("a\u{200b}b", "4", &root), E::BadOrigin),
            ("origin with leading space", text(" a", "4", &root), E::BadOrigin),
            ("origin with trailing space", text("a ", "4", &root), E::BadOrigin),
            ("origin with no-break space", text("a\u{a0}b", "4", &root), E::BadOrigin),
            ("size with leading zero", text(NAME, "04", &root), E::BadSize),
            ("size 00", text(NAME, "00", &root), E::BadSize),
            ("size with plus", text(NAME, "+4", &root), E::BadSize),
            ("negative size", text(NAME, "-4", &root), E::BadSize),
            ("size with space", text(NAME, "4 ", &root), E::BadSize),
            ("hex size", text(NAME, "0x4", &root), E::BadSize),
            ("size above u64", text(NAME, "18446744073709551616", &root), E::BadSize),
            ("size with non-ASCII digit", text(NAME, "\u{0664}", &root), E::BadSize),
            ("root of 31 bytes", text(NAME, "4", &short_root), E::BadRoot),
            ("root of 33 bytes", text(NAME, "4", &long_root), E::BadRoot),
            ("root with non-canonical bits", text(NAME, "4", &noncanonical_root), E::BadRoot),
            ("root without padding", text(NAME, "4", &unpadded_root), E::BadRoot),
            ("root in URL-safe base64", text(NAME, "4", &url_root), E::BadRoot),
            ("root in hex", text(NAME, "4", &"ab".repeat(32)), E::BadRoot),
            ("extension with C1 control", format!("{NAME}\n4\n{root}\nx\u{9b}y\n\n{line}"), E::BadExtension),
            (
                "17 extensions",
                format!("{NAME}\n4\n{root}\n{}\n{line}", "ext\n".repeat(17)),
                E::TooManyExtensions { count: 17, max: 16 },
            ),
            ("no signatures", format!("{NAME}\n4\n{root}\n\n"), E::NoSignatures),
            ("17 signatures", sig(&line.repeat(17)), E::TooManySignatures { count: 17, max: 16 }),
            ("hyphen for em dash", sig(&line.replacen('\u{2014}', "-", 1)), E::MalformedSignatureLine { index: 0 }),
            (
                "en dash for em dash",
                sig(&line.replacen('\u{2014}', "\u{2013}", 1)),
                E::MalformedSignatureLine { index: 0 },
            ),
            (
                "no space after dash",
                sig(&line.replacen("\u{2014} ", "\u{2014}", 1)),
                E::MalformedSignatureLine { index: 0 },
            ),
            ("missing payload", sig(&format!("\u{2014} {NAME}\n")), E::MalformedSignatureLine { index: 0 }),
            ("empty name", sig(&format!("\u{2014}  {payload}\n")), E::MalformedSignatureLine { index: 0 }),
            ("name with plus", sig(&format!("\u{2014} a+b {payload}\n")), E::MalformedSignatureLine { index: 0 }),
            (
                "name with ideographic space",
                sig(&format!("\u{2014} a\u{3000}b {payload}\n")),
                E::MalformedSignatureLine { index: 0 },
            ),
            ("double space", sig(&format!("\u{2014} {NAME}  {payload}\n")), E::MalformedSignatureLine { index: 0 }),
            ("trailing space", sig(&format!("\u{2014} {NAME} {payload} \n")), E::MalformedSignatureLine { index: 0 }),
            ("payload not base64", sig(&format!("\u{2014} {NAME} !!!!\n")), E::MalformedSignatureLine { index: 0 }),
            (
                "payload unpadded",
                sig(&format!("\u{2014} {NAME} {}\n", payload.trim_end_matches('='))),
                E::MalformedSignatureLine { index: 0 },
            ),
            (
                "payload of only a key ID",
                sig(&format!("\u{2014} {NAME} {}\n", b64(&[1, 2, 3, 4]))),
                E::MalformedSignatureLine { index: 0 },
            ),
            ("second line bad", sig(&format!("{line}\u{2014} x\n")), E::MalformedSignatureLine { index: 1 }),
            ("text line among signatures", sig(&format!("{line}{NAME}\n")), E::MalformedSignatureLine { index: 1 }),
        ];
        for (what, note, want) in cases {
            assert_eq!(SignedCheckpoint::parse(&note).map(|_| ()), Err(want), "{what}: {note:?}");
        }
    }

    #[test]
    fn limits_are_enforced_at_their_edges() {
        let key = key(13);
        let base = Checkpoint { extensions: vec!["e".into(); MAX_EXTENSIONS], ..checkpoint(1) };
        let signed = base.sign(NAME, &key).unwrap();
        let line = signed.signatures()[0].to_line();
        let sixteen = format!("{}\n{}", signed.text(), line.repeat(MAX_SIGNATURES));
        let parsed = SignedCheckpoint::parse(&sixteen).unwrap();
        assert_eq!(parsed.checkpoint().extensions.len(), MAX_EXTENSIONS);
        assert_eq!(parsed.signatures().len(), MAX_SIGNATURES);
        parsed.verify(NAME, &key.verifying_key()).unwrap();

        // A note of exactly the maximum size, padded in the origin.
        let one_char = Checkpoint { origin: "o".into(), ..checkpoint(1) };
        let overhead = signed_note(&one_char, NAME, &key).len() - 1;
        let exact = Checkpoint { origin: "o".repeat(MAX_NOTE_BYTES - overhead), ..checkpoint(1) };
        let note = signed_note(&exact, NAME, &key);
        assert_eq!(note.len(), MAX_NOTE_BYTES);
        SignedCheckpoint::parse(&note).unwrap().verify(NAME, &key.verifying_key()).unwrap();

        let over = Checkpoint { origin: "o".repeat(MAX_NOTE_BYTES - overhead + 1), ..checkpoint(1) };
        assert_eq!(
            over.sign(NAME, &key),
            Err(CheckpointError::TooLarge { len: MAX_NOTE_BYTES + 1, max: MAX_NOTE_BYTES })
        );
        let too_long = format!("{note}x");
        assert_eq!(
            SignedCheckpoint::parse(&too_long),
            Err(CheckpointError::TooLarge { len: MAX_NOTE_BYTES + 1, max: MAX_NOTE_BYTES })
        );
        // The byte form checks the size before looking at the content.
        let mut junk = vec![0xffu8; MAX_NOTE_BYTES + 1];
        assert!(matches!(SignedCheckpoint::parse_bytes(&junk), Err(CheckpointError::TooLarge { .. })));
        junk.truncate(10);
        assert_eq!(SignedCheckpoint::parse_bytes(&junk), Err(CheckpointError::NotUtf8));
    }

    #[test]
    fn signing_refuses_what_parsing_would_refuse() {
        use CheckpointError as E;
        let key = key(14);
        let cp = checkpoint(1);
        for name in ["", "a b", "a+b", "a\tb", "a\nb", "a\u{2003}b"] {
            assert_eq!(cp.sign(name, &key), Err(E::BadKeyName), "{name:?}");
        }
        for origin in ["", "a\nb", "a\0b", " a", "a\u{202e}b", "a\u{7f}"] {
            let bad = Checkpoint { origin: origin.into(), ..cp.clone() };
            assert_eq!(bad.sign(NAME, &key), Err(E::BadOrigin), "{origin:?}");
        }
        for extension in ["", "a\nb", "a\0b", "a\tb"] {
            let bad = Checkpoint { extensions: vec![extension.into()], ..cp.clone() };
            assert_eq!(bad.sign(NAME, &key), Err(E::BadExtension), "{extension:?}");
        }
        let bad = Checkpoint { extensions: vec!["e".into(); MAX_EXTENSIONS + 1], ..cp.clone() };
        assert_eq!(bad.sign(NAME, &key), Err(E::TooManyExtensions { count: 17, max: 16 }));
        // Spaces inside an origin are allowed, and non-ASCII text is fine.
        let spaced = Checkpoint { origin: "Fulcrum log ✓".into(), ..cp };
        let signed = spaced.sign(NAME, &key).unwrap();
        assert_eq!(SignedCheckpoint::parse(&signed.to_note()), Ok(signed));
    }

    #[test]
    fn note_text_never_contains_a_zero_byte() {
        // The domain separation argument in `parse`: nothing that signs or
        // parses can carry 0x00 into a signed checkpoint text.
        let key = key(15);
        for (origin, extension) in [("a\0", "e"), ("a", "\0"), ("a", "e\0")] {
            let with_zero =
                Checkpoint { origin: origin.into(), size: 0, root: [0; 32], extensions: vec![extension.into()] };
            assert!(with_zero.sign(NAME, &key).is_err());
        }
        let zeros = Checkpoint { origin: "a".into(), size: 0, root: [0; 32], extensions: Vec::new() };
        let signed = zeros.sign(NAME, &key).unwrap();
        assert!(!signed.text().as_bytes().contains(&0));
        let mut note = signed.to_note().into_bytes();
        note[0] = 0;
        assert_eq!(SignedCheckpoint::parse_bytes(&note), Err(CheckpointError::ControlCharacter));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_checkpoints_round_trip(
            origin in "[a-z0-9./-]{1,40}( [a-zA-Z0-9é✓]{1,8}){0,2}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[ -~]{1,20}", 0..4),
            seed in any::<[u8; 32]>(),
        ) {
            let cp = Checkpoint { origin, size, root, extensions };
            let key = SigningKey::from_bytes(&seed);
            let note = cp.sign(NAME, &key).unwrap().to_note();
            let parsed = SignedCheckpoint::parse(&note).unwrap();
            prop_assert_eq!(parsed.checkpoint(), &cp);
            prop_assert_eq!(parsed.to_note(), note);
            prop_assert!(parsed.verify(NAME, &key.verifying_key()).is_ok());
        }
    }

    #[test]
    fn random_keys_round_trip() {
        let mut rng = rand::rngs::OsRng;
        let key = SigningKey::generate(&mut rng);
        let signed = checkpoint(10).sign(NAME, &key).unwrap();
        let parsed = SignedCheckpoint::parse(&signed.to_note()).unwrap();
        parsed.verify(NAME, &key.verifying_key()).unwrap();
        assert_eq!(
            parsed.verify(NAME, &SigningKey::generate(&mut rng).verifying_key()),
            Err(CheckpointError::NoMatchingSignature)
        );
    }
}
