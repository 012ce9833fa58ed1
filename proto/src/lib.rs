//! Generated wire types of the Fulcrum protocol (`fulcrum.v1`) and the admin
//! gRPC service. Only `fulcrum-protocol` builds these messages; every other
//! crate talks in the protocol's domain types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Version 1 of the wire format.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/fulcrum.v1.rs"));
}

pub use prost::Message;
