"""Exact and near deduplication, keeping the copy with the best provenance.

Exact: records with the same `KernelRecord.id` (sha256 of `scraper.records.normalize_source`: comments and
whitespace folded, Inductor's kernel numbers folded) are one kernel.

Near: MinHash signatures over 5-token shingles, candidate pairs from datasketch's `MinHashLSH` (banding tuned by
datasketch for the threshold), each candidate pair confirmed by its estimated Jaccard similarity, clusters as
connected components. Signatures use one-permutation hashing with rotation densification (Li, Owen & Zhang 2012;
Shrivastava & Li 2014) computed with numpy over all documents at once: one 64-bit hash per shingle instead of
one per shingle and permutation. Classic 128-permutation MinHash measured ~80 s for 50,000 kernels here, this
~1 s. The similarity it estimates is the same Jaccard similarity of shingle sets.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
from datasketch import MinHashLSH

from scraper.dataset.item import Item
from scraper.records import KernelRecord

log = logging.getLogger(__name__)

NUM_PERM = 128  # bins of the signature; a power of two (the low bits of a shingle hash pick the bin)
SHINGLE = 5  # tokens per shingle, as BigCode's near-dedup uses 5-grams
DEFAULT_THRESHOLD = 0.85
MAX_BANDING_THRESHOLD = 0.9

# Near-dedup only needs a rough normal form, so regexes instead of the slower `tokenize` of normalize_source.
_COMMENT = re.compile(r"#[^\n]*")
_INDUCTOR_NUMBER = re.compile(r"\b(triton_[A-Za-z0-9_]*?)_\d+\b")
# Python's tokens, closely enough: strings (triple-quoted first), names, numbers, multi-character operators.
_TOKEN = re.compile("|".join([
    r'"""[\s\S]*?"""', r"'''[\s\S]*?'''",  # strings are one token each, as for Python
    r'"(?:[^"\\\n]|\\.)*"', r"'(?:[^'\\\n]|\\.)*'",
    r"[A-Za-z_][A-Za-z0-9_]*",
    r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[jJ]?",
    r"\*\*=?|//=?|>>=?|<<=?|->|[-+*/%&|^<>=!:@]=",
    r"[^\sA-Za-z0-9_]",
]))
_BIN_BITS = np.uint64(7)  # log2(NUM_PERM): the low 7 bits of a shingle hash pick its bin, the rest is its value
_VALUE_BITS = np.uint64(57)  # densification adds distance << 57 (distance < 128, so no overflow)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class Signature:
    """A MinHash signature as datasketch's MinHashLSH wants it: `hashvalues` and a length."""

    hashvalues: np.ndarray

    def __len__(self) -> int:
        return len(self.hashvalues)


@dataclass
class DedupResult:
    """What a dedup step kept, what it dropped (item, the kept id it duplicates) and the cluster sizes."""

    kept: list  # Items
    dropped: list  # (Item, duplicate_of id)
    cluster_sizes: Counter  # size -> number of clusters of that size (size 1 = unique)


UNKNOWN_LICENSES = {"", "NOASSERTION", "NONE", "OTHER"}  # GitHub reports unrecognised licenses as NOASSERTION


def license_known(record: KernelRecord) -> bool:
    """True when the record names an actual SPDX license."""
    return str(record.license or "").upper() not in UNKNOWN_LICENSES


def provenance_rank(record: KernelRecord) -> tuple:
    """Sort key, best copy first: license known, more stars, then a deterministic tie-break."""
    stars = record.stars if isinstance(record.stars, int) else 0
    tie_break = (record.source, record.repo, record.path, record.model, record.graph, record.name, record.id)
    return (not license_known(record), -stars) + tuple(str(value or "") for value in tie_break)


def _resolve_clusters(items: list[Item], clusters: Iterable[list]) -> DedupResult:
    """Keep the best-ranked item of each cluster (lists of indices into `items`), in input order; the kept one's
    cluster size grows by the sizes of those it stands for."""
    keep_flags = [False] * len(items)
    dropped, sizes = [], Counter()
    for members in clusters:
        best = min(members, key=lambda i: provenance_rank(items[i].record))
        keep_flags[best] = True
        sizes[len(members)] += 1
        items[best].cluster_size += sum(items[i].cluster_size for i in members if i != best)
        dropped += [(items[i], items[best].record.id) for i in members if i != best]
    kept = [item for item, flag in zip(items, keep_flags) if flag]
    return DedupResult(kept, dropped, sizes)


def exact_dedup(items: list[Item]) -> DedupResult:
    """Collapse items whose records have equal ids."""
    groups: dict[str, list] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.record.id].append(index)
    return _resolve_clusters(items, groups.values())


# ------------------------------------------------------------------------------------------------ signatures


def shingle_tokens(code: str) -> list:
    """Tokens of `code` for shingling (close to Python's): comments dropped, Inductor numbers folded."""
    text = _INDUCTOR_NUMBER.sub(r"\1_N", _COMMENT.sub("", code))
    return _TOKEN.findall(text)


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole 64-bit word (uint64 arrays, wrapping)."""
    values = values.copy()
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


class _TokenHasher:
    """crc32 of each distinct token, cached: deterministic across runs and processes (unlike `hash`)."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def __call__(self, tokens: list) -> list:
        cache = self.cache
        try:
            return list(map(cache.__getitem__, tokens))
        except KeyError:
            for token in set(tokens).difference(cache):
                cache[token] = zlib.crc32(token.encode("utf-8"))
            return list(map(cache.__getitem__, tokens))


def _shingle_hashes(token_hashes: np.ndarray) -> np.ndarray:
    """64-bit hash of every window of SHINGLE tokens (the whole text as one shingle when shorter)."""
    width = min(SHINGLE, len(token_hashes))
    count = len(token_hashes) - width + 1
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(width):
        combined = combined * np.uint64(0x100000001B3) + token_hashes[offset:offset + count]
    return _mix64(combined)


def signatures(codes: list) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (n x NUM_PERM uint64) of `codes` and a mask of the codes that had any token."""
    num_perm = NUM_PERM
    hasher = _TokenHasher()
    parts, owners = [], []
    for index, code in enumerate(codes):
        tokens = hasher(shingle_tokens(code))
        if tokens:
            hashed = _shingle_hashes(np.asarray(tokens, dtype=np.uint64))
            parts.append(hashed)
            owners.append(np.full(len(hashed), index, dtype=np.int64))
    has_tokens = np.zeros(len(codes), dtype=bool)
    table = np.full((len(codes), num_perm), _EMPTY, dtype=np.uint64)
    if parts:
        hashes, owner = np.concatenate(parts), np.concatenate(owners)
        has_tokens[np.unique(owner)] = True
        bins = (hashes & np.uint64(num_perm - 1)).astype(np.int64)
        np.minimum.at(table.reshape(-1), owner * num_perm + bins, hashes >> _BIN_BITS)
    return _densify(table, has_tokens), has_tokens


def _densify(table: np.ndarray, has_tokens: np.ndarray) -> np.ndarray:
    """Fill empty bins from the next non-empty bin to the right (circular), offset by the distance, so that two
    documents agree on a filled bin exactly when they agree on its source bin (rotation densification)."""
    filled = table.copy()
    rows = np.flatnonzero(has_tokens & (table == _EMPTY).any(axis=1))
    source = table[rows]
    result = filled[rows]
    for distance in range(1, table.shape[1]):
        empty = result == _EMPTY
        if not empty.any():
            break
        shifted = np.roll(source, -distance, axis=1)
        take = empty & (shifted != _EMPTY)
        result[take] = shifted[take] + (np.uint64(distance) << _VALUE_BITS)
    filled[rows] = result
    return filled


def estimated_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Share of equal signature entries: the MinHash estimate of the Jaccard similarity."""
    return float(np.count_nonzero(first == second)) / len(first)


# --------------------------------------------------------------------------------------------------- clusters


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, first: int, second: int) -> None:
        self.parent[self.find(first)] = self.find(second)


def build_lsh(table: np.ndarray, rows: Iterable[int], threshold: float) -> MinHashLSH:
    """A datasketch MinHashLSH holding the signatures `table[row]` under the key `row`."""
    # datasketch cannot band for thresholds near 1 (fewer than 2 bands); a lower banding threshold only finds more
    # candidates, and every candidate is confirmed against the real threshold afterwards.
    lsh = MinHashLSH(threshold=min(threshold, MAX_BANDING_THRESHOLD), num_perm=table.shape[1])
    with lsh.insertion_session() as session:
        for row in rows:
            session.insert(int(row), Signature(table[row]), check_duplication=False)
    return lsh


def link_similar(table: np.ndarray, usable: np.ndarray, threshold: float, forest: "_UnionFind",
                 progress: Optional[Callable] = None) -> int:
    """Union every LSH candidate whose estimated Jaccard with its bucket's first member reaches `threshold`.

    Walking the band buckets (instead of one `query` per document) keeps the work linear when a kernel has
    thousands of near copies. Returns the number of confirmed links."""
    lsh = build_lsh(table, np.flatnonzero(usable), threshold)
    links = 0
    for hashtable in (progress(lsh.hashtables) if progress else lsh.hashtables):
        for band_key in hashtable.keys():
            members = hashtable.get(band_key)
            if len(members) < 2:
                continue
            members = sorted(members)
            first, others = members[0], np.asarray(members[1:])
            agreement = np.count_nonzero(table[others] == table[first], axis=1) / table.shape[1]
            for other in others[agreement >= threshold]:
                forest.union(int(other), first)
                links += 1
    return links


def near_dedup(items: list[Item], threshold: float = DEFAULT_THRESHOLD,
               progress: Optional[Callable] = None) -> DedupResult:
    """Collapse clusters of items whose code's shingle sets are at least `threshold` similar (Jaccard)."""
    table, usable = signatures([item.record.code for item in items])
    forest = _UnionFind(len(items))
    link_similar(table, usable, threshold, forest, progress)
    clusters: dict[int, list] = defaultdict(list)
    for index in range(len(items)):
        clusters[forest.find(index)].append(index)
    return _resolve_clusters(items, clusters.values())
