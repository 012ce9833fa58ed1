//! Witnessing the agreement logs of other nodes, and the evidence that one of
//! them rewrote or denied its history.
//!
//! Every node signs checkpoints of its log and gossips them. A [`Witness`]
//! keeps the latest checkpoint of every node it has seen. When another
//! checkpoint of the same node arrives, smaller or larger, it asks that node
//! for a consistency proof between the two and checks it. Two checkpoints of
//! one size with different roots, or a signed proof that does not connect two
//! signed checkpoints, is [`Evidence`]: every part of it is signed by the
//! accused node, so anyone can check it without trusting the witness.
//!
//! The parties of a contract also check each other: each asks the other for
//! an inclusion proof of their shared contract record (see
//! [`check_inclusion`]). A signed answer that the contract is not in the log,
//! long enough after it was made, or a signed proof that does not verify, is
//! evidence too.
//!
//! Honest nodes never produce evidence against themselves: a node's log is
//! append-only and every checkpoint it signs covers only durable records, so
//! it can always prove consistency between any two of its checkpoints and
//! the inclusion of every contract it countersigned or stored.

use std::collections::{HashMap, VecDeque};

use fulcrum_proto::v1 as wire;
use prost::Message as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::Limits;
use crate::checkpoint::{CheckpointError, SignedCheckpoint, verify_node_checkpoint};
use crate::contract::SignedContract;
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::ids::RequestId;
use crate::keys::{Identity, PublicKey};
use crate::merkle::{Hash, MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use crate::record::Record;

/// A consistency question not answered within this long is asked again later.
pub const PROOF_TIMEOUT_MS: u64 = 15_000;

/// Checkpoints per node remembered besides the latest, to recognise replays
/// of older ones without asking again.
const HISTORY: usize = 32;

/// Longest proof path accepted (a tree of 2^64 leaves needs at most 128).
const MAX_PATH: usize = 130;

/// Why a proof answer or a piece of evidence was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WitnessError {
    /// The envelope is not of the expected kind, or its body does not decode.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// A checkpoint inside does not parse or verify.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A part is signed by another key than the node it is about.
    #[error("signed by {signer}, not by the node it is about ({node})")]
    WrongSigner {
        /// The node.
        node: PublicKey,
        /// Who signed.
        signer: PublicKey,
    },
    /// A field is missing or malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The evidence does not show any misbehaviour.
    #[error("not evidence: {0}")]
    NotEvidence(&'static str),
}

/// Proof that a node rewrote or denied its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two checkpoints with the same size and different roots.
    Conflicting {
        /// One checkpoint.
        first: SignedCheckpoint,
        /// The other.
        second: SignedCheckpoint,
    },
    /// A consistency proof signed by the node that does not connect two of
    /// its checkpoints.
    Inconsistent {
        /// The smaller checkpoint.
        older: SignedCheckpoint,
        /// The larger checkpoint.
        newer: SignedCheckpoint,
        /// The node's signed answer (kind `consistency-proof`).
        proof: Envelope,
    },
    /// A contract the node signed, and its signed answer that the contract is
    /// not in its log, or an inclusion proof that does not verify.
    MissingContract {
        /// The contract, signed by both parties.
        contract: SignedContract,
        /// The node's signed answer (kind `inclusion-proof`).
        answer: Envelope,
    },
}

/// Evidence as gossiped and logged: who found it, when, and against whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvidence {
    /// The node that misbehaved.
    pub accused: PublicKey,
    /// When the witness found it, Unix ms (as the witness says).
    pub observed_at_ms: u64,
    /// The evidence, checked.
    pub evidence: Evidence,
    /// The envelope signed by the witness.
    pub envelope: Envelope,
}

impl Evidence {
    /// A short name of the kind of misbehaviour.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Evidence::Conflicting { .. } => "conflicting-checkpoints",
            Evidence::Inconsistent { .. } => "inconsistent-proof",
            Evidence::MissingContract { .. } => "missing-contract",
        }
    }

    /// One line saying what happened.
    pub fn describe(&self) -> String {
        match self {
            Evidence::Conflicting { first, .. } => {
                format!("signed two different roots for tree size {}", first.checkpoint().size)
            }
            Evidence::Inconsistent { older, newer, .. } => format!(
                "cannot prove that its log of size {} extends its log of size {}",
                newer.checkpoint().size,
                older.checkpoint().size
            ),
            Evidence::MissingContract { contract, .. } => {
                format!("denies that contract {} is in its log", contract.id())
            }
        }
    }

    /// Identifies the evidence regardless of who found it and when.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.kind_name());
        match self {
            Evidence::Conflicting { first, second } => {
                let (a, b) = (first.to_note(), second.to_note());
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                h.update(a);
                h.update(b);
            }
            Evidence::Inconsistent { older, newer, .. } => {
                h.update(older.to_note());
                h.update(newer.to_note());
            }
            Evidence::MissingContract { contract, .. } => h.update(contract.id().0),
        }
        h.finalize().into()
    }

    /// Checks that the evidence shows misbehaviour of `accused`, using only
    /// what the accused signed.
    pub fn check(&self, accused: &PublicKey, federation: &str, limits: &Limits) -> Result<(), WitnessError> {
        match self {
            Evidence::Conflicting { first, second } => {
                let a = node_checkpoint(first, accused, federation)?;
                let b = node_checkpoint(second, accused, federation)?;
                if a.checkpoint().size != b.checkpoint().size {
                    return Err(WitnessError::NotEvidence("the checkpoints have different sizes"));
                }
                if a.checkpoint().root == b.checkpoint().root {
                    return Err(WitnessError::NotEvidence("the checkpoints agree"));
                }
                Ok(())
            }
            Evidence::Inconsistent { older, newer, proof } => {
                let older = node_checkpoint(older, accused, federation)?;
                let newer = node_checkpoint(newer, accused, federation)?;
                let (m, n) = (older.checkpoint().size, newer.checkpoint().size);
                if m >= n {
                    return Err(WitnessError::NotEvidence("the older checkpoint is not smaller"));
                }
                signed_by(proof, accused)?;
                let resp: wire::ConsistencyProofResponse = proof.open(Kind::ConsistencyProof)?;
                if resp.old_size != m || resp.new_size != n {
                    return Err(WitnessError::NotEvidence("the proof is about other tree sizes"));
                }
                match parse_path(&resp.path) {
                    Some(path)
                        if verify_consistency(m, n, &older.checkpoint().root, &newer.checkpoint().root, &path)
                            .is_ok() =>
                    {
                        Err(WitnessError::NotEvidence("the consistency proof verifies"))
                    }
                    _ => Ok(()),
                }
            }
            Evidence::MissingContract { contract, answer } => {
                let terms = contract.terms();
                if !contract.is_countersigned() {
                    return Err(WitnessError::NotEvidence("the contract is not signed by both parties"));
                }
                if terms.provider != *accused && terms.consumer != *accused {
                    return Err(WitnessError::NotEvidence("the accused is not a party of the contract"));
                }
                signed_by(answer, accused)?;
                let resp: wire::InclusionProofResponse = answer.open(Kind::InclusionProof)?;
                if resp.leaf_hash != contract_leaf_hash(contract).to_vec() {
                    return Err(WitnessError::NotEvidence("the answer is about another record"));
                }
                if resp.answered_at_ms < terms.created_at_ms.saturating_add(limits.missing_contract_grace_ms) {
                    return Err(WitnessError::NotEvidence("the answer came too soon after the contract was made"));
                }
                let (signer, cp) = verify_node_checkpoint(&resp.checkpoint, federation)?;
                if signer != *accused {
                    return Err(WitnessError::WrongSigner { node: *accused, signer });
                }
                if !resp.found {
                    return Ok(());
                }
                let leaf = contract_leaf_hash(contract);
                match parse_path(&resp.path) {
                    Some(path)
                        if verify_inclusion(
                            &leaf,
                            resp.leaf_index,
                            cp.checkpoint().size,
                            &path,
                            &cp.checkpoint().root,
                        )
                        .is_ok() =>
                    {
                        Err(WitnessError::NotEvidence("the inclusion proof verifies"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The wire form.
    pub fn to_wire(&self, accused: &PublicKey, observed_at_ms: u64) -> wire::Evidence {
        use wire::evidence::Proof;
        let proof = match self {
            Evidence::Conflicting { first, second } => {
                Proof::Conflicting(wire::ConflictingCheckpoints { first: first.to_note(), second: second.to_note() })
            }
            Evidence::Inconsistent { older, newer, proof } => Proof::Inconsistent(wire::InconsistentProof {
                older: older.to_note(),
                newer: newer.to_note(),
                proof: Some(proof.to_wire()),
            }),
            Evidence::MissingContract { contract, answer } => Proof::MissingContract(wire::MissingContract {
                contract: Some(contract.to_wire()),
                answer: Some(answer.to_wire()),
            }),
        };
        wire::Evidence { accused: accused.to_bytes().to_vec(), observed_at_ms, proof: Some(proof) }
    }

    /// Seals the evidence as the witness that found it.
    pub fn seal(&self, witness: &Identity, accused: &PublicKey, observed_at_ms: u64) -> Envelope {
        Envelope::seal_message(witness, Kind::Evidence, &self.to_wire(accused, observed_at_ms))
    }

    /// Opens evidence sealed by any witness and checks it.
    pub fn open(envelope: &Envelope, federation: &str, limits: &Limits) -> Result<SealedEvidence, WitnessError> {
        use wire::evidence::Proof;
        let w: wire::Evidence = envelope.open(Kind::Evidence)?;
        let accused = PublicKey::from_bytes(&w.accused).map_err(|_| WitnessError::Malformed("accused key"))?;
        let note = |s: &str| SignedCheckpoint::parse(s).map_err(WitnessError::from);
        let inner = |e: Option<wire::Envelope>| -> Result<Envelope, WitnessError> {
            Ok(Envelope::from_wire(e.ok_or(WitnessError::Malformed("signed answer"))?)?)
        };
        let evidence = match w.proof.ok_or(WitnessError::Malformed("evidence"))? {
            Proof::Conflicting(c) => Evidence::Conflicting { first: note(&c.first)?, second: note(&c.second)? },
            Proof::Inconsistent(i) => {
                Evidence::Inconsistent { older: note(&i.older)?, newer: note(&i.newer)?, proof: inner(i.proof)? }
            }
            Proof::MissingContract(m) => {
                let contract =
                    SignedContract::from_wire(m.contract.ok_or(WitnessError::Malformed("contract"))?, limits, true)
                        .map_err(|_| WitnessError::Malformed("contract"))?;
                Evidence::MissingContract { contract, answer: inner(m.answer)? }
            }
        };
        evidence.check(&accused, federation, limits)?;
        Ok(SealedEvidence { accused, observed_at_ms: w.observed_at_ms, evidence, envelope: envelope.clone() })
    }
}

fn node_checkpoint<'a>(
    cp: &'a SignedCheckpoint,
    node: &PublicKey,
    federation: &str,
) -> Result<&'a SignedCheckpoint, WitnessError> {
    let (signer, _) = verify_node_checkpoint(&cp.to_note(), federation)?;
    if signer != *node {
        return Err(WitnessError::WrongSigner { node: *node, signer });
    }
    Ok(cp)
}

fn signed_by(envelope: &Envelope, node: &PublicKey) -> Result<(), WitnessError> {
    if envelope.signer() != *node {
        return Err(WitnessError::WrongSigner { node: *node, signer: envelope.signer() });
    }
    Ok(())
}

fn parse_path(path: &[Vec<u8>]) -> Option<Vec<Hash>> {
    if path.len() > MAX_PATH {
        return None;
    }
    path.iter().map(|h| Hash::try_from(h.as_slice()).ok()).collect()
}

/// The Merkle leaf hash of the log record that stores `contract`; both
/// parties store the same record, so it is the same in both logs.
pub fn contract_leaf_hash(contract: &SignedContract) -> Hash {
    // Encoding a record made of valid parts cannot fail; an empty leaf would
    // simply never be found.
    let bytes = Record::Contract { contract: contract.clone() }.to_cbor().unwrap_or_default();
    leaf_hash(&bytes)
}

// ---- answering ----------------------------------------------------------

/// Answers a consistency question about this node's log. `tree` is the
/// durable tree; `latest` this node's latest checkpoint. The answer echoes
/// the sizes asked (the latest size when `new_size` is 0) and carries a
/// proof when the tree covers them, an empty path otherwise.
pub fn answer_consistency(
    identity: &Identity,
    request: &wire::ConsistencyProofRequest,
    tree: &MerkleTree,
    latest: &SignedCheckpoint,
) -> Envelope {
    let latest_size = latest.checkpoint().size;
    let new_size = if request.new_size == 0 { latest_size } else { request.new_size };
    let old_size = request.old_size;
    let path = if old_size <= new_size && new_size <= tree.len() {
        tree.consistency_proof(old_size, new_size).unwrap_or_default()
    } else {
        Vec::new()
    };
    let checkpoint = if new_size == latest_size { latest.to_note() } else { String::new() };
    let resp = wire::ConsistencyProofResponse {
        request_id: request.request_id.clone(),
        old_size,
        new_size,
        path: path.into_iter().map(|h| h.to_vec()).collect(),
        checkpoint,
    };
    Envelope::seal_message(identity, Kind::ConsistencyProof, &resp)
}

/// Answers an inclusion question: `index` is where the leaf is in this
/// node's log, if it is; `checkpoint` must cover the whole tree.
pub fn answer_inclusion(
    identity: &Identity,
    request: &wire::InclusionProofRequest,
    tree: &MerkleTree,
    index: Option<u64>,
    checkpoint: &SignedCheckpoint,
    now_ms: u64,
) -> Envelope {
    let size = checkpoint.checkpoint().size;
    let (found, leaf_index, path) = match index {
        Some(i) if i < size => match tree.inclusion_proof(i, size) {
            Ok(path) => (true, i, path),
            Err(_) => (false, 0, Vec::new()),
        },
        _ => (false, 0, Vec::new()),
    };
    let resp = wire::InclusionProofResponse {
        request_id: request.request_id.clone(),
        leaf_hash: request.leaf_hash.clone(),
        found,
        leaf_index,
        path: path.into_iter().map(|h| h.to_vec()).collect(),
        checkpoint: checkpoint.to_note(),
        answered_at_ms: now_ms,
    };
    Envelope::seal_message(identity, Kind::InclusionProof, &resp)
}

// ---- asking about contracts ---------------------------------------------

/// What an answer to an inclusion question shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inclusion {
    /// The contract is in the node's log at this checkpoint.
    Proven {
        /// The checkpoint the proof is against.
        checkpoint: SignedCheckpoint,
        /// Where the record is.
        leaf_index: u64,
    },
    /// Not (yet) in the log, but the contract is too recent to say more.
    NotYet,
    /// The node dropped the contract or sent a proof that does not verify.
    Evidence(Box<Evidence>),
}

/// The question to ask a counterparty about a shared contract.
pub fn inclusion_request(contract: &SignedContract, request_id: RequestId) -> wire::InclusionProofRequest {
    wire::InclusionProofRequest { request_id: request_id.to_vec(), leaf_hash: contract_leaf_hash(contract).to_vec() }
}

/// Checks a counterparty's answer about a shared contract.
pub fn check_inclusion(
    contract: &SignedContract,
    answer: &Envelope,
    federation: &str,
    limits: &Limits,
    now_ms: u64,
) -> Result<Inclusion, WitnessError> {
    let terms = contract.terms();
    let node = answer.signer();
    if node != terms.provider && node != terms.consumer {
        return Err(WitnessError::NotEvidence("the answer is not from a party of the contract"));
    }
    let resp: wire::InclusionProofResponse = answer.open(Kind::InclusionProof)?;
    if resp.leaf_hash != contract_leaf_hash(contract).to_vec() {
        return Err(WitnessError::Malformed("answer about another record"));
    }
    if resp.answered_at_ms.abs_diff(now_ms) > limits.max_clock_skew_ms {
        return Err(WitnessError::Malformed("answer timestamp far from now"));
    }
    let (signer, cp) = verify_node_checkpoint(&resp.checkpoint, federation)?;
    if signer != node {
        return Err(WitnessError::WrongSigner { node, signer });
    }
    if resp.found {
        let leaf = contract_leaf_hash(contract);
        let proven = parse_path(&resp.path).is_some_and(|path| {
            verify_inclusion(&leaf, resp.leaf_index, cp.checkpoint().size, &path, &cp.checkpoint().root).is_ok()
        });
        if proven {
            return Ok(Inclusion::Proven { checkpoint: cp, leaf_index: resp.leaf_index });
        }
    } else if resp.answered_at_ms < terms.created_at_ms.saturating_add(limits.missing_contract_grace_ms) {
        return Ok(Inclusion::NotYet);
    }
    Ok(Inclusion::Evidence(Box::new(Evidence::MissingContract { contract: contract.clone(), answer: answer.clone() })))
}

// ---- the witness ----------------------------------------------------------

/// What the witness wants done after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A newer checkpoint of `node` is now its latest witnessed one: keep it.
    Advanced {
        /// The node.
        node: PublicKey,
        /// Its checkpoint.
        checkpoint: SignedCheckpoint,
    },
    /// Ask `node` for this consistency proof.
    Ask {
        /// The node.
        node: PublicKey,
        /// The question.
        request: wire::ConsistencyProofRequest,
    },
    /// `node` rewrote its history.
    Evidence {
        /// The node.
        node: PublicKey,
        /// The proof of it.
        evidence: Box<Evidence>,
    },
}

struct PendingCheck {
    request_id: Vec<u8>,
    /// The two checkpoints being connected; `newer` is `None` while asking
    /// for the node's latest.
    older: Option<SignedCheckpoint>,
    newer: Option<SignedCheckpoint>,
    asked_at_ms: u64,
}

/// The latest checkpoints of other nodes, and the consistency questions
/// asked about them.
pub struct Witness {
    federation: String,
    me: PublicKey,
    /// Per node: checkpoints known to be consistent, latest last.
    known: HashMap<PublicKey, VecDeque<SignedCheckpoint>>,
    pending: HashMap<PublicKey, PendingCheck>,
    /// Least time between two consistency questions to one node.
    min_ask_ms: u64,
    /// How long a question waits for its answer.
    proof_timeout_ms: u64,
    /// When each node was last asked.
    last_asked: HashMap<PublicKey, u64>,
    /// Per node, the newest checkpoint seen and not asked about yet because
    /// the node was asked recently; asked about by [`Witness::due`].
    deferred: HashMap<PublicKey, SignedCheckpoint>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness").field("nodes", &self.known.len()).field("pending", &self.pending.len()).finish()
    }
}

impl Witness {
    /// A witness for `federation`, run by `me` (own checkpoints are ignored).
    pub fn new(federation: &str, me: PublicKey) -> Witness {
        Witness {
            federation: federation.to_owned(),
            me,
            known: HashMap::new(),
            pending: HashMap::new(),
            min_ask_ms: 0,
            proof_timeout_ms: PROOF_TIMEOUT_MS,
            last_asked: HashMap::new(),
            deferred: HashMap::new(),
        }
    }

    /// Asks each node about consistency at most once per `ms`: checkpoints
    /// seen in between wait, and the newest of them is asked about when
    /// [`Witness::due`] finds the time has come. Two checkpoints of one size
    /// with different roots are still caught at once (that needs no
    /// question). Each question costs the node an answer, so without this a
    /// node would answer every witness for every checkpoint it signs.
    pub fn with_min_ask_interval(mut self, ms: u64) -> Witness {
        self.min_ask_ms = ms;
        self
    }

    /// How long a question waits for its answer before the node may be
    /// asked again ([`PROOF_TIMEOUT_MS`] unless set).
    pub fn with_proof_timeout_ms(mut self, ms: u64) -> Witness {
        self.proof_timeout_ms = ms;
        self
    }

    /// The questions whose time has come: for each node with a deferred
    /// checkpoint, asked long enough ago and not being asked now.
    pub fn due(&mut self, now_ms: u64, rng: &mut dyn rand_core::RngCore) -> Vec<Outcome> {
        let ready: Vec<PublicKey> = self
            .deferred
            .keys()
            .filter(|node| {
                !self.pending.contains_key(*node)
                    && self.last_asked.get(*node).is_none_or(|at| now_ms >= at.saturating_add(self.min_ask_ms))
            })
            .copied()
            .collect();
        let mut out = Vec::new();
        for node in ready {
            let Some(cp) = self.deferred.remove(&node) else { continue };
            if self.is_known(&node, &cp) {
                continue;
            }
            let Some(latest) = self.latest(&node).cloned() else { continue };
            let (older, newer) =
                if cp.checkpoint().size < latest.checkpoint().size { (cp, latest) } else { (latest, cp) };
            out.push(self.ask_between(node, older, newer, now_ms, rng));
        }
        out
    }

    /// Restores a persisted latest checkpoint; invalid notes are skipped.
    pub fn restore(&mut self, note: &str) -> bool {
        match verify_node_checkpoint(note, &self.federation) {
            Ok((node, cp)) if node != self.me => {
                self.known.insert(node, VecDeque::from([cp]));
                true
            }
            _ => false,
        }
    }

    /// The latest witnessed checkpoint of `node`.
    pub fn latest(&self, node: &PublicKey) -> Option<&SignedCheckpoint> {
        self.known.get(node).and_then(|h| h.back())
    }

    /// Every node with a witnessed checkpoint.
    pub fn nodes(&self) -> impl Iterator<Item = (&PublicKey, &SignedCheckpoint)> {
        self.known.iter().filter_map(|(k, h)| h.back().map(|cp| (k, cp)))
    }

    /// A checkpoint of some node, as gossiped or received with a proof.
    pub fn observe(
        &mut self,
        note: &str,
        now_ms: u64,
        rng: &mut dyn rand_core::RngCore,
    ) -> Result<Option<Outcome>, WitnessError> {
        let (node, cp) = verify_node_checkpoint(note, &self.federation)?;
        if node == self.me {
            return Ok(None);
        }
        if let Some(conflict) = self.conflict_with_known(&node, &cp) {
            return Ok(Some(conflict));
        }
        let Some(latest) = self.latest(&node).cloned() else {
            // Trust on first sight; every later checkpoint must extend it.
            self.known.insert(node, VecDeque::from([cp.clone()]));
            return Ok(Some(Outcome::Advanced { node, checkpoint: cp }));
        };
        if self.is_known(&node, &cp) {
            return Ok(None);
        }
        if self.pending.get(&node).is_some_and(|p| now_ms < p.asked_at_ms + self.proof_timeout_ms) {
            // One question per node at a time; gossip repeats itself.
            return Ok(None);
        }
        // A checkpoint smaller than the latest witnessed is suspect (logs only
        // grow) and is asked about at once; the others wait for their turn.
        if cp.checkpoint().size >= latest.checkpoint().size
            && self.last_asked.get(&node).is_some_and(|at| now_ms < at.saturating_add(self.min_ask_ms))
        {
            // Asked recently: the newest checkpoint waits for its turn.
            let newest = self.deferred.get(&node).map_or(0, |d| d.checkpoint().size);
            if cp.checkpoint().size >= newest {
                self.deferred.insert(node, cp);
            }
            return Ok(None);
        }
        let (older, newer) = if cp.checkpoint().size < latest.checkpoint().size { (cp, latest) } else { (latest, cp) };
        Ok(Some(self.ask_between(node, older, newer, now_ms, rng)))
    }

    /// The question to ask a node just connected: its latest checkpoint and
    /// the proof that it extends the latest one witnessed.
    pub fn ask_latest(
        &mut self,
        node: PublicKey,
        now_ms: u64,
        rng: &mut dyn rand_core::RngCore,
    ) -> wire::ConsistencyProofRequest {
        let older = self.latest(&node).cloned();
        let request_id = RequestId::random(rng).to_vec();
        let old_size = older.as_ref().map_or(0, |cp| cp.checkpoint().size);
        self.last_asked.insert(node, now_ms);
        self.deferred.remove(&node);
        self.pending
            .insert(node, PendingCheck { request_id: request_id.clone(), older, newer: None, asked_at_ms: now_ms });
        wire::ConsistencyProofRequest { request_id, old_size, new_size: 0 }
    }

    /// An answer from `node` (the envelope's signer, checked by the caller to
    /// be the peer that answered).
    pub fn on_proof(
        &mut self,
        answer: &Envelope,
        now_ms: u64,
        rng: &mut dyn rand_core::RngCore,
    ) -> Result<Option<Outcome>, WitnessError> {
        let node = answer.signer();
        let resp: wire::ConsistencyProofResponse = answer.open(Kind::ConsistencyProof)?;
        let Some(pending) = self.pending.remove(&node) else { return Ok(None) };
        if pending.request_id != resp.request_id {
            self.pending.insert(node, pending);
            return Ok(None);
        }
        let (older, newer) = match (pending.older, pending.newer) {
            (older, Some(newer)) => (older, newer),
            (older, None) => {
                let (signer, cp) = verify_node_checkpoint(&resp.checkpoint, &self.federation)?;
                if signer != node {
                    return Err(WitnessError::WrongSigner { node, signer });
                }
                if cp.checkpoint().size != resp.new_size {
                    return Err(WitnessError::Malformed("checkpoint size differs from the proof's"));
                }
                if let Some(conflict) = self.conflict_with_known(&node, &cp) {
                    return Ok(Some(conflict));
                }
                match older {
                    None => {
                        self.known.insert(node, VecDeque::from([cp.clone()]));
                        return Ok(Some(Outcome::Advanced { node, checkpoint: cp }));
                    }
                    Some(old) if cp.checkpoint().size < old.checkpoint().size => {
                        // The node's latest is smaller than what it signed
                        // before: it must prove the old one extends it.
                        return Ok(Some(self.ask_between(node, cp, old, now_ms, rng)));
                    }
                    Some(old) => (Some(old), cp),
                }
            }
        };
        let Some(older) = older else { return Ok(None) };
        let (m, n) = (older.checkpoint().size, newer.checkpoint().size);
        if m == n {
            return Ok(self.conflict_with_known(&node, &newer));
        }
        if resp.old_size != m || resp.new_size != n {
            // The answer is about other sizes: ask exactly.
            return Ok(Some(self.ask_between(node, older, newer, now_ms, rng)));
        }
        let consistent = parse_path(&resp.path).is_some_and(|path| {
            verify_consistency(m, n, &older.checkpoint().root, &newer.checkpoint().root, &path).is_ok()
        });
        if !consistent {
            let evidence = Box::new(Evidence::Inconsistent { older, newer, proof: answer.clone() });
            return Ok(Some(Outcome::Evidence { node, evidence }));
        }
        let latest_size = self.latest(&node).map_or(0, |cp| cp.checkpoint().size);
        let history = self.known.entry(node).or_default();
        if n > latest_size {
            history.push_back(newer.clone());
            while history.len() > HISTORY {
                history.pop_front();
            }
            return Ok(Some(Outcome::Advanced { node, checkpoint: newer }));
        }
        // An older checkpoint, now known to be consistent.
        history.push_front(older);
        while history.len() > HISTORY {
            history.pop_front();
        }
        Ok(None)
    }

    /// Forgets questions not answered in time, so they can be asked again.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.pending.len();
        self.pending.retain(|_, p| now_ms < p.asked_at_ms + self.proof_timeout_ms);
        before - self.pending.len()
    }

    fn ask_between(
        &mut self,
        node: PublicKey,
        older: SignedCheckpoint,
        newer: SignedCheckpoint,
        now_ms: u64,
        rng: &mut dyn rand_core::RngCore,
    ) -> Outcome {
        self.last_asked.insert(node, now_ms);
        let request_id = RequestId::random(rng).to_vec();
        let request = wire::ConsistencyProofRequest {
            request_id: request_id.clone(),
            old_size: older.checkpoint().size,
            new_size: newer.checkpoint().size,
        };
        self.pending
            .insert(node, PendingCheck { request_id, older: Some(older), newer: Some(newer), asked_at_ms: now_ms });
        Outcome::Ask { node, request }
    }

    fn is_known(&self, node: &PublicKey, cp: &SignedCheckpoint) -> bool {
        self.known.get(node).is_some_and(|h| h.iter().any(|k| k.checkpoint() == cp.checkpoint()))
    }

    fn conflict_with_known(&self, node: &PublicKey, cp: &SignedCheckpoint) -> Option<Outcome> {
        let pending = self.pending.get(node);
        let candidates = self
            .known
            .get(node)
            .into_iter()
            .flatten()
            .chain(pending.and_then(|p| p.older.as_ref()))
            .chain(pending.and_then(|p| p.newer.as_ref()))
            .chain(self.deferred.get(node));
        for other in candidates {
            if other.checkpoint().size == cp.checkpoint().size && other.checkpoint().root != cp.checkpoint().root {
                let evidence = Box::new(Evidence::Conflicting { first: other.clone(), second: cp.clone() });
                return Some(Outcome::Evidence { node: *node, evidence });
            }
        }
        None
    }
}

/// Decodes a request on the proofs protocol.
pub fn decode_request(bytes: &[u8]) -> Result<wire::proof_request::Request, WitnessError> {
    wire::ProofRequest::decode(bytes).ok().and_then(|r| r.request).ok_or(WitnessError::Malformed("proof request"))
}
