//! The Merkle tree of RFC 9162 (Certificate Transparency v2; the same tree as
//! RFC 6962 §2.1): leaf hash `SHA-256(0x00 || leaf)`, interior node
//! `SHA-256(0x01 || left || right)`, the empty tree `SHA-256("")`, a tree of `n`
//! leaves split at the largest power of two smaller than `n`. Inclusion and
//! consistency proofs follow §2.1.3 and §2.1.4, their verification the RFC's
//! algorithms. [`Frontier`] keeps an append-only tree's right edge in O(log n).
//! No I/O.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::CryptoError;

/// A 32-byte SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two smaller than `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The Merkle tree hash of these leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

fn subtree_root(leaves: &[Hash]) -> Hash {
    root(leaves)
}

fn invalid(reason: &str) -> CryptoError {
    CryptoError::InvalidArgument {
        what: "merkle proof",
        reason: reason.into(),
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Result<Vec<Hash>, CryptoError> {
    if index >= leaves.len() {
        return Err(invalid("leaf index outside the tree"));
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m) = (0usize, leaves.len(), index);
    // Walk down from the root, collecting siblings; the RFC lists them bottom-up.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            proof.push(subtree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            proof.push(subtree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

fn ct_eq(a: &Hash, b: &Hash) -> bool {
    bool::from(a.ct_eq(b))
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), CryptoError> {
    if index >= tree_size {
        return Err(invalid("leaf index outside the tree"));
    }
    let (mut f_n, mut s_n) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(invalid("proof too long"));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && ct_eq(&r, root) {
        Ok(())
    } else {
        Err(invalid("inclusion proof does not verify"))
    }
}

/// The consistency proof between the tree of the first `old_size` leaves and the
/// tree of all `leaves` (RFC 9162 §2.1.4.1).
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Result<Vec<Hash>, CryptoError> {
    if old_size == 0 || old_size > leaves.len() {
        return Err(invalid("old size must be between 1 and the tree size"));
    }
    let mut proof = Vec::new();
    subproof(old_size, leaves, true, &mut proof);
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(subtree_root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), CryptoError> {
    if old_size == 0 || old_size > new_size {
        return Err(invalid("old size must be between 1 and the new size"));
    }
    if old_size == new_size {
        return if proof.is_empty() && ct_eq(old_root, new_root) {
            Ok(())
        } else {
            Err(invalid("consistency proof does not verify"))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(invalid("empty consistency proof"));
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(invalid("proof too long"));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && ct_eq(&f_r, old_root) && ct_eq(&s_r, new_root) {
        Ok(())
    } else {
        Err(invalid("consistency proof does not verify"))
    }
}

/// The right edge of an append-only tree: the roots of its perfect subtrees, left
/// to right, so the root after each append costs O(log n) memory and time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first; one per set bit of
    /// `size`.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// A frontier from its size and subtree roots (as [`Frontier::hashes`] gave).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, CryptoError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(invalid("frontier does not match its size"));
        }
        Ok(Frontier { size, hashes })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, left to right.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Merge equal-sized subtrees: one per trailing set bit of the old size.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.hashes.pop().unwrap_or_default();
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.hashes.push(node);
        self.size += 1;
    }

    /// The tree's root.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(hex_text: &str) -> Hash {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    /// The reference tree of RFC 6962's reference implementation
    /// (certificate-transparency `merkle_tree_test.cc`, reproduced in Trillian and
    /// transparency-dev): inputs, roots for sizes 1..=8, and proofs. Facts.
    const INPUTS: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        INPUTS.iter().map(|i| leaf_hash(i)).collect()
    }

    #[test]
    fn roots_match_the_reference_tree() {
        assert_eq!(
            root(&[]),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let leaves = leaves();
        for (n, expected) in ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..=n]), h(expected), "size {}", n + 1);
        }
    }

    #[test]
    fn proofs_match_the_reference_vectors() {
        let leaves = leaves();
        let inclusion: [(usize, usize, &[&str]); 2] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, expected) in inclusion {
            let proof = inclusion_proof(&leaves[..size], index).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|e| h(e)).collect();
            assert_eq!(proof, expected, "inclusion {index} in {size}");
            verify_inclusion(
                &leaves[index],
                index as u64,
                size as u64,
                &proof,
                &h(ROOTS[size - 1]),
            )
            .unwrap();
        }
        let consistency: [(usize, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, expected) in consistency {
            let proof = consistency_proof(&leaves[..new], old).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|e| h(e)).collect();
            assert_eq!(proof, expected, "consistency {old} -> {new}");
            verify_consistency(
                old as u64,
                new as u64,
                &h(ROOTS[old - 1]),
                &h(ROOTS[new - 1]),
                &proof,
            )
            .unwrap();
        }
    }

    #[test]
    fn the_frontier_gives_every_root_and_survives_a_round_trip() {
        let all: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), root(&[]));
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(
                frontier.root(),
                root_by_definition(&all[..=i]),
                "size {}",
                i + 1
            );
            let copy = Frontier::from_parts(frontier.size(), frontier.hashes().to_vec()).unwrap();
            assert_eq!(copy, frontier);
        }
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_err());
    }

    /// The RFC's recursive definition, literally.
    fn root_by_definition(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(
                    &root_by_definition(&leaves[..k]),
                    &root_by_definition(&leaves[k..]),
                )
            }
        }
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_tampering_fails(size in 1usize..150, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let leaves: Vec<Hash> = (0..size as u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let index = pick.index(size);
            let tree_root = root(&leaves);
            let proof = inclusion_proof(&leaves, index).unwrap();
            prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &tree_root).is_ok());
            let other = leaf_hash(b"not in the tree");
            prop_assert!(verify_inclusion(&other, index as u64, size as u64, &proof, &tree_root).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = flip.index(bad.len());
                bad[at][0] ^= 1;
                prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &bad, &tree_root).is_err());
            }
            if size > 1 {
                let wrong = (index + 1) % size;
                prop_assert!(verify_inclusion(&leaves[index], wrong as u64, size as u64, &proof, &tree_root).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_tampering_fails(new in 1usize..150, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let leaves: Vec<Hash> = (0..new as u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let old = pick.index(new) + 1;
            let (old_root, new_root) = (root(&leaves[..old]), root(&leaves));
            let proof = consistency_proof(&leaves, old).unwrap();
            prop_assert!(verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof).is_ok());
            let mut changed = leaves.clone();
            changed[pick.index(old)] = leaf_hash(b"rewritten history");
            prop_assert!(verify_consistency(old as u64, new as u64, &root(&changed[..old]), &new_root, &proof).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = flip.index(bad.len());
                bad[at][31] ^= 0x80;
                prop_assert!(verify_consistency(old as u64, new as u64, &old_root, &new_root, &bad).is_err());
            }
        }
    }
}
