"""Design checks for a stimulus set: conditions differ only where the design says, critical words are
balanced (length, log frequency), no duplicate sentences. They report; they do not reject the set."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from statistics import mean

from .formula import Term, terms
from .schema import WHOLE_SENTENCE, StimulusSet

_PUNCT = re.compile(r"^\W+|\W+$")


@dataclass
class QualityReport:
    """Warnings (one line each) and per-condition balance of the critical region."""
    set: str
    warnings: list[str] = field(default_factory=list)
    balance: list[dict] = field(default_factory=list)


def _zipf(word: str, language: str) -> float:
    from wordfreq import zipf_frequency  # imported lazily: only validation needs it

    return zipf_frequency(word, language)


def _differing(stim: StimulusSet, item, a: str, b: str) -> frozenset[str]:
    ca, cb = item.conditions[a], item.conditions[b]
    diff = {r for r, x, y in zip(stim.regions, ca.regions, cb.regions) if x != y}
    if ca.prefix != cb.prefix:
        diff.add(stim.metadata.get("context_column") or "prefix")
    return frozenset(diff)


def check_design(stim: StimulusSet) -> list[str]:
    """Regions outside ``manipulated`` (manifest field) must be equal across conditions; without it, items whose
    differing regions depart from the set's usual pattern for a pair of conditions are flagged."""
    warnings = []
    declared = stim.metadata.get("manipulated")
    for a, b in combinations(stim.conditions, 2):
        patterns = {item.id: _differing(stim, item, a, b) for item in stim.items}
        if declared:
            for item_id, diff in patterns.items():
                extra = sorted(diff - set(declared))
                if extra:
                    warnings.append(f"item {item_id}: {a} and {b} differ in {', '.join(extra)}, "
                                    f"which the design does not manipulate")
            continue
        usual, _ = Counter(patterns.values()).most_common(1)[0]
        for item_id, diff in patterns.items():
            if diff != usual:
                warnings.append(f"item {item_id}: {a} and {b} differ in {', '.join(sorted(diff)) or 'nothing'}, "
                                f"most items in {', '.join(sorted(usual)) or 'nothing'}")
    return warnings


def check_duplicates(stim: StimulusSet) -> list[str]:
    seen: dict[tuple[str, str], str] = {}
    warnings = []
    for item in stim.items:
        for name, cond in item.conditions.items():
            key = (cond.prefix, cond.text)
            if key in seen and seen[key] != item.id:
                warnings.append(f"item {item.id} condition {name}: same sentence as item {seen[key]}")
            seen.setdefault(key, item.id)
    return warnings


def _compared_cells(stim: StimulusSet) -> dict[tuple[str, str], list[str]]:
    """(region, condition) cells that the predictions and the human effect compare -> what compares them."""
    users: list[tuple[str, list[Term]]] = [(f"prediction {k}", terms(p.tree))
                                           for k, p in enumerate(stim.predictions, start=1)]
    human = stim.human
    if human is not None and human.effect:
        users.append(("the human effect", terms(human.effect_tree)))
    elif human is not None and human.region not in (None, WHOLE_SENTENCE):
        users.append(("the human region", [Term(human.region, c) for c in stim.conditions]))
    cells: dict[tuple[str, str], list[str]] = {}
    for user, cell_terms in users:
        for term in cell_terms:
            index = stim.region_index(term.region)
            if index is None:  # the whole sentence is never empty
                continue
            names = cells.setdefault((stim.regions[index], term.condition), [])
            if user not in names:
                names.append(user)
    return cells


def _listed(ids: list[str], most: int = 10) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def check_empty_critical(stim: StimulusSet) -> list[str]:
    """A compared (region; condition) cell that is empty in an item counts as 0 bits, and the comparison then
    fails or reverses for that item: name the set, items, condition and region."""
    warnings = []
    for (region, condition), users in _compared_cells(stim).items():
        index = stim.regions.index(region)
        empty = [item.id for item in stim.items if not item.conditions[condition].regions[index]]
        if empty:
            warnings.append(f"set {stim.name}: region {region!r} is empty in condition {condition!r} of item"
                            f"{'s' if len(empty) > 1 else ''} {_listed(empty)} ({len(empty)} of {len(stim.items)}), "
                            f"where {' and '.join(users)} compare{'s' if len(users) == 1 else ''} it: an empty "
                            f"region counts as 0 bits")
    return warnings


def critical_balance(stim: StimulusSet) -> list[dict]:
    """Mean length (characters, punctuation stripped) and Zipf log frequency (wordfreq) of the words of the
    critical region, per condition; none for a set without words (segmentation "none": word frequencies would
    need a word segmenter)."""
    region = stim.human.region if stim.human else None
    if region in (None, WHOLE_SENTENCE) or region not in stim.regions or stim.segmentation == "none":
        return []
    index = stim.regions.index(region)
    stats = defaultdict(lambda: ([], []))
    for item in stim.items:
        for name, cond in item.conditions.items():
            words = [_PUNCT.sub("", w) for w in cond.regions[index].split()]
            words = [w for w in words if w]
            if words:
                stats[name][0].append(mean(len(w) for w in words))
                stats[name][1].append(mean(_zipf(w, stim.language) for w in words))
    return [{"condition": c, "region": region, "n": len(stats[c][0]),
             "length": round(mean(stats[c][0]), 2) if stats[c][0] else None,
             "zipf": round(mean(stats[c][1]), 2) if stats[c][1] else None} for c in stim.conditions]


def quality_report(stim: StimulusSet) -> QualityReport:
    warnings = check_empty_critical(stim) + check_design(stim) + check_duplicates(stim)
    report = QualityReport(stim.name, warnings, critical_balance(stim))
    values = [row for row in report.balance if row["length"] is not None]
    if len(values) > 1:
        spread_len = max(r["length"] for r in values) - min(r["length"] for r in values)
        spread_zipf = max(r["zipf"] for r in values) - min(r["zipf"] for r in values)
        if spread_len > 2 or spread_zipf > 1:
            report.warnings.append(f"critical region {values[0]['region']!r} unbalanced across conditions: "
                                   f"length differs by {spread_len:.1f} characters, log frequency by "
                                   f"{spread_zipf:.2f} Zipf")
    return report
