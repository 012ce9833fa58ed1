//! Witnessing logs: honest histories never yield evidence, rewritten or
//! truncated ones always do, and evidence checks out for anyone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FEDERATION, HOUR_MS, T0, countersigned_contract, identity};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::checkpoint::{SignedCheckpoint, sign_node_checkpoint};
use fulcrum_protocol::envelope::Envelope;
use fulcrum_protocol::ids::RequestId;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::merkle::MerkleTree;
use fulcrum_protocol::record::Record;
use fulcrum_protocol::witness::{
    Evidence, Inclusion, Outcome, Witness, WitnessError, answer_consistency, answer_inclusion, check_inclusion,
    contract_leaf_hash, inclusion_request,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A node's log as the tests grow and rewrite it.
struct Node {
    identity: Identity,
    tree: MerkleTree,
}

impl Node {
    fn new(seed: u8) -> Node {
        Node { identity: identity(seed), tree: MerkleTree::new() }
    }

    fn append(&mut self, tag: &str, n: usize) {
        for i in 0..n {
            self.tree.push(format!("{tag}-{i}-{}", self.tree.len()).as_bytes());
        }
    }

    fn checkpoint(&self) -> SignedCheckpoint {
        sign_node_checkpoint(&self.identity, FEDERATION, self.tree.len(), self.tree.root()).unwrap()
    }

    /// Answers every question the witness asks until it has none, returning
    /// what it concluded.
    fn answer_all(&self, witness: &mut Witness, first: Option<Outcome>, rng: &mut ChaCha8Rng) -> Vec<Outcome> {
        let mut seen = Vec::new();
        let mut next = first;
        while let Some(outcome) = next.take() {
            if let Outcome::Ask { request, .. } = &outcome {
                let answer = answer_consistency(&self.identity, request, &self.tree, &self.checkpoint());
                next = witness.on_proof(&answer, T0, rng).unwrap();
            }
            seen.push(outcome);
        }
        seen
    }
}

fn evidence_in(outcomes: &[Outcome]) -> Option<Evidence> {
    outcomes.iter().find_map(|o| match o {
        Outcome::Evidence { evidence, .. } => Some((**evidence).clone()),
        _ => None,
    })
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// Sealed by a witness, opened and checked by a third party.
fn third_party_accepts(evidence: &Evidence, accused: &Identity) {
    let sealed = evidence.seal(&identity(99), &accused.public(), T0);
    let opened = Evidence::open(&sealed, FEDERATION, &Limits::default()).unwrap();
    assert_eq!(opened.accused, accused.public());
    assert_eq!(&opened.evidence, evidence);
    let bytes = sealed.encode();
    let decoded = Envelope::decode(&bytes, 64 * 1024).unwrap();
    assert!(Evidence::open(&decoded, FEDERATION, &Limits::default()).is_ok());
}

#[test]
fn an_honest_log_that_grows_is_followed_without_evidence() {
    let mut rng = rng();
    let mut node = Node::new(1);
    let mut witness = Witness::new(FEDERATION, identity(2).public());
    node.append("a", 5);
    let first = witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    assert!(matches!(first, Some(Outcome::Advanced { .. })));
    for round in 0..6 {
        node.append("b", round * 3 + 1);
        let outcome = witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
        let seen = node.answer_all(&mut witness, outcome, &mut rng);
        assert!(evidence_in(&seen).is_none(), "round {round}: {seen:?}");
        assert_eq!(witness.latest(&node.identity.public()).unwrap().checkpoint().size, node.tree.len());
    }
    // A replay of an old checkpoint is recognised without a question.
    let old = sign_node_checkpoint(&node.identity, FEDERATION, 5, node.tree.root_at(5).unwrap()).unwrap();
    let outcome = witness.observe(&old.to_note(), T0, &mut rng).unwrap();
    let seen = node.answer_all(&mut witness, outcome, &mut rng);
    assert!(evidence_in(&seen).is_none());
}

#[test]
fn two_roots_for_one_size_are_evidence() {
    let mut rng = rng();
    let mut honest = Node::new(1);
    honest.append("a", 8);
    let mut forked = Node::new(1);
    forked.append("z", 8);
    let mut witness = Witness::new(FEDERATION, identity(2).public());
    witness.observe(&honest.checkpoint().to_note(), T0, &mut rng).unwrap();
    let outcome = witness.observe(&forked.checkpoint().to_note(), T0, &mut rng).unwrap();
    let Some(Outcome::Evidence { node, evidence }) = outcome else { panic!("no evidence: {outcome:?}") };
    let evidence = *evidence;
    assert_eq!(node, identity(1).public());
    assert_eq!(evidence.kind_name(), "conflicting-checkpoints");
    evidence.check(&node, FEDERATION, &Limits::default()).unwrap();
    third_party_accepts(&evidence, &identity(1));
}

#[test]
fn a_rewritten_log_that_grows_past_the_old_one_is_caught() {
    let mut rng = rng();
    let mut node = Node::new(1);
    node.append("a", 10);
    let mut witness = Witness::new(FEDERATION, identity(2).public());
    witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    // Keep the first 6 records, replace the rest with others, grow to 14.
    let mut rewritten = Node::new(1);
    rewritten.append("a", 0);
    for i in 0..6 {
        rewritten.tree.push(format!("a-{i}-{i}").as_bytes());
    }
    rewritten.append("forged", 8);
    assert_eq!(rewritten.tree.root_at(6).unwrap(), node.tree.root_at(6).unwrap());
    let outcome = witness.observe(&rewritten.checkpoint().to_note(), T0, &mut rng).unwrap();
    let seen = rewritten.answer_all(&mut witness, outcome, &mut rng);
    let evidence = evidence_in(&seen).expect("a rewrite is caught");
    assert_eq!(evidence.kind_name(), "inconsistent-proof");
    third_party_accepts(&evidence, &identity(1));
}

#[test]
fn a_truncated_log_is_caught_when_the_node_comes_back() {
    let mut rng = rng();
    let mut node = Node::new(1);
    node.append("a", 10);
    let mut witness = Witness::new(FEDERATION, identity(2).public());
    witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    // After a restart the node has only 7 records, the last 3 different.
    let mut truncated = Node::new(1);
    for i in 0..4 {
        truncated.tree.push(format!("a-{i}-{i}").as_bytes());
    }
    truncated.append("other", 3);
    let request = witness.ask_latest(identity(1).public(), T0, &mut rng);
    let answer = answer_consistency(&truncated.identity, &request, &truncated.tree, &truncated.checkpoint());
    let outcome = witness.on_proof(&answer, T0, &mut rng).unwrap();
    assert!(matches!(outcome, Some(Outcome::Ask { .. })), "asks for proof of the old size: {outcome:?}");
    let seen = truncated.answer_all(&mut witness, outcome, &mut rng);
    let evidence = evidence_in(&seen).expect("a truncation is caught");
    assert_eq!(evidence.kind_name(), "inconsistent-proof");
    third_party_accepts(&evidence, &identity(1));
}

#[test]
fn an_honest_proof_cannot_be_passed_off_as_evidence() {
    let mut node = Node::new(1);
    node.append("a", 4);
    let older = node.checkpoint();
    node.append("b", 5);
    let newer = node.checkpoint();
    let request = wire::ConsistencyProofRequest { request_id: vec![1; 16], old_size: 4, new_size: 9 };
    let proof = answer_consistency(&node.identity, &request, &node.tree, &newer);
    let fake = Evidence::Inconsistent { older: older.clone(), newer: newer.clone(), proof };
    assert!(matches!(
        fake.check(&identity(1).public(), FEDERATION, &Limits::default()),
        Err(WitnessError::NotEvidence(_))
    ));
    // Nor can checkpoints of one node be pinned on another.
    let other = Evidence::Conflicting { first: older, second: newer };
    assert!(other.check(&identity(3).public(), FEDERATION, &Limits::default()).is_err());
}

#[test]
fn a_counterparty_that_drops_a_shared_contract_is_caught() {
    let limits = Limits::default();
    let provider = identity(1);
    let consumer = identity(2);
    let contract = countersigned_contract(&provider, &consumer, 5, T0);
    let record = Record::Contract { contract: contract.clone() }.to_cbor().unwrap();
    let request = inclusion_request(&contract, RequestId([3; 16]));
    assert_eq!(request.leaf_hash, contract_leaf_hash(&contract).to_vec());

    // The provider keeps it: proven.
    let mut kept = Node::new(1);
    kept.append("x", 3);
    kept.tree.push(&record);
    kept.append("y", 2);
    let answer = answer_inclusion(&provider, &request, &kept.tree, Some(3), &kept.checkpoint(), T0 + HOUR_MS);
    assert!(matches!(
        check_inclusion(&contract, &answer, FEDERATION, &limits, T0 + HOUR_MS).unwrap(),
        Inclusion::Proven { leaf_index: 3, .. }
    ));

    // The provider dropped it: evidence once the contract is old enough.
    let mut dropped = Node::new(1);
    dropped.append("x", 5);
    let soon = T0 + limits.missing_contract_grace_ms / 2;
    let answer = answer_inclusion(&provider, &request, &dropped.tree, None, &dropped.checkpoint(), soon);
    assert_eq!(check_inclusion(&contract, &answer, FEDERATION, &limits, soon).unwrap(), Inclusion::NotYet);
    let late = T0 + HOUR_MS;
    let answer = answer_inclusion(&provider, &request, &dropped.tree, None, &dropped.checkpoint(), late);
    let Inclusion::Evidence(evidence) = check_inclusion(&contract, &answer, FEDERATION, &limits, late).unwrap() else {
        panic!("no evidence")
    };
    let evidence = *evidence;
    assert_eq!(evidence.kind_name(), "missing-contract");
    third_party_accepts(&evidence, &provider);

    // A proof pointing at another record is evidence too.
    let answer = answer_inclusion(&provider, &request, &kept.tree, Some(1), &kept.checkpoint(), late);
    assert!(matches!(check_inclusion(&contract, &answer, FEDERATION, &limits, late).unwrap(), Inclusion::Evidence(_)));
    // An answer signed by someone who is not a party is not accepted at all.
    let answer = answer_inclusion(&identity(9), &request, &dropped.tree, None, &dropped.checkpoint(), late);
    assert!(check_inclusion(&contract, &answer, FEDERATION, &limits, late).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Checkpoints of an append-only log, seen in any order, repeated, with
    /// questions answered at any later time, never yield evidence.
    #[test]
    fn honest_histories_never_yield_evidence(
        growth in proptest::collection::vec(0usize..6, 1..10),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..20),
    ) {
        let mut rng = rng();
        let mut node = Node::new(1);
        let mut checkpoints = Vec::new();
        for n in &growth {
            node.append("r", *n);
            checkpoints.push(node.checkpoint());
        }
        let mut witness = Witness::new(FEDERATION, identity(2).public());
        for pick in order {
            let cp = pick.get(&checkpoints);
            let outcome = witness.observe(&cp.to_note(), T0, &mut rng).unwrap();
            let seen = node.answer_all(&mut witness, outcome, &mut rng);
            prop_assert!(evidence_in(&seen).is_none(), "{:?}", seen);
        }
    }
}

/// With a least interval between questions, checkpoints that arrive in
/// between wait; the newest is asked about once the interval has passed, and
/// a rewrite found that way is still evidence. A second root for a size
/// already seen is caught at once, deferred or not.
#[test]
fn questions_are_spaced_and_the_newest_checkpoint_waits_its_turn() {
    let mut rng = rng();
    let mut node = Node::new(1);
    node.append("a", 4);
    let mut witness = Witness::new(FEDERATION, identity(2).public()).with_min_ask_interval(10_000);
    witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    node.append("b", 2);
    let first = witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    assert!(matches!(first, Some(Outcome::Ask { .. })), "{first:?}");
    let seen = node.answer_all(&mut witness, first, &mut rng);
    assert!(evidence_in(&seen).is_none());
    // Two more checkpoints within the interval: no question yet.
    node.append("c", 3);
    assert_eq!(witness.observe(&node.checkpoint().to_note(), T0 + 1_000, &mut rng).unwrap(), None);
    let mut forked = Node::new(1);
    forked.append("z", node.tree.len() as usize);
    let conflict = witness.observe(&forked.checkpoint().to_note(), T0 + 1_500, &mut rng).unwrap();
    assert!(matches!(conflict, Some(Outcome::Evidence { .. })), "a second root at once: {conflict:?}");
    node.append("d", 3);
    assert_eq!(witness.observe(&node.checkpoint().to_note(), T0 + 2_000, &mut rng).unwrap(), None);
    assert!(witness.due(T0 + 9_999, &mut rng).is_empty());
    let due = witness.due(T0 + 10_000, &mut rng);
    let [Outcome::Ask { request, .. }] = due.as_slice() else { panic!("one question: {due:?}") };
    assert_eq!(request.new_size, node.tree.len(), "about the newest checkpoint");
    let seen = node.answer_all(&mut witness, due.into_iter().next(), &mut rng);
    assert!(evidence_in(&seen).is_none());
    assert_eq!(witness.latest(&node.identity.public()).unwrap().checkpoint().size, node.tree.len());
    assert!(witness.due(T0 + 60_000, &mut rng).is_empty(), "nothing left to ask");

    // A rewrite seen between questions is still caught when its turn comes.
    let mut rewritten = Node::new(1);
    rewritten.append("x", node.tree.len() as usize + 5);
    assert_eq!(witness.observe(&rewritten.checkpoint().to_note(), T0 + 11_000, &mut rng).unwrap(), None);
    let due = witness.due(T0 + 20_000, &mut rng);
    let seen = rewritten.answer_all(&mut witness, due.into_iter().next(), &mut rng);
    assert_eq!(evidence_in(&seen).map(|e| e.kind_name()), Some("inconsistent-proof"), "{seen:?}");
}

/// Spacing never delays a checkpoint smaller than the latest witnessed one
/// (logs only grow): it is asked about at once, and a shrunk log is caught.
#[test]
fn a_smaller_checkpoint_is_asked_about_at_once() {
    let mut rng = rng();
    let mut node = Node::new(1);
    node.append("a", 8);
    let mut witness = Witness::new(FEDERATION, identity(2).public()).with_min_ask_interval(60_000);
    witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    node.append("b", 4);
    let first = witness.observe(&node.checkpoint().to_note(), T0, &mut rng).unwrap();
    assert!(evidence_in(&node.answer_all(&mut witness, first, &mut rng)).is_none());
    let mut shrunk = Node::new(1);
    shrunk.append("x", 5);
    let outcome = witness.observe(&shrunk.checkpoint().to_note(), T0 + 1_000, &mut rng).unwrap();
    assert!(matches!(outcome, Some(Outcome::Ask { .. })), "not deferred: {outcome:?}");
    let seen = shrunk.answer_all(&mut witness, outcome, &mut rng);
    assert_eq!(evidence_in(&seen).map(|e| e.kind_name()), Some("inconsistent-proof"), "{seen:?}");
}
