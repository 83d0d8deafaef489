"""The Python API: ``psyling.run(...)`` scores stimulus sets with a model and returns the tidy tables."""
from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import __version__
from .errors import PsylingError
from .hashing import sha256_file
from .measures import REGION_COLUMNS, TOKEN_COLUMNS, WORD_COLUMNS, surprisal_tables
from .measures.imported import imported_regions, read_table
from .interp.activations import ActivationWriter
from .interp.lens import emergence, lens_tables
from .measures.alignment import align
from .models import DEFAULT_MODEL, CaptureSpec, LanguageModel, ScoreRequest, Scorer, load_model
from .models.capture import n_layers
from .models.masked import MaskedScorer, is_masked_lm
from .models.store import ScoreStore
from .report import write_parquet, write_run, write_tables
from .stats import PREDICTION_COLUMNS, evaluate_predictions, summarise
from .stimuli import LoadedStimuli, StimulusSet, battery_files, load_stimuli

MEASURES = ("surprisal", "surprisal_raw")
INVARIANCE_SAMPLE = 8


@dataclass
class RunResult:
    """Everything a run produces; ``errors`` lists (one line each) files or sets that were not scored."""
    tokens: pd.DataFrame
    words: pd.DataFrame
    regions: pd.DataFrame
    predictions: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    lens: dict[str, pd.DataFrame] = field(default_factory=dict)  # lens_regions, lens_predictions, lens_emergence

    def save(self, out: Union[str, Path]) -> Path:
        """Write the run directory (manifest, tokens, words, regions, predictions, summary; lens tables)."""
        out = Path(out)
        write_run(out, self.manifest, {"tokens": self.tokens, "words": self.words, "regions": self.regions,
                                       "predictions": self.predictions}, self.summary)
        for name, table in self.lens.items():
            write_parquet(out / f"{name}.parquet", table)
        return out


def set_requests(stim: StimulusSet) -> list[ScoreRequest]:
    """One scoring request per item x condition, keyed (set, item, condition)."""
    return [ScoreRequest((stim.name, item.id, c), item.conditions[c].text, item.conditions[c].prefix)
            for item in stim.items for c in stim.conditions]


def _pooler(stim: StimulusSet, writer: ActivationWriter):
    """A scoring consumer that pools each request's token activations by its words or regions."""
    items = {item.id: item for item in stim.items}

    def consume(batch: list) -> None:
        for scored in batch:
            _, item_id, cname = scored.request.key
            cond = items[item_id].conditions[cname]
            where = f"set={stim.name} item={item_id} condition={cname}"
            alignment = align(cond, scored.offsets, stim.regions, where, stim.segmentation)
            writer.add(scored.request.key, scored.activations, alignment, cond.regions)
    return consume


def _invariance(scorer: Scorer, requests: list[ScoreRequest], reference: dict) -> dict[str, Any]:
    """Re-score a sample one at a time and report the largest token-level difference in bits. The sample is the
    shortest sequences of the first scored set: the most padded in their batches, and cheap for long texts."""
    sample = sorted(requests, key=lambda r: len(r.prefix) + len(r.text))[:INVARIANCE_SAMPLE]
    counters = scorer.n_tokens, scorer.n_computed, scorer.seconds
    if isinstance(scorer, MaskedScorer):
        alone = scorer.score(sample, max_tokens=1, progress=False)
        run_path = f"masked copies batched under {scorer.max_tokens} tokens"
    else:
        sequence_tokens = scorer.n_sequence_tokens
        alone = scorer.score(sample, batch_size=1, reuse_prefix=False, progress=False)
        scorer.n_sequence_tokens = sequence_tokens
        run_path = "prefix reuse (packed rows)" if scorer.reuse_prefix else f"batch size {scorer.batch_size}"
    scorer.n_tokens, scorer.n_computed, scorer.seconds = counters  # the check is not the run's work
    diff, logprob = 0.0, float("nan")  # the largest difference, and the log-probability of its token
    for a in alone:
        gaps = np.abs(a.logprob - reference[a.request.key].logprob)
        if np.isfinite(gaps).any() and np.nanmax(gaps) > diff:
            diff, logprob = float(np.nanmax(gaps)), float(a.logprob[np.nanargmax(gaps)])
    return {"n_sequences": len(sample), "compared": f"{run_path} vs one sequence at a time",
            "max_abs_diff_bits": diff / math.log(2), "at_token_logprob_nats": logprob,
            "passed": diff / math.log(2) <= 1e-4}


def gather_stimuli(stimuli: Sequence[Union[str, Path, StimulusSet]], battery: Optional[str],
                   detokenize: bool = False) -> LoadedStimuli:
    """Stimulus paths (or already built sets) plus a battery's files, loaded; at least one set must load."""
    built = [s for s in stimuli if isinstance(s, StimulusSet)]
    paths = [Path(p) for p in stimuli if not isinstance(p, StimulusSet)]
    paths += battery_files(battery) if battery else []
    if not paths and not built:
        raise PsylingError("no stimuli: give stimulus paths or a battery")
    loaded = load_stimuli(paths, detokenize) if paths else LoadedStimuli()
    loaded.sets = built + loaded.sets
    if not loaded.sets:
        raise PsylingError("no stimulus set could be loaded:\n" + "\n".join(loaded.errors))
    return loaded


def _environment() -> dict[str, str]:
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


def run(model: Union[str, LanguageModel] = DEFAULT_MODEL,
        stimuli: Sequence[Union[str, Path, StimulusSet]] = (),
        battery: Optional[str] = None, out: Union[str, Path, None] = None, *, batch_size: int = 32,
        device: str = "cpu", dtype: str = "float32", context_token: Union[str, int, None] = None,
        padding_side: str = "right", measure: str = "surprisal", trust_remote_code: bool = False,
        revision: Optional[str] = None, progress: bool = True, max_items: Optional[int] = None,
        detokenize: bool = False, activations: Optional[CaptureSpec] = None, pool: str = "word",
        pool_method: str = "mean", lens_layers: Union[Sequence[int], str, None] = None,
        max_tokens: Optional[int] = None, reuse_prefix: Optional[bool] = None, convention: str = "psyling",
        cache: bool = True, resume: bool = False, masked_variant: str = "pll") -> RunResult:
    """Score stimulus files and/or a battery with a model; write the run directory when ``out`` is given.

    A stimulus file that fails to load, or a set that cannot be aligned, is reported in ``errors`` and the
    other sets are still scored. ``max_items`` keeps only the first N items of each set (quick checks; the
    manifest records it). ``detokenize`` attaches the SyntaxGym 2020 suites' free-standing " ." and " ," to
    the preceding word. ``activations`` captures the listed sites (e.g. residual stream per layer) in the same
    forward pass, pooled per ``pool`` unit (word or region) with ``pool_method`` (mean, first, last token), and
    streams them to ``out/activations`` (see ``psyling.interp.load_activations``). ``lens_layers`` adds the
    logit lens: region surprisal and predictions read out at those layers ("all": every layer), and where each
    prediction emerges. ``max_tokens`` caps tokens per forward batch (default from the vocabulary size);
    ``reuse_prefix`` computes shared prefixes once (None: on, except for the lm-eval and minicons conventions,
    which reproduce those tools' padded sums); ``convention`` scores as another tool does (psyling,
    lm-eval, minicons, syntaxgym). Each batch's results go to the score cache (``cache``); ``resume`` reuses
    the batches a previous identical run finished (e.g. one that was killed). A masked LM (BERT, RoBERTa) is
    scored by pseudo-log-likelihood, ``masked_variant`` "pll" or "l2r" (``psyling.models.masked``)."""
    started = time.perf_counter()
    if activations is not None and out is None:
        raise PsylingError("capturing activations needs an output folder (out=...)")
    if measure not in MEASURES:
        raise PsylingError(f"unknown prediction measure {measure!r} (choose from {', '.join(MEASURES)})")
    loaded = gather_stimuli(stimuli, battery, detokenize)
    if max_items is not None:
        if max_items < 1:
            raise PsylingError("max_items must be at least 1")
        loaded.sets = [replace(s, items=s.items[:max_items]) for s in loaded.sets]
    t0 = time.perf_counter()
    lm = model if isinstance(model, LanguageModel) else load_model(
        model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, revision=revision)
    load_seconds = time.perf_counter() - t0
    if lens_layers == "all":
        lens_layers = list(range(n_layers(lm.model) + 1))
    if is_masked_lm(lm.model):
        if activations is not None or lens_layers:
            raise PsylingError("activation capture and the logit lens need a causal LM")
        if convention != "psyling":
            raise PsylingError("scoring conventions apply to causal LMs; a masked LM is scored by --masked-variant")
        scorer = MaskedScorer(lm, variant=masked_variant, max_tokens=max_tokens or 4096, progress=progress,
                              batch_size=batch_size)
    else:
        scorer = Scorer(lm, context_token=context_token, batch_size=batch_size, padding_side=padding_side,
                        progress=progress, capture=activations, lens_layers=lens_layers, max_tokens=max_tokens,
                        reuse_prefix=reuse_prefix, convention=convention)
    store = ScoreStore(scorer.fingerprint(), read=resume) if cache or resume else None
    writer = ActivationWriter(Path(out) / "activations", scorer.sites, pool, pool_method,
                              activations.dtype) if activations else None
    errors = list(loaded.errors)
    parts: dict[str, list[pd.DataFrame]] = {"tokens": [], "words": [], "regions": [], "predictions": [],
                                            "lens_regions": [], "lens_predictions": []}
    scored_sets: list[StimulusSet] = []
    invariance = None
    for stim in loaded.sets:
        try:
            requests = set_requests(stim)
            consumer = _pooler(stim, writer) if writer else None
            scores = {s.request.key: s for s in scorer.score(requests, desc=stim.name, consumer=consumer,
                                                             store=store)}
            tokens, words, regions = surprisal_tables(stim, scores, scorer.markers, lm.tokenizer,
                                                      scorer.word_correction)
        except PsylingError as exc:
            errors.append(f"{stim.source}: {exc}")
            continue
        if invariance is None:
            invariance = _invariance(scorer, requests, scores)
        parts["tokens"].append(tokens)
        parts["words"].append(words)
        parts["regions"].append(regions)
        parts["predictions"].append(evaluate_predictions(stim, regions, measure))
        if lens_layers:
            lens_regions, lens_predictions = lens_tables(stim, scores, scorer.markers, lm.tokenizer,
                                                         scorer.lens_layers, measure, scorer.word_correction)
            parts["lens_regions"].append(lens_regions)
            parts["lens_predictions"].append(lens_predictions)
        scored_sets.append(stim)
    columns = {"tokens": TOKEN_COLUMNS, "words": WORD_COLUMNS, "regions": REGION_COLUMNS,
               "predictions": PREDICTION_COLUMNS}
    lens_parts = {k: parts.pop(k) for k in ("lens_regions", "lens_predictions")}
    lens = {k: pd.concat(v, ignore_index=True) for k, v in lens_parts.items() if v}
    if lens:
        lens["lens_emergence"] = emergence(lens["lens_predictions"])
    tables = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=columns[k])
              for k, v in parts.items()}
    summary = summarise(tables["predictions"], scored_sets)
    settings = scorer.settings()
    manifest = {
        "psyling_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": lm.info,
        "tokenizer": {**settings["tokenizer"], "context_token": settings["context_token"]},
        "settings": {
            "batch_size": batch_size, "max_tokens": scorer.max_tokens, "padding_side": padding_side,
            "dtype": lm.info.get("dtype", dtype), "device": str(lm.device),
            "units": {"surprisal": "bits", "logprob": "nats"},
            "convention": settings.get("convention"),
            "masked_lm": {k: settings[k] for k in ("variant", "variant_description")} if "variant" in settings
            else None,
            "word_correction": settings["word_correction"],
            "prefix_reuse": {"enabled": scorer.reuse_prefix, "tokens_computed": scorer.n_computed,
                             "tokens_without_reuse": scorer.n_sequence_tokens,
                             "saved_fraction": round(1 - scorer.n_computed / scorer.n_sequence_tokens, 4)
                             if scorer.n_sequence_tokens else None},
            "out_of_memory_splits": scorer.oom_splits,
            "cache": {"folder": str(store.folder), "resume": resume, "batches_reused": store.hits,
                      "batches_written": store.writes} if store else None,
            "words": "whitespace-delimited; punctuation stays attached",
            "prediction_measure": measure, "context_token": settings["context_token"],
            "syntaxgym_detokenize": detokenize,
        },
        "stimuli": {"battery": battery, "files": loaded.files,
                    "paths": [str(p) for p in stimuli if not isinstance(p, StimulusSet)],
                    "max_items": max_items,
                    "sets": [{"name": s.name, "source": s.source, "n_items": len(s.items),
                              "conditions": list(s.conditions), "segmentation": s.segmentation}
                             for s in scored_sets],
                    "errors": errors},
        "timings": {"load_model_s": round(load_seconds, 3), "scoring_s": round(scorer.seconds, 3),
                    "tokens_scored": scorer.n_tokens,
                    "tokens_per_s": round(scorer.n_tokens / scorer.seconds, 1) if scorer.seconds else None,
                    "total_s": round(time.perf_counter() - started, 3)},
        "invariance_check": invariance,
        "environment": _environment(),
    }
    if writer is not None:
        manifest["activations"] = {"sites": scorer.sites, "pool": pool, "method": pool_method,
                                   "dtype": activations.dtype, "folder": "activations"}
        writer.close(manifest["activations"])
    if lens_layers:
        manifest["lens"] = {"layers": scorer.lens_layers, "read_out": "final norm + unembedding of resid.LAYER"}
    result = RunResult(**tables, summary=summary, manifest=manifest, errors=errors, lens=lens)
    if out is not None:
        result.save(out)
    return result


def evaluate(surprisal: Union[str, Path], stimuli: Sequence[Union[str, Path]] = (), battery: Optional[str] = None,
             out: Union[str, Path, None] = None, *, units: str = "bits") -> RunResult:
    """Evaluate the predictions of stimulus sets on a surprisal table computed elsewhere ("bring your own
    surprisal"); token- or word-level values are summed per region. Writes regions, predictions, summary
    and a manifest when ``out`` is given."""
    loaded = gather_stimuli(stimuli, battery)
    table = read_table(Path(surprisal))
    errors, regions, predictions, scored = list(loaded.errors), [], [], []
    for stim in loaded.sets:
        try:
            reg = imported_regions(stim, table, units)
        except PsylingError as exc:
            errors.append(f"{stim.source}: {exc}")
            continue
        regions.append(reg)
        predictions.append(evaluate_predictions(stim, reg, "surprisal"))
        scored.append(stim)
    if not scored:
        raise PsylingError("no set could be evaluated:\n" + "\n".join(errors))
    tables = {"regions": pd.concat(regions, ignore_index=True),
              "predictions": pd.concat(predictions, ignore_index=True)}
    summary = summarise(tables["predictions"], scored)
    manifest = {"psyling_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "surprisal_table": {"path": str(surprisal), "sha256": sha256_file(Path(surprisal)), "units": units,
                                    "note": "region values are sums of the table's values; no word correction"},
                "stimuli": {"battery": battery, "files": loaded.files, "errors": errors,
                            "sets": [{"name": s.name, "n_items": len(s.items)} for s in scored]}}
    empty = {"tokens": pd.DataFrame(columns=TOKEN_COLUMNS), "words": pd.DataFrame(columns=WORD_COLUMNS)}
    result = RunResult(**empty, **tables, summary=summary, manifest=manifest, errors=errors)
    if out is not None:
        write_tables(Path(out), manifest, tables, summary)
    return result
