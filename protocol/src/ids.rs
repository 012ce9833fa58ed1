//! Opaque identifiers. Random ids come from the caller's RNG; content ids are
//! hashes, so the same content always has the same id.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Parses exactly the id's length in bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(Self)
            }

            /// Draws a fresh id from `rng`.
            pub fn random<R: rand_core::RngCore + ?Sized>(rng: &mut R) -> Self {
                let mut b = [0u8; $len];
                rng.fill_bytes(&mut b);
                Self(b)
            }

            /// The bytes.
            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }

            /// Parses the hex form.
            pub fn from_hex(s: &str) -> Option<Self> {
                hex::decode(s.trim()).ok().and_then(|b| Self::from_slice(&b))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(self.0)[..8])
            }
        }
    };
}

id_type!(
    /// Correlates a response with its request.
    RequestId,
    16
);
id_type!(
    /// Names one negotiation across its counter rounds; chosen by the consumer.
    NegotiationId,
    16
);
id_type!(
    /// Names one hold; chosen by the provider.
    HoldId,
    16
);
id_type!(
    /// SHA-256 of a contract's body bytes.
    ContractId,
    32
);
id_type!(
    /// Names one composite placement; chosen by the consumer.
    PlacementId,
    16
);
