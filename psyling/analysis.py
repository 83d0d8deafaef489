"""``psyling analyze RUN_DIR``: statistics and the human comparison for a finished run, written next to it.

Per set: accuracy (Wilson CI) and accuracy per phenomenon; a mixed-effects model of the critical region's
surprisal on the condition factors (by-item random effects); the model's effect in bits with the verdict
(present? human direction? size vs humans?), where the size in the human unit comes from linking functions
fitted on a reading/ERP corpus scored by the same model; plots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd

from .config import RunConfig
from .errors import PsylingError
from .fileio import write_csv, write_json, write_parquet
from .models import LanguageModel
from .runs import ANALYSIS, read_run, run_sets, sub_output
from .stats.compare import accuracy_by, compare_models
from .stats.human import Linking, compare_with_humans
from .stats.mixed import condition_effects
from .stimuli import ReadingCorpus, StimulusSet, load_natural_stories, load_ucl
from .stimuli.corpora import UCL_MEASURES
from .stimuli.schema import WHOLE_SENTENCE


@dataclass(frozen=True)
class LinkingCorpus:
    """A corpus the linking functions can be fitted on: its folder under the data root, its loader, a
    description, and human measure -> (column, unit)."""
    folder: str
    loader: Callable[[Path], ReadingCorpus]
    description: str
    links: dict[str, tuple[str, str]]


LINKING_CORPORA = {
    "ucl": LinkingCorpus("devarda2023_ucl_cloze_n400", load_ucl, "UCL corpus", dict(UCL_MEASURES)),
    "naturalstories": LinkingCorpus("naturalstories", load_natural_stories, "Natural Stories",
                                    {"SPR": ("meanItemRT", "ms")}),
}
LINKING_CHOICES = (*LINKING_CORPORA, "none")


@dataclass
class AnalysisResult:
    """Tables written under RUN_DIR/analysis; ``notes`` lists what could not be computed, one line each."""
    comparison: pd.DataFrame
    mixed: pd.DataFrame
    accuracy: pd.DataFrame
    linkings: dict[str, Linking]
    out: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _critical_table(stim: StimulusSet, regions: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The set's region rows (whole-sentence sums when the human region is ``*`` or absent) and the region."""
    table = regions[regions["set"] == stim.name]
    region = stim.human.region if stim.human and stim.human.region else WHOLE_SENTENCE
    if region == WHOLE_SENTENCE:
        table = (table.groupby(["set", "item", "condition"], as_index=False)[["surprisal", "surprisal_raw"]]
                 .sum(min_count=1).assign(region=WHOLE_SENTENCE))
    return table, region


def mixed_tables(sets: list[StimulusSet], regions: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per set, the mixed model of critical-region surprisal on its factors: one row per coefficient."""
    parts, notes = [], []
    for stim in sets:
        table, region = _critical_table(stim, regions)
        try:
            fit = condition_effects(table, {k: list(v) for k, v in stim.factors.items()} or None, region,
                                    list(stim.conditions))
        except PsylingError as exc:
            notes.append(f"set {stim.name}: mixed model not fitted: {exc}")
            continue
        parts.append(fit.coefficients.assign(set=stim.name, region=region, converged=fit.converged,
                                             fallback=fit.fallback or "", loglik=fit.loglik,
                                             random_effects=str(fit.random_effects)))
    mixed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not mixed.empty:
        mixed = mixed[["set", "region", *[c for c in mixed.columns if c not in ("set", "region")]]]
    return mixed, notes


def corpus_linkings(manifest: dict[str, Any], corpus: str = "ucl", data_root: Optional[Path] = None,
                    progress: bool = True, model: Optional[LanguageModel] = None) -> dict[str, Linking]:
    """Score a reading/ERP corpus (``LINKING_CORPORA``: the UCL corpus, or Natural Stories) exactly as the run
    scored its stimuli (its ``RunConfig``, rebuilt from the manifest, without capture or logit lens; ``model``, a
    loaded model, replaces the one it names) and fit its surprisal -> human measure linking functions (current
    word and two spillover words, over length, log frequency and position)."""
    from .api import run
    from .stats.regression import baseline_predictors, fit_linking
    from .stimuli.batteries import data_root as default_root

    spec = LINKING_CORPORA[corpus]
    root = Path(data_root) if data_root else default_root()
    if not (root / spec.folder).is_dir():
        raise PsylingError(f"{spec.description} not found under {root / spec.folder}; give --data-root or use "
                           "--linking none")
    loaded = spec.loader(root)
    config = RunConfig.from_manifest(manifest).for_rescoring()
    scored = run(config, [loaded.stimuli], progress=progress, **({"model": model} if model is not None else {}))
    if scored.errors:
        raise PsylingError(f"{spec.description}: the run's model could not score it: {scored.errors[0]}")
    words = loaded.words.merge(scored.words[["item", "word_index", "surprisal"]], on=["item", "word_index"],
                               how="left", validate="1:1")
    words = baseline_predictors(words)
    linkings = {}
    for measure, (column, unit) in spec.links.items():
        fit = fit_linking(words, column)
        linkings[measure] = Linking(measure, unit, dict(fit.slopes), f"{spec.description} {column}",
                                    details={"slope_se": fit.slope_se, "n": fit.n, "n_dropped": fit.n_dropped,
                                             "r_squared": fit.r_squared, "baseline": fit.baseline_coefficients})
    return linkings


def analyze(run_dir: Union[str, Path], stimuli: Sequence[Union[str, Path]] = (), linking: str = "ucl",
            data_root: Optional[Union[str, Path]] = None, plots: bool = True, progress: bool = True,
            model: Optional[LanguageModel] = None) -> AnalysisResult:
    """Compute the statistics of a run and write them to RUN_DIR/analysis (tables, plots, analysis.json)."""
    run_dir = Path(run_dir)
    if linking not in LINKING_CHOICES:
        raise PsylingError(f"unknown linking {linking!r} (choose from {', '.join(LINKING_CHOICES)})")
    manifest, tables = read_run(run_dir)
    sets, notes = run_sets(manifest, stimuli)
    if not sets:
        raise PsylingError(f"{run_dir}: none of the run's stimulus sets could be reloaded")
    regions = tables["regions"]
    n_nan = int(regions["surprisal"].isna().sum())
    if n_nan:
        notes.append(f"{n_nan} region rows have no surprisal (NaN); items with them are left out of the effects")
    meta = pd.DataFrame({"set": [s.name for s in sets], "phenomenon": [s.phenomenon for s in sets]})
    accuracy = accuracy_by(tables["predictions"], meta, by="phenomenon")
    mixed, mixed_notes = mixed_tables(sets, regions)
    notes += mixed_notes
    linkings: dict[str, Linking] = {}
    if linking != "none":
        linkings = corpus_linkings(manifest, linking, Path(data_root) if data_root else None, progress, model)
    comparison = compare_with_humans(sets, regions, tables["words"], linkings)
    result = AnalysisResult(comparison, mixed, accuracy, linkings, run_dir / ANALYSIS, notes=notes)
    _write_analysis(result, manifest, sets, regions, plots)
    return result


def _write_analysis(result: AnalysisResult, manifest: dict[str, Any], sets: list[StimulusSet],
                    regions: pd.DataFrame, plots: bool) -> None:
    """Write RUN_DIR/analysis in one step (``psyling.runs.sub_output``: no file of an earlier analysis stays);
    ``result.plots`` get their final paths."""
    with sub_output(result.out.parent, ANALYSIS, expected=manifest) as out:
        for name, table in (("comparison", result.comparison), ("mixed", result.mixed),
                            ("accuracy_by_phenomenon", result.accuracy)):
            write_parquet(out / f"{name}.parquet", table)
        write_csv(out / "verdicts.csv", result.comparison[["set", "present", "direction", "verdict"]])
        if plots:
            from .report.plots import effects_plot, region_profile
            (out / "plots").mkdir()
            written = [region_profile(s, regions, out / "plots" / f"profile_{s.name}.png") for s in sets]
            written.append(effects_plot(result.comparison, out / "plots" / "effects.png"))
            result.plots = [result.out / Path(p).relative_to(out) for p in written]
        write_json(out / "analysis.json", {
            "run": str(result.out.parent), "model": manifest.get("model", {}).get("id"),
            "linking": {m: {"unit": k.unit, "slopes": k.slopes, "source": k.source, **k.details}
                        for m, k in result.linkings.items()},
            "alpha": 0.05, "multiple_comparisons": "Benjamini-Hochberg across sets", "notes": result.notes})


def compare_runs(run_a: Union[str, Path], run_b: Union[str, Path], n_boot: int = 10000,
                 seed: int = 0) -> pd.DataFrame:
    """Two runs on the same stimuli (e.g. two models), per set: accuracies, the paired-bootstrap CI of their
    difference, McNemar's test over items and Benjamini-Hochberg q across sets."""
    (_, a), (_, b) = read_run(run_a), read_run(run_b)
    return compare_models(a["predictions"], b["predictions"], n_boot=n_boot, seed=seed)
