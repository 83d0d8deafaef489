"""Minimal pairs in plain text files (.txt), one set per file. Blank lines are ignored; the layout is read
from the lines themselves:

- every line holds ``@@@``: a separator file, one pair per line, ``good@@@bad``;
- every line holds a tab: ``good<TAB>bad`` per line; or, when the first line is a header naming the good and
  bad columns (:mod:`.pairs`), a tab-separated pair table;
- no line holds either: alternating lines, good then bad (an odd number of lines is an error).

A file mixing these is an error naming the first line that breaks the layout. The sidecar's ``order:
bad_first`` says the bad sentence comes first (in a line or a pair of lines). Items are numbered from 1."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import StimulusError
from .manifest import read_text
from .pairs import PairInfo, PairRow, find_columns, pair_set
from .provenance import NO_SIDECAR, Sidecar
from .reading import ReaderOptions, segmentation_of
from .schema import StimulusSet
from .tables import load_pairs_csv

SEPARATORS = {"@@@": "separator @@@", "\t": "separator tab"}

Line = tuple[int, str]  # (line number, text)


def _layout(path: Path, lines: list[Line]) -> Optional[str]:
    """The separator every line holds (None: alternating lines); a file that mixes layouts is an error."""
    for mark in SEPARATORS:
        holding = [n for n, text in lines if mark in text]
        if holding and len(holding) < len(lines):
            first = next(n for n, text in lines if mark not in text)
            raise StimulusError(f"line {first} has no {mark!r} but line {holding[0]} has: a separator file needs "
                                f"one on every line, an alternating-line file none", file=str(path), field="line")
        if holding:
            return mark
    return None


def _split(path: Path, number: int, position: int, text: str, mark: str) -> tuple[str, str]:
    parts = text.split(mark)
    if len(parts) != 2:
        raise StimulusError(f"line {number} has {len(parts) - 1} {mark!r} separators; a pair needs exactly one",
                            file=str(path), item=position, field="line")
    return parts[0], parts[1]


def _pairs(path: Path, lines: list[Line], mark: Optional[str]) -> list[tuple[int, str, str]]:
    """(line number, first sentence, second sentence) of each pair, in file order."""
    if mark is not None:
        return [(n, *_split(path, n, k, text, mark)) for k, (n, text) in enumerate(lines, start=1)]
    if len(lines) % 2:
        raise StimulusError(f"{len(lines)} non-blank lines: alternating good and bad lines need an even number "
                            f"(line {lines[-1][0]} has no partner)", file=str(path), field="line")
    return [(lines[k][0], lines[k][1], lines[k + 1][1]) for k in range(0, len(lines), 2)]


def _is_table(lines: list[Line], sidecar: Sidecar, path: Path) -> bool:
    return bool(sidecar.columns) or find_columns(lines[0][1].split("\t"), str(path)) is not None


def load_text_pairs(path: Path, options: ReaderOptions = ReaderOptions(),
                    sidecar: Sidecar = NO_SIDECAR) -> list[StimulusSet]:
    """The pair set of a text file (layouts in the module docstring)."""
    lines = [(n, text) for n, text in enumerate(read_text(path).splitlines(), start=1) if text.strip()]
    if not lines:
        raise StimulusError("the file has no pairs", file=str(path), field="items")
    mark = _layout(path, lines)
    if mark == "\t" and _is_table(lines, sidecar, path):
        return load_pairs_csv(path, options, sidecar, delimiter="\t")
    if sidecar.columns:
        raise StimulusError("names columns, but the text file has no tab-separated header row", file=sidecar.source,
                            field="columns")
    rows = []
    for position, (number, first, second) in enumerate(_pairs(path, lines, mark), start=1):
        good, bad = (second, first) if sidecar.order == "bad_first" else (first, second)
        for condition, text in (("good", good), ("bad", bad)):
            if not text.strip():
                raise StimulusError(f"line {number}: missing or empty", file=str(path), item=position,
                                    condition=condition, field=condition)
        rows.append(PairRow(str(position), good, bad))
    layout = SEPARATORS[mark] if mark else "alternating lines"
    info = PairInfo(path.stem, "pairs-text", metadata={"layout": layout, "order": sidecar.order})
    return [pair_set(path, rows, info, segmentation_of(options, (t for r in rows for t in (r.good, r.bad))))]
