"""Importers for published tabular stimulus files: Marvin & Linzen (2018) TSV, generic two-column
minimal-pair CSV, Ettinger (2020) CPRAG/ROLE/NEG TSVs and CLiMP (Chinese) CSV. A path in, sets out."""
from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

from ..errors import StimulusError
from .blimp import BLIMP_PREDICTION
from .manifest import read_text
from .schema import Condition, Item, StimulusSet, parse_predictions

CITATIONS = {
    "marvin-linzen": "Marvin, R., & Linzen, T. (2018). Targeted syntactic evaluation of language models. EMNLP.",
    "ettinger": "Ettinger, A. (2020). What BERT is not: Lessons from a new suite of psycholinguistic diagnostics "
                "for language models. TACL 8, 34-48.",
    "climp": "Xiang, B., Yang, C., Li, Y., Warstadt, A., & Kann, K. (2021). CLiMP: A benchmark for Chinese "
             "language model evaluation. EACL.",
}
ML_HEADER = ["test_case", "condition", "idx", "grammatical", "ungrammatical", "ungrammatical_2"]
PAIR_HEADERS = (["good", "bad"], ["sentence_good", "sentence_bad"], ["grammatical", "ungrammatical"])
CLIMP_HEADER = ["", "0", "1", "2", "3"]


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    rows = list(csv.reader(io.StringIO(read_text(path)), delimiter=delimiter))
    if not rows:
        raise StimulusError("empty file", file=str(path), field="header")
    return rows[0], rows[1:]


def _records(path: Path, header: list[str], rows: list[list[str]]) -> list[dict[str, str]]:
    out = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise StimulusError(f"line {line} has {len(row)} fields, the header {len(header)}", file=str(path),
                                field="row")
        out.append(dict(zip(header, row)))
    return out


def _need(path: Path, rec: dict[str, str], key: str, item: str, condition: Optional[str] = None) -> str:
    value = " ".join((rec.get(key) or "").split())
    if not value:
        raise StimulusError("missing or empty", file=str(path), item=item, condition=condition, field=key)
    return value


def _pair_set(name: str, path: Path, items: list[Item], conditions: tuple[str, ...], formulas: list[str],
              **fields) -> StimulusSet:
    return StimulusSet(name=name, regions=("sentence",), conditions=conditions, items=items,
                       predictions=parse_predictions(formulas, str(path)), source=str(path), **fields).validate()


def load_marvin_linzen(path: Path) -> list[StimulusSet]:
    """Marvin & Linzen (2018) pairs TSV: one set per test case; items are (condition, idx)."""
    header, rows = _rows(path)
    by_case: dict[str, list[Item]] = defaultdict(list)
    has_second: dict[str, set[bool]] = defaultdict(set)
    for rec in _records(path, header, rows):
        case, item_id = rec["test_case"], f"{rec['condition']}-{rec['idx']}"
        conds = {c: Condition(c, (_need(path, rec, c, item_id, c),)) for c in ("grammatical", "ungrammatical")}
        if rec["ungrammatical_2"].strip():
            conds["ungrammatical_2"] = Condition("ungrammatical_2", (" ".join(rec["ungrammatical_2"].split()),))
        has_second[case].add("ungrammatical_2" in conds)
        by_case[case].append(Item(item_id, conds, {"condition": rec["condition"], "idx": rec["idx"]}))
    sets = []
    for case, items in by_case.items():
        if len(has_second[case]) > 1:
            raise StimulusError(f"test case {case!r} has ungrammatical_2 in some rows only", file=str(path),
                                field="ungrammatical_2")
        second = has_second[case].pop()
        conditions = ("grammatical", "ungrammatical") + (("ungrammatical_2",) if second else ())
        formulas = [f"(*;%grammatical%) < (*;%{c}%)" for c in conditions[1:]]
        sets.append(_pair_set(case, path, items, conditions, formulas, phenomenon=case,
                              citation=CITATIONS["marvin-linzen"],
                              metadata={"format": "marvin-linzen", "note": "lower-case, no final punctuation"}))
    return sets


def load_pairs_csv(path: Path) -> list[StimulusSet]:
    """A generic two-column minimal-pair file (good,bad / sentence_good,sentence_bad / grammatical,
    ungrammatical); extra columns are kept as item metadata."""
    header, rows = _rows(path)
    good, bad = next(h for h in PAIR_HEADERS if header[:2] == h)
    items = []
    for n, rec in enumerate(_records(path, header, rows), start=1):
        item_id = str(n)
        items.append(Item(item_id, {"good": Condition("good", (_need(path, rec, good, item_id, "good"),)),
                                    "bad": Condition("bad", (_need(path, rec, bad, item_id, "bad"),))},
                          {k: v for k, v in rec.items() if k not in (good, bad)}))
    return [_pair_set(path.stem, path, items, ("good", "bad"), [BLIMP_PREDICTION], phenomenon=path.stem,
                      citation="", metadata={"format": "pairs-csv"})]


def _an(article_choice: str, word: str) -> str:
    """Resolve Ettinger's '(a|an)' for the following word."""
    return article_choice.replace("(a|an)", "an" if word[:1].lower() in "aeiou" else "a")


def load_ettinger(path: Path) -> list[StimulusSet]:
    """Ettinger (2020) CPRAG-102, ROLE-88 and NEG-136 (SIMP/NAT) TSVs as target-word sets."""
    header, rows = _rows(path)
    recs = _records(path, header, rows)
    name = path.stem
    common = {"citation": CITATIONS["ettinger"], "source": str(path)}
    if "context_s1" in header:  # CPRAG-102: Federmeier & Kutas (1999) items, first sentence as prefix
        conditions = ("expected", "within_category", "between_category")
        items = [Item(r["item"], {c: Condition(c, (_need(path, r, "context_s2", r["item"]),
                                                   _need(path, r, c, r["item"], c)),
                                               prefix=_need(path, r, "context_s1", r["item"]))
                                  for c in conditions}, {"constraint": r["constraint"]}) for r in recs]
        formulas = ["[(target;%expected%) < (target;%within_category%)] & "
                    "[(target;%expected%) < (target;%between_category%)]"]
        stim = StimulusSet(name=name, regions=("context", "target"), conditions=conditions, items=items,
                           predictions=parse_predictions(formulas, str(path)), phenomenon="semantic_category",
                           metadata={"format": "ettinger-cprag"}, **common)
    elif "tgt_cloze" in header:  # ROLE-88: items NN-a (canonical) / NN-b (role-reversed), same target word
        pairs: dict[str, dict[str, Condition]] = defaultdict(dict)
        meta: dict[str, dict[str, str]] = defaultdict(dict)
        for r in recs:
            match = re.fullmatch(r"(\d+)-([ab])", r["item"].strip())
            if not match:
                raise StimulusError("item ids must look like 12-a / 12-b", file=str(path), item=r["item"],
                                    field="item")
            cond = "canonical" if match.group(2) == "a" else "reversed"
            pairs[match.group(1)][cond] = Condition(cond, (_need(path, r, "context", r["item"], cond),
                                                           _need(path, r, "target", r["item"], cond)))
            meta[match.group(1)].update({f"{cond}_{k}": r[k] for k in ("expected", "exp_cloze", "tgt_cloze")})
        items = [Item(k, v, meta[k]) for k, v in pairs.items()]
        stim = StimulusSet(name=name, regions=("context", "target"), conditions=("canonical", "reversed"),
                           items=items, predictions=parse_predictions(
                               ["(target;%canonical%) < (target;%reversed%)"], str(path)),
                           phenomenon="role_reversal", metadata={"format": "ettinger-role"}, **common)
    elif "context_aff" in header:  # NEG-136: Fischler et al. (1983) SIMP / Nieuwland & Kuperberg (2008) NAT
        items = []
        for r in recs:
            i = r["item"]
            aff, neg = _need(path, r, "context_aff", i), _need(path, r, "context_neg", i)
            t_aff, t_neg = _need(path, r, "target_aff", i), _need(path, r, "target_neg", i)
            conds = {"aff_true": (aff, t_aff), "aff_false": (aff, t_neg), "neg_true": (neg, t_neg),
                     "neg_false": (neg, t_aff)}
            items.append(Item(i, {c: Condition(c, (_an(ctx, tgt), tgt)) for c, (ctx, tgt) in conds.items()},
                              {k: v for k, v in r.items() if k == "licensing"}))
        formulas = ["(target;%aff_true%) < (target;%aff_false%)", "(target;%neg_true%) < (target;%neg_false%)"]
        stim = StimulusSet(name=name, regions=("context", "target"),
                           conditions=("aff_true", "aff_false", "neg_true", "neg_false"), items=items,
                           predictions=parse_predictions(formulas, str(path)), phenomenon="negation",
                           metadata={"format": "ettinger-neg", "article": "(a|an) resolved by the target's "
                                                                          "first letter"}, **common)
    else:
        raise StimulusError("not a CPRAG, ROLE or NEG file", file=str(path), field="header")
    return [stim.validate()]


def load_climp(path: Path) -> list[StimulusSet]:
    """CLiMP (Chinese) paradigm CSV: pairs on consecutive rows (label 1 = good, 0 = bad). One published file
    (ba_construction) has sentences only: there the good sentence comes first, as in every labelled file.
    Chinese has no spaces, so the sentence is one region aligned by character offsets, without words."""
    header, rows = _rows(path)
    if header == CLIMP_HEADER:
        recs = _records(path, CLIMP_HEADER, rows)
    else:  # no header row: either the five CLiMP columns or the sentence alone
        rows = [header] + rows
        width = len(header)
        recs = _records(path, CLIMP_HEADER if width == 5 else ["2"], rows)
        if width != 5:
            recs = [{**r, "0": path.stem.removesuffix("_1000"), "1": path.stem.removesuffix("_1000"),
                     "3": "1" if k % 2 == 0 else "0"} for k, r in enumerate(recs)]
    if len(recs) % 2:
        raise StimulusError(f"{len(recs)} rows: pairs need an even number", file=str(path), field="row")
    items = []
    for k in range(0, len(recs), 2):
        pair = {recs[k]["3"].strip(): recs[k], recs[k + 1]["3"].strip(): recs[k + 1]}
        item_id = str(k // 2)
        if set(pair) != {"0", "1"}:
            raise StimulusError("a pair needs one row labelled 1 (good) and one labelled 0 (bad)", file=str(path),
                                item=item_id, field="label")
        items.append(Item(item_id, {
            c: Condition(c, (_need(path, pair[label], "2", item_id, c).replace(" ", ""),), separator="")
            for c, label in (("good", "1"), ("bad", "0"))}))
    labels = "from the file" if header == CLIMP_HEADER or len(header) == 5 else "by position (good first)"
    return [_pair_set(path.stem.removesuffix("_1000"), path, items, ("good", "bad"), [BLIMP_PREDICTION],
                      phenomenon=recs[0]["0"] if recs else "", language="zh", citation=CITATIONS["climp"],
                      segmentation="none",
                      metadata={"format": "climp", "paradigm": recs[0]["1"] if recs else "", "labels": labels})]


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def sniff(path: Path) -> Optional[Callable[[Path], list[StimulusSet]]]:
    """The importer for a .csv/.tsv file by its header, or None (e.g. a manifest's items file)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline().rstrip("\r\n")
    except OSError:
        return None
    header = first.split("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    if header == ML_HEADER:
        return load_marvin_linzen
    if header[:2] in PAIR_HEADERS and "condition" not in header:
        return load_pairs_csv
    if header[:1] == ["item"] and ({"context_s1", "tgt_cloze", "context_aff"} & set(header)):
        return load_ettinger
    if header == CLIMP_HEADER or (len(header) in (1, 5) and _cjk(first)):
        return load_climp
    return None
