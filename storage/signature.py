"""Near-duplicate signatures: MinHash over word shingles, banded for an index (LSH).

Pure functions, no database: the repository stores `minhash(body)` with each
article and one `band_hashes` row per band in ``article_bands``. Two bodies
whose shingle sets have Jaccard similarity J share at least one band with
probability ``1 - (1 - J**ROWS)**BANDS`` (J = 0.8 → 99.8 %, J = 0.3 → 1.4 %,
J = 0.1 → 0.002 %), so candidates are found by an indexed lookup of BANDS
keys, whatever the size of the table; `similarity` then estimates J from the
full signatures and the repository confirms it against a threshold.

Shingles are SHINGLE consecutive words of the normalized body (Unicode NFKC,
case-folded, punctuation dropped: the same words `content_hash` sees), hashed
with CRC-32; the NUM_PERM permutations are ``(a * x + b) mod P`` with fixed
coefficients, so signatures are stable across processes, machines and
versions of Python. Changing any constant here invalidates stored signatures.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib

import numpy as np

__all__ = ["BANDS", "NUM_PERM", "ROWS", "SHINGLE", "band_hashes", "minhash", "shingles", "similarity"]

SHINGLE = 5
BANDS = 20
ROWS = 6
NUM_PERM = BANDS * ROWS
_PRIME = np.uint64(4294967311)  # the first prime above 2**32: a * x stays below 2**64
_MASK = np.uint64(0xFFFFFFFF)
_rng = np.random.RandomState(20250301)
_A = _rng.randint(1, 2**32 - 1, size=NUM_PERM, dtype=np.uint64)
_B = _rng.randint(0, 2**32 - 1, size=NUM_PERM, dtype=np.uint64)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_EMPTY = np.full(NUM_PERM, 0xFFFFFFFF, dtype=np.uint32)


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """The set of `size`-word shingles of the normalized text (one shingle if it is shorter)."""
    words = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def minhash(text: str) -> bytes:
    """The MinHash signature of a text: NUM_PERM little-endian uint32 values (4 * NUM_PERM bytes)."""
    grams = shingles(text)
    if not grams:
        return _EMPTY.tobytes()
    x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
    hashed = ((np.outer(x, _A) + _B) % _PRIME) & _MASK  # (shingles, NUM_PERM); < 2**64, no overflow
    return hashed.min(axis=0).astype("<u4").tobytes()


def _values(signature: bytes) -> np.ndarray:
    values = np.frombuffer(signature, dtype="<u4")
    if values.size != NUM_PERM:
        raise ValueError(f"a signature has {NUM_PERM} values, not {values.size}")
    return values


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures (0..1)."""
    return float(np.count_nonzero(_values(a) == _values(b))) / NUM_PERM


def band_hashes(signature: bytes) -> list[int]:
    """One signed 64-bit key per band (index = band number), for the ``article_bands`` index."""
    raw = _values(signature).tobytes()
    width = ROWS * 4
    return [int.from_bytes(hashlib.blake2b(raw[i * width:(i + 1) * width], digest_size=8).digest(), "little",
                           signed=True) for i in range(BANDS)]
