"""psyling's own on-disk format: a YAML manifest plus items as CSV/TSV (one row per item x condition)."""
from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import StimulusError
from .fields import Where, json_type, optional_string
from .schema import HUMAN_MEASURES, SCHEMA_VERSION, Condition, HumanFinding, Item, StimulusSet, parse_predictions
from .segmentation import resolve_segmentation

REQUIRED = ("name", "phenomenon", "citation", "regions", "conditions", "items", "predictions")
OPTIONAL_TEXT = ("version", "description", "language", "license", "metric", "segmentation", "context_column")
ID_COLUMNS = ("item", "condition")
# A column of unscored context must be declared (``context_column: prefix``): an undeclared ``prefix`` column is
# an error, never silently context; ``context_column: none`` makes ``prefix`` an ordinary (scored) region name.
DEFAULT_CONTEXT_COLUMN = "prefix"
NO_CONTEXT = "none"


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
    raise StimulusError(f"must be {want}, got {json_type(value)}", file=source, field=key)


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
                               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ci)):
        raise StimulusError("must be a list [low, high] of numbers", file=source, field="human.ci")
    size = value.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))):
        raise StimulusError("must be a number", file=source, field="human.size")
    effect = value.get("effect")
    if effect is not None and not isinstance(effect, str):
        raise StimulusError("must be an expression such as (verb;%mismatch%) - (verb;%match%)", file=source,
                            field="human.effect")
    where = Where(source)
    text = {key: optional_string(value.get(key), where, f"human.{key}") or None
            for key in ("region", "unit", "size_source")}
    return HumanFinding(measure=value["measure"], direction=value["direction"], source=value["source"],
                        size=size, ci=tuple(ci) if ci else None, effect=effect, **text)


def _factors(value: Any, source: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise StimulusError("must map each factor name to a list of levels, one per condition", file=source,
                            field="factors")
    for name, levels in value.items():
        wrong = [v for v in levels if isinstance(v, (list, dict)) or v is None]
        if not isinstance(name, str) or wrong:
            got = json_type(name) if not isinstance(name, str) else json_type(wrong[0])
            raise StimulusError(f"a factor is a name with levels that are strings, numbers or booleans, got {got}",
                                file=source, field=f"factors.{name}")
    return {k: tuple(str(level) for level in v) for k, v in value.items()}


def _context_column(manifest: dict, regions: list[str], source: str) -> tuple[Optional[str], bool]:
    """(the items-file column that holds unscored context, or None; whether the manifest declared it)."""
    if "context_column" not in manifest:
        if DEFAULT_CONTEXT_COLUMN in regions:
            raise StimulusError(
                f"region name {DEFAULT_CONTEXT_COLUMN!r} is reserved for the unscored context column: rename the "
                f"region and its column, or declare context_column (the context column, or {NO_CONTEXT}) to "
                f"score a region named {DEFAULT_CONTEXT_COLUMN}", file=source, field="regions")
        return DEFAULT_CONTEXT_COLUMN, False
    name = _typed(manifest, "context_column", str, source)
    if name == NO_CONTEXT:
        return None, True
    if name in ID_COLUMNS or name in regions:
        raise StimulusError(f"{name!r} is {'a region' if name in regions else 'reserved'}; the context column "
                            "holds unscored text and is not a region", file=source, field="context_column")
    return name, True


def _columns(reader: csv.DictReader, path: Path, regions: list[str], context: tuple[Optional[str], bool]) -> \
        tuple[list[str], Optional[str]]:
    """The extra (metadata) columns, and the context column actually present."""
    columns = reader.fieldnames or []
    for col in (*ID_COLUMNS, *regions):
        if col not in columns:
            raise StimulusError(f"column {col!r} is missing (columns: {', '.join(columns)})", file=str(path),
                                field=col)
    name, declared = context
    if not declared and name in columns:
        raise StimulusError(f"column {name!r}: declare context_column: {name} to read it as unscored context "
                            f"(conditioned on, not scored), or context_column: none and list {name} in regions to "
                            "score it", file=str(path), field=name)
    if declared and name is not None and name not in columns:
        raise StimulusError(f"column {name!r} (the manifest's context_column) is missing (columns: "
                            f"{', '.join(columns)})", file=str(path), field="context_column")
    present = name if name in columns else None
    return [c for c in columns if c not in ID_COLUMNS and c not in regions and c != present], present


def _read_items(path: Path, regions: list[str], source_field: str,
                context: tuple[Optional[str], bool]) -> tuple[list[Item], Optional[str]]:
    """The items (regions joined by spaces until the set's segmentation is known), and the context column used."""
    if not path.is_file():
        raise StimulusError(f"items file {path} not found", file=source_field, field="items")
    text = read_text(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    extra, context_col = _columns(reader, path, regions, context)
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
        prefix = row[context_col] if context_col else ""
        item.conditions[cond] = Condition(cond, tuple(row[r] for r in regions), prefix or "")
    return list(items.values()), context_col


def _joined_without_spaces(items: list[Item]) -> list[Item]:
    return [replace(item, conditions={name: replace(cond, separator="") for name, cond in item.conditions.items()})
            for item in items]


def _header(manifest: dict, source: str) -> tuple[list[str], list[str], list]:
    """The manifest's version, required fields, regions, conditions and predictions, checked."""
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise StimulusError(f"unsupported schema_version {version!r} (this psyling reads {SCHEMA_VERSION})",
                            file=source, field="schema_version")
    for key in REQUIRED:
        if key not in manifest:
            raise StimulusError("required field is missing", file=source, field=key)
    regions = _typed(manifest, "regions", list, source)
    clash = [r for r in regions if r in ID_COLUMNS]
    if clash:
        raise StimulusError(f"region name {clash[0]!r} is reserved for a column of the items file", file=source,
                            field="regions")
    conditions = _typed(manifest, "conditions", list, source)
    predictions = manifest["predictions"]
    if not isinstance(predictions, list):
        raise StimulusError("must be a list of formulas", file=source, field="predictions")
    return regions, conditions, predictions


def _manipulated(manifest: dict, allowed: list[str], source: str) -> None:
    if manifest.get("manipulated") is None:
        return
    unknown = [r for r in _typed(manifest, "manipulated", list, source) if r not in allowed]
    if unknown:
        raise StimulusError(f"names unknown region {unknown[0]!r}", file=source, field="manipulated")


def load_manifest_set(path: Path, segmentation: str = "auto") -> StimulusSet:
    """Load a set from a YAML manifest and its CSV/TSV items; validate it. The set's segmentation is
    ``segmentation`` when not "auto" (a reader option), else the manifest's ``segmentation`` key, else detected
    from the text (a script written without spaces: "none", regions joined without a separator)."""
    source = str(path)
    manifest = read_manifest(path)
    regions, conditions, predictions = _header(manifest, source)
    context = _context_column(manifest, regions, source)
    text = {k: _typed(manifest, k, str, source) for k in ("name", "phenomenon", "citation", "items")}
    text.update({k: _typed(manifest, k, str, source) for k in OPTIONAL_TEXT if k in manifest})
    items_path = path.parent / text.pop("items")
    text.pop("context_column", None)
    _manipulated(manifest, regions + ([context[0]] if context[0] else []), source)
    items, context_col = _read_items(items_path, regions, source, context)
    own = text.pop("segmentation", None)
    declared = segmentation if segmentation not in (None, "auto") else own
    seg, seg_source = resolve_segmentation(declared, (t for i in items for c in i.conditions.values()
                                                      for t in c.regions))
    known = set(REQUIRED) | set(OPTIONAL_TEXT) | {"schema_version", "human", "factors"}
    stim = StimulusSet(
        regions=tuple(regions), conditions=tuple(conditions), segmentation=seg,
        items=_joined_without_spaces(items) if seg == "none" else items,
        predictions=parse_predictions(predictions, source), source=source,
        human=_human(manifest.get("human"), source), factors=_factors(manifest.get("factors"), source),
        metadata={"format": "psyling", "items_file": str(items_path), "segmentation_source": seg_source,
                  "context_column": context_col,
                  **{k: v for k, v in manifest.items() if k not in known}}, **text)
    try:
        return stim.validate()
    except StimulusError as exc:
        if exc.item is not None:  # item-level problems are located in the items file
            raise StimulusError(exc.reason, file=str(items_path), item=exc.item, condition=exc.condition,
                                field=exc.field) from None
        raise
