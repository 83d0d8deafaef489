"""Importers for published tabular stimulus files: Marvin & Linzen (2018) TSV, pair tables (good and bad
columns found by name, :mod:`.pairs`), Ettinger (2020) CPRAG/ROLE/NEG TSVs and CLiMP (Chinese) CSV. A path in,
sets out. Each reader detects the segmentation from its sentences unless ``ReaderOptions.segmentation``
declares it; item ids follow the :mod:`.reading` rule."""
from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..errors import StimulusError
from .blimp import records_set
from .manifest import read_text
from .pairs import ACCEPTED_PAIR_COLUMNS, PairInfo, PairRow, find_columns, pair_set
from .provenance import NO_SIDECAR, Sidecar
from .reading import ReaderOptions, clean_text, segmentation_of, separator
from .segmentation import is_unspaced_char
from .schema import Condition, Item, StimulusSet, parse_predictions

Reader = Callable[[Path, ReaderOptions], list[StimulusSet]]
CITATIONS = {
    "marvin-linzen": "Marvin, R., & Linzen, T. (2018). Targeted syntactic evaluation of language models. EMNLP.",
    "ettinger": "Ettinger, A. (2020). What BERT is not: Lessons from a new suite of psycholinguistic diagnostics "
                "for language models. TACL 8, 34-48.",
    "climp": "Xiang, B., Yang, C., Li, Y., Warstadt, A., & Kann, K. (2021). CLiMP: A benchmark for Chinese "
             "language model evaluation. EACL.",
}
ML_HEADER = ["test_case", "condition", "idx", "grammatical", "ungrammatical", "ungrammatical_2"]
ML_TEXT = ("grammatical", "ungrammatical", "ungrammatical_2")
CLIMP_HEADER = ["", "0", "1", "2", "3"]
ETTINGER_MARKERS = {"context_s1": "CPRAG-102", "tgt_cloze": "ROLE-88", "context_aff": "NEG-136"}
ETTINGER_TEXT = {  # the text columns of each file
    "context_s1": ("context_s1", "context_s2", "expected", "within_category", "between_category"),
    "tgt_cloze": ("context", "target"),
    "context_aff": ("context_aff", "context_neg", "target_aff", "target_neg")}
ETTINGER_OTHER = {"context_s1": ("constraint",), "tgt_cloze": ("expected", "exp_cloze"), "context_aff": ()}
ACCEPTED_TABLES = (f"accepted tables: a pair table ({ACCEPTED_PAIR_COLUMNS}); Marvin & Linzen's pairs TSV "
                   f"({', '.join(ML_HEADER)}); Ettinger's TSVs (first column item, and {' or '.join(ETTINGER_MARKERS)}); "
                   f"CLiMP's CSV (,0,1,2,3 or no header); a manifest's items file is read through its .yaml")


def delimiter_of(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","


def _rows(path: Path, delimiter: Optional[str] = None) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(read_text(path)), delimiter=delimiter or delimiter_of(path)))
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
                                item=len(out) + 1, field="row")
        out.append(dict(zip(header, row)))
    return out


def _need(path: Path, rec: dict[str, str], key: str, item: str, condition: Optional[str] = None,
          segmentation: str = "whitespace") -> str:
    value = clean_text(rec.get(key) or "", segmentation)
    if not value:
        raise StimulusError("missing or empty", file=str(path), item=item, condition=condition, field=key)
    return value


def _segmentation(options: ReaderOptions, recs: list[dict[str, str]], columns: Iterable[str]) -> tuple[str, str]:
    """The segmentation of a table's sentences (the cells of ``columns``)."""
    columns = tuple(columns)
    return segmentation_of(options, (r[c] for r in recs for c in columns if r.get(c)))


def _pair_set(name: str, path: Path, items: list[Item], conditions: tuple[str, ...], formulas: list[str],
              segmentation: tuple[str, str], **fields) -> StimulusSet:
    seg, how = segmentation
    metadata = {**fields.pop("metadata"), "segmentation_source": how}
    return StimulusSet(name=name, regions=("sentence",), conditions=conditions, items=items,
                       predictions=parse_predictions(formulas, str(path)), source=str(path), segmentation=seg,
                       metadata=metadata, **fields).validate()


def _ml_item(path: Path, rec: dict[str, str], seg: str) -> Item:
    item_id = f"{rec['condition']}-{rec['idx']}"
    conds = {c: Condition(c, (_need(path, rec, c, item_id, c, seg),), separator=separator(seg))
             for c in ("grammatical", "ungrammatical")}
    if rec["ungrammatical_2"].strip():
        conds["ungrammatical_2"] = Condition("ungrammatical_2", (clean_text(rec["ungrammatical_2"], seg),),
                                             separator=separator(seg))
    return Item(item_id, conds, {"condition": rec["condition"], "idx": rec["idx"]})


def load_marvin_linzen(path: Path, options: ReaderOptions = ReaderOptions()) -> list[StimulusSet]:
    """Marvin & Linzen (2018) pairs TSV: one set per test case; items are (condition, idx)."""
    header, rows = _rows(path)
    recs = _records(path, header, rows)
    segmentation = _segmentation(options, recs, ML_TEXT)
    by_case: dict[str, list[Item]] = defaultdict(list)
    for rec in recs:
        by_case[rec["test_case"]].append(_ml_item(path, rec, segmentation[0]))
    sets = []
    for case, items in by_case.items():
        second = {"ungrammatical_2" in item.conditions for item in items}
        if len(second) > 1:
            raise StimulusError(f"test case {case!r} has ungrammatical_2 in some rows only", file=str(path),
                                field="ungrammatical_2")
        conditions = ML_TEXT if second.pop() else ML_TEXT[:2]
        formulas = [f"(*;%grammatical%) < (*;%{c}%)" for c in conditions[1:]]
        sets.append(_pair_set(case, path, items, conditions, formulas, segmentation, phenomenon=case,
                              citation=CITATIONS["marvin-linzen"], language="en",
                              metadata={"format": "marvin-linzen", "note": "lower-case, no final punctuation"}))
    return sets


def load_pairs_csv(path: Path, options: ReaderOptions = ReaderOptions(), sidecar: Sidecar = NO_SIDECAR,
                   delimiter: Optional[str] = None) -> list[StimulusSet]:
    """A pair table (CSV; TSV for .tsv/.tab/.txt): the good and bad columns found by name anywhere in the
    header (:mod:`.pairs`), ids from an id column or the row's position, other columns as item metadata."""
    header, rows = _rows(path, delimiter)
    columns = find_columns(header, str(path), sidecar)
    if columns is None:
        raise StimulusError(f"the header ({', '.join(header)}) names no good and bad columns: {ACCEPTED_TABLES}",
                            file=str(path), field="header")
    missing = [c for c in columns.sentences if c not in header]
    if missing:
        raise StimulusError(f"column {missing[0]!r} is missing (header: {', '.join(header)}); "
                            f"a pair table needs {ACCEPTED_PAIR_COLUMNS}", file=str(path), field=missing[0])
    return [records_set(path, _records(path, header, rows), columns, options, "pairs-table")]


def _an(article_choice: str, word: str) -> str:
    """Resolve Ettinger's '(a|an)' for the following word."""
    return article_choice.replace("(a|an)", "an" if word[:1].lower() in "aeiou" else "a")


def _cprag(path: Path, recs: list[dict[str, str]], seg: str) -> dict:
    """CPRAG-102: Federmeier & Kutas (1999) items, the first sentence as prefix."""
    conditions = ("expected", "within_category", "between_category")
    items = [Item(r["item"], {c: Condition(c, (_need(path, r, "context_s2", r["item"], segmentation=seg),
                                               _need(path, r, c, r["item"], c, seg)),
                                           prefix=_need(path, r, "context_s1", r["item"], segmentation=seg),
                                           separator=separator(seg))
                              for c in conditions}, {"constraint": r["constraint"]}) for r in recs]
    formulas = ["[(target;%expected%) < (target;%within_category%)] & "
                "[(target;%expected%) < (target;%between_category%)]"]
    return {"conditions": conditions, "items": items, "formulas": formulas, "phenomenon": "semantic_category",
            "format": "ettinger-cprag"}


def _role(path: Path, recs: list[dict[str, str]], seg: str) -> dict:
    """ROLE-88: items NN-a (canonical) / NN-b (role-reversed), the same target word."""
    pairs: dict[str, dict[str, Condition]] = defaultdict(dict)
    meta: dict[str, dict[str, str]] = defaultdict(dict)
    for r in recs:
        match = re.fullmatch(r"(\d+)-([ab])", r["item"].strip())
        if not match:
            raise StimulusError("item ids must look like 12-a / 12-b", file=str(path), item=r["item"],
                                field="item")
        cond = "canonical" if match.group(2) == "a" else "reversed"
        pairs[match.group(1)][cond] = Condition(cond, (_need(path, r, "context", r["item"], cond, seg),
                                                       _need(path, r, "target", r["item"], cond, seg)),
                                                separator=separator(seg))
        meta[match.group(1)].update({f"{cond}_{k}": r[k] for k in ("expected", "exp_cloze", "tgt_cloze")})
    return {"conditions": ("canonical", "reversed"), "items": [Item(k, v, meta[k]) for k, v in pairs.items()],
            "formulas": ["(target;%canonical%) < (target;%reversed%)"], "phenomenon": "role_reversal",
            "format": "ettinger-role"}


def _neg(path: Path, recs: list[dict[str, str]], seg: str) -> dict:
    """NEG-136: Fischler et al. (1983) SIMP / Nieuwland & Kuperberg (2008) NAT."""
    items = []
    for r in recs:
        aff, neg, t_aff, t_neg = (_need(path, r, key, r["item"], segmentation=seg)
                                  for key in ETTINGER_TEXT["context_aff"])
        conds = {"aff_true": (aff, t_aff), "aff_false": (aff, t_neg), "neg_true": (neg, t_neg),
                 "neg_false": (neg, t_aff)}
        items.append(Item(r["item"], {c: Condition(c, (_an(ctx, tgt), tgt), separator=separator(seg))
                              for c, (ctx, tgt) in conds.items()},
                          {k: v for k, v in r.items() if k == "licensing"}))
    return {"conditions": ("aff_true", "aff_false", "neg_true", "neg_false"), "items": items,
            "formulas": ["(target;%aff_true%) < (target;%aff_false%)", "(target;%neg_true%) < (target;%neg_false%)"],
            "phenomenon": "negation", "format": "ettinger-neg",
            "metadata": {"article": "(a|an) resolved by the target's first letter"}}


ETTINGER_BUILDERS = {"context_s1": _cprag, "tgt_cloze": _role, "context_aff": _neg}


def load_ettinger(path: Path, options: ReaderOptions = ReaderOptions()) -> list[StimulusSet]:
    """Ettinger (2020) CPRAG-102, ROLE-88 and NEG-136 (SIMP/NAT) TSVs as target-word sets (regions context,
    target)."""
    header, rows = _rows(path)
    marker = next((m for m in ETTINGER_MARKERS if m in header), None)
    if marker is None:
        raise StimulusError("not a CPRAG, ROLE or NEG file", file=str(path), field="header")
    missing = [c for c in (*ETTINGER_TEXT[marker], *ETTINGER_OTHER[marker]) if c not in header]
    if missing:
        raise StimulusError(f"column {missing[0]!r} is missing ({ETTINGER_MARKERS[marker]} header: "
                            f"{', '.join(header)})", file=str(path), field=missing[0])
    recs = _records(path, header, rows)
    seg, how = _segmentation(options, recs, ETTINGER_TEXT[marker])
    built = ETTINGER_BUILDERS[marker](path, recs, seg)
    stim = StimulusSet(name=path.stem, regions=("context", "target"), conditions=built["conditions"],
                       items=built["items"], predictions=parse_predictions(built["formulas"], str(path)),
                       source=str(path), phenomenon=built["phenomenon"], citation=CITATIONS["ettinger"],
                       language="en", segmentation=seg,
                       metadata={"format": built["format"], **built.get("metadata", {}), "segmentation_source": how})
    return [stim.validate()]


def _climp_records(path: Path) -> tuple[list[dict[str, str]], str]:
    """CLiMP's rows (columns "0".."3" as in its header) and where the labels come from."""
    header, rows = _rows(path)
    if header == CLIMP_HEADER:
        return _records(path, CLIMP_HEADER, rows), "from the file"
    rows = [header] + rows  # no header row: either the five CLiMP columns or the sentence alone
    if len(header) == 5:
        return _records(path, CLIMP_HEADER, rows), "from the file"
    stem = path.stem.removesuffix("_1000")
    recs = _records(path, ["2"], rows)
    return [{**r, "0": stem, "1": stem, "3": "1" if k % 2 == 0 else "0"} for k, r in enumerate(recs)], \
        "by position (good first)"


def load_climp(path: Path, options: ReaderOptions = ReaderOptions()) -> list[StimulusSet]:
    """CLiMP (Chinese) paradigm CSV: pairs on consecutive rows (label 1 = good, 0 = bad). One published file
    (ba_construction) has sentences only: there the good sentence comes first, as in every labelled file.
    Chinese has no spaces (segmentation detected as "none"): the sentence is one region aligned by character
    offsets, without words, and the spaces some rows hold are removed."""
    recs, labels = _climp_records(path)
    if len(recs) % 2:
        raise StimulusError(f"{len(recs)} rows: pairs need an even number", file=str(path), field="row")
    seg, how = _segmentation(options, recs, ["2"])
    rows = []
    for k in range(0, len(recs), 2):
        pair = {recs[k]["3"].strip(): recs[k], recs[k + 1]["3"].strip(): recs[k + 1]}
        item_id = str(k // 2 + 1)
        if set(pair) != {"0", "1"}:
            raise StimulusError("a pair needs one row labelled 1 (good) and one labelled 0 (bad)", file=str(path),
                                item=item_id, field="label")
        good, bad = (_need(path, pair[label], "2", item_id, cond, seg) for cond, label in (("good", "1"), ("bad", "0")))
        rows.append(PairRow(item_id, *((t.replace(" ", "") if seg == "none" else t) for t in (good, bad))))
    first = recs[0] if recs else {"0": "", "1": ""}
    info = PairInfo(path.stem.removesuffix("_1000"), "climp", phenomenon=first["0"], language="zh",
                    citation=CITATIONS["climp"], metadata={"paradigm": first["1"], "labels": labels})
    return [pair_set(path, rows, info, (seg, how))]


def _unspaced(text: str) -> bool:
    return any(is_unspaced_char(ch) for ch in text)


def read_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return []
    return next(csv.reader([first], delimiter=delimiter_of(path)), [])


def sniff(path: Path, sidecar: Sidecar = NO_SIDECAR) -> Optional[Reader]:
    """The reader of a .csv/.tsv/.tab file by its header (or its sidecar's columns), or None."""
    header = read_header(path)
    if header == ML_HEADER:
        return load_marvin_linzen
    if sidecar.columns or find_columns(header, str(path)) is not None:
        return partial(load_pairs_csv, sidecar=sidecar)
    if header[:1] == ["item"] and set(ETTINGER_MARKERS) & set(header):
        return load_ettinger
    if header == CLIMP_HEADER or (len(header) in (1, 5) and _unspaced("".join(header))):
        return load_climp
    return None
