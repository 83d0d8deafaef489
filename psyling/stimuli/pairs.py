"""Minimal-pair sets from any pair file: the good and bad columns found by name, and the set built from rows.

A pair table (CSV, TSV, JSONL, a tab-separated text file with a header) names its good column and its bad
column anywhere in its header, in any case, with ``-`` or spaces for ``_``: good is one of ``GOOD_COLUMNS``,
bad one of ``BAD_COLUMNS``; an optional id column is one of ``ID_COLUMNS``. A sidecar's ``columns`` names
them instead. Every other column is kept as item metadata (strings). The set's name is a ``UID`` column with
one value (as BLiMP-style files name their paradigm), else the file's stem; its phenomenon a ``phenomenon``
(else ``linguistics_term``) column with one value, else unknown (the set's name stands in, see
:mod:`.provenance`); a column with several values stays per item, in the item metadata."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import StimulusError
from .fields import Where, json_type, string
from .provenance import NO_SIDECAR, Sidecar
from .reading import clean_text, metadata_text, separator
from .schema import Condition, Item, StimulusSet, parse_predictions

GOOD_COLUMNS = ("good", "sentence_good", "good_sentence", "grammatical", "acceptable")
BAD_COLUMNS = ("bad", "sentence_bad", "bad_sentence", "ungrammatical", "unacceptable")
ID_COLUMNS = ("id", "item", "item_id", "itemid", "item_number", "pairid", "pair_id")
PAIR_PREDICTION = "(*;%good%) < (*;%bad%)"
NAME_KEY = "UID"
PHENOMENON_KEYS = ("phenomenon", "linguistics_term")
ACCEPTED_PAIR_COLUMNS = (f"a good column ({', '.join(GOOD_COLUMNS)}) and a bad column ({', '.join(BAD_COLUMNS)}) "
                         f"in any position and case, optionally an id column ({', '.join(ID_COLUMNS)}); "
                         f"or a sidecar's columns naming them")


@dataclass(frozen=True)
class PairColumns:
    """Which column holds the good sentence, the bad one and the item id (None: ids are positions)."""
    good: str
    bad: str
    id: Optional[str] = None

    @property
    def sentences(self) -> tuple[str, str]:
        return self.good, self.bad


@dataclass(frozen=True)
class PairRow:
    """One minimal pair as read, before its text is cleaned."""
    item: str
    good: str
    bad: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PairInfo:
    """What a pair set says about itself: name, format and provenance ('' where unknown)."""
    name: str
    format: str
    phenomenon: str = ""
    citation: str = ""
    license: str = ""
    language: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _normal(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _role(header: Sequence[str], role: str, names: tuple[str, ...], source: str) -> Optional[str]:
    found = [h for h in header if _normal(h) in names]
    if len(found) > 1:
        raise StimulusError(f"columns {', '.join(map(repr, found))} could each be the {role} column; name one "
                            f"in the sidecar's columns.{role}", file=source, field="header")
    return found[0] if found else None


def find_columns(header: Sequence[str], source: str, sidecar: Sidecar = NO_SIDECAR) -> Optional[PairColumns]:
    """The pair columns of ``header`` (by name, or as the sidecar declares them); None when it names neither a
    good nor a bad column. When it names only one, the other is its counterpart's spelling (sentence_good ->
    sentence_bad), so that reading reports that column as missing."""
    for role, name in sidecar.columns.items():
        if name not in header:
            raise StimulusError(f"column {name!r} is not in the header ({', '.join(map(str, header))})",
                                file=sidecar.source, field=f"columns.{role}")
    roles = {role: sidecar.columns.get(role) or _role(header, role, names, source)
             for role, names in (("good", GOOD_COLUMNS), ("bad", BAD_COLUMNS), ("id", ID_COLUMNS))}
    good = roles["good"] or _counterpart(roles["bad"], BAD_COLUMNS, GOOD_COLUMNS)
    bad = roles["bad"] or _counterpart(roles["good"], GOOD_COLUMNS, BAD_COLUMNS)
    return PairColumns(good, bad, roles["id"]) if good and bad else None


def _counterpart(name: Optional[str], names: tuple[str, ...], others: tuple[str, ...]) -> Optional[str]:
    """The other side's spelling of a good or bad column name (sentence_good -> sentence_bad)."""
    return others[names.index(_normal(name))] if name and _normal(name) in names else None


def _item_id(source: str, position: int, record: dict[str, Any], column: Optional[str]) -> str:
    if column is None:
        return str(position)
    value = record.get(column)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        kind = "empty" if value is None or isinstance(value, str) else json_type(value)
        raise Where(source, item=str(position)).error(
            f"the item id must be a non-empty string or a whole number, got {kind}", column)
    return str(value).strip()


def _sentence(where: Where, record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise where.error("missing or empty", column)
    return string(value, where, column)


def pair_row(source: str, position: int, record: dict[str, Any], columns: PairColumns) -> PairRow:
    """The pair in ``record`` (the ``position``-th of its file, from 1), every field checked."""
    item = _item_id(source, position, record, columns.id)
    where = Where(source, item=item)
    for key in (NAME_KEY, *PHENOMENON_KEYS):
        if key in record:
            string(record[key], where, key, nonempty=False)
    good, bad = (_sentence(where.at(condition="good"), record, columns.good),
                 _sentence(where.at(condition="bad"), record, columns.bad))
    return PairRow(item, good, bad, {str(k): metadata_text(v) for k, v in record.items() if k not in columns.sentences})


def constant(records: Sequence[dict[str, Any]], key: str) -> Optional[str]:
    """The value of ``key`` when every record has the same non-empty one, else None."""
    values = {str(r.get(key) or "").strip() for r in records}
    return values.pop() if len(values) == 1 and "" not in values else None


def file_info(records: Sequence[dict[str, Any]], path: Path, format_name: str) -> PairInfo:
    """A pair file's own name and phenomenon (see the module docstring); no citation, license or language."""
    phenomenon = next((v for v in (constant(records, k) for k in PHENOMENON_KEYS) if v), "")
    return PairInfo(constant(records, NAME_KEY) or path.stem, format_name, phenomenon=phenomenon)


def pair_set(path: Path, rows: Sequence[PairRow], info: PairInfo, segmentation: tuple[str, str]) -> StimulusSet:
    """A validated set of minimal pairs (conditions good, bad; one region) with the resolved segmentation
    ((segmentation, "declared" or "detected"))."""
    seg, how = segmentation
    items = [Item(row.item, {cond: Condition(cond, (clean_text(text, seg),), separator=separator(seg))
                             for cond, text in (("good", row.good), ("bad", row.bad))}, row.metadata)
             for row in rows]
    return StimulusSet(
        name=info.name, regions=("sentence",), conditions=("good", "bad"), items=items,
        predictions=parse_predictions([PAIR_PREDICTION], str(path)), source=str(path), phenomenon=info.phenomenon,
        language=info.language, license=info.license, citation=info.citation, segmentation=seg,
        metadata={"format": info.format, **info.metadata, "segmentation_source": how}).validate()
