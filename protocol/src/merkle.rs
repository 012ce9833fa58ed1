//! RFC 6962 / RFC 9162 Merkle trees over SHA-256: leaf and node hashing, an
//! append-only in-memory tree that answers roots and proofs for any earlier
//! size, and the stateless verifiers a peer or auditor runs with only hashes.

use std::fmt;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Hashes one log entry as a leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// Hashes two subtree roots into their parent: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One contiguous buffer instead of three `update` calls: this is the
    // innermost operation of every proof, and it is measurably cheaper.
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The root of the tree with no leaves: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a Merkle tree could not answer, or why a proof was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MerkleError {
    /// The leaf index is not inside a tree of the given size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size it was asked about.
        size: u64,
    },
    /// The tree size asked for is larger than the number of leaves held.
    #[error("tree size {size} is larger than the {len} leaves held")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// How many leaves the tree holds.
        len: u64,
    },
    /// A consistency question whose old size is larger than its new size.
    #[error("old tree size {old} is larger than new tree size {new}")]
    InvalidSizes {
        /// The claimed earlier size.
        old: u64,
        /// The claimed later size.
        new: u64,
    },
    /// The proof does not have the number of hashes its sizes call for.
    #[error("proof has {got} hashes where {expected} are required")]
    ProofLength {
        /// The length the index and sizes determine.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The proof is well-formed but does not lead to the given root(s).
    #[error("proof does not match the given root")]
    RootMismatch,
}

/// An append-only Merkle tree that can produce roots and proofs for any size
/// it has passed through.
///
/// Every complete, aligned subtree hash is kept: level 0 holds the leaf
/// hashes and level `k` the roots of the subtrees of `2^k` leaves, so an
/// append costs amortised O(1) hashes, a root O(log n) and a proof
/// O(log^2 n) at worst. The space is about two hashes per leaf.
#[derive(Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

// Printing every stored hash of a large log into a log line would be useless
// and enormous, so the Debug form is a summary.
impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree").field("len", &self.len()).field("levels", &self.levels.len()).finish()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree holding the given leaf hashes, in order.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let leaves = leaves.into_iter();
        let mut tree = Self::new();
        let (lower, _) = leaves.size_hint();
        if lower > 0 {
            tree.levels.push(Vec::with_capacity(lower));
        }
        for leaf in leaves {
            tree.push_leaf_hash(leaf);
        }
        tree
    }

    /// Appends an entry, hashing it as a leaf, and returns its index.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(data))
    }

    /// Appends an already computed leaf hash and returns its index.
    pub fn push_leaf_hash(&mut self, hash: Hash) -> u64 {
        let index = self.len();
        let mut carry = hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(carry);
            // An odd count means the new hash has no partner yet; it will be
            // combined when its right sibling arrives.
            if row.len() % 2 == 1 {
                break;
            }
            carry = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
        index
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root at the current size.
    pub fn root(&self) -> Hash {
        let len = self.len();
        if len == 0 { empty_root() } else { self.range_root(0, len) }
    }

    /// The root the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.range_root(0, size))
    }

    /// The leaf hash at `index`, if there is one.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The RFC 6962 audit path for leaf `index` in the tree of `size` leaves,
    /// ordered from the leaf's sibling up to the root's child.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        // Walk down from the root; siblings come out top-down and the RFC
        // orders them bottom-up, hence the reverse at the end.
        let mut proof = Vec::with_capacity(64);
        let (mut start, mut end) = (0, size);
        while end - start > 1 {
            let mid = start + split_point(end - start);
            if index < mid {
                proof.push(self.range_root(mid, end));
                end = mid;
            } else {
                proof.push(self.range_root(start, mid));
                start = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The RFC 6962 consistency proof that the tree of `old_size` leaves is
    /// a prefix of the tree of `new_size` leaves. Empty when the sizes are
    /// equal or `old_size` is 0, as nothing needs proving then.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(MerkleError::InvalidSizes { old: old_size, new: new_size });
        }
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        // RFC 6962 SUBPROOF unrolled: `whole_old_tree` is its flag b, true
        // while the current node is the root of the old tree's own recursion,
        // whose hash the verifier already has and must not be sent.
        let mut proof = Vec::with_capacity(64);
        let (mut start, mut end) = (0, new_size);
        let mut whole_old_tree = true;
        while old_size != end {
            let mid = start + split_point(end - start);
            if old_size <= mid {
                proof.push(self.range_root(mid, end));
                end = mid;
            } else {
                proof.push(self.range_root(start, mid));
                start = mid;
                whole_old_tree = false;
            }
        }
        if !whole_old_tree {
            proof.push(self.range_root(start, end));
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        let len = self.len();
        if size > len {
            return Err(MerkleError::SizeOutOfRange { size, len });
        }
        Ok(())
    }

    /// Root of leaves `start..end`, where the range is a node of an RFC 6962
    /// tree: non-empty, within the tree, and `start` a multiple of the largest
    /// power of two not above `end - start`. Every caller descends from a
    /// validated root by `split_point`, which keeps that true.
    fn range_root(&self, start: u64, end: u64) -> Hash {
        // Such a range is a run of complete subtrees, one per set bit of its
        // width, largest first; the RFC's recursion joins them right to left.
        let mut width = end - start;
        let mut right_edge = end;
        let mut acc: Option<Hash> = None;
        while width != 0 {
            let level = width.trailing_zeros();
            let piece_start = right_edge - (1u64 << level);
            let piece = self.complete(level, piece_start >> level);
            acc = Some(match acc {
                None => piece,
                Some(right) => node_hash(&piece, &right),
            });
            right_edge = piece_start;
            width &= width - 1;
        }
        acc.unwrap_or_else(empty_root)
    }

    /// Stored root of the `index`-th complete subtree of `2^level` leaves;
    /// `range_root` only asks for subtrees that lie within the tree.
    fn complete(&self, level: u32, index: u64) -> Hash {
        self.levels[level as usize][index as usize]
    }
}

/// The RFC's k: the largest power of two strictly below `n`, for `n >= 2`.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Number of bits needed to write `x`.
fn bit_length(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Length of the audit path for `index` in a tree of `size` leaves (`index <
/// size`): one hash per level below the point where the paths to `index` and
/// to the last leaf part ways, plus one for each level above it where
/// `index`'s subtree has a complete left sibling.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = bit_length(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Length of the consistency proof between sizes `0 < old < new`. It is the
/// audit path of the old tree's last complete subtree (of `2^shift` leaves)
/// inside the new tree, plus that subtree's own hash unless it is the whole
/// old tree, which the verifier already holds.
fn consistency_proof_len(old: u64, new: u64) -> usize {
    let shift = old.trailing_zeros();
    let index = (old - 1) >> shift;
    let last = (new - 1) >> shift;
    let path = inclusion_proof_len(index, last + 1);
    path + usize::from(!old.is_power_of_two())
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves
/// whose root is `root`, by RFC 9162 section 2.1.3.2.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength { expected, got: proof.len() });
    }
    // `node` is the position of the running hash at the current level and
    // `last` that of the level's rightmost node.
    let mut node = index;
    let mut last = size - 1;
    let mut hash = *leaf;
    for sibling in proof {
        // Unreachable after the length check; kept so that a mistake there
        // fails closed instead of accepting a forged path.
        if last == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if node & 1 == 1 || node == last {
            hash = node_hash(sibling, &hash);
            // A rightmost node with no right sibling is promoted unchanged;
            // skip the levels it climbs that way, up to where it is a right
            // child (or the leftmost node).
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 || hash != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`, by RFC 9162
/// section 2.1.4.2.
///
/// Equal sizes need an empty proof and equal roots. An old size of 0 needs
/// an empty proof and `old_root` equal to [`empty_root`], the only root a
/// tree of size 0 can have.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::InvalidSizes { old: old_size, new: new_size });
    }
    let expected = if old_size == 0 || old_size == new_size { 0 } else { consistency_proof_len(old_size, new_size) };
    if proof.len() != expected {
        return Err(MerkleError::ProofLength { expected, got: proof.len() });
    }
    if old_size == 0 {
        if *old_root != empty_root() || (new_size == 0 && *new_root != *old_root) {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }

    // When the old tree is itself complete the proof omits its root, which
    // the verifier already holds; it seeds both running hashes instead.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(MerkleError::ProofLength { expected, got: 0 }),
        }
    };
    let mut node = old_size - 1;
    let mut last = new_size - 1;
    // The seed covers the old tree's last 2^k leaves, k being the number of
    // trailing one bits of old_size - 1: start at that subtree's level.
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let mut old_hash = seed;
    let mut new_hash = seed;
    for sibling in rest {
        if last == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if node & 1 == 1 || node == last {
            old_hash = node_hash(sibling, &old_hash);
            new_hash = node_hash(sibling, &new_hash);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            // Right siblings were appended after the old tree ended, so
            // only the new root covers them.
            new_hash = node_hash(&new_hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 || old_hash != *old_root || new_hash != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::OnceLock;

    /// RFC 6962 section 2.1, transcribed: MTH, PATH and PROOF/SUBPROOF as
    /// recursive functions over leaf ranges. MTH results are memoised so the
    /// exhaustive tests stay fast in debug builds; the recursion itself is
    /// the RFC's.
    struct Reference {
        leaves: Vec<Hash>,
        memo: HashMap<(usize, usize), Hash>,
    }

    impl Reference {
        fn new(leaves: Vec<Hash>) -> Self {
            Self { leaves, memo: HashMap::new() }
        }

        /// The largest power of two smaller than n, by counting.
        fn k(n: usize) -> usize {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            k
        }

        /// MTH(D[lo:hi]).
        fn mth(&mut self, lo: usize, hi: usize) -> Hash {
            if let Some(h) = self.memo.get(&(lo, hi)) {
                return *h;
            }
            let h = match hi - lo {
                0 => Sha256::digest([]).into(),
                1 => self.leaves[lo],
                n => {
                    let k = Self::k(n);
                    let left = self.mth(lo, lo + k);
                    let right = self.mth(lo + k, hi);
                    let mut hasher = Sha256::new();
                    hasher.update([1u8]);
                    hasher.update(left);
                    hasher.update(right);
                    hasher.finalize().into()
                }
            };
            self.memo.insert((lo, hi), h);
            h
        }

        /// PATH(m, D[lo:hi]).
        fn path(&mut self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
            let n = hi - lo;
            if n == 1 {
                return Vec::new();
            }
            let k = Self::k(n);
            if m < k {
                let mut p = self.path(m, lo, lo + k);
                p.push(self.mth(lo + k, hi));
                p
            } else {
                let mut p = self.path(m - k, lo + k, hi);
                p.push(self.mth(lo, lo + k));
                p
            }
        }

        /// PROOF(m, D[0:n]).
        fn proof(&mut self, m: usize, n: usize) -> Vec<Hash> {
            self.subproof(m, 0, n, true)
        }

        /// SUBPROOF(m, D[lo:hi], b).
        fn subproof(&mut self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
            let n = hi - lo;
            if m == n {
                return if b { Vec::new() } else { vec![self.mth(lo, hi)] };
            }
            let k = Self::k(n);
            if m <= k {
                let mut p = self.subproof(m, lo, lo + k, b);
                p.push(self.mth(lo + k, hi));
                p
            } else {
                let mut p = self.subproof(m - k, lo + k, hi, false);
                p.push(self.mth(lo, lo + k));
                p
            }
        }
    }

    fn hex(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    fn test_leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    const MAX_EXHAUSTIVE: usize = 300;

    #[test]
    fn roots_match_reference_for_every_size() {
        let leaves = test_leaves(MAX_EXHAUSTIVE);
        let mut reference = Reference::new(leaves.clone());
        let built = MerkleTree::from_leaf_hashes(leaves.iter().copied());
        let mut grown = MerkleTree::new();
        assert_eq!(grown.root(), reference.mth(0, 0));
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(grown.push_leaf_hash(*leaf), i as u64);
            let n = i + 1;
            let want = reference.mth(0, n);
            assert_eq!(grown.root(), want, "root after {n} pushes");
            assert_eq!(built.root_at(n as u64), Ok(want), "root_at({n})");
            assert_eq!(grown.len(), n as u64);
            assert_eq!(built.leaf(i as u64), Some(*leaf));
        }
        assert_eq!(built.root_at(0), Ok(empty_root()));
    }

    #[test]
    fn inclusion_proofs_match_reference_and_verify_for_every_size_and_index() {
        let leaves = test_leaves(MAX_EXHAUSTIVE);
        let mut reference = Reference::new(leaves.clone());
        let tree = MerkleTree::from_leaf_hashes(leaves.iter().copied());
        for n in 1..=MAX_EXHAUSTIVE {
            let root = reference.mth(0, n);
            for (i, leaf) in leaves.iter().enumerate().take(n) {
                let proof = tree.inclusion_proof(i as u64, n as u64).unwrap();
                assert_eq!(proof, reference.path(i, 0, n), "inclusion {i} in {n}");
                assert_eq!(verify_inclusion(leaf, i as u64, n as u64, &proof, &root), Ok(()), "inclusion {i} in {n}");
            }
        }
    }

    #[test]
    fn consistency_proofs_match_reference_and_verify_for_every_pair_of_sizes() {
        let leaves = test_leaves(MAX_EXHAUSTIVE);
        let mut reference = Reference::new(leaves.clone());
        let tree = MerkleTree::from_leaf_hashes(leaves);
        let roots: Vec<Hash> = (0..=MAX_EXHAUSTIVE).map(|n| reference.mth(0, n)).collect();
        for n in 1..=MAX_EXHAUSTIVE {
            for m in 1..=n {
                let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
                assert_eq!(proof, reference.proof(m, n), "consistency {m} -> {n}");
                assert_eq!(
                    verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof),
                    Ok(()),
                    "consistency {m} -> {n}"
                );
            }
            assert_eq!(tree.consistency_proof(0, n as u64), Ok(Vec::new()));
            assert_eq!(verify_consistency(0, n as u64, &roots[0], &roots[n], &[]), Ok(()));
        }
    }

    /// Sizes the tamper tests walk: every small shape plus a spread of
    /// larger ones around powers of two.
    fn tamper_sizes() -> Vec<u64> {
        let mut sizes: Vec<u64> = (1..=64).collect();
        sizes.extend([65, 96, 127, 128, 129, 170, 255, 256, 257, 300]);
        sizes
    }

    /// Every single-bit flip of every hash in `proof` must be refused by
    /// `verify`.
    fn assert_every_bit_flip_rejected(proof: &[Hash], verify: impl Fn(&[Hash]) -> bool, what: &str) {
        let mut bad = proof.to_vec();
        for h in 0..proof.len() {
            for bit in 0..256 {
                bad[h][bit / 8] ^= 1 << (bit % 8);
                assert!(!verify(&bad), "{what}: flip of bit {bit} of hash {h} accepted");
                bad[h][bit / 8] ^= 1 << (bit % 8);
            }
        }
    }

    #[test]
    fn tampered_inclusion_proofs_are_rejected() {
        // Twice the largest size, so that doubled sizes have roots too.
        let leaves = test_leaves(600);
        let tree = MerkleTree::from_leaf_hashes(leaves.iter().copied());
        let junk = [0xabu8; 32];
        for n in tamper_sizes() {
            let root = tree.root_at(n).unwrap();
            // Bit flips cost 256 verifications per hash, so they run on one
            // index per size, chosen to wander across the tree; the cheaper
            // tampering runs on every index of the small sizes.
            let flip_index = (n * 5 / 7 + n % 3).min(n - 1);
            let indices: Vec<u64> = if n <= 64 { (0..n).collect() } else { vec![0, n / 2, flip_index, n - 1] };
            for i in indices {
                let leaf = leaves[i as usize];
                let proof = tree.inclusion_proof(i, n).unwrap();
                let ok = |p: &[Hash], i: u64, n: u64, root: &Hash| verify_inclusion(&leaf, i, n, p, root).is_ok();
                let what = format!("inclusion {i} in {n}");
                assert!(ok(&proof, i, n, &root), "{what}");
                if i == flip_index {
                    assert_every_bit_flip_rejected(&proof, |p| ok(p, i, n, &root), &what);
                }
                if let Some((_, init)) = proof.split_last() {
                    assert!(!ok(init, i, n, &root), "{what}: last hash dropped");
                    assert!(!ok(&proof[1..], i, n, &root), "{what}: first hash dropped");
                }
                let mut longer = proof.clone();
                longer.push(junk);
                assert!(!ok(&longer, i, n, &root), "{what}: extra hash");
                let mut longer = proof.clone();
                longer.push(root);
                assert!(!ok(&longer, i, n, &root), "{what}: root appended");
                for wrong in [i.wrapping_sub(1), i + 1, i ^ 1, i ^ 2] {
                    if wrong != i && wrong < n && leaves[wrong as usize] != leaf {
                        assert!(!ok(&proof, wrong, n, &root), "{what}: index {wrong}");
                    }
                }
                // A wrong size is checked against that size's own root: a path
                // can legitimately fit two sizes whose trees agree along it
                // (leaf 0 of 5 and of 6 share a path shape), which is harmless
                // because a verifier only ever holds (size, root) pairs that
                // a signed checkpoint binds together.
                for wrong in [n - 1, n + 1, n * 2, n / 2] {
                    if wrong != n {
                        let wrong_root = tree.root_at(wrong).unwrap();
                        assert!(!ok(&proof, i, wrong, &wrong_root), "{what}: size {wrong}");
                    }
                }
                assert!(!ok(&proof, i, n, &junk), "{what}: wrong root");
                assert!(!ok(&proof, i, n, &empty_root()), "{what}: empty root");
                let other_leaf = leaf_hash(b"not in the tree");
                assert!(verify_inclusion(&other_leaf, i, n, &proof, &root).is_err(), "{what}: wrong leaf");
            }
        }
    }

    #[test]
    fn tampered_consistency_proofs_are_rejected() {
        let max = 600;
        let tree = MerkleTree::from_leaf_hashes(test_leaves(max));
        let roots: Vec<Hash> = (0..=max as u64).map(|n| tree.root_at(n).unwrap()).collect();
        let junk = [0xcdu8; 32];
        for n in tamper_sizes() {
            let flip_old = (n * 3 / 5 + n % 4).clamp(1, n);
            let olds: Vec<u64> = if n <= 64 { (1..=n).collect() } else { vec![1, n / 2, flip_old, n - 1, n] };
            for m in olds {
                let proof = tree.consistency_proof(m, n).unwrap();
                let (old_root, new_root) = (roots[m as usize], roots[n as usize]);
                let ok = |p: &[Hash], m: u64, n: u64, a: &Hash, b: &Hash| verify_consistency(m, n, a, b, p).is_ok();
                let what = format!("consistency {m} -> {n}");
                assert!(ok(&proof, m, n, &old_root, &new_root), "{what}");
                if m == flip_old {
                    assert_every_bit_flip_rejected(&proof, |p| ok(p, m, n, &old_root, &new_root), &what);
                }
                if let Some((_, init)) = proof.split_last() {
                    assert!(!ok(init, m, n, &old_root, &new_root), "{what}: last hash dropped");
                    assert!(!ok(&proof[1..], m, n, &old_root, &new_root), "{what}: first hash dropped");
                }
                for extra in [junk, old_root, new_root] {
                    let mut longer = proof.clone();
                    longer.push(extra);
                    assert!(!ok(&longer, m, n, &old_root, &new_root), "{what}: extra hash");
                    let mut longer = vec![extra];
                    longer.extend_from_slice(&proof);
                    assert!(!ok(&longer, m, n, &old_root, &new_root), "{what}: extra leading hash");
                }
                // Wrong sizes are paired with their own roots, as in the
                // inclusion test; size 0 is skipped because the empty tree
                // really is consistent with every tree.
                for wrong in [m - 1, m + 1, m ^ 2] {
                    if wrong != m && wrong != 0 {
                        let wrong_root = roots[wrong as usize];
                        assert!(!ok(&proof, wrong, n, &wrong_root, &new_root), "{what}: old size {wrong}");
                    }
                }
                for wrong in [n - 1, n + 1, n * 2, n / 2] {
                    if wrong != n {
                        let wrong_root = roots[wrong as usize];
                        assert!(!ok(&proof, m, wrong, &old_root, &wrong_root), "{what}: new size {wrong}");
                    }
                }
                if old_root != new_root {
                    assert!(!ok(&proof, m, n, &new_root, &old_root), "{what}: swapped roots");
                }
                assert!(!ok(&proof, m, n, &junk, &new_root), "{what}: wrong old root");
                assert!(!ok(&proof, m, n, &old_root, &junk), "{what}: wrong new root");
                if m < n {
                    assert!(!ok(&[], m, n, &old_root, &new_root), "{what}: empty proof");
                }
            }
        }
    }

    fn shared_tree() -> &'static MerkleTree {
        static TREE: OnceLock<MerkleTree> = OnceLock::new();
        TREE.get_or_init(|| MerkleTree::from_leaf_hashes(test_leaves(2000)))
    }

    proptest! {
        #[test]
        fn random_inclusion_proofs_verify_and_reject_a_bit_flip(
            size in 1u64..=2000,
            index_seed in any::<u64>(),
            bit_seed in any::<usize>(),
        ) {
            let tree = shared_tree();
            let index = index_seed % size;
            let root = tree.root_at(size).unwrap();
            let leaf = tree.leaf(index).unwrap();
            let mut proof = tree.inclusion_proof(index, size).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
            if !proof.is_empty() {
                let bit = bit_seed % (proof.len() * 256);
                proof[bit / 256][(bit % 256) / 8] ^= 1 << (bit % 8);
                prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Err(MerkleError::RootMismatch));
            }
        }

        #[test]
        fn random_consistency_proofs_verify_and_reject_a_bit_flip(
            new_size in 1u64..=2000,
            old_seed in any::<u64>(),
            bit_seed in any::<usize>(),
        ) {
            let tree = shared_tree();
            let old_size = old_seed % (new_size + 1);
            let old_root = tree.root_at(old_size).unwrap();
            let new_root = tree.root_at(new_size).unwrap();
            let mut proof = tree.consistency_proof(old_size, new_size).unwrap();
            prop_assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof), Ok(()));
            if !proof.is_empty() {
                let bit = bit_seed % (proof.len() * 256);
                proof[bit / 256][(bit % 256) / 8] ^= 1 << (bit % 8);
                prop_assert_eq!(
                    verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
                    Err(MerkleError::RootMismatch)
                );
            }
        }
    }

    /// The Certificate Transparency test data used across RFC 6962
    /// implementations, and the published roots for sizes 1..=8.
    const CT_LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_tree() -> MerkleTree {
        let mut tree = MerkleTree::new();
        for data in CT_LEAVES {
            tree.push(&unhex(data));
        }
        tree
    }

    #[test]
    fn certificate_transparency_roots() {
        let tree = ct_tree();
        assert_eq!(tree.root(), hex(CT_ROOTS[7]));
        for (i, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(tree.root_at(i as u64 + 1), Ok(hex(want)), "size {}", i + 1);
        }
        assert_eq!(tree.root_at(0), Ok(hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")));
    }

    #[test]
    fn certificate_transparency_proofs() {
        let tree = ct_tree();
        let h = |list: &[&str]| list.iter().map(|s| hex(s)).collect::<Vec<_>>();
        let inclusion: [(u64, u64, Vec<Hash>); 4] = [
            (
                0,
                8,
                h(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                8,
                h(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (2, 3, h(&["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"])),
            (
                1,
                5,
                h(&[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (index, size, want) in inclusion {
            assert_eq!(tree.inclusion_proof(index, size).as_ref(), Ok(&want), "inclusion {index} in {size}");
            let root = hex(CT_ROOTS[size as usize - 1]);
            let leaf = tree.leaf(index).unwrap();
            assert_eq!(verify_inclusion(&leaf, index, size, &want, &root), Ok(()));
        }
        assert_eq!(tree.inclusion_proof(0, 1), Ok(Vec::new()));

        let consistency: [(u64, u64, Vec<Hash>); 4] = [
            (
                1,
                8,
                h(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                h(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                5,
                h(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
            (
                2,
                8,
                h(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
        ];
        for (old, new, want) in consistency {
            assert_eq!(tree.consistency_proof(old, new).as_ref(), Ok(&want), "consistency {old} -> {new}");
            let old_root = hex(CT_ROOTS[old as usize - 1]);
            let new_root = hex(CT_ROOTS[new as usize - 1]);
            assert_eq!(verify_consistency(old, new, &old_root, &new_root, &want), Ok(()));
        }
    }

    #[test]
    fn hashing_primitives() {
        assert_eq!(empty_root(), hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert_eq!(MerkleTree::new().root(), empty_root());
        assert!(MerkleTree::new().is_empty());
        // Leaf and node hashes are domain-separated: a node over two hashes
        // is not the leaf hash of their concatenation.
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concat = a.to_vec();
        concat.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let empty = MerkleTree::new();
        assert_eq!(empty.root_at(0), Ok(empty_root()));
        assert_eq!(empty.root_at(1), Err(MerkleError::SizeOutOfRange { size: 1, len: 0 }));
        assert_eq!(empty.leaf(0), None);
        assert_eq!(empty.leaf(u64::MAX), None);
        assert_eq!(empty.inclusion_proof(0, 0), Err(MerkleError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(empty.consistency_proof(0, 0), Ok(Vec::new()));

        let tree = ct_tree();
        assert_eq!(tree.root_at(9), Err(MerkleError::SizeOutOfRange { size: 9, len: 8 }));
        assert_eq!(tree.root_at(u64::MAX), Err(MerkleError::SizeOutOfRange { size: u64::MAX, len: 8 }));
        assert_eq!(tree.leaf(8), None);
        assert_eq!(tree.inclusion_proof(8, 8), Err(MerkleError::IndexOutOfRange { index: 8, size: 8 }));
        assert_eq!(tree.inclusion_proof(5, 3), Err(MerkleError::IndexOutOfRange { index: 5, size: 3 }));
        assert_eq!(tree.inclusion_proof(0, 9), Err(MerkleError::SizeOutOfRange { size: 9, len: 8 }));
        assert_eq!(tree.consistency_proof(5, 3), Err(MerkleError::InvalidSizes { old: 5, new: 3 }));
        assert_eq!(tree.consistency_proof(1, 9), Err(MerkleError::SizeOutOfRange { size: 9, len: 8 }));
        assert_eq!(tree.consistency_proof(8, 8), Ok(Vec::new()));
    }

    #[test]
    fn verifier_edge_cases() {
        let tree = ct_tree();
        let root = |n: u64| tree.root_at(n).unwrap();
        let leaf = tree.leaf(0).unwrap();

        assert_eq!(
            verify_inclusion(&leaf, 0, 0, &[], &root(0)),
            Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            verify_inclusion(&leaf, 8, 8, &[], &root(8)),
            Err(MerkleError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &root(1)), Ok(()));
        assert_eq!(
            verify_inclusion(&leaf, 0, 1, &[leaf], &root(1)),
            Err(MerkleError::ProofLength { expected: 0, got: 1 })
        );
        assert_eq!(verify_inclusion(&leaf, 0, 8, &[], &root(8)), Err(MerkleError::ProofLength { expected: 3, got: 0 }));

        assert_eq!(
            verify_consistency(5, 3, &root(5), &root(3), &[]),
            Err(MerkleError::InvalidSizes { old: 5, new: 3 })
        );
        // Equal sizes: empty proof and equal roots, nothing else.
        assert_eq!(verify_consistency(4, 4, &root(4), &root(4), &[]), Ok(()));
        assert_eq!(verify_consistency(4, 4, &root(4), &root(5), &[]), Err(MerkleError::RootMismatch));
        assert_eq!(
            verify_consistency(4, 4, &root(4), &root(4), &[root(4)]),
            Err(MerkleError::ProofLength { expected: 0, got: 1 })
        );
        // Size 0: only an empty proof, and only from the empty root.
        assert_eq!(verify_consistency(0, 8, &empty_root(), &root(8), &[]), Ok(()));
        assert_eq!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]), Ok(()));
        assert_eq!(verify_consistency(0, 0, &empty_root(), &root(1), &[]), Err(MerkleError::RootMismatch));
        assert_eq!(verify_consistency(0, 8, &root(1), &root(8), &[]), Err(MerkleError::RootMismatch));
        assert_eq!(
            verify_consistency(0, 8, &empty_root(), &root(8), &[root(8)]),
            Err(MerkleError::ProofLength { expected: 0, got: 1 })
        );
        assert_eq!(
            verify_consistency(3, 8, &root(3), &root(8), &[]),
            Err(MerkleError::ProofLength { expected: 4, got: 0 })
        );
    }

    #[test]
    fn verifiers_do_not_panic_on_extreme_sizes() {
        let h = [7u8; 32];
        let cases =
            [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX), ((1 << 63) - 1, 1 << 63), (0, 1 << 63)];
        for (index, size) in cases {
            let expected = inclusion_proof_len(index, size);
            assert!(expected <= 128);
            let proof = vec![h; expected];
            assert_eq!(verify_inclusion(&h, index, size, &proof, &h), Err(MerkleError::RootMismatch));
            assert!(verify_inclusion(&h, index, size, &[], &h).is_err());
        }
        let cases =
            [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX), ((1 << 63) - 1, 1 << 63), (3, 1 << 63)];
        for (old, new) in cases {
            let expected = consistency_proof_len(old, new);
            assert!(expected <= 130);
            let proof = vec![h; expected];
            assert_eq!(verify_consistency(old, new, &h, &h, &proof), Err(MerkleError::RootMismatch));
            assert!(verify_consistency(old, new, &h, &h, &[]).is_err());
        }
        assert_eq!(
            verify_consistency(u64::MAX, u64::MAX, &h, &h, &[]),
            Ok(()),
            "equal sizes with equal roots need no proof"
        );
    }

    /// Proofs stay right deep into a large tree (many levels, ragged edges);
    /// speed at a million leaves is measured by `cargo bench`, not here.
    #[test]
    fn large_tree_proofs_verify() {
        let n = 200_000u64;
        let mut tree = MerkleTree::new();
        for i in 0..n {
            tree.push(&i.to_be_bytes());
        }
        for size in (1..=n).step_by(9973) {
            let root = tree.root_at(size).unwrap();
            let index = size / 3;
            let proof = tree.inclusion_proof(index, size).unwrap();
            verify_inclusion(&tree.leaf(index).unwrap(), index, size, &proof, &root).unwrap();
            let proof = tree.consistency_proof(size, n).unwrap();
            verify_consistency(size, n, &root, &tree.root(), &proof).unwrap();
        }
    }
}
