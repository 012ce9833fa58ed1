//! Audit benchmark: `cargo bench -p fulcrum-protocol --bench audit`.
//!
//! Generates an export of `AUDIT_RECORDS` records (default 1,000,000):
//! mostly contracts countersigned between the node and a handful of peers,
//! with an offer and a termination every 50 records, a checkpoint every
//! `AUDIT_CHECKPOINT_EVERY` records (default 10,000) and one at the end. Keeps it in memory, times
//! `verify_export` once, and compares it with the floor: plain
//! `verify_batch` over the same signatures on the same number of threads.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{FEDERATION, HOUR_MS, T0, identity, signed_offer};
use fulcrum_protocol::Limits;
use fulcrum_protocol::audit::{ExportHeader, ExportWriter, SIGNATURE_BATCH_SIZE, verify_export};
use fulcrum_protocol::checkpoint::sign_node_checkpoint;
use fulcrum_protocol::contract::{ContractTerms, SignedContract, contract_id};
use fulcrum_protocol::envelope::{Envelope, Kind, signing_input};
use fulcrum_protocol::ids::{ContractId, HoldId, NegotiationId, RequestId};
use fulcrum_protocol::keys::{Identity, PublicKey, verify_batch};
use fulcrum_protocol::merkle::{MerkleTree, leaf_hash};
use fulcrum_protocol::messages::{Message, Terminate, TerminationReason};
use fulcrum_protocol::offer::Offer;
use fulcrum_protocol::record::Record;

const PEERS: u8 = 5;

/// One signature to check: (signed message, signature, key).
type Triple = (Vec<u8>, [u8; 64], PublicKey);

/// The record at index `i` and its signatures.
struct Generated {
    cbor: Vec<u8>,
    signatures: Vec<Triple>,
}

struct Keys {
    node: Identity,
    peers: Vec<Identity>,
    offer: Offer,
}

fn terms(keys: &Keys, i: u64) -> (ContractTerms, &Identity, &Identity) {
    let peer = &keys.peers[(i % u64::from(PEERS)) as usize];
    let (provider, consumer) = if i.is_multiple_of(2) { (&keys.node, peer) } else { (peer, &keys.node) };
    let b = i.to_le_bytes();
    let mut hold = [0u8; 16];
    hold[..8].copy_from_slice(&b);
    let terms = ContractTerms {
        federation: FEDERATION.into(),
        provider: provider.public(),
        consumer: consumer.public(),
        offer_id: keys.offer.offer_id.clone(),
        offer_seq: 1,
        hold_id: HoldId(hold),
        negotiation_id: NegotiationId([7; 16]),
        site: keys.offer.site.clone(),
        flavour: keys.offer.flavour.clone(),
        units: 1 + (i % 8) as u32,
        unit_price_per_hour: keys.offer.unit_price_per_hour,
        start_ms: T0 + i,
        end_ms: T0 + i + 720 * HOUR_MS,
        created_at_ms: T0 + i,
    };
    (terms, provider, consumer)
}

fn envelope_triple(e: &Envelope) -> Triple {
    (signing_input(e.kind(), e.body()), *e.signature(), e.signer())
}

fn generate(keys: &Keys, i: u64) -> Generated {
    match i % 50 {
        0 => {
            let mut offer = keys.offer.clone();
            offer.offer_id = format!("fra1-{i}");
            let envelope = offer.sign(&keys.node).envelope().clone();
            let signatures = vec![envelope_triple(&envelope)];
            Generated { cbor: Record::Offer { envelope }.to_cbor().unwrap(), signatures }
        }
        25 => {
            // Ends the contract just before, from either side.
            let (t, provider, consumer) = terms(keys, i - 1);
            let id: ContractId = contract_id(&t.encode());
            let by = if i % 100 == 25 {
                &keys.node
            } else if provider.public() == keys.node.public() {
                consumer
            } else {
                provider
            };
            let envelope = Message::Terminate(Terminate {
                request_id: RequestId([1; 16]),
                contract_id: id,
                reason: TerminationReason::CustomerRequest,
                at_ms: T0 + i,
                sender: by.public(),
            })
            .seal(by);
            let signatures = vec![envelope_triple(&envelope)];
            Generated { cbor: Record::Termination { contract_id: id, envelope }.to_cbor().unwrap(), signatures }
        }
        _ => {
            let (t, provider, consumer) = terms(keys, i);
            let body = t.encode();
            let contract = SignedContract::sign_as_consumer(consumer, body.clone(), &Limits::default())
                .unwrap()
                .countersign(provider)
                .unwrap();
            let message = signing_input(Kind::Contract, &body);
            let signatures = vec![
                (message.clone(), *contract.consumer_signature(), consumer.public()),
                (message, *contract.provider_signature().unwrap(), provider.public()),
            ];
            Generated { cbor: Record::Contract { contract }.to_cbor().unwrap(), signatures }
        }
    }
}

fn main() {
    let n: u64 = std::env::var("AUDIT_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let every: u64 =
        std::env::var("AUDIT_CHECKPOINT_EVERY").ok().and_then(|v| v.parse().ok()).filter(|e| *e > 0).unwrap_or(10_000);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let node = identity(1);
    let keys = Keys {
        offer: signed_offer(&node, "fra1-c8m32", 100, 1_000_000, T0),
        node,
        peers: (0..PEERS).map(|p| identity(p + 2)).collect(),
    };

    let started = Instant::now();
    let per_thread = n.div_ceil(threads as u64).max(1);
    let parts: Vec<Vec<Generated>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let keys = &keys;
                s.spawn(move || (t * per_thread..((t + 1) * per_thread).min(n)).map(|i| generate(keys, i)).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut records = Vec::with_capacity(n as usize);
    let mut triples: Vec<Triple> = Vec::with_capacity(2 * n as usize);
    for g in parts.into_iter().flatten() {
        records.push(g.cbor);
        triples.extend(g.signatures);
    }
    let tree = MerkleTree::from_leaf_hashes(records.iter().map(|r| leaf_hash(r)));
    let mut sizes: Vec<u64> = (1..=n).filter(|s| s % every == 0).collect();
    if sizes.last() != Some(&n) {
        sizes.push(n);
    }
    let header = ExportHeader {
        node_key: keys.node.public(),
        federation: FEDERATION.into(),
        records: n,
        checkpoints: sizes.len() as u64,
    };
    let total: usize = records.iter().map(|r| r.len() + 8).sum();
    let mut writer = ExportWriter::new(Vec::with_capacity(total + (1 << 20)), header).unwrap();
    for r in &records {
        writer.record(r).unwrap();
    }
    for size in &sizes {
        let note = sign_node_checkpoint(&keys.node, FEDERATION, *size, tree.root_at(*size).unwrap()).unwrap();
        writer.checkpoint(&note.to_note()).unwrap();
    }
    let export = writer.finish().unwrap();
    drop(records);
    drop(tree);
    println!(
        "generated {n} records ({} signatures, {} checkpoints, {:.1} MB) in {:.1} s on {threads} threads",
        triples.len(),
        sizes.len(),
        export.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let report = verify_export(export.as_slice());
    let audit = started.elapsed().as_secs_f64();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, n);
    assert_eq!(report.signatures_verified, triples.len() as u64);
    println!("{report}");
    println!(
        "verify_export: {audit:.2} s: {:.0} records/s, {:.0} contracts/s, {:.0} signatures/s",
        n as f64 / audit,
        report.contracts as f64 / audit,
        report.signatures_verified as f64 / audit
    );

    // The floor: batch verification alone over the same signatures.
    let started = Instant::now();
    let per_thread = triples.len().div_ceil(threads).max(1);
    let all_ok = std::thread::scope(|s| {
        let handles: Vec<_> = triples
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.chunks(SIGNATURE_BATCH_SIZE).all(|batch| {
                        let msgs: Vec<&[u8]> = batch.iter().map(|t| t.0.as_slice()).collect();
                        let sigs: Vec<[u8; 64]> = batch.iter().map(|t| t.1).collect();
                        let keys: Vec<PublicKey> = batch.iter().map(|t| t.2).collect();
                        verify_batch(&msgs, &sigs, &keys)
                    })
                })
            })
            .collect();
        handles.into_iter().all(|h| h.join().unwrap())
    });
    let floor = started.elapsed().as_secs_f64();
    assert!(all_ok);
    println!(
        "floor (verify_batch alone, {threads} threads, batches of {SIGNATURE_BATCH_SIZE}): {floor:.2} s: {:.0} signatures/s",
        triples.len() as f64 / floor
    );
    println!("ratio verify_export / floor: {:.2}", audit / floor);
}
