"""Read and write SyntaxGym test-suite JSON (the format of syntaxgym-core and Hu et al. 2020)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import StimulusError
from .manifest import read_text
from .schema import Condition, Item, StimulusSet, parse_predictions


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


def load_syntaxgym(path: Path, detokenize: bool = False) -> StimulusSet:
    """Load a SyntaxGym suite. Region whitespace is normalised (count kept in metadata). ``detokenize``
    attaches free-standing periods and commas to the preceding word (recorded in the set's metadata)."""
    source = str(path)
    suite = _json(path)
    if not isinstance(suite, dict):
        raise StimulusError("a SyntaxGym suite must be a JSON object", file=source, field="suite")
    for key in ("meta", "region_meta", "predictions", "items"):
        if key not in suite:
            raise StimulusError("required field is missing", file=source, field=key)
    meta, region_meta = suite["meta"], suite["region_meta"]
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise StimulusError("must be an object with a string 'name'", file=source, field="meta")
    if not isinstance(region_meta, dict) or not region_meta:
        raise StimulusError("must be a non-empty object of region number -> name", file=source,
                            field="region_meta")
    numbers = sorted(region_meta, key=lambda k: int(k) if str(k).isdigit() else -1)
    if numbers != [str(i) for i in range(1, len(numbers) + 1)]:
        raise StimulusError("region numbers must be 1..N", file=source, field="region_meta")
    regions = tuple(str(region_meta[n]) for n in numbers)
    if not isinstance(suite["predictions"], list) or not all(isinstance(p, dict) for p in suite["predictions"]):
        raise StimulusError("must be a list of {type, formula} objects", file=source, field="predictions")
    predictions = parse_predictions([p.get("formula") for p in suite["predictions"]], source)
    if not isinstance(suite["items"], list):
        raise StimulusError("must be a list", file=source, field="items")
    items, conditions, normalised, detokenized = [], [], 0, 0
    for raw in suite["items"]:
        if not isinstance(raw, dict) or "item_number" not in raw or not isinstance(raw.get("conditions"), list):
            raise StimulusError("each item needs item_number and a list of conditions", file=source,
                                field="items")
        item_id = str(raw["item_number"])
        conds: dict[str, Condition] = {}
        for c in raw["conditions"]:
            name = c.get("condition_name") if isinstance(c, dict) else None
            if not isinstance(name, str) or not name:
                raise StimulusError("missing condition_name", file=source, item=item_id, field="condition_name")
            if name in conds:
                raise StimulusError("condition appears twice", file=source, item=item_id, condition=name,
                                    field="condition_name")
            by_number: dict[int, str] = {}
            for r in c.get("regions") or []:
                if not isinstance(r, dict) or not isinstance(r.get("region_number"), int) \
                        or not isinstance(r.get("content"), str):
                    raise StimulusError("each region needs an integer region_number and string content",
                                        file=source, item=item_id, condition=name, field="regions")
                by_number[r["region_number"]] = r["content"]
            missing = [n for n in range(1, len(regions) + 1) if n not in by_number]
            if missing or len(by_number) != len(regions):
                raise StimulusError(f"regions {sorted(by_number)} do not match region_meta 1..{len(regions)}",
                                    file=source, item=item_id, condition=name, field="regions")
            texts = tuple(_normalise(by_number[n]) for n in range(1, len(regions) + 1))
            normalised += sum(t != by_number[n] for n, t in enumerate(texts, start=1))
            attached: frozenset[int] = frozenset()
            if detokenize:
                new, attached = _detokenize(texts)
                detokenized += sum(a != b or i in attached for i, (a, b) in enumerate(zip(new, texts)))
                texts = new
            conds[name] = Condition(name, texts, attached=attached)
            if name not in conditions:
                conditions.append(name)
        items.append(Item(item_id, conds))
    extra_meta = {k: v for k, v in meta.items() if k not in ("name", "metric")}
    stim = StimulusSet(
        name=meta["name"], regions=regions, conditions=tuple(conditions), items=items,
        predictions=predictions, source=source, metric=str(meta.get("metric", "sum")),
        description=str(meta.get("comment", "")), citation=str(meta.get("reference", "")),
        phenomenon=meta["name"], metadata={"format": "syntaxgym", "syntaxgym_meta": extra_meta,
                                           "whitespace_normalised_regions": normalised,
                                           "detokenized_regions": detokenized if detokenize else None})
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
