"""Read BLiMP paradigm files (JSONL, one minimal pair per line)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import StimulusError
from .manifest import read_text
from .schema import Condition, Item, StimulusSet, parse_predictions

BLIMP_CITATION = ("Warstadt, A., Parrish, A., Liu, H., Mohananey, A., Peng, W., Wang, S.-F., & Bowman, S. R. "
                  "(2020). BLiMP: The Benchmark of Linguistic Minimal Pairs for English. TACL 8, 377-392.")
BLIMP_PREDICTION = "(*;%good%) < (*;%bad%)"


def load_blimp(path: Path) -> StimulusSet:
    """Load a BLiMP paradigm: each pair is an item with conditions good/bad and one region."""
    source = str(path)
    items, meta = [], {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StimulusError(f"line {line_no} is not valid JSON: {exc.msg}", file=source, field="json") from None
        if not isinstance(row, dict):
            raise StimulusError(f"line {line_no} is not a JSON object", file=source, field="json")
        item_id = str(row.get("pairID", line_no - 1))
        conds = {}
        for cond in ("good", "bad"):
            text = row.get(f"sentence_{cond}")
            if not isinstance(text, str) or not text.strip():
                raise StimulusError(f"line {line_no}: missing or empty", file=source, item=item_id,
                                    condition=cond, field=f"sentence_{cond}")
            conds[cond] = Condition(cond, (" ".join(text.split()),))
        extra = {k: v for k, v in row.items() if not k.startswith("sentence_")}
        meta = meta or {k: row.get(k) for k in ("field", "linguistics_term", "UID")}
        items.append(Item(item_id, conds, extra))
    stim = StimulusSet(
        name=str(meta.get("UID") or path.stem), regions=("sentence",), conditions=("good", "bad"), items=items,
        predictions=parse_predictions([BLIMP_PREDICTION], source), source=source,
        phenomenon=str(meta.get("linguistics_term") or ""), citation=BLIMP_CITATION, license="CC-BY-4.0",
        metadata={"format": "blimp", "field": meta.get("field")})
    return stim.validate()
