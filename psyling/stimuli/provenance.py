"""Provenance sidecars: a YAML file beside a data file, ``<data file name>.psyling.yaml`` (``pairs.csv`` ->
``pairs.csv.psyling.yaml``), declaring what the data file itself cannot say:

    name: my_pairs                 # the set's name (a file holding one set only)
    description: ...
    citation: "Author (2024). Title."
    license: CC-BY-4.0
    language: zh
    phenomenon: classifiers
    segmentation: none             # auto (detected from the text), whitespace or none
    columns: {good: ok_sentence, bad: star_sentence, id: n}   # pair tables and JSONL: which column is which
    order: bad_first               # text files: the bad sentence comes first (default good_first)

Every key is optional; an unknown key or a value of the wrong type is a one-line error. Provenance comes from
the data file and its sidecar only, never from another dataset's defaults: what neither says stays unknown
('')."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import StimulusError
from .fields import Where, string
from .manifest import read_manifest
from .schema import StimulusSet
from .segmentation import SEGMENTATION_CHOICES

SIDECAR_SUFFIX = ".psyling.yaml"
TEXT_FIELDS = ("name", "description", "citation", "license", "language", "phenomenon")
COLUMN_ROLES = ("good", "bad", "id")
ORDERS = ("good_first", "bad_first")
SIDECAR_KEYS = (*TEXT_FIELDS, "segmentation", "columns", "order")


@dataclass(frozen=True)
class Sidecar:
    """A data file's sidecar as read (``source`` '' when the file has none)."""
    source: str = ""
    text: dict[str, str] = field(default_factory=dict)  # the TEXT_FIELDS it gives
    segmentation: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)  # role (good, bad, id) -> column name
    order: str = "good_first"

    @property
    def layout_keys(self) -> list[str]:
        """The keys given that describe a pair file's layout (columns, order)."""
        return [k for k, given in (("columns", bool(self.columns)), ("order", self.order != "good_first")) if given]


NO_SIDECAR = Sidecar()


def sidecar_path(data: Path) -> Path:
    """Where the sidecar of ``data`` lives."""
    return data.with_name(data.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    return path.name.endswith(SIDECAR_SUFFIX)


def data_path(sidecar: Path) -> Path:
    """The data file a sidecar describes."""
    return sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])


def _string(value: Any, key: str, source: str) -> str:
    return string(value, Where(source), key).strip()


def _choice(value: Any, key: str, choices: tuple[str, ...], source: str) -> str:
    if value not in choices:
        raise StimulusError(f"must be one of {', '.join(choices)}, got {value!r}", file=source, field=key)
    return value


def _columns(value: Any, source: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Where(source).wrong(value, f"an object mapping {', '.join(COLUMN_ROLES)} to column names", "columns")
    unknown = [k for k in value if k not in COLUMN_ROLES]
    if unknown:
        raise StimulusError(f"unknown role {unknown[0]!r} (known: {', '.join(COLUMN_ROLES)})", file=source,
                            field="columns")
    return {role: _string(name, f"columns.{role}", source) for role, name in value.items()}


def read_sidecar(data: Path) -> Sidecar:
    """The sidecar of ``data``, or ``NO_SIDECAR`` when there is none; checked key by key."""
    path = sidecar_path(data)
    if not path.is_file():
        return NO_SIDECAR
    source = str(path)
    raw = read_manifest(path)
    unknown = [k for k in raw if k not in SIDECAR_KEYS]
    if unknown:
        raise StimulusError(f"unknown key {unknown[0]!r} (known: {', '.join(SIDECAR_KEYS)})", file=source,
                            field=str(unknown[0]))
    return Sidecar(source=source, text={k: _string(raw[k], k, source) for k in TEXT_FIELDS if k in raw},
                   segmentation=_choice(raw.get("segmentation", "auto"), "segmentation", SEGMENTATION_CHOICES,
                                        source),
                   columns=_columns(raw["columns"], source) if "columns" in raw else {},
                   order=_choice(raw.get("order", "good_first"), "order", ORDERS, source))


def apply_provenance(sets: list[StimulusSet], sidecar: Sidecar, path: Path) -> list[StimulusSet]:
    """The sets with the sidecar's fields in place of the file's; a set whose phenomenon is still unknown takes
    its own name as phenomenon (so that analyses never pool unrelated sets under '')."""
    if "name" in sidecar.text and len(sets) != 1:
        raise StimulusError(f"a sidecar name needs a file holding one set; {path.name} holds {len(sets)}",
                            file=sidecar.source, field="name")
    out = []
    for stim in sets:
        if sidecar.source:
            stim = replace(stim, **sidecar.text, metadata={**stim.metadata, "sidecar": sidecar.source})
            _revalidate(stim, sidecar)
        if not stim.phenomenon:
            stim = replace(stim, phenomenon=stim.name, metadata={**stim.metadata, "phenomenon_source": "set name"})
        out.append(stim)
    return out


def _revalidate(stim: StimulusSet, sidecar: Sidecar) -> None:
    """Check a set again after the sidecar's fields replaced its own; a bad name is the sidecar's error."""
    try:
        stim.validate()
    except StimulusError as exc:
        if exc.field == "name":
            raise StimulusError(exc.reason, file=sidecar.source, field="name") from None
        raise
