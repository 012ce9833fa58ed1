//! Node identities: one Ed25519 key per node. The same key signs every
//! envelope and (in the node) derives the libp2p PeerId, so "who signed" and
//! "who is connected" are the same fact.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Length in bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length in bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// Errors about key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A public key did not have 32 bytes.
    #[error("public key has {0} bytes, expected 32")]
    PublicKeyLength(usize),
    /// 32 bytes that are not a valid Ed25519 point, or a weak (small-order) key.
    #[error("public key is not a valid Ed25519 key")]
    InvalidPublicKey,
    /// A signature did not have 64 bytes.
    #[error("signature has {0} bytes, expected 64")]
    SignatureLength(usize),
    /// A hex string did not decode to a key.
    #[error("not a hex-encoded 32-byte key")]
    BadHex,
}

/// A node's secret signing key. Never serialised by this crate except on
/// explicit request (`to_secret_bytes`), and zeroised on drop.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// An identity from 32 secret bytes. The caller supplies the randomness
    /// (this crate has none of its own).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(secret) }
    }

    /// A fresh identity drawn from `rng`.
    pub fn generate<R: rand_core::CryptoRng + rand_core::RngCore>(rng: &mut R) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self::from_secret_bytes(&secret)
    }

    /// The 32 secret bytes, for writing a key file.
    pub fn to_secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` as is. Callers that sign protocol objects go through
    /// [`crate::envelope::Envelope::seal`], which adds domain separation.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The underlying dalek key, for formats that define their own signing
    /// input (checkpoint notes).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public())
    }
}

/// A node's public key: its identity in the federation. Holds the 32
/// validated bytes (small enough to key maps and travel in errors); the
/// curve point is decompressed only when a signature is checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Parses 32 bytes, rejecting invalid and weak (small-order) points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::PublicKeyLength(bytes.len()))?;
        decompress(&arr).map(|_| Self(arr))
    }

    /// Parses the lower-case hex form printed by `Display`.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s.trim()).map_err(|_| KeyError::BadHex)?;
        Self::from_bytes(&bytes)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// The dalek key (decompresses the point; the bytes were validated at parse).
    pub fn verifying_key(&self) -> VerifyingKey {
        // Every constructor validated these bytes, so this cannot fail; fall
        // back to a key that verifies nothing rather than panic.
        decompress(&self.0).unwrap_or_default()
    }

    /// Verifies a raw signature with `verify_strict` (rejects malleable and
    /// small-order forms). Protocol objects use the envelope instead.
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        let Ok(key) = decompress(&self.0) else {
            return false;
        };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

/// Most decompressed keys remembered; a federation has far fewer members.
const KEY_MEMO_CAPACITY: usize = 8_192;

/// Decompresses and validates a key, remembering the result: decompression
/// (a field inversion) costs about a quarter of a signature check, and the
/// same few peer keys are parsed and used on every message. The memo is a
/// pure function's cache, bounded, and cleared when full.
fn decompress(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<VerifyingKey, KeyError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static MEMO: OnceLock<Mutex<HashMap<[u8; PUBLIC_KEY_LEN], VerifyingKey>>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(key) = memo.lock().unwrap_or_else(PoisonError::into_inner).get(bytes) {
        return Ok(*key);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(KeyError::InvalidPublicKey);
    }
    let mut memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
    if memo.len() >= KEY_MEMO_CAPACITY {
        memo.clear();
    }
    memo.insert(*bytes, key);
    Ok(key)
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes_vec(d)?;
        PublicKey::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Deserialises a byte string (CBOR bytes) or a sequence of u8 into a Vec.
pub(crate) fn serde_bytes_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(V)
}

/// Verifies many (message, signature, key) triples at once, for auditors that
/// check a whole log: any failure fails the whole batch, and the caller then
/// checks one by one (strictly) to name the bad one.
pub fn verify_batch(messages: &[&[u8]], signatures: &[[u8; SIGNATURE_LEN]], keys: &[PublicKey]) -> bool {
    if messages.len() != signatures.len() || messages.len() != keys.len() {
        return false;
    }
    let sigs: Vec<ed25519_dalek::Signature> = signatures.iter().map(ed25519_dalek::Signature::from_bytes).collect();
    let vks: Vec<VerifyingKey> = keys.iter().map(PublicKey::verifying_key).collect();
    ed25519_dalek::verify_batch(messages, &sigs, &vks).is_ok()
}
