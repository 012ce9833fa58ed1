//! The offline audit of an agreement log export: a valid export verifies
//! with the right counts and root, and every way of changing one (a byte, a
//! record, a checkpoint, the header, the framing) fails, naming the first
//! record or checkpoint concerned. Real keys, real signatures throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FEDERATION, HOUR_MS, T0, identity, signed_offer};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::audit::{AuditReport, ExportHeader, ExportWriter, MAX_RECORD_BYTES, verify_export};
use fulcrum_protocol::checkpoint::sign_node_checkpoint;
use fulcrum_protocol::contract::{ContractTerms, SignedContract};
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{ContractId, HoldId, NegotiationId, RequestId};
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::merkle::{MerkleTree, leaf_hash};
use fulcrum_protocol::messages::{Message, Terminate, TerminationReason};
use fulcrum_protocol::placement::PlacementState;
use fulcrum_protocol::record::Record;

/// The node whose log is exported.
fn node() -> Identity {
    identity(1)
}

fn terms(provider: &Identity, consumer: &Identity, n: u64) -> ContractTerms {
    let offer = signed_offer(provider, "fra1-c8m32", 10, 1_000_000, T0);
    ContractTerms {
        federation: FEDERATION.into(),
        provider: provider.public(),
        consumer: consumer.public(),
        offer_id: offer.offer_id.clone(),
        offer_seq: 1,
        hold_id: HoldId([n as u8; 16]),
        negotiation_id: NegotiationId([(n >> 8) as u8; 16]),
        site: offer.site.clone(),
        flavour: offer.flavour.clone(),
        units: 1 + (n % 5) as u32,
        unit_price_per_hour: offer.unit_price_per_hour,
        start_ms: T0 + n,
        end_ms: T0 + n + 24 * HOUR_MS,
        created_at_ms: T0,
    }
}

fn pending(provider: &Identity, consumer: &Identity, n: u64) -> SignedContract {
    SignedContract::sign_as_consumer(consumer, terms(provider, consumer, n).encode(), &Limits::default()).unwrap()
}

fn contract(provider: &Identity, consumer: &Identity, n: u64) -> SignedContract {
    pending(provider, consumer, n).countersign(provider).unwrap()
}

fn terminate(by: &Identity, contract_id: ContractId) -> Envelope {
    Message::Terminate(Terminate {
        request_id: RequestId([9; 16]),
        contract_id,
        reason: TerminationReason::CustomerRequest,
        at_ms: T0 + HOUR_MS,
        sender: by.public(),
    })
    .seal(by)
}

/// Real evidence: the accused signed two roots for one tree size.
fn evidence(witness: &Identity, accused: &Identity) -> Envelope {
    let first = fulcrum_protocol::checkpoint::sign_node_checkpoint(accused, FEDERATION, 5, [1; 32]).unwrap();
    let second = fulcrum_protocol::checkpoint::sign_node_checkpoint(accused, FEDERATION, 5, [2; 32]).unwrap();
    fulcrum_protocol::witness::Evidence::Conflicting { first, second }.seal(witness, &accused.public(), T0)
}

fn offer(provider: &Identity, offer_id: &str) -> Envelope {
    signed_offer(provider, offer_id, 10, 1_000_000, T0).sign(provider).envelope().clone()
}

fn cbor(record: Record) -> Vec<u8> {
    record.to_cbor().unwrap()
}

/// One of every record type, as node 1 would log them.
fn mixed_log() -> Vec<Vec<u8>> {
    let (node, p2, p3) = (node(), identity(2), identity(3));
    let a = contract(&node, &p2, 1);
    let b = contract(&p3, &node, 2);
    let c = pending(&p2, &node, 3);
    vec![
        cbor(Record::Offer { envelope: offer(&node, "fra1-c8m32") }),
        cbor(Record::Contract { contract: a.clone() }),
        cbor(Record::Contract { contract: b.clone() }),
        cbor(Record::Pending { contract: c.clone() }),
        cbor(Record::Abandoned { contract_id: c.id() }),
        // The other party ends A; the node ends B.
        cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p2, a.id()) }),
        cbor(Record::Termination { contract_id: b.id(), envelope: terminate(&node, b.id()) }),
        cbor(Record::Evidence { envelope: evidence(&p3, &p2) }),
        cbor(Record::Offer { envelope: offer(&node, "fra1-c16m64") }),
    ]
}

/// The smallest export with each signed record type (kept small: every
/// byte of it is flipped in a test).
fn small_log() -> Vec<Vec<u8>> {
    let (node, p2) = (node(), identity(2));
    let a = contract(&node, &p2, 1);
    vec![
        cbor(Record::Offer { envelope: offer(&node, "fra1") }),
        cbor(Record::Contract { contract: a.clone() }),
        cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p2, a.id()) }),
        cbor(Record::Evidence { envelope: evidence(&p2, &node) }),
    ]
}

fn tree(records: &[Vec<u8>]) -> MerkleTree {
    MerkleTree::from_leaf_hashes(records.iter().map(|r| leaf_hash(r)))
}

/// The node's checkpoint notes of `records` at `sizes`.
fn notes(records: &[Vec<u8>], sizes: &[u64]) -> Vec<String> {
    let tree = tree(records);
    sizes
        .iter()
        .map(|size| sign_node_checkpoint(&node(), FEDERATION, *size, tree.root_at(*size).unwrap()).unwrap().to_note())
        .collect()
}

fn header(records: usize, checkpoints: usize) -> ExportHeader {
    ExportHeader {
        node_key: node().public(),
        federation: FEDERATION.into(),
        records: records as u64,
        checkpoints: checkpoints as u64,
    }
}

/// An export of exactly these records and notes.
fn write(records: &[Vec<u8>], notes: &[String]) -> Vec<u8> {
    let mut w = ExportWriter::new(Vec::new(), header(records.len(), notes.len())).unwrap();
    for r in records {
        w.record(r).unwrap();
    }
    for n in notes {
        w.checkpoint(n).unwrap();
    }
    w.finish().unwrap()
}

/// `records` checkpointed by the node at `sizes`.
fn export(records: &[Vec<u8>], sizes: &[u64]) -> Vec<u8> {
    write(records, &notes(records, sizes))
}

/// Sizes 1, 2, ..., n: a checkpoint after every record.
fn every_record(n: usize) -> Vec<u64> {
    (1..=n as u64).collect()
}

fn verify(bytes: &[u8]) -> AuditReport {
    verify_export(bytes)
}

/// The failure of a report that must fail: (record, checkpoint, reason).
fn failure(bytes: &[u8]) -> (Option<u64>, Option<u64>, String) {
    let report = verify(bytes);
    let f = report.first_failure.clone().unwrap_or_else(|| panic!("verified: {report}"));
    (f.record, f.checkpoint, f.reason)
}

/// Byte length of the header, empty line included.
fn header_len(bytes: &[u8]) -> usize {
    bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 2
}

/// Replaces the header of an export with `text`.
fn with_header(bytes: &[u8], text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.extend_from_slice(&bytes[header_len(bytes)..]);
    out
}

fn header_text(bytes: &[u8]) -> String {
    String::from_utf8(bytes[..header_len(bytes)].to_vec()).unwrap()
}

#[test]
fn a_valid_export_verifies_with_the_right_counts_and_root() {
    let records = mixed_log();
    let sizes = [1, 3, 3, 6, 9, 9];
    let bytes = export(&records, &sizes);
    let report = verify(&bytes);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.node_key, Some(node().public().to_string()));
    assert_eq!(report.federation.as_deref(), Some(FEDERATION));
    assert_eq!(report.records, 9);
    assert_eq!(
        (report.offers, report.contracts, report.pending, report.abandoned, report.terminations, report.evidence),
        (2, 2, 1, 1, 2, 1)
    );
    // Offers 1 each, contracts 2 each, pending 1, terminations 1 each, evidence 1.
    assert_eq!(report.signatures_verified, 2 + 4 + 1 + 2 + 1);
    assert_eq!(report.checkpoints, 6);
    assert_eq!(report.tree_size, 9);
    assert_eq!(report.root, hex::encode(tree(&records).root()));
    let summary = report.to_string();
    for part in ["9 records", "2 contracts", "6 checkpoints", &report.root, "OK"] {
        assert!(summary.contains(part), "{summary:?} lacks {part:?}");
    }

    // The exact header text.
    let key = node().public().to_string();
    assert_eq!(
        header_text(&bytes),
        format!(
            "fulcrum-audit-export v1\nnode-key {key}\nfederation {FEDERATION}\norigin fulcrum/{FEDERATION}/{key}\n\
             records 9\ncheckpoints 6\n\n"
        )
    );

    // A checkpoint after every record verifies too.
    assert!(verify(&export(&records, &every_record(records.len()))).is_ok());
}

#[test]
fn an_empty_export_is_valid_and_checkpoints_of_size_zero_are_fine() {
    let report = verify(&write(&[], &[]));
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.checkpoints, report.tree_size), (0, 0, 0));
    assert_eq!(report.root, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let records = small_log();
    assert!(verify(&export(&records, &[0, 0, 2, 4])).is_ok());
    assert!(verify(&export(&[], &[0])).is_ok());
}

/// Every single-byte change anywhere in an export is detected, header
/// included.
#[test]
fn every_byte_of_a_small_export_is_protected() {
    let records = small_log();
    let bytes = export(&records, &[2, 4]);
    let original = verify(&bytes);
    assert!(original.is_ok(), "{original}");
    // Where each frame lies: a change inside one names that record or
    // checkpoint.
    let header_len = bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let mut frames = Vec::new();
    let mut at = header_len;
    for (k, r) in records.iter().enumerate() {
        frames.push((at..at + 8 + r.len(), Some(k as u64), None));
        at += 8 + r.len();
    }
    for (j, n) in notes(&records, &[2, 4]).iter().enumerate() {
        frames.push((at..at + 8 + n.len(), None, Some(j as u64)));
        at += 8 + n.len();
    }
    assert_eq!(at, bytes.len());
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let report = verify(&b);
            let failure = report.first_failure.clone();
            let failure = failure.unwrap_or_else(|| panic!("byte {i} ^ {flip:#x} was accepted: {report}"));
            match frames.iter().find(|(range, _, _)| range.contains(&i)) {
                Some((_, Some(record), _)) => {
                    assert_eq!(failure.record, Some(*record), "byte {i} ^ {flip:#x}: {failure}");
                }
                Some((_, None, checkpoint)) => {
                    assert_eq!(failure.checkpoint, *checkpoint, "byte {i} ^ {flip:#x}: {failure}");
                }
                // A changed count in the header is named where the frames
                // stop matching it.
                None => {}
            }
        }
    }
}

#[test]
fn a_removed_record_is_named_exactly() {
    let records = mixed_log();
    let sizes = every_record(records.len());
    let notes = notes(&records, &sizes);
    for j in 0..records.len() {
        let mut fewer = records.clone();
        fewer.remove(j);
        let (record, _, reason) = failure(&write(&fewer, &notes));
        assert_eq!(record, Some(j as u64), "removing record {j}: {reason}");
    }
    // With sparse checkpoints the failure names the range since the last
    // matching one.
    let notes = self::notes(&records, &[3, 6, 9]);
    let mut fewer = records.clone();
    fewer.remove(4);
    let (record, checkpoint, reason) = failure(&write(&fewer, &notes));
    assert_eq!((record, checkpoint), (Some(3), Some(1)));
    assert_eq!(reason, "records [3, 6) do not match checkpoint #1 (size 6)");
}

#[test]
fn two_reordered_records_are_named_exactly() {
    let records = mixed_log();
    let notes = notes(&records, &every_record(records.len()));
    for j in 0..records.len() - 1 {
        let mut swapped = records.clone();
        swapped.swap(j, j + 1);
        let (record, checkpoint, reason) = failure(&write(&swapped, &notes));
        assert_eq!(record, Some(j as u64), "swapping records {j} and {}: {reason}", j + 1);
        assert_eq!(checkpoint, Some(j as u64), "{reason}");
        assert_eq!(reason, format!("records [{j}, {}) do not match checkpoint #{j} (size {})", j + 1, j + 1));
    }
}

#[test]
fn an_inserted_foreign_record_is_named_exactly() {
    let records = mixed_log();
    let notes = notes(&records, &every_record(records.len()));
    let (p2, p3) = (identity(2), identity(3));
    let foreign = [
        // A valid contract between two other nodes.
        (cbor(Record::Contract { contract: contract(&p2, &p3, 77) }), "does not involve the node"),
        // A valid offer of another node.
        (cbor(Record::Offer { envelope: offer(&p2, "par1") }), "not by the node"),
        // A pending contract whose consumer is another node.
        (cbor(Record::Pending { contract: pending(&node(), &p2, 78) }), "not the node"),
        // "Evidence" that shows nothing: validly signed by a witness, but
        // with no proof signed by the accused inside.
        (
            cbor(Record::Evidence {
                envelope: Envelope::seal_message(
                    &p2,
                    Kind::Evidence,
                    &wire::Evidence { accused: p3.public().to_bytes().to_vec(), observed_at_ms: T0, proof: None },
                ),
            }),
            "evidence does not check out",
        ),
    ];
    for (record_bytes, why) in &foreign {
        for j in 0..=records.len() {
            let mut more = records.clone();
            more.insert(j, record_bytes.clone());
            let (record, checkpoint, reason) = failure(&write(&more, &notes));
            assert_eq!(record, Some(j as u64), "inserting at {j}: {reason}");
            // The record's own failure comes before the checkpoint's.
            assert_eq!(checkpoint, None, "{reason}");
            assert!(reason.contains(why), "{reason}");
        }
    }
    // Even a record of the node, logged twice, is caught by the checkpoints.
    let mut twice = records.clone();
    twice.insert(1, records[0].clone());
    assert_eq!(failure(&write(&twice, &notes)).0, Some(1));
}

#[test]
fn records_signed_by_the_wrong_party_fail_even_under_valid_checkpoints() {
    let (node, p2, p3) = (node(), identity(2), identity(3));
    let a = contract(&node, &p2, 1);
    let cases: Vec<(&str, Vec<Vec<u8>>, u64)> = vec![
        (
            // A third party ends the node's contract.
            "neither the node nor the contract's other party",
            vec![
                cbor(Record::Contract { contract: a.clone() }),
                cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p3, a.id()) }),
            ],
            1,
        ),
        (
            // The other party ends a contract that is not in the log.
            "the contract is not earlier in the log",
            vec![cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p2, a.id()) })],
            0,
        ),
        (
            // The termination comes before its contract.
            "the contract is not earlier in the log",
            vec![
                cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p2, a.id()) }),
                cbor(Record::Contract { contract: a.clone() }),
            ],
            0,
        ),
        (
            // A Terminate for another contract, filed under this one.
            "the record names",
            vec![
                cbor(Record::Contract { contract: a.clone() }),
                cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&node, ContractId([5; 32])) }),
            ],
            1,
        ),
        (
            // An offer-kind envelope in a termination record.
            "not terminate",
            vec![cbor(Record::Termination { contract_id: a.id(), envelope: offer(&node, "x") })],
            0,
        ),
        ("not offer", vec![cbor(Record::Offer { envelope: evidence(&node, &p2) })], 0),
        ("not evidence", vec![cbor(Record::Evidence { envelope: offer(&node, "x") })], 0),
        (
            // A pending record that is in fact countersigned.
            "carries a provider signature",
            vec![cbor(Record::Pending { contract: contract(&p2, &node, 9) })],
            0,
        ),
    ];
    for (why, records, index) in cases {
        // Checkpointed by the node: only the records themselves are wrong.
        let bytes = export(&records, &every_record(records.len()));
        let (record, checkpoint, reason) = failure(&bytes);
        assert_eq!((record, checkpoint), (Some(index), None), "{why}: {reason}");
        assert!(reason.contains(why), "{why}: {reason}");
    }
    // A contract of another federation.
    let mut t = terms(&node, &p2, 4);
    t.federation = "elsewhere".into();
    let other = SignedContract::sign_as_consumer(&p2, t.encode(), &Limits::default()).unwrap().countersign(&node);
    let records = vec![cbor(Record::Contract { contract: other.unwrap() })];
    let (record, _, reason) = failure(&export(&records, &[1]));
    assert_eq!(record, Some(0));
    assert!(reason.contains("federation"), "{reason}");
}

#[test]
fn a_bad_signature_is_named_exactly() {
    let records = mixed_log();
    for j in [0, 1, 2, 5, 7] {
        // Every one of these records ends with a signature.
        let mut spoiled = records.clone();
        let at = spoiled[j].len() - 10;
        spoiled[j][at] ^= 0x10;
        // Checkpointed by the node as it is, so only the signature is wrong.
        let (record, checkpoint, reason) = failure(&export(&spoiled, &[3, 9]));
        assert_eq!((record, checkpoint), (Some(j as u64), None), "{reason}");
        assert!(reason.contains("does not verify"), "{reason}");
    }
}

#[test]
fn a_checkpoint_resigned_over_another_root_names_that_checkpoint() {
    let records = mixed_log();
    let sizes = [2, 4, 6, 9];
    let mut notes = notes(&records, &sizes);
    for k in 0..sizes.len() {
        let mut forged = notes.clone();
        forged[k] = sign_node_checkpoint(&node(), FEDERATION, sizes[k], [7; 32]).unwrap().to_note();
        let (record, checkpoint, reason) = failure(&write(&records, &forged));
        let previous = if k == 0 { 0 } else { sizes[k - 1] };
        assert_eq!((record, checkpoint), (Some(previous), Some(k as u64)), "{reason}");
        assert_eq!(
            reason,
            format!("records [{previous}, {}) do not match checkpoint #{k} (size {})", sizes[k], sizes[k])
        );
    }

    // Two checkpoints of one size with different roots: two histories.
    let tree = tree(&records);
    let (record, checkpoint, reason) = failure(&write(
        &records,
        &[
            notes[0].clone(),
            notes[1].clone(),
            sign_node_checkpoint(&node(), FEDERATION, 4, tree.root_at(3).unwrap()).unwrap().to_note(),
            notes[3].clone(),
        ],
    ));
    assert_eq!((record, checkpoint), (None, Some(2)));
    assert!(reason.contains("two histories"), "{reason}");

    // A checkpoint signed by another node.
    let foreign = sign_node_checkpoint(&identity(2), FEDERATION, 9, tree.root()).unwrap().to_note();
    notes[3] = foreign;
    let (record, checkpoint, reason) = failure(&write(&records, &notes));
    assert_eq!((record, checkpoint), (None, Some(3)));
    assert!(reason.contains("not by the export's node"), "{reason}");
}

#[test]
fn checkpoints_must_grow_fit_and_cover_every_record() {
    let records = mixed_log();
    let n = records.len() as u64;

    let (record, checkpoint, reason) = failure(&export(&records, &[4, 2, 9]));
    assert_eq!((record, checkpoint), (None, Some(1)));
    assert!(reason.contains("smaller than the size 4"), "{reason}");

    // A checkpoint beyond the records (signed over a longer log).
    let mut longer = records.clone();
    longer.push(records[0].clone());
    let notes = notes(&longer, &[4, 10]);
    let (record, checkpoint, reason) = failure(&write(&records, &notes));
    assert_eq!((record, checkpoint), (Some(4), Some(1)));
    assert!(reason.contains("records [9, 10) are missing"), "{reason}");

    // Records after the last checkpoint, or no checkpoint at all.
    let (record, checkpoint, reason) = failure(&export(&records, &[3, 7]));
    assert_eq!((record, checkpoint), (Some(7), None));
    assert_eq!(reason, format!("records [7, {n}) are not covered by any checkpoint signed by the node"));
    let (record, _, reason) = failure(&export(&records, &[]));
    assert_eq!(record, Some(0));
    assert_eq!(reason, format!("records [0, {n}) are not covered by any checkpoint signed by the node"));

    // A bad last checkpoint leaves its records uncovered; the checkpoint
    // itself is the failure named.
    let mut notes = self::notes(&records, &[3, 9]);
    notes[1] = notes[1].replacen(&format!("\n{n}\n"), "\n8\n", 1);
    let (record, checkpoint, reason) = failure(&write(&records, &notes));
    assert_eq!((record, checkpoint), (None, Some(1)));
    assert!(reason.contains("signature"), "{reason}");
}

#[test]
fn truncation_and_trailing_bytes_fail() {
    let records = small_log();
    let bytes = export(&records, &[2, 4]);
    // Every proper prefix fails.
    for len in 0..bytes.len() {
        let report = verify(&bytes[..len]);
        assert!(!report.is_ok(), "a prefix of {len} bytes verified");
    }
    let hl = header_len(&bytes);
    let (record, _, reason) = failure(&bytes[..hl]);
    assert_eq!(record, Some(0));
    assert!(reason.contains("ends before record frame 0"), "{reason}");
    let (record, _, reason) = failure(&bytes[..hl + 5]);
    assert_eq!(record, Some(0));
    assert!(reason.contains("ends inside the frame header"), "{reason}");
    let (record, _, reason) = failure(&bytes[..hl + 8 + records[0].len() + 20]);
    assert_eq!(record, Some(1));
    assert!(reason.contains("ends inside the payload"), "{reason}");
    let (_, checkpoint, reason) = failure(&bytes[..bytes.len() - 1]);
    assert_eq!(checkpoint, Some(1));
    assert!(reason.contains("ends inside the payload"), "{reason}");
    let (_, _, reason) = failure(&bytes[..hl - 1]);
    assert!(reason.contains("header"), "{reason}");

    for garbage in [&b"\0"[..], b"\n", &[0xff; 100]] {
        let mut more = bytes.clone();
        more.extend_from_slice(garbage);
        let (record, checkpoint, reason) = failure(&more);
        assert_eq!((record, checkpoint), (None, None));
        assert_eq!(
            reason,
            format!("{} bytes follow the last of the 2 checkpoint frames the header announces", garbage.len())
        );
    }
}

#[test]
fn frames_are_checked_before_their_contents() {
    let records = small_log();
    let bytes = export(&records, &[4]);
    let hl = header_len(&bytes);
    // A record length over the limit, or zero.
    for len in [MAX_RECORD_BYTES as u32 + 1, 0, u32::MAX] {
        let mut b = bytes.clone();
        b[hl..hl + 4].copy_from_slice(&len.to_le_bytes());
        let (record, _, reason) = failure(&b);
        assert_eq!(record, Some(0));
        assert!(reason.contains("is not between 1 and 1048576"), "{reason}");
    }
    // A bad CRC of the second record.
    let mut b = bytes.clone();
    let second = hl + 8 + records[0].len();
    b[second + 4] ^= 1;
    let (record, _, reason) = failure(&b);
    assert_eq!(record, Some(1));
    assert_eq!(reason, "CRC32C mismatch");
    // A frame whose payload is not a record, with a valid CRC.
    let junk = vec![0x42u8; 10];
    let mut junk_log = records.clone();
    junk_log[2] = junk;
    let (record, _, reason) = failure(&export(&junk_log, &[4]));
    assert_eq!(record, Some(2));
    assert!(reason.starts_with("not a valid record"), "{reason}");
}

#[test]
fn header_edits_fail_with_a_clear_reason() {
    let records = small_log();
    let bytes = export(&records, &[4]);
    let good = header_text(&bytes);
    let key = node().public().to_string();
    let other = identity(2).public().to_string();
    let line = |name: &str| good.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap().to_owned();
    let edits: Vec<(String, &str)> = vec![
        (good.replacen("v1", "v2", 1), "unsupported export version"),
        (good.replacen("fulcrum-audit-export", "fulcrum-audit-exports", 1), "not a Fulcrum audit export"),
        (format!("x{good}"), "not a Fulcrum audit export"),
        (good.replace('\n', "\r\n"), "CR LF"),
        (good.replacen(&key, &key.to_uppercase(), 1), "not 64 lowercase hex digits"),
        (good.replacen(&key, &key[..62], 1), "not 64 lowercase hex digits"),
        (good.replacen(&format!("node-key {key}"), &format!("node-key {other}"), 1), "origin"),
        (good.replacen(&format!("node-key {key}"), &format!("node-key {}", "0".repeat(64)), 1), "not a valid Ed25519"),
        (good.replacen(&line("origin"), "origin fulcrum/x", 1), "origin"),
        (good.replacen(&format!("{}\n", line("origin")), "", 1), "header line \"origin\" is missing"),
        (good.replacen("\n\n", "\nrecords 1\n\n", 1), "appears twice"),
        (good.replacen("\n\n", "\ncomment hello\n\n", 1), "unknown header line"),
        (good.replacen("node-key", "node-id", 1), "unknown header line"),
        (good.replacen("records 4", "records 04", 1), "not a canonical decimal"),
        (good.replacen("records 4", "records +4", 1), "not a canonical decimal"),
        (good.replacen("records 4", "records  4", 1), "not a canonical decimal"),
        (good.replacen("records 4", "records 4 ", 1), "not a canonical decimal"),
        (good.replacen("checkpoints 1", "checkpoints 18446744073709551616", 1), "does not fit in 64 bits"),
        (good.replacen("federation ", "federation  ", 1), "federation"),
        (
            {
                // Swap two lines.
                let (r, c) = (line("records"), line("checkpoints"));
                good.replacen(&r, "@", 1).replacen(&c, &r, 1).replacen('@', &c, 1)
            },
            "is missing (found \"checkpoints\" in its place)",
        ),
        (good.replacen("\n\n", &format!("\n{}\n\n", "x".repeat(5000)), 1), "longer than 4096 bytes"),
        (good.replacen("\n\n", "\n", 1), "header"),
    ];
    for (text, why) in edits {
        let (record, checkpoint, reason) = failure(&with_header(&bytes, &text));
        assert!(reason.contains(why), "{text:?}: {reason}");
        assert_eq!((record, checkpoint), (None, None), "{text:?}: {reason}");
    }

    // Another node's key throughout: the header parses, and the node's
    // first record is not that node's.
    let (record, _, reason) = failure(&with_header(&bytes, &good.replace(&key, &other)));
    assert_eq!(record, Some(0));
    assert!(reason.contains("not by the node"), "{reason}");

    // A different federation: the header parses, the checkpoints do not
    // belong to it.
    let text = good.replace(FEDERATION, "other-fed");
    let (_, checkpoint, reason) = failure(&with_header(&bytes, &text));
    assert_eq!(checkpoint, Some(0));
    assert!(reason.contains("not a valid node checkpoint"), "{reason}");
}

#[test]
fn counts_that_lie_fail() {
    let records = small_log();
    let bytes = export(&records, &[2, 4]);
    let good = header_text(&bytes);
    let lie = |from: &str, to: &str| failure(&with_header(&bytes, &good.replacen(from, to, 1)));

    let (record, _, reason) = lie("records 4", "records 5");
    assert_eq!(record, Some(4));
    assert!(reason.contains("not a valid record"), "{reason}");

    let (_, checkpoint, reason) = lie("records 4", "records 3");
    assert_eq!(checkpoint, Some(0));
    assert!(reason.contains("does the header announce too few records?"), "{reason}");

    let (_, checkpoint, reason) = lie("checkpoints 2", "checkpoints 3");
    assert_eq!(checkpoint, Some(2));
    assert_eq!(reason, "the file ends before checkpoint frame #2, but the header announces 3 checkpoints");

    let (record, checkpoint, reason) = lie("checkpoints 2", "checkpoints 1");
    assert_eq!((record, checkpoint), (Some(2), None));
    assert!(reason.contains("records [2, 4) are not covered"), "{reason}");

    let (record, _, reason) = lie("records 4", "records 18446744073709551615");
    assert!(record.is_some(), "{reason}");
}

#[test]
fn the_writer_refuses_wrong_counts_and_order() {
    let records = small_log();
    let notes = notes(&records, &[4]);

    let mut w = ExportWriter::new(Vec::new(), header(1, 1)).unwrap();
    w.record(&records[0]).unwrap();
    assert!(w.record(&records[1]).is_err(), "more records than announced");
    w.checkpoint(&notes[0]).unwrap();
    assert!(w.checkpoint(&notes[0]).is_err(), "more checkpoints than announced");
    assert!(w.finish().is_ok());

    let mut w = ExportWriter::new(Vec::new(), header(2, 1)).unwrap();
    w.record(&records[0]).unwrap();
    w.checkpoint(&notes[0]).unwrap();
    assert!(w.record(&records[1]).is_err(), "a record after a checkpoint");

    let mut w = ExportWriter::new(Vec::new(), header(2, 1)).unwrap();
    w.record(&records[0]).unwrap();
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("wrote 1 records and 0 checkpoints"), "{err}");

    let mut w = ExportWriter::new(Vec::new(), header(2, 0)).unwrap();
    assert!(w.record(&[]).is_err(), "an empty record");
    assert!(w.record(&vec![0; MAX_RECORD_BYTES + 1]).is_err(), "a record over the limit");
    w.record(&vec![0; MAX_RECORD_BYTES]).unwrap();
    assert!(w.checkpoint(&notes[0]).is_err(), "more checkpoints than announced");

    for federation in ["", "a b", "a+b", "a\nb"] {
        let h = ExportHeader { federation: federation.into(), ..header(0, 0) };
        assert!(ExportWriter::new(Vec::new(), h).is_err(), "federation {federation:?}");
    }
}

#[test]
fn a_failure_report_is_one_clear_line() {
    let records = mixed_log();
    let notes = notes(&records, &every_record(records.len()));
    let mut fewer = records.clone();
    fewer.remove(4);
    let report = verify(&write(&fewer, &notes));
    let text = report.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.ends_with("FAILED at record 4 (checkpoint #4): records [4, 5) do not match checkpoint #4 (size 5)"),
        "{text}"
    );
    let report = verify(&b"hello"[..]);
    assert_eq!(report.node_key, None);
    assert_eq!(
        report.to_string(),
        "FAILED: not a Fulcrum audit export: the first line is not \"fulcrum-audit-export v1\""
    );
}

/// A placement record as the consumer logs it.
fn placement(state: PlacementState, contracts: Vec<ContractId>) -> Record {
    use fulcrum_protocol::ids::PlacementId;
    use fulcrum_protocol::matching::Spread;
    use fulcrum_protocol::placement::{PlacementRecord, PlacementTerms};
    let terms = PlacementTerms {
        units: contracts.len() as u32,
        spread: Spread::Providers,
        min_per_unit: Default::default(),
        countries: Default::default(),
        labels: Default::default(),
        attested_labels: false,
        min_sla_permille: 0,
        max_unit_price: None,
        start_ms: T0,
        duration_ms: 24 * HOUR_MS,
    };
    let placement = PlacementRecord {
        id: PlacementId([5; 16]),
        state,
        terms,
        contracts,
        unresolved: Vec::new(),
        attempts: 1,
        reason: String::new(),
        started_at_ms: T0,
        at_ms: T0 + 1,
    };
    Record::Placement { placement }
}

/// Placement records carry no signature and verify; a final one may only
/// name contracts that are earlier in the log (a `committing` one names
/// contracts about to be made).
#[test]
fn placement_records_verify_and_name_only_earlier_contracts() {
    let (node, p2, p3) = (node(), identity(2), identity(3));
    let (a, b) = (contract(&p2, &node, 1), contract(&p3, &node, 2));
    let records = vec![
        cbor(placement(PlacementState::Committing, vec![a.id(), b.id()])),
        cbor(Record::Contract { contract: a.clone() }),
        cbor(Record::Contract { contract: b.clone() }),
        cbor(placement(PlacementState::Complete, vec![a.id(), b.id()])),
    ];
    let report = verify(&export(&records, &[4]));
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.placements, report.contracts), (2, 2));
    assert!(report.to_string().contains("2 placements"), "{report}");

    // A final record before its contracts, or naming one that is nowhere.
    let early = vec![
        cbor(Record::Contract { contract: a.clone() }),
        cbor(placement(PlacementState::PartialRepaired, vec![a.id(), b.id()])),
        cbor(Record::Contract { contract: b.clone() }),
    ];
    let (record, _, reason) = failure(&export(&early, &[3]));
    assert_eq!(record, Some(1), "{reason}");
    assert!(reason.contains("not earlier in the log"), "{reason}");
}

/// Expiry records carry no signature and verify when their contract is
/// earlier in the log, they were recorded at or after its end, and it had
/// not ended before; anything else names the record.
#[test]
fn expiry_records_follow_their_contract_once_after_its_end() {
    let (node, p2, p3) = (node(), identity(2), identity(3));
    let (a, b) = (contract(&node, &p2, 1), contract(&p3, &node, 2));
    let end = |c: &SignedContract| c.terms().end_ms;
    let expiry = |c: &SignedContract, at_ms| cbor(Record::Expiry { contract_id: c.id(), at_ms });
    let records = vec![
        cbor(Record::Contract { contract: a.clone() }),
        cbor(Record::Contract { contract: b.clone() }),
        // Recorded exactly at the end, and long after it (a node that was down).
        expiry(&a, end(&a)),
        expiry(&b, end(&b) + 7 * 24 * HOUR_MS),
    ];
    let report = verify(&export(&records, &[4]));
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.contracts, report.expiries, report.signatures_verified), (2, 2, 4));
    assert!(report.to_string().contains("2 expiries"), "{report}");

    let cases: Vec<(&str, Vec<Vec<u8>>, u64)> = vec![
        ("not earlier in the log", vec![expiry(&a, end(&a))], 0),
        ("not earlier in the log", vec![expiry(&a, end(&a)), cbor(Record::Contract { contract: a.clone() })], 0),
        ("before its end", vec![cbor(Record::Contract { contract: a.clone() }), expiry(&a, end(&a) - 1)], 1),
        (
            "already ended at record 1",
            vec![cbor(Record::Contract { contract: a.clone() }), expiry(&a, end(&a)), expiry(&a, end(&a) + 1)],
            2,
        ),
        (
            "already ended at record 1",
            vec![
                cbor(Record::Contract { contract: a.clone() }),
                cbor(Record::Termination { contract_id: a.id(), envelope: terminate(&p2, a.id()) }),
                expiry(&a, end(&a)),
            ],
            2,
        ),
    ];
    for (why, records, index) in cases {
        let bytes = export(&records, &every_record(records.len()));
        let (record, checkpoint, reason) = failure(&bytes);
        assert_eq!((record, checkpoint), (Some(index), None), "{why}: {reason}");
        assert!(reason.contains(why), "{why}: {reason}");
    }
}
