"""An item's patching sequences and how the positions of its clean and corrupted contexts align.

Each item gives four sequences: the clean and the corrupted context, each followed by the good and the bad
continuation, tokenized exactly as scoring tokenizes them (``CausalScorer.encode``) and cut after the critical
region. Positions are sequence positions (0 = the context token). Regions align between the two contexts
(same continuation): identical token ids token by token ("identical"), equal token counts token by token
("same-length"), otherwise ("unequal") on the region's last token by default (``unequal`` "first", or "skip").
The context token (and any prefix) forms the pseudo-region ``<context>``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import pandas as pd

from ..errors import PsylingError
from ..measures.alignment import align
from ..models.scorer import ScoreRequest
from ..models.scoring import CausalScorer, Encoded
from ..stimuli.schema import Condition, Item, StimulusSet
from .pairs import Pair

CONTEXTS = ("clean", "corrupt")
CONTINUATIONS = ("good", "bad")
CONTEXT_REGION = "<context>"
ALIGNMENT_COLUMNS = ["set", "item", "clean", "corrupt", "continuation", "region", "mode", "n_clean", "n_corrupt",
                     "clean_tokens", "corrupt_tokens", "aligned", "note"]
Key = tuple[str, str]  # (context, continuation)


@dataclass(frozen=True)
class RegionPositions:
    """A region's sequence positions in the clean and the corrupted context (one continuation)."""
    region: str
    clean: tuple[int, ...]
    corrupt: tuple[int, ...]
    mode: str  # identical | same-length | unequal

    def select(self, token: Union[str, int], unequal: str) -> Optional[list[tuple[int, int]]]:
        """(clean, corrupt) position pairs for a token choice; None where it cannot be aligned."""
        if not self.clean or not self.corrupt:
            return None
        if token == "all":
            if self.mode != "unequal":
                return list(zip(self.clean, self.corrupt))
            return None if unequal == "skip" else self.select(unequal, unequal)
        k = {"first": 0, "last": -1}.get(token, token)
        if not (-len(self.clean) <= k < len(self.clean) and -len(self.corrupt) <= k < len(self.corrupt)):
            return None
        return [(self.clean[k], self.corrupt[k])]


@dataclass
class ItemSequences:
    """One item's sequences under a pair: ``encoded[(context, continuation)]``, the critical region's text
    tokens ``critical[key]`` (a range), the region positions per continuation, and the first position where
    the two contexts differ. ``problem`` says why the item cannot be patched (the rest is then empty)."""
    item: str
    pair: Pair
    encoded: dict[Key, Encoded] = field(default_factory=dict)
    critical: dict[Key, range] = field(default_factory=dict)
    words: dict[Key, list[int]] = field(default_factory=dict)  # word index of each text token
    requests: dict[Key, ScoreRequest] = field(default_factory=dict)
    regions: dict[str, list[RegionPositions]] = field(default_factory=dict)
    divergence: int = 0
    problem: Optional[str] = None

    def positions(self, continuation: str, region: str, token: Union[str, int],
                  unequal: str) -> Optional[list[tuple[int, int]]]:
        """(clean, corrupt) position pairs of a region ("all": every region) for one continuation."""
        chosen = self.regions[continuation]
        if region != "all":
            match = [r for r in chosen if r.region == region]
            return match[0].select(token, unequal) if match else None
        pairs = [r.select("all", unequal) for r in chosen]
        return [p for part in pairs if part for p in part] or None


def truncated(stim: StimulusSet, context: Condition, continuation: Condition, critical: int) -> Condition:
    """The context's regions up to the critical one, then the continuation's critical region; nothing after."""
    regions = context.regions[:critical] + (continuation.regions[critical],) + ("",) * (
        len(stim.regions) - critical - 1)
    return Condition(context.name, regions, context.prefix, context.separator, context.attached)


def _encode(stim: StimulusSet, item: Item, pair: Pair, scorer: CausalScorer,
            seqs: ItemSequences) -> dict[Key, list[int]]:
    """Encode the four sequences; the region index of each sequence position (-1: context tokens)."""
    critical = stim.regions.index(pair.critical)
    names = {"clean": pair.clean, "corrupt": pair.corrupt, "good": pair.good, "bad": pair.bad}
    region_of: dict[Key, list[int]] = {}
    for ctx in CONTEXTS:
        for cont in CONTINUATIONS:
            cond = truncated(stim, item.conditions[names[ctx]], item.conditions[names[cont]], critical)
            where = f"set={stim.name} item={item.id} {ctx} context ({names[ctx]}) + {cont} ({names[cont]})"
            request = ScoreRequest((stim.name, item.id, f"{ctx}+{cont}"), cond.text, cond.prefix)
            enc = scorer.encode(request)
            seqs.requests[(ctx, cont)] = request
            aligned = align(cond, enc.offsets, stim.regions, where, stim.segmentation)
            token_region = aligned.token_region
            seqs.encoded[(ctx, cont)] = enc
            seqs.words[(ctx, cont)] = aligned.token_word
            region_of[(ctx, cont)] = [-1] * len(enc.context) + list(token_region)
            crit = [t for t, r in enumerate(token_region) if r == critical]
            seqs.critical[(ctx, cont)] = range(crit[0], crit[-1] + 1) if crit else range(0)
    return region_of


def _region_positions(stim: StimulusSet, seqs: ItemSequences, region_of: dict[Key, list[int]],
                      continuation: str) -> list[RegionPositions]:
    """Each region's positions in both contexts, up to the critical region, with its alignment mode."""
    critical = stim.regions.index(seqs.pair.critical)
    out = []
    for r in range(-1, critical + 1):
        name = CONTEXT_REGION if r < 0 else stim.regions[r]
        where = {ctx: tuple(p for p, x in enumerate(region_of[(ctx, continuation)]) if x == r) for ctx in CONTEXTS}
        ids = {ctx: [seqs.encoded[(ctx, continuation)].sequence[p] for p in where[ctx]] for ctx in CONTEXTS}
        mode = "identical" if ids["clean"] == ids["corrupt"] else \
            "same-length" if len(ids["clean"]) == len(ids["corrupt"]) else "unequal"
        if where["clean"] or where["corrupt"]:
            out.append(RegionPositions(name, where["clean"], where["corrupt"], mode))
    return out


def item_sequences(stim: StimulusSet, item: Item, pair: Pair, scorer: CausalScorer) -> ItemSequences:
    """The item's sequences and alignments; a problem (e.g. an empty critical region) is recorded, not raised."""
    seqs = ItemSequences(item.id, pair)
    try:
        region_of = _encode(stim, item, pair, scorer, seqs)
    except PsylingError as exc:
        seqs.problem = f"cannot be tokenized as the set is scored: {exc}"
        return seqs
    empty = [key for key, span in seqs.critical.items() if not len(span)]
    if empty:
        seqs.problem = f"the critical region {pair.critical!r} is empty in the {'+'.join(empty[0])} sequence"
        return seqs
    for cont in CONTINUATIONS:
        seqs.regions[cont] = _region_positions(stim, seqs, region_of, cont)
    clean, corrupt = seqs.encoded[("clean", "good")].sequence, seqs.encoded[("corrupt", "good")].sequence
    seqs.divergence = next((p for p, (a, b) in enumerate(zip(clean, corrupt)) if a != b), min(len(clean), len(corrupt)))
    if clean == corrupt:
        seqs.problem = "the clean and corrupted contexts are identical"
    return seqs


def alignment_table(stim: StimulusSet, items: list[ItemSequences], tokenizer, unequal: str,
                    absolute_positions: bool) -> pd.DataFrame:
    """Every alignment decision: one row per item x continuation x region (a problem item: one row)."""
    rows = []
    for seqs in items:
        base = {"set": stim.name, "item": seqs.item, "clean": seqs.pair.clean, "corrupt": seqs.pair.corrupt}
        if seqs.problem:
            rows.append({**base, "continuation": "", "region": "", "mode": "unaligned", "note": seqs.problem})
            continue
        for cont in CONTINUATIONS:
            enc = {ctx: seqs.encoded[(ctx, cont)].sequence for ctx in CONTEXTS}
            for reg in seqs.regions[cont]:
                chosen = reg.select("all", unequal)
                notes = []
                if reg.mode == "unequal":
                    notes.append(f"token counts differ: aligned on the {unequal} token" if chosen else
                                 "token counts differ: not aligned (--unequal skip)")
                if chosen and absolute_positions and any(a != b for a, b in chosen):
                    notes.append("cross-position patch under absolute position embeddings")
                rows.append({**base, "continuation": cont, "region": reg.region, "mode": reg.mode,
                             "n_clean": len(reg.clean), "n_corrupt": len(reg.corrupt),
                             "clean_tokens": " ".join(tokenizer.convert_ids_to_tokens([enc["clean"][p] for p in reg.clean])),
                             "corrupt_tokens": " ".join(tokenizer.convert_ids_to_tokens(
                                 [enc["corrupt"][p] for p in reg.corrupt])),
                             "aligned": " ".join(f"{a}:{b}" for a, b in chosen or []), "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=ALIGNMENT_COLUMNS)
