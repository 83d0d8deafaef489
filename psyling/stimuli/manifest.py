"""psyling's own on-disk format: a YAML manifest plus items as CSV/TSV (one row per item x condition)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from ..errors import StimulusError
from .schema import HUMAN_MEASURES, SCHEMA_VERSION, Condition, HumanFinding, Item, StimulusSet, parse_predictions

REQUIRED = ("name", "phenomenon", "citation", "regions", "conditions", "items", "predictions")
OPTIONAL_TEXT = ("version", "description", "language", "license", "metric", "segmentation")
RESERVED_COLUMNS = ("item", "condition", "prefix")


def read_text(path: Path) -> str:
    """Read a UTF-8 file, reporting undecodable bytes as a StimulusError with line number."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StimulusError(f"invalid UTF-8 at line {line} (byte {exc.start})", file=str(path),
                            field="encoding") from None


def _typed(manifest: dict, key: str, kind: type, source: str) -> Any:
    value = manifest.get(key)
    if kind is list and isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return value
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    want = "a list of non-empty strings" if kind is list else "a string"
    raise StimulusError(f"must be {want}, got {type(value).__name__}", file=source, field=key)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML itself keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_manifest(path: Path) -> dict:
    """Parse a manifest file into a dict; YAML errors (a key given twice included) become one-line
    StimulusErrors."""
    try:
        manifest = yaml.load(read_text(path), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise StimulusError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=str(path),
                            field="manifest") from None
    if not isinstance(manifest, dict):
        raise StimulusError("the manifest must be a mapping of fields", file=str(path), field="manifest")
    return manifest


def _human(value: Any, source: str) -> HumanFinding | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StimulusError("must be a mapping", file=source, field="human")
    for key in ("measure", "direction", "source"):
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise StimulusError("missing or not a string", file=source, field=f"human.{key}")
    if value["measure"] not in HUMAN_MEASURES:
        raise StimulusError(f"unknown measure {value['measure']!r} (choose from {', '.join(HUMAN_MEASURES)})",
                            file=source, field="human.measure")
    ci = value.get("ci")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2
                               and all(isinstance(v, (int, float)) for v in ci)):
        raise StimulusError("must be a list [low, high] of numbers", file=source, field="human.ci")
    size = value.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))):
        raise StimulusError("must be a number", file=source, field="human.size")
    effect = value.get("effect")
    if effect is not None and not isinstance(effect, str):
        raise StimulusError("must be an expression such as (verb;%mismatch%) - (verb;%match%)", file=source,
                            field="human.effect")
    return HumanFinding(measure=value["measure"], region=value.get("region"), direction=value["direction"],
                        source=value["source"], size=size, unit=value.get("unit"),
                        ci=tuple(ci) if ci else None, effect=effect, size_source=value.get("size_source"))


def _factors(value: Any, source: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise StimulusError("must map each factor name to a list of levels, one per condition", file=source,
                            field="factors")
    return {str(k): tuple(str(level) for level in v) for k, v in value.items()}


def _read_items(path: Path, regions: list[str], source_field: str, separator: str) -> list[Item]:
    if not path.is_file():
        raise StimulusError(f"items file {path} not found", file=source_field, field="items")
    text = read_text(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = reader.fieldnames or []
    for col in ("item", "condition", *regions):
        if col not in columns:
            raise StimulusError(f"column {col!r} is missing (columns: {', '.join(columns)})", file=str(path),
                                field=col)
    extra = [c for c in columns if c not in RESERVED_COLUMNS and c not in regions]
    items: dict[str, Item] = {}
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            raise StimulusError(f"line {line} has {'more' if None in row else 'fewer'} fields than the header",
                                file=str(path), item=row.get("item"), field="row")
        item_id, cond = row["item"].strip(), row["condition"].strip()
        if not item_id:
            raise StimulusError(f"line {line}: empty item id", file=str(path), field="item")
        if not cond:
            raise StimulusError(f"line {line}: empty condition", file=str(path), item=item_id, field="condition")
        item = items.setdefault(item_id, Item(item_id, {}, {c: row[c] for c in extra}))
        if cond in item.conditions:
            raise StimulusError(f"line {line}: duplicate row for this item and condition", file=str(path),
                                item=item_id, condition=cond, field="condition")
        item.conditions[cond] = Condition(cond, tuple(row[r] for r in regions), row.get("prefix") or "",
                                          separator=separator)
    return list(items.values())


def load_manifest_set(path: Path) -> StimulusSet:
    """Load a set from a YAML manifest and its CSV/TSV items; validate it."""
    source = str(path)
    manifest = read_manifest(path)
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise StimulusError(f"unsupported schema_version {version!r} (this psyling reads {SCHEMA_VERSION})",
                            file=source, field="schema_version")
    for key in REQUIRED:
        if key not in manifest:
            raise StimulusError("required field is missing", file=source, field=key)
    regions = _typed(manifest, "regions", list, source)
    clash = [r for r in regions if r in RESERVED_COLUMNS]
    if clash:
        raise StimulusError(f"region name {clash[0]!r} is reserved for a column of the items file", file=source,
                            field="regions")
    conditions = _typed(manifest, "conditions", list, source)
    predictions = manifest["predictions"]
    if not isinstance(predictions, list):
        raise StimulusError("must be a list of formulas", file=source, field="predictions")
    text = {k: _typed(manifest, k, str, source) for k in ("name", "phenomenon", "citation", "items")}
    text.update({k: _typed(manifest, k, str, source) for k in OPTIONAL_TEXT if k in manifest})
    items_path = path.parent / text.pop("items")
    manipulated = manifest.get("manipulated")
    if manipulated is not None:
        manipulated = _typed(manifest, "manipulated", list, source)
        unknown = [r for r in manipulated if r not in regions and r != "prefix"]
        if unknown:
            raise StimulusError(f"names unknown region {unknown[0]!r}", file=source, field="manipulated")
    known = set(REQUIRED) | set(OPTIONAL_TEXT) | {"schema_version", "human", "factors"}
    stim = StimulusSet(
        regions=tuple(regions), conditions=tuple(conditions),
        items=_read_items(items_path, regions, source, "" if text.get("segmentation") == "none" else " "),
        predictions=parse_predictions(predictions, source), source=source,
        human=_human(manifest.get("human"), source), factors=_factors(manifest.get("factors"), source),
        metadata={"format": "psyling", "items_file": str(items_path),
                  **{k: v for k, v in manifest.items() if k not in known}}, **text)
    try:
        return stim.validate()
    except StimulusError as exc:
        if exc.item is not None:  # item-level problems are located in the items file
            raise StimulusError(exc.reason, file=str(items_path), item=exc.item, condition=exc.condition,
                                field=exc.field) from None
        raise
