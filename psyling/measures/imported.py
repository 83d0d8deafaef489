"""Bring your own surprisal: map a token- or word-level surprisal table computed elsewhere onto a set's
words and regions, so that its predictions can be evaluated here.

Accepted tables (CSV, TSV or parquet): psyling's own columns (item, condition, surprisal, and token or word),
or the lm-zoo / SyntaxGym form (sentence_id, token_id, token, surprisal), whose sentences are the set's items x
conditions in file order. Either may hold several sets (suites) in one file, with a ``set`` or ``suite`` column
naming each row's set: each set gets the rows of its name (lm-zoo sentences in file order within it)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from ..errors import AlignmentError, PsylingError, first_line
from ..stimuli.schema import StimulusSet
from .alignment import align
from .surprisal import REGION_COLUMNS

MARKERS = ("Ġ", "▁", "##")
SKIPPED = ("<eos>", "</s>", "<s>", "<|endoftext|>", "<bos>", "<pad>")
UNKNOWN = ("<unk>", "<UNK>", "[UNK]")
SUITE_COLUMNS = ("set", "suite")  # what names each row's set in a multi-suite table


def read_table(path: Path) -> pd.DataFrame:
    """Read a surprisal table by its extension."""
    if not path.is_file():
        raise PsylingError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    sep = "\t" if path.suffix in (".tsv", ".txt", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep, keep_default_na=False, dtype={"item": str, "condition": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PsylingError(f"{path}: cannot read the table: {first_line(exc)}") from None


def token_spans(text: str, tokens: list[str], where: str) -> list[tuple[int, int]]:
    """Character spans of externally produced tokens in ``text``: word markers are stripped, special tokens
    get empty spans, an unknown-word token covers the text up to the next token."""
    spans: list[tuple[int, int]] = []
    pos, pending_unk = 0, None
    for tok in tokens:
        if tok in SKIPPED:
            spans.append((pos, pos))
            continue
        if tok in UNKNOWN:
            pending_unk = len(spans)
            spans.append((pos, pos))
            continue
        surface = tok
        for marker in MARKERS:
            surface = surface.replace(marker, "")
        if not surface:  # a bare word marker stands for the space before a word
            end = pos + len(text[pos:]) - len(text[pos:].lstrip())
            spans.append((pos, max(end, pos)))
            pos = end
            continue
        start = text.find(surface, pos)
        gap = text[pos:start] if start >= 0 else ""
        if start < 0 or (gap.strip() and pending_unk is None):
            raise AlignmentError(f"{where}: token {tok!r} not found in {text!r} after character {pos}")
        if pending_unk is not None:
            spans[pending_unk] = (pos, start)
            pending_unk = None
        spans.append((start, start + len(surface)))
        pos = start + len(surface)
    if pending_unk is not None:
        spans[pending_unk] = (pos, len(text))
    return spans


def _units(table: pd.DataFrame, units: str) -> pd.Series:
    if units not in ("bits", "nats"):
        raise PsylingError(f"unknown units {units!r} (bits or nats)")
    values = pd.to_numeric(table["surprisal"], errors="coerce")
    bad = values.isna() & table["surprisal"].astype(str).str.len().gt(0)
    if bad.any():
        row = bad.idxmax()  # the row's label: its place in the file, also in one suite's rows
        raise PsylingError(f"surprisal is not a number in row {int(row) + 1}: {table['surprisal'].loc[row]!r}")
    return values / math.log(2) if units == "nats" else values


def unit_column(table: pd.DataFrame) -> str:
    """The column of the table's units ("token" or "word"): what a region's ``n_tokens`` counts."""
    return "token" if "token" in table.columns else "word"


def suite_column(table: pd.DataFrame) -> Optional[str]:
    """The column naming each row's set in a multi-suite table ("set" or "suite"), or None for one set's table."""
    return next((c for c in SUITE_COLUMNS if c in table.columns), None)


def unmatched_suites(table: pd.DataFrame, set_names: Iterable[str]) -> list[str]:
    """The suites of a multi-suite table that no given set is named after: not evaluated, to be listed."""
    column = suite_column(table)
    if column is None:
        return []
    return sorted(set(table[column].astype(str)) - set(set_names))


def suite_rows(stim: StimulusSet, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a multi-suite table that belong to the set (every row of a one-set table, in file order);
    a set with no rows is a one-line error naming the suites the table has."""
    column = suite_column(table)
    if column is None:
        return table
    names = table[column].astype(str)
    rows = table[names == stim.name]
    if rows.empty:
        found = list(dict.fromkeys(names))
        listed = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        raise PsylingError(f"set={stim.name}: no rows in the surprisal table (its {column!r} column names "
                           f"{listed or 'no suites'})")
    return rows


def _sentence_groups(stim: StimulusSet, table: pd.DataFrame) -> tuple[dict[tuple[str, str], pd.DataFrame], str]:
    """The table's rows of each (item, condition) of the set, and the column of their units (token or word).
    lm-zoo tables (sentence_id) hold the set's items x conditions in file order."""
    sentences = [(item.id, c) for item in stim.items for c in item.conditions]
    if {"sentence_id", "token", "surprisal"} <= set(table.columns):
        ids = sorted(table["sentence_id"].unique())
        if len(ids) != len(sentences):
            raise PsylingError(f"the table has {len(ids)} sentences, set {stim.name!r} has {len(sentences)}")
        return {sentences[k]: g for k, (_, g) in enumerate(table.groupby("sentence_id", sort=True))}, "token"
    missing = {"item", "condition", "surprisal"} - set(table.columns)
    unit_col = unit_column(table)
    if missing or unit_col not in table.columns:
        raise PsylingError("the table needs columns item, condition, surprisal and token or word "
                           "(or sentence_id, token_id, token, surprisal), and set or suite for several sets")
    keyed = {key: g for key, g in table.groupby([table["item"].astype(str), table["condition"].astype(str)])}
    for key in sentences:
        if key not in keyed:
            raise PsylingError(f"set={stim.name} item={key[0]} condition={key[1]}: no rows in the surprisal table")
    return {key: keyed[key] for key in sentences}, unit_col


def imported_regions(stim: StimulusSet, table: pd.DataFrame, units: str = "bits") -> pd.DataFrame:
    """Region surprisal (sums of the table's values over each region) in psyling's regions-table shape; a
    multi-suite table (a set or suite column) gives each set the rows of its own name. ``surprisal_raw``
    equals ``surprisal``: no word correction can be applied to outside numbers."""
    table = suite_rows(stim, table).copy()
    table["surprisal"] = _units(table, units).fillna(0.0)
    by_id = {item.id: item for item in stim.items}
    groups, unit_col = _sentence_groups(stim, table)
    rows = []
    for (item_id, cname), group in groups.items():
        item = by_id[item_id]
        cond = item.conditions[cname]
        where = f"set={stim.name} item={item.id} condition={cname}"
        units_text = [str(t) for t in group[unit_col]]
        spans = token_spans(cond.text, units_text, where)
        al = align(cond, spans, stim.regions, where, stim.segmentation)
        sums = [0.0] * len(stim.regions)
        counts = [0] * len(stim.regions)
        for tok, value, r in zip(units_text, group["surprisal"], al.token_region):
            if tok not in SKIPPED:  # special tokens stand outside the text
                sums[r] += float(value)
                counts[r] += 1
        for r, (name, text) in enumerate(zip(stim.regions, cond.regions)):
            rows.append((stim.name, item.id, cname, r + 1, name, text, sums[r], sums[r], counts[r]))
    return pd.DataFrame(rows, columns=REGION_COLUMNS)
