"""``psyling sweep plan``: the cells of a sweep, which are done, the tokens each will score and an estimated time.

Tokens are counted with the model's own tokenizer where it is cheap to load (a local model folder, or the
folder an embedded alias or .gguf file was converted into: one tokenizer per distinct set of tokenizer files),
else estimated as words × 1.3 (``tokens_source``). The speed is
the one given, else a measured one (tokens_scored / scoring_s of past run manifests or cell records of the same
model), else the reference 230 tokens/s of a 135M-parameter model on CPU scaled by parameter count
(``speed_source``)."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from ..models.loading import converted_folder
from ..stimuli.io import load_sets
from ..stimuli.reading import ReaderOptions
from ..stimuli.schema import Item, StimulusSet
from .spec import TOKENIZER_FILES, Cell, Sweep, SweepModel

REFERENCE_TOKENS_PER_S = 230.0  # measured for a 135M model (smollm2-135m, fp32, CPU) in the brief
REFERENCE_PARAMETERS = 135e6
TOKENS_PER_WORD = 1.3
EMBEDDED_PARAMETERS = {"smollm2-135m": 135e6, "gemma3-270m": 270e6}
SIZE_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)([mb])\b", re.I)  # "pythia-70m", "Llama-3.2-1B"


@lru_cache(maxsize=256)
def _sets_of(path: str, options: ReaderOptions) -> dict[str, StimulusSet]:
    return {s.name: s for s in load_sets(Path(path), options)}


def _items(cell: Cell) -> list[Item]:
    """The items the cell scores (the first ``max_items`` of its set)."""
    config = cell.config()
    stim = _sets_of(cell.set_path, config.reader_options)[cell.set_name]
    return stim.items[: config.max_items] if config.max_items else stim.items


def _tokenizer_key(model: SweepModel) -> Optional[str]:
    """The tokenizer files of a local model folder, or of the folder an embedded alias or .gguf file was
    converted into (their names and sizes); None where loading the tokenizer is not cheap (hub ids, a GGUF not
    converted yet)."""
    folder = Path(model.spec.name)
    if not folder.is_dir():
        folder = _converted(model.spec.name)
        if folder is None:
            return None
    files = sorted(p for p in folder.iterdir() if p.name in TOKENIZER_FILES and p.name != "config.json")
    return json.dumps([str(folder)] + [[p.name, p.stat().st_size] for p in files]) if files else None


@lru_cache(maxsize=64)
def _converted(name: str) -> Optional[Path]:
    """``converted_folder`` once per model name (it hashes the GGUF file)."""
    return converted_folder(name)


@lru_cache(maxsize=64)
def _tokenizer(key: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(json.loads(key)[0])


def _count(cell: Cell, texts: list[str]) -> tuple[int, str]:
    """The tokens the cell scores and how they were found ("counted" or "estimated")."""
    key = _tokenizer_key(cell.model)
    if key is None:
        return round(sum(len(t.split()) for t in texts) * TOKENS_PER_WORD), "estimated"
    encoded = _tokenizer(key)(texts, add_special_tokens=False)["input_ids"]
    return sum(len(ids) for ids in encoded), "counted"


def parameters(model: SweepModel) -> Optional[float]:
    """The model's parameter count without loading it: known for the embedded models, estimated from a
    folder's config.json (12·layers·hidden² + vocabulary·hidden), or read from a hub id ("70m", "1.4b")."""
    if model.spec.name in EMBEDDED_PARAMETERS:
        return EMBEDDED_PARAMETERS[model.spec.name]
    config = Path(model.spec.name) / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text(encoding="utf-8"))
        hidden = cfg.get("hidden_size") or cfg.get("n_embd")
        layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
        if hidden and layers:
            return 12.0 * layers * hidden ** 2 + cfg.get("vocab_size", 0) * hidden
    match = SIZE_IN_NAME.search(model.spec.name)
    return float(match.group(1)) * (1e6 if match.group(2).lower() == "m" else 1e9) if match else None


def measured_speeds(records: Iterable[dict]) -> dict[str, float]:
    """Tokens per second by model id, from run manifests or cell records ("model": {"id"} or "model": NAME,
    "timings": {"tokens_scored", "scoring_s"}), pooled over the records of each model."""
    totals: dict[str, list[float]] = {}
    for record in records:
        model, timings = record.get("model"), record.get("timings") or {}
        name = model.get("id") if isinstance(model, dict) else model
        tokens, seconds = timings.get("tokens_scored"), timings.get("scoring_s")
        if name and tokens and seconds:
            total = totals.setdefault(str(name), [0.0, 0.0])
            total[0], total[1] = total[0] + tokens, total[1] + seconds
    return {name: tokens / seconds for name, (tokens, seconds) in totals.items()}


def _speed(model: SweepModel, given: Optional[float], measured: dict[str, float]) -> tuple[float, str]:
    """Tokens per second for a model and where the figure comes from."""
    if given:
        return given, "given"
    for name in (model.spec.name, model.alias):
        if name in measured:
            return measured[name], "measured"
    size = parameters(model)
    if size is None:
        return REFERENCE_TOKENS_PER_S, "reference (size unknown: as 135M)"
    return REFERENCE_TOKENS_PER_S * REFERENCE_PARAMETERS / size, "reference"


def plan(sweep: Sweep, done: Iterable[str] = frozenset(), tokens_per_second: Optional[float] = None,
         records: Iterable[dict] = ()) -> pd.DataFrame:
    """One row per cell: model, revision, step, set, settings, digest, done, n_items, tokens, tokens_source,
    tokens_per_s, speed_source, seconds (tokens / tokens_per_s). ``records``: past run manifests or cell
    records whose timings give measured speeds."""
    done, measured = set(done), measured_speeds(records)
    rows = []
    for cell in sweep.cells:
        items = _items(cell)
        texts = [condition.text for item in items for condition in item.conditions.values()]
        tokens, tokens_source = _count(cell, texts)
        speed, speed_source = _speed(cell.model, tokens_per_second, measured)
        rows.append({"model": cell.model.alias, "revision": cell.model.revision, "step": cell.model.step,
                     "set": cell.set_name, "settings": cell.settings_label, "digest": cell.digest,
                     "done": cell.digest in done, "n_items": len(items), "tokens": tokens,
                     "tokens_source": tokens_source, "tokens_per_s": speed, "speed_source": speed_source,
                     "seconds": tokens / speed})
    return pd.DataFrame(rows).astype({"step": "Int64"})


def duration(seconds: float) -> str:
    """Seconds as "45s", "12m 05s" or "3h 20m"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_plan(table: pd.DataFrame) -> str:
    """What ``psyling sweep plan`` prints: cells total / done / to run, tokens and time to run, per model."""
    todo = table[~table["done"]]
    sources = ", ".join(sorted(set(table["tokens_source"])))
    lines = [f"cells: {len(table)} total, {int(table['done'].sum())} done, {len(todo)} to run",
             f"tokens to score: {int(todo['tokens'].sum()):,} ({sources})",
             f"estimated time: {duration(todo['seconds'].sum())} (one worker; speeds: "
             f"{', '.join(sorted(set(table['speed_source'])))})", "per model:"]
    for model, rows in table.groupby("model", sort=True):
        left = rows[~rows["done"]]
        lines.append(f"  {model}: {rows['revision'].nunique()} revision(s), {len(rows)} cells, {len(left)} to run, "
                     f"{int(left['tokens'].sum()):,} tokens, {duration(left['seconds'].sum())} at "
                     f"{rows['tokens_per_s'].iloc[0]:.0f} tokens/s ({rows['speed_source'].iloc[0]})")
    return "\n".join(lines)
