"""A proof that does not verify is refused saying which check failed, at the exact limits.

The verifier reports these words to whoever checks the log, so a refusal must name the check,
the sizes and the hashes involved: an inclusion proof of the wrong length says how long it
should be, a consistency proof that binds the wrong old root says it is root1 and shows both.
These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.collateral.tlog import (
    EMPTY_ROOT,
    Frontier,
    HashReader,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(b"movement %d" % i) for i in range(8)]
OTHER = leaf_hash(b"another movement")


def _reader(size: int) -> HashReader:
    """The stored hashes of the tree of the first ``size`` leaves, as a server keeps them."""
    stored = {(level, index): h for level, index, h in Frontier().extend(LEAVES[:size])}

    def read(pairs: Sequence[tuple[int, int]]) -> list[bytes]:
        return [stored[pair] for pair in pairs]

    return read


def _mismatch(what: str, computed: bytes, expected: bytes) -> str:
    return f"^{what} mismatch: computed {computed.hex()}, expected {expected.hex()}$"


def test_a_proof_is_built_only_inside_the_tree() -> None:
    with pytest.raises(ValueError, match=r"^leaf index 5 is not in a tree of size 5$"):
        inclusion_proof(5, 5, _reader(5))
    with pytest.raises(ValueError, match=r"^no consistency proof from size 0 to size 3$"):
        consistency_proof(0, 3, _reader(3))
    with pytest.raises(ValueError, match=r"^no consistency proof from size 4 to size 3$"):
        consistency_proof(4, 3, _reader(4))


def test_a_proof_that_needs_no_stored_hash_reads_none() -> None:
    asked: list[Sequence[tuple[int, int]]] = []

    def read(pairs: Sequence[tuple[int, int]]) -> list[bytes]:
        asked.append(pairs)  # a reader may fetch tiles over the network for each call
        return []

    assert inclusion_proof(0, 1, read) == []
    assert asked == []


def test_a_leaf_index_must_lie_inside_the_tree() -> None:
    proof = inclusion_proof(3, 4, _reader(4))
    assert root_from_inclusion(3, 4, LEAVES[3], proof) == root_of(LEAVES[:4])
    with pytest.raises(ProofError, match=r"^leaf index 4 is not in a tree of size 4$"):
        root_from_inclusion(4, 4, LEAVES[3], proof)
    with pytest.raises(ProofError, match=r"^leaf index -1 is not in a tree of size 4$"):
        root_from_inclusion(-1, 4, LEAVES[3], proof)


def test_an_inclusion_proof_with_a_wrong_hash_or_length_is_refused_saying_which() -> None:
    proof = inclusion_proof(4, 6, _reader(6))  # one hash below the border, one on it
    assert len(proof) == 2
    with pytest.raises(ProofError, match=r"^leaf hash is 31 bytes, not 32$"):
        root_from_inclusion(4, 6, LEAVES[4][:31], proof)
    with pytest.raises(ProofError, match=r"^inclusion proof has 3 hashes, expected 2$"):
        root_from_inclusion(4, 6, LEAVES[4], [*proof, OTHER])
    with pytest.raises(ProofError, match=r"^proof\[1\] is 31 bytes, not 32$"):
        root_from_inclusion(4, 6, LEAVES[4], [proof[0], proof[1][:31]])


def test_an_inclusion_proof_under_another_root_shows_both_roots() -> None:
    proof = inclusion_proof(2, 5, _reader(5))
    computed = root_of(LEAVES[:5])
    with pytest.raises(ProofError, match=_mismatch("root", computed, EMPTY_ROOT)):
        verify_inclusion(2, 5, LEAVES[2], proof, EMPTY_ROOT)


def test_consistency_is_defined_from_size_1_up_to_a_size_not_smaller() -> None:
    root1 = root_of(LEAVES[:1])
    verify_consistency(1, 1, [], root1, root1)
    with pytest.raises(ProofError, match=r"^consistency from size 0 is not defined$"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match=r"^consistency from size -1 is not defined$"):
        verify_consistency(-1, 1, [OTHER], EMPTY_ROOT, root1)
    with pytest.raises(ProofError, match=r"^size2 \(3\) is smaller than size1 \(4\)$"):
        verify_consistency(4, 3, [OTHER], root_of(LEAVES[:4]), root_of(LEAVES[:3]))


def test_consistency_between_equal_sizes_needs_no_proof_and_equal_roots() -> None:
    root4, root5 = root_of(LEAVES[:4]), root_of(LEAVES[:5])
    with pytest.raises(ProofError, match=r"^sizes are equal but the proof has 1 hashes$"):
        verify_consistency(4, 4, [OTHER], root4, root4)
    with pytest.raises(ProofError, match=_mismatch("root", root4, root5)):
        verify_consistency(4, 4, [], root4, root5)


def test_a_consistency_proof_with_a_wrong_hash_or_length_is_refused_saying_which() -> None:
    root5, root7 = root_of(LEAVES[:5]), root_of(LEAVES[:7])
    proof = consistency_proof(5, 7, _reader(7))
    assert len(proof) == 4
    verify_consistency(5, 7, proof, root5, root7)
    with pytest.raises(ProofError, match=r"^empty consistency proof for different sizes$"):
        verify_consistency(5, 7, [], root5, root7)
    with pytest.raises(ProofError, match=r"^proof\[2\] is 3 bytes, not 32$"):
        verify_consistency(5, 7, [*proof[:2], b"abc", proof[3]], root5, root7)
    with pytest.raises(ProofError, match=r"^consistency proof has 5 hashes, expected 4$"):
        verify_consistency(5, 7, [*proof, OTHER], root5, root7)
    with pytest.raises(ProofError, match=r"^consistency proof has 3 hashes, expected 4$"):
        verify_consistency(5, 7, proof[:3], root5, root7)


def test_a_consistency_proof_from_a_complete_tree_leaves_root1_out() -> None:
    root4, root7 = root_of(LEAVES[:4]), root_of(LEAVES[:7])
    proof = consistency_proof(4, 7, _reader(7))
    verify_consistency(4, 7, proof, root4, root7)
    assert proof == [root_of(LEAVES[4:7])]
    with pytest.raises(ProofError, match=r"^consistency proof has 2 hashes, expected 1$"):
        verify_consistency(4, 7, [*proof, OTHER], root4, root7)


def test_a_consistency_proof_that_binds_other_roots_shows_which_and_both_hashes() -> None:
    root5, root7 = root_of(LEAVES[:5]), root_of(LEAVES[:7])
    proof = consistency_proof(5, 7, _reader(7))
    with pytest.raises(ProofError, match=_mismatch("root1", root5, EMPTY_ROOT)):
        verify_consistency(5, 7, proof, EMPTY_ROOT, root7)
    with pytest.raises(ProofError, match=_mismatch("root2", root7, EMPTY_ROOT)):
        verify_consistency(5, 7, proof, root5, EMPTY_ROOT)
