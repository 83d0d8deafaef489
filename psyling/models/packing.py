"""Forward-pass plans: which tokens go into which row of which batch.

Two plans, the same contract. ``padded_plan`` puts one sequence per row (length-sorted, right or left padding):
the reference path. ``packed_plan`` merges all sequences into a prefix trie, so a prefix shared by several
sequences (the context token, a prime, the words before a minimal pair's difference) is computed once, and packs
subtrees of the trie into rows with a tree attention mask: a token attends to itself and its ancestors only, and
its position id is its depth. Each plan's batches respect a token budget (rows x padded width)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Row:
    """One row of a batch: tokens, position ids, parent index within the row (-1: a root) and, for each
    sequence placed here, the row indices of its tokens in order (``paths[i]`` for sequence i)."""
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    paths: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestor_mask(self, width: int) -> np.ndarray:
        """[width, width] boolean: row j may attend to column k (k is j or an ancestor of j). Padding attends
        to itself only, so no attention row is empty."""
        mask = np.zeros((width, width), dtype=bool)
        for j, parent in enumerate(self.parents):
            if parent >= 0:
                mask[j] = mask[parent]
            mask[j, j] = True
        for j in range(len(self.parents), width):
            mask[j, j] = True
        return mask


@dataclass
class Batch:
    """Rows computed in one forward pass; ``tree`` says whether they need the tree mask (packed rows)."""
    rows: list[Row]
    tree: bool

    @property
    def width(self) -> int:
        return max(len(r) for r in self.rows)

    @property
    def order(self) -> list[int]:
        """The sequences placed in this batch, row by row: the order of its outputs."""
        return [i for row in self.rows for i in sorted(row.paths)]

    @property
    def n_tokens(self) -> int:
        """Tokens actually computed (padding excluded)."""
        return sum(len(r) for r in self.rows)

    def digest(self) -> str:
        """A content address of the computation: tokens, positions and structure of every row, in order."""
        h = hashlib.sha256(b"tree" if self.tree else b"padded")
        for row in self.rows:
            h.update(np.asarray(row.tokens, dtype=np.int64).tobytes() + b"|")
            h.update(np.asarray(row.parents, dtype=np.int64).tobytes() + b"|")
            for i in sorted(row.paths):
                h.update(np.asarray(row.paths[i], dtype=np.int64).tobytes() + b";")
        return h.hexdigest()


def _batches(rows: list[Row], max_tokens: int, max_rows: Optional[int], tree: bool) -> list[Batch]:
    """Consecutive rows (longest first) while rows x width stays within the budget."""
    rows = sorted(rows, key=len, reverse=True)
    batches: list[Batch] = []
    current: list[Row] = []
    for row in rows:
        width = len(current[0]) if current else len(row)
        if current and ((len(current) + 1) * width > max_tokens or (max_rows and len(current) >= max_rows)):
            batches.append(Batch(current, tree))
            current = []
        current.append(row)
    if current:
        batches.append(Batch(current, tree))
    return batches


def padded_plan(seqs: list[list[int]], max_tokens: int, max_rows: Optional[int] = None) -> list[Batch]:
    """One sequence per row, length-sorted; at most ``max_rows`` rows and ``max_tokens`` padded tokens per batch
    (a single longer sequence still gets its own batch)."""
    rows = [Row(list(s), list(range(len(s))), list(range(-1, len(s) - 1)), {i: list(range(len(s)))})
            for i, s in enumerate(seqs)]
    return _batches(rows, max_tokens, max_rows, tree=False)


class _Trie:
    """Prefix trie over token sequences; node 0 is a virtual root above every sequence's first token."""

    def __init__(self, seqs: list[list[int]]) -> None:
        self.token, self.parent, self.depth = [-1], [-1], [-1]
        self.children: list[dict[int, int]] = [{}]
        self.ending: list[list[int]] = [[]]  # sequences that end at each node
        for i, seq in enumerate(seqs):
            node = 0
            for tok in seq:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.token)
                    self.children[node][tok] = nxt
                    self.token.append(tok)
                    self.parent.append(node)
                    self.depth.append(self.depth[node] + 1)
                    self.children.append({})
                    self.ending.append([])
                node = nxt
            self.ending[node].append(i)
        self.size = [1] * len(self.token)  # nodes in each subtree; children always have larger ids
        for node in range(len(self.token) - 1, 0, -1):
            self.size[self.parent[node]] += self.size[node]

    def units(self, capacity: int) -> list[tuple[list[int], int, list[tuple[int, int]]]]:
        """Split the trie into units (anchor path, subtree root, extra (sequence, end node) pairs) of at most
        ``capacity`` tokens where possible: a subtree too large is split at its children, its own path repeated
        in each, and the sequences that end at a split node ride along with its first child."""
        out: list[tuple[list[int], int, list[tuple[int, int]]]] = []
        stack: list[tuple[list[int], int, list[tuple[int, int]]]] = [
            ([], child, []) for child in self.children[0].values()]
        while stack:
            anchor, node, inherited = stack.pop()
            kids = list(self.children[node].values())
            if len(anchor) + self.size[node] <= capacity or not kids:
                out.append((anchor, node, inherited))
                continue
            ends = inherited + [(seq, node) for seq in self.ending[node]]
            for k, child in enumerate(kids):
                stack.append((anchor + [node], child, ends if k == 0 else []))
        return out


def packed_plan(seqs: list[list[int]], row_tokens: int, max_tokens: int) -> list[Batch]:
    """Shared prefixes computed once: trie subtrees packed into rows of about ``row_tokens`` tokens (first-fit
    decreasing), rows batched under ``max_tokens``."""
    trie = _Trie(seqs)
    units = trie.units(row_tokens)
    units.sort(key=lambda u: -(len(u[0]) + trie.size[u[1]]))
    rows: list[Row] = []
    for anchor, root, inherited in units:
        cost = len(anchor) + trie.size[root]
        row = next((r for r in rows[-64:] if len(r) + cost <= row_tokens), None)
        if row is None:
            row = Row()
            rows.append(row)
        _place(row, trie, anchor, root, inherited)
    return _batches(rows, max_tokens, None, tree=True)


def _place(row: Row, trie: _Trie, anchor: list[int], root: int, inherited: list[tuple[int, int]]) -> None:
    """Lay a unit out in the row: its anchor path, then its subtree depth-first; record each sequence's path."""
    where: dict[int, int] = {}
    parent_index = -1
    for node in anchor:
        where[node] = len(row.tokens)
        row.tokens.append(trie.token[node])
        row.positions.append(trie.depth[node])
        row.parents.append(parent_index)
        parent_index = where[node]
    stack = [root]
    while stack:
        node = stack.pop()
        where[node] = len(row.tokens)
        row.tokens.append(trie.token[node])
        row.positions.append(trie.depth[node])
        row.parents.append(where.get(trie.parent[node], -1))
        stack.extend(reversed(list(trie.children[node].values())))
        for seq in trie.ending[node]:
            row.paths[seq] = _path(trie, where, node)
    for seq, end in inherited:  # they end on the anchor path
        row.paths[seq] = _path(trie, where, end)


def _path(trie: _Trie, where: dict[int, int], node: int) -> list[int]:
    """Row indices of the tokens from the trie root down to ``node``."""
    path = []
    while node != 0:
        path.append(where[node])
        node = trie.parent[node]
    return path[::-1]
