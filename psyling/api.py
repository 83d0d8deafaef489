"""The Python API: ``psyling.run`` scores stimulus sets with a model under one ``RunConfig`` and returns the tidy
tables (and writes the run directory, ``psyling.runs``, when given ``out``); ``psyling.evaluate`` evaluates the
predictions of stimulus sets on a surprisal table computed elsewhere."""
from __future__ import annotations

import datetime as _dt
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pandas as pd

from . import __version__
from .config import RunConfig
from .errors import PsylingError
from .hashing import sha256_file
from .interp.activations import ActivationWriter
from .interp.lens import emergence, lens_tables
from .measures.alignment import BOUNDARY_POLICY
from .measures import REGION_COLUMNS, TOKEN_COLUMNS, WORD_COLUMNS, surprisal_tables
from .measures.alignment import align
from .measures.imported import imported_regions, read_table, unit_column, unmatched_suites
from .models import (DEFAULT_MODEL, LanguageModel, ModelSpec, Scorer, ScoreStats, invariance_check,
                     load_model, make_scorer)
from .models.scorer import set_requests
from .models.store import ScoreStore
from .progress import RunProgress, run_progress
from .runs import RunWriter, located_stimuli, write_run
from .stats import PREDICTION_COLUMNS, evaluate_predictions, summarise
from .stats.predictions import check_measures, measures_record
from .stimuli import LoadedStimuli, StimulusSet, battery_files, load_stimuli
from .stimuli.reading import ReaderOptions

__all__ = ["RunConfig", "RunResult", "evaluate", "gather_stimuli", "load", "model_spec", "run"]
COLUMNS = {"tokens": TOKEN_COLUMNS, "words": WORD_COLUMNS, "regions": REGION_COLUMNS,
           "predictions": PREDICTION_COLUMNS}
Stimuli = Sequence[Union[str, Path, StimulusSet]]


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

    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's parquet tables by name: tokens, words, regions, predictions and the lens tables."""
        return {"tokens": self.tokens, "words": self.words, "regions": self.regions,
                "predictions": self.predictions, **self.lens}

    def save(self, out: Union[str, Path], *, replace: bool = False) -> Path:
        """Write the run directory (``psyling.runs``: atomically; ``replace`` replaces a run already there)."""
        return write_run(out, self.manifest, self.tables(), self.summary, replace=replace)


WORD_UNITS = {"whitespace": "whitespace-delimited; punctuation stays attached",
              "none": "no words (a script written without spaces): each region is one unit"}


@dataclass
class _Scored:
    """What scoring the sets gave: table parts by name, the sets scored, errors, invariance check, statistics."""
    parts: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    sets: list[StimulusSet] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    invariance: Optional[dict[str, Any]] = None
    stats: ScoreStats = field(default_factory=ScoreStats)

    def add(self, stim: StimulusSet, tables: dict[str, pd.DataFrame]) -> None:
        for name, table in tables.items():
            self.parts.setdefault(name, []).append(table)
        self.sets.append(stim)

    def tables(self) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        """The run tables (empty with their columns when nothing was scored) and the lens tables."""
        joined = {k: pd.concat(v, ignore_index=True) for k, v in self.parts.items()}
        tables = {k: joined.pop(k, pd.DataFrame(columns=columns)) for k, columns in COLUMNS.items()}
        if joined:
            joined["lens_emergence"] = emergence(joined["lens_predictions"])
        return tables, joined


def gather_stimuli(stimuli: Stimuli, battery: Optional[str], options: ReaderOptions = ReaderOptions()) -> LoadedStimuli:
    """Stimulus paths (or already built sets) plus a battery's files, loaded; at least one set must load."""
    built = [s for s in stimuli if isinstance(s, StimulusSet)]
    paths = [Path(p) for p in stimuli if not isinstance(p, StimulusSet)]
    paths += battery_files(battery) if battery else []
    if not paths and not built:
        raise PsylingError("no stimuli: give stimulus paths or a battery")
    loaded = load_stimuli(paths, options) if paths else LoadedStimuli()
    loaded.sets = built + loaded.sets
    if not loaded.sets:
        raise PsylingError("no stimulus set could be loaded:\n" + "\n".join(loaded.errors))
    return loaded


def model_spec(lm: LanguageModel) -> ModelSpec:
    """What a loaded model was loaded as (from what the loader recorded about it)."""
    info = lm.info
    return ModelSpec(str(info.get("id", "in-memory model")), info.get("revision"), info.get("dtype", "float32"),
                     str(lm.device), bool(info.get("trust_remote_code", False)))


def load(spec: ModelSpec) -> LanguageModel:
    """Load the model a ``ModelSpec`` names, with its loading settings."""
    return load_model(spec.name, dtype=spec.dtype, device=spec.device, trust_remote_code=spec.trust_remote_code,
                      revision=spec.revision)


def _configure(config: Union[RunConfig, ModelSpec, str, LanguageModel], stimuli: Stimuli, battery: Optional[str],
               settings: dict[str, Any]) -> tuple[RunConfig, Optional[LanguageModel], list[StimulusSet]]:
    """The run's config (``config`` or one built from a model, then ``stimuli``, ``battery`` and keyword
    settings applied), the already loaded model if one was given (as ``config`` or ``model=``), and the
    stimulus sets given as objects."""
    lm = config if isinstance(config, LanguageModel) else None
    if isinstance(settings.get("model"), LanguageModel):
        lm = settings.pop("model")
    base = config if isinstance(config, RunConfig) else RunConfig.build(DEFAULT_MODEL if lm is config else config)
    paths = tuple(str(p) for p in stimuli if not isinstance(p, StimulusSet))
    changes = {**settings, **({"stimuli": paths} if paths else {}), **({"battery": battery} if battery else {})}
    if lm is not None:
        changes["model"] = model_spec(lm)
    return base.with_settings(**changes), lm, [s for s in stimuli if isinstance(s, StimulusSet)]


def _load_sets(config: RunConfig, built: list[StimulusSet]) -> LoadedStimuli:
    """The run's stimulus sets (objects given, then files and battery), each cut to ``max_items``."""
    loaded = gather_stimuli([*built, *config.stimuli], config.battery, config.reader_options)
    if config.max_items is not None:
        loaded.sets = [replace(s, items=s.items[:config.max_items]) for s in loaded.sets]
    return loaded


def pooling_consumer(stim: StimulusSet, writer: ActivationWriter):
    """A scoring consumer that stores each request's token activations, pooled by its words or regions (or
    per token)."""
    items = {item.id: item for item in stim.items}

    def consume(batch: list) -> None:
        for scored in batch:
            _, item_id, cname = scored.request.key
            cond = items[item_id].conditions[cname]
            where = f"set={stim.name} item={item_id} condition={cname}"
            alignment = align(cond, scored.offsets, stim.regions, where, stim.segmentation)
            writer.add(scored.request.key, scored.activations, alignment, cond.regions,
                       [cond.text[start:end] for start, end in scored.offsets])
    return consume


def _score_set(stim: StimulusSet, scorer: Scorer, store: Optional[ScoreStore], writer: Optional[ActivationWriter],
               measure: str, scored: _Scored) -> None:
    """Score one set and add its tables to ``scored``; the first set scored also gives the invariance check."""
    check_measures(stim, measure)
    requests = set_requests(stim)
    result = scorer.score(requests, desc=stim.name, consumer=pooling_consumer(stim, writer) if writer else None, store=store)
    scored.stats += result.stats
    scores = {s.request.key: s for s in result}
    tokenizer = scorer.lm.tokenizer
    tokens, words, regions = surprisal_tables(stim, scores, scorer.markers, tokenizer, scorer.word_correction)
    tables = {"tokens": tokens, "words": words, "regions": regions,
              "predictions": evaluate_predictions(stim, regions, measure)}
    if scorer.lens_layers:
        tables["lens_regions"], tables["lens_predictions"] = lens_tables(
            stim, scores, scorer.markers, tokenizer, scorer.lens_layers, measure, scorer.word_correction)
    if scored.invariance is None:
        scored.invariance = invariance_check(scorer, requests, scores)
    scored.add(stim, tables)


def _score_sets(loaded: LoadedStimuli, scorer: Scorer, store: Optional[ScoreStore],
                writer: Optional[ActivationWriter], measure: str,
                invariance: Optional[dict[str, Any]] = None) -> _Scored:
    """Score every set; a set that fails (e.g. cannot be aligned) is reported in ``errors``, the others go on.
    ``invariance``: a check already made with this scorer (else the first set scored makes one)."""
    scored = _Scored(errors=list(loaded.errors), invariance=invariance)
    count = scorer.count_tokens
    desc = f"scoring {len(loaded.sets)} set{'s' * (len(loaded.sets) != 1)}"
    with run_progress(desc, shown=bool(scorer.progress)) as display:
        _plan_tokens(loaded.sets, count, display)
        for stim in loaded.sets:
            try:
                _score_set(stim, scorer, store, writer, measure, scored)
            except PsylingError as exc:
                scored.errors.append(f"{stim.source}: {exc}")
            display.settle(stim.name)
    return scored


def _plan_tokens(sets: list[StimulusSet], count: Any, display: RunProgress) -> None:
    """The run's progress total: the text tokens of every set (tokenized once, here, for the scorer to keep)."""
    if not display.shown:
        return
    for stim in sets:
        try:
            display.plan(stim.name, count(set_requests(stim)))
        except PsylingError:  # the set is reported when it is scored
            continue


def environment() -> dict[str, str]:
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _settings_entry(config: RunConfig, scorer: Scorer, store: Optional[ScoreStore], stats: ScoreStats) -> dict:
    """The manifest's "settings": what the scorer resolved (max tokens, context token, prefix reuse ...)."""
    settings, lm = scorer.settings(), scorer.lm
    computed, without = stats.n_computed, stats.n_sequence_tokens
    return {
        "batch_size": config.scoring.batch_size, "max_tokens": scorer.max_tokens,
        "padding_side": config.scoring.padding_side, "dtype": lm.info.get("dtype", config.model.dtype),
        "device": str(lm.device), "units": {"surprisal": "bits", "logprob": "nats"},
        "convention": settings.get("convention"),
        "masked_lm": {k: settings[k] for k in ("variant", "variant_description")} if "variant" in settings else None,
        "word_correction": settings["word_correction"],
        "prefix_reuse": {"enabled": scorer.reuse_prefix, "tokens_computed": computed, "tokens_without_reuse": without,
                         "saved_fraction": round(1 - computed / without, 4) if without else None},
        "out_of_memory_splits": stats.oom_splits,
        "cache": {"folder": str(store.folder), "resume": config.resume, "batches_reused": store.hits,
                  "batches_written": store.writes, "batches_corrupt": store.corrupt} if store else None,
        "words": "per set (stimuli.sets[].words)", "region_boundary_tokens": BOUNDARY_POLICY,
        "prediction_measure": config.measure, "context_token": settings["context_token"],
        "syntaxgym_detokenize": config.detokenize,
    }


def _set_entry(stim: StimulusSet, tokens: pd.DataFrame) -> dict[str, Any]:
    """A scored set in the manifest: name, source, size, conditions, how its words were found and how many
    tokens crossed a region boundary (``BOUNDARY_POLICY``)."""
    return {"name": stim.name, "source": stim.source, "n_items": len(stim.items), "conditions": list(stim.conditions),
            "segmentation": stim.segmentation, "segmentation_source": stim.metadata.get("segmentation_source"),
            "words": WORD_UNITS[stim.segmentation], "tokens_crossing_regions": int(tokens["crosses_region"].sum())}


def _manifest(config: RunConfig, scorer: Scorer, store: Optional[ScoreStore], loaded: LoadedStimuli,
              scored: _Scored, seconds: dict[str, float]) -> dict[str, Any]:
    """The run's manifest.json (its keys are a contract: README's run-directory table), with the config."""
    settings, stats = scorer.settings(), scored.stats
    manifest = {
        "psyling_version": __version__, "created": now(), "model": scorer.lm.info,
        "tokenizer": {**settings["tokenizer"], "context_token": settings["context_token"]},
        "settings": _settings_entry(config, scorer, store, stats),
        "stimuli": located_stimuli({"battery": config.battery, "files": loaded.files, "paths": list(config.stimuli),
                    "max_items": config.max_items,
                    "sets": [_set_entry(s, tokens) for s, tokens in zip(scored.sets, scored.parts.get("tokens", []))],
                    "errors": scored.errors}),
        "timings": {"load_model_s": round(seconds["load"], 3), "scoring_s": round(stats.seconds, 3),
                    "tokens_scored": stats.n_tokens,
                    "tokens_per_s": round(stats.n_tokens / stats.seconds, 1) if stats.seconds else None,
                    "total_s": round(time.perf_counter() - seconds["started"], 3)},
        "invariance_check": scored.invariance, "environment": environment(), "config": config.to_dict(),
    }
    if scorer.lens_layers:
        manifest["lens"] = {"layers": scorer.lens_layers, "read_out": "final norm + unembedding of resid.LAYER"}
    return manifest


def _activation_writer(config: RunConfig, scorer: Scorer, out: Optional[RunWriter]) -> Optional[ActivationWriter]:
    """Where captured activations stream to while scoring: the staging folder of the run directory."""
    capture = config.scoring.capture
    if capture is None:
        return None
    return ActivationWriter(out.activations, scorer.sites, config.pool, config.pool_method, capture.dtype)


def run(config: Union[RunConfig, ModelSpec, str, LanguageModel] = DEFAULT_MODEL, stimuli: Stimuli = (),
        battery: Optional[str] = None, out: Union[str, Path, None] = None, *, replace: bool = False,
        progress: bool = True, **settings: Any) -> RunResult:
    """Score stimulus sets with a model under a ``RunConfig``; write the run directory when ``out`` is given.

    ``config`` is a RunConfig, or a model (alias, folder, .gguf, hub id, ``ModelSpec`` or a loaded
    ``LanguageModel``) with keyword ``settings`` as ``RunConfig.build`` takes them (batch_size, dtype,
    convention, max_tokens, activations, lens_layers, measure, max_items, resume ...); ``stimuli`` (paths or
    StimulusSet objects), ``battery`` and ``settings`` also override a RunConfig's (``model=`` a loaded model
    scores with it). A file that fails to load, or a set that cannot be aligned, is reported in ``errors`` and
    the other sets are still scored. ``out`` is checked (writable, not a file, empty unless ``replace``) and
    locked before the model loads; the run (captured activations included) appears there complete, or not at
    all (``psyling.runs``). A masked LM (BERT, RoBERTa) is scored by pseudo-log-likelihood."""
    started = time.perf_counter()
    config, lm, built = _configure(config, stimuli, battery, settings)
    if config.scoring.capture is not None and out is None:
        raise PsylingError("capturing activations needs an output folder (out=...)")
    loaded = _load_sets(config, built)
    with RunWriter(out, replace=replace) if out is not None else nullcontext() as writer:
        t0 = time.perf_counter()
        lm = lm if lm is not None else load(config.model)
        seconds = {"started": started, "load": time.perf_counter() - t0}
        scorer = make_scorer(lm, config.scoring, progress)
        result = _scored_result(config, scorer, loaded, _activation_writer(config, scorer, writer), seconds)
        if writer is not None:
            writer.commit(result.manifest, result.tables(), result.summary)
    return result


def score_with(config: RunConfig, scorer: Scorer, sets: Sequence[StimulusSet] = (),
               invariance: Optional[dict[str, Any]] = None) -> RunResult:
    """Score ``sets`` and ``config``'s stimuli with a scorer already made for its model and scoring options (a
    sweep worker keeps one per model and settings), in memory, without activation capture; ``invariance``: the
    invariance check already made with this scorer (recorded instead of a new one)."""
    if config.scoring.capture is not None:
        raise PsylingError("score_with does not capture activations: use psyling.run with out=...")
    seconds = {"started": time.perf_counter(), "load": 0.0}
    return _scored_result(config, scorer, _load_sets(config, list(sets)), None, seconds, invariance)


def _scored_result(config: RunConfig, scorer: Scorer, loaded: LoadedStimuli, activations: Optional[ActivationWriter],
                   seconds: dict[str, float], invariance: Optional[dict[str, Any]] = None) -> RunResult:
    """Score the loaded sets (through the score cache when the config keeps one) and assemble the result with
    its manifest; ``activations`` is closed with the manifest's entry."""
    store = ScoreStore.open(scorer.fingerprint(), read=config.resume) if config.cache or config.resume else None
    scored = _score_sets(loaded, scorer, store, activations, config.measure, invariance)
    tables, lens = scored.tables()
    manifest = _manifest(config, scorer, store, loaded, scored, seconds)
    manifest["settings"]["measures"] = measures_record(config.measure, scored.sets, tables["regions"],
                                                       "model tokens")
    if activations is not None:
        manifest["activations"] = {**activations.spec, "folder": "activations"}
        activations.close(manifest["activations"])
    return RunResult(**tables, summary=summarise(tables["predictions"], scored.sets), manifest=manifest,
                     errors=scored.errors, lens=lens)


def evaluate(surprisal: Union[str, Path], stimuli: Sequence[Union[str, Path]] = (), battery: Optional[str] = None,
             out: Union[str, Path, None] = None, *, units: str = "bits", replace: bool = False,
             measure: str = "surprisal") -> RunResult:
    """Evaluate the predictions of stimulus sets on a surprisal table computed elsewhere ("bring your own
    surprisal"); token- or word-level values are summed per region, ``measure`` as ``psyling.run``'s (mean and
    slor count the table's rows, tokens or words, as the length). Writes regions, predictions, summary
    and a manifest when ``out`` is given (``replace``: replace a run already there)."""
    loaded = gather_stimuli(stimuli, battery)
    table = read_table(Path(surprisal))
    errors, regions, predictions, scored = list(loaded.errors), [], [], []
    for stim in loaded.sets:
        try:
            reg = imported_regions(stim, table, units)
            predictions.append(evaluate_predictions(stim, reg, measure))
        except PsylingError as exc:
            errors.append(f"{stim.source}: {exc}")
            continue
        regions.append(reg)
        scored.append(stim)
    if not scored:
        raise PsylingError("no set could be evaluated:\n" + "\n".join(errors))
    tables = {"regions": pd.concat(regions, ignore_index=True),
              "predictions": pd.concat(predictions, ignore_index=True)}
    summary = summarise(tables["predictions"], scored)
    manifest = {"psyling_version": __version__, "created": now(),
                "surprisal_table": {"path": str(surprisal), "sha256": sha256_file(Path(surprisal)), "units": units,
                                    "note": "region values are sums of the table's values; no word correction",
                                    "suites_without_a_set": unmatched_suites(table, [s.name for s in scored])},
                "settings": {"prediction_measure": measure, "measures": measures_record(
                    measure, scored, tables["regions"], f"{unit_column(table)}s of the surprisal table")},
                "stimuli": located_stimuli({"battery": battery, "files": loaded.files, "errors": errors,
                            "sets": [{"name": s.name, "n_items": len(s.items)} for s in scored]})}
    if out is not None:
        write_run(out, manifest, tables, summary, replace=replace)
    empty = {"tokens": pd.DataFrame(columns=TOKEN_COLUMNS), "words": pd.DataFrame(columns=WORD_COLUMNS)}
    return RunResult(**empty, **tables, summary=summary, manifest=manifest, errors=errors)
