"""Read and write SyntaxGym test-suite JSON (the format of syntaxgym-core and Hu et al. 2020; the older
pre-2020 shapes are converted by :mod:`.syntaxgym_legacy`). Every field's type is checked before use."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import StimulusError
from .fields import Where, array, integer, mapping, optional_string, string, string_list
from .manifest import read_text
from .schema import Condition, Item, StimulusSet, parse_predictions
from .segmentation import resolve_segmentation
from .syntaxgym_legacy import upgrade_legacy

REQUIRED = ("meta", "region_meta", "predictions", "items")
META_TEXT = ("comment", "reference", "author", "language")  # optional strings of ``meta``

RawItem = tuple[str, list[tuple[str, tuple[str, ...]]]]  # item id, (condition name, region texts) in file order


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise StimulusError(f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                            file=str(path), field="json") from None


def _detokenize(texts: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[int]]:
    """Attach the 2020 suites' free-standing " ." and " ," to the preceding word: inside a region by
    removing the space, and a region that starts with the mark by joining it to the previous region."""
    out = tuple(re.sub(r" ([.,])(?=\s|$)", r"\1", t) for t in texts)
    nonempty = [i for i, t in enumerate(out) if t]
    attached = frozenset(i for i in nonempty[1:] if out[i][:1] in ".,")
    return out, attached


def _meta(value: Any, where: Where) -> dict:
    """``meta`` with a string name, a string metric (default sum) and optional string comment, reference,
    author and language; a list of string tags."""
    meta = mapping(value, where, "meta")
    string(meta.get("name"), where, "meta.name")
    if "metric" in meta:
        string(meta["metric"], where, "meta.metric")
    for key in META_TEXT:
        optional_string(meta.get(key), where, f"meta.{key}")
    if "tags" in meta:
        string_list(meta["tags"], where, "meta.tags")
    return meta


def _language(meta: dict, segmentation: str) -> str:
    """``meta.language``; without it English (SyntaxGym's suites are English), unknown ("") for a suite in a
    script written without spaces."""
    return meta.get("language") or ("" if segmentation == "none" else "en")


def _region_names(value: Any, where: Where) -> tuple[str, ...]:
    """``region_meta``: region number ("1".."N") -> non-empty string name."""
    region_meta = mapping(value, where, "region_meta")
    if not region_meta:
        raise where.error("must be a non-empty object of region number -> name", "region_meta")
    numbers = sorted(region_meta, key=lambda k: int(k) if str(k).isdigit() else -1)
    if numbers != [str(i) for i in range(1, len(numbers) + 1)]:
        raise where.error("region numbers must be 1..N", "region_meta")
    return tuple(string(region_meta[n], where, f"region_meta.{n}") for n in numbers)


def _formulas(value: Any, where: Where) -> list[str]:
    """``predictions``: objects ``{"type": "formula", "formula": "..."}`` (type may be left out)."""
    out = []
    for k, prediction in enumerate(array(value, where, "predictions"), start=1):
        field = f"predictions[{k}]"
        prediction = mapping(prediction, where, field)
        kind = string(prediction.get("type", "formula"), where, f"{field}.type")
        if kind != "formula":
            raise where.error(f"unsupported prediction type {kind!r} (only 'formula')", f"{field}.type")
        out.append(string(prediction.get("formula"), where, f"{field}.formula"))
    return out


def _item_id(raw: dict, position: int, where: Where) -> str:
    """An item's number: an integer (or a non-empty string), as the item's id."""
    value = raw.get("item_number")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return str(integer(value, where, f"items[{position}].item_number"))


def _region_texts(value: Any, n_regions: int, where: Where) -> tuple[str, ...]:
    """A condition's ``regions``: objects with a region number 1..N (each once) and string content."""
    by_number: dict[int, str] = {}
    for k, region in enumerate(array(value, where, "regions"), start=1):
        field = f"regions[{k}]"
        region = mapping(region, where, field)
        number = integer(region.get("region_number"), where, f"{field}.region_number")
        if not 1 <= number <= n_regions:
            raise where.error(f"region number {number} is not in region_meta 1..{n_regions}",
                              f"{field}.region_number")
        if number in by_number:
            raise where.error(f"region number {number} appears twice", f"{field}.region_number")
        by_number[number] = string(region.get("content"), where, f"{field}.content", nonempty=False)
    if len(by_number) != n_regions:
        raise where.error(f"regions {sorted(by_number)} do not match region_meta 1..{n_regions}", "regions")
    return tuple(by_number[n] for n in range(1, n_regions + 1))


def _conditions(value: Any, n_regions: int, where: Where) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for k, cond in enumerate(array(value, where, "conditions"), start=1):
        cond = mapping(cond, where, f"conditions[{k}]")
        name = string(cond.get("condition_name"), where, f"conditions[{k}].condition_name")
        if any(name == seen for seen, _ in out):
            raise where.at(condition=name).error("condition appears twice", "condition_name")
        out.append((name, _region_texts(cond.get("regions"), n_regions, where.at(condition=name))))
    return out


def _items(value: Any, n_regions: int, where: Where) -> list[RawItem]:
    out = []
    for position, raw in enumerate(array(value, where, "items"), start=1):
        raw = mapping(raw, where, f"items[{position}]")
        item_id = _item_id(raw, position, where)
        if "conditions" not in raw:
            raise where.at(item=item_id).error("required field is missing", "conditions")
        out.append((item_id, _conditions(raw["conditions"], n_regions, where.at(item=item_id))))
    return out


def _build_items(raw_items: list[RawItem], separator: str, detokenize: bool) -> tuple[list[Item], dict[str, int]]:
    """Items with normalised region whitespace (and, with ``detokenize``, attached periods and commas);
    counts of the regions changed by each."""
    items, counts = [], {"normalised": 0, "detokenized": 0}
    for item_id, conditions in raw_items:
        conds: dict[str, Condition] = {}
        for name, original in conditions:
            texts = tuple(_normalise(t) for t in original)
            counts["normalised"] += sum(a != b for a, b in zip(texts, original))
            attached: frozenset[int] = frozenset()
            if detokenize:
                new, attached = _detokenize(texts)
                counts["detokenized"] += sum(a != b or i in attached for i, (a, b) in enumerate(zip(new, texts)))
                texts = new
            conds[name] = Condition(name, texts, separator=separator, attached=attached)
        items.append(Item(item_id, conds))
    return items, counts


def _condition_order(raw_items: list[RawItem]) -> tuple[str, ...]:
    names: list[str] = []
    for _, conditions in raw_items:
        names += [name for name, _ in conditions if name not in names]
    return tuple(names)


def load_syntaxgym(path: Path, detokenize: bool = False, *, segmentation: str = "auto") -> StimulusSet:
    """Load a SyntaxGym suite (current or legacy shape). Region whitespace is normalised (count kept in
    metadata). ``detokenize`` attaches free-standing periods and commas to the preceding word (recorded in the
    set's metadata). ``segmentation`` "auto" detects a script written without spaces (regions are then joined
    without a separator); "whitespace" or "none" declares it."""
    where = Where(str(path))
    suite = mapping(_json(path), where, "suite")
    suite, legacy = upgrade_legacy(suite, where)
    for key in REQUIRED:
        if key not in suite:
            raise where.error("required field is missing", key)
    meta = _meta(suite["meta"], where)
    regions = _region_names(suite["region_meta"], where)
    predictions = parse_predictions(_formulas(suite["predictions"], where), where.file)
    raw_items = _items(suite["items"], len(regions), where)
    seg, seg_source = resolve_segmentation(None if segmentation == "auto" else segmentation,
                                           (t for _, conds in raw_items for _, texts in conds for t in texts))
    items, counts = _build_items(raw_items, "" if seg == "none" else " ", detokenize)
    extra_meta = {k: v for k, v in meta.items() if k not in ("name", "metric")}
    metadata = {"format": "syntaxgym-legacy" if legacy else "syntaxgym", "syntaxgym_meta": extra_meta,
                "whitespace_normalised_regions": counts["normalised"],
                "detokenized_regions": counts["detokenized"] if detokenize else None,
                "segmentation_source": seg_source}
    if legacy:
        metadata["syntaxgym_legacy"] = legacy
    stim = StimulusSet(
        name=meta["name"], regions=regions, conditions=_condition_order(raw_items), items=items,
        predictions=predictions, source=where.file, metric=meta.get("metric", "sum"),
        description=optional_string(meta.get("comment"), where, "meta.comment"),
        citation=optional_string(meta.get("reference"), where, "meta.reference"),
        language=_language(meta, seg), phenomenon=meta["name"], segmentation=seg, metadata=metadata)
    return stim.validate()


def to_syntaxgym(stim: StimulusSet) -> dict:
    """Write a set as a SyntaxGym suite dict (prefixes are not representable and must be empty)."""
    meta = {"name": stim.name, "metric": stim.metric, **stim.metadata.get("syntaxgym_meta", {})}
    items = []
    for item in stim.items:
        conds = []
        for name, cond in item.conditions.items():  # the item's own order, as read
            if cond.prefix:
                raise StimulusError("SyntaxGym JSON has no prefix field", file=stim.source, item=item.id,
                                    condition=name, field="prefix")
            conds.append({"condition_name": name, "regions": [
                {"region_number": i, "content": text} for i, text in enumerate(cond.regions, start=1)]})
        items.append({"item_number": int(item.id) if item.id.isdigit() else item.id, "conditions": conds})
    return {"meta": meta, "region_meta": {str(i): r for i, r in enumerate(stim.regions, start=1)},
            "predictions": [{"type": "formula", "formula": p.formula} for p in stim.predictions],
            "items": items}
