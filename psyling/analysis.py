"""``psyling analyze RUN_DIR``: statistics and the human comparison for a finished run, written next to it.

Per set: accuracy (Wilson CI) and accuracy per phenomenon; a mixed-effects model of the surprisal of the region
the set compares (``analysis_region``) on the condition factors (by-item random effects); the model's effect in
bits with the verdict (present? human direction? size vs humans?), where the size in the human unit comes from
linking functions fitted on a reading/ERP corpus scored by the same model; plots. Items whose compared region
has no text are counted and left out, never taken as 0 bits.
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
from .progress import steps
from .report.plots import effects_plot, empty_regions, region_profile, safe_file_names
from .runs import ANALYSIS, read_run, run_sets, sub_output
from .stats.compare import accuracy_by, compare_models
from .stats.human import Linking, compare_with_humans
from .stats.mixed import condition_effects
from .stimuli import ReadingCorpus, StimulusSet, load_natural_stories, load_ucl
from .stimuli.corpora import UCL_MEASURES
from .stimuli.formula import Term, terms
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
    mixed_random: pd.DataFrame
    linkings: dict[str, Linking]
    out: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _region_name(stim: StimulusSet, term: Term) -> str:
    index = stim.region_index(term.region)
    return WHOLE_SENTENCE if index is None else stim.regions[index]


def analysis_region(stim: StimulusSet) -> tuple[str, str]:
    """The region the set's mixed model is fitted on and why: the human finding's region; else the one region
    every term of the human effect (else of the predictions) names; else the whole sentence (``*``)."""
    human = stim.human
    if human and human.region:
        return human.region, "human.region"
    candidates = (("human.effect", [human.effect_tree] if human and human.effect else []),
                  ("predictions", [p.tree for p in stim.predictions]))
    for source, trees in candidates:
        names = {_region_name(stim, term) for tree in trees for term in terms(tree)}
        if len(names) == 1:
            return names.pop(), source
        if names:
            return WHOLE_SENTENCE, f"{source} compare several regions: whole sentence"
    return WHOLE_SENTENCE, "no predictions: whole sentence"


def _critical_table(stim: StimulusSet, regions: pd.DataFrame, region: str) -> pd.DataFrame:
    """The set's region rows (whole-sentence sums for the region ``*``)."""
    table = regions[regions["set"] == stim.name]
    if table.empty:
        raise PsylingError("no items left to model (every item has an empty compared region)")
    if region == WHOLE_SENTENCE:
        table = (table.groupby(["set", "item", "condition"], as_index=False)[["surprisal", "surprisal_raw"]]
                 .sum(min_count=1).assign(region=WHOLE_SENTENCE))
    return table


def mixed_tables(sets: list[StimulusSet], regions: pd.DataFrame,
                 progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per set, the mixed model of its analysis region's surprisal (``analysis_region``; columns region and
    region_from) on its factors: one row per coefficient (Satterthwaite t tests; singular and every optimiser
    warning recorded); and its random-effect variances, covariances and correlations, one row each."""
    parts, random, notes = [], [], []
    for stim in steps(sets, "mixed models", unit="set", shown=progress):
        region, source = analysis_region(stim)
        try:
            fit = condition_effects(_critical_table(stim, regions, region),
                                    {k: list(v) for k, v in stim.factors.items()} or None, region,
                                    list(stim.conditions))
        except PsylingError as exc:
            notes.append(f"set {stim.name}: mixed model not fitted: {exc}")
            continue
        parts.append(fit.coefficients.assign(set=stim.name, region=region, region_from=source,
                                             converged=fit.converged, singular=fit.singular,
                                             fallback=fit.fallback or "", loglik=fit.loglik,
                                             random_effects=str(fit.random_effects),
                                             warnings=" | ".join(fit.warnings)))
        random.append(fit.covariance.assign(set=stim.name, random_effects=str(fit.random_effects)))
    return _set_first(parts), _set_first(random), notes


def _set_first(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts concatenated, the set (and its region, where given) first."""
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    first = [c for c in ("set", "region", "region_from") if c in table.columns]
    return table[[*first, *[c for c in table.columns if c not in first]]]


def compared_cells(stim: StimulusSet, region: str) -> set[tuple[int, str]]:
    """(region number, condition) cells the analysis compares: the human effect's terms and the mixed model's
    region (``analysis_region``) in every condition; whole-sentence terms are never empty."""
    named = [(_region_name(stim, t), t.condition) for t in
             (terms(stim.human.effect_tree) if stim.human and stim.human.effect else [])]
    named += [(region, condition) for condition in stim.conditions]
    return {(stim.regions.index(name) + 1, condition) for name, condition in named if name != WHOLE_SENTENCE}


def empty_compared_cells(sets: list[StimulusSet], regions: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``regions`` (set, item, condition, region) where a cell the analysis compares has no text:
    its 0 bits are not a measurement, so those items are left out of the effect and the mixed model."""
    parts = [pd.DataFrame(columns=["set", "item", "condition", "region"])]
    for stim in sets:
        table = regions[regions["set"] == stim.name]
        empty = table[empty_regions(table)]
        cells = compared_cells(stim, analysis_region(stim)[0])
        hit = [(number, condition) in cells for number, condition in zip(empty["region_number"], empty["condition"])]
        parts.append(empty.loc[hit, ["set", "item", "condition", "region"]])
    return pd.concat(parts, ignore_index=True)


def _empty_notes(sets: list[StimulusSet], empty: pd.DataFrame) -> list[str]:
    """One warning line per set with items left out for an empty compared region."""
    notes = []
    for stim in sets:
        rows = empty[empty["set"] == stim.name]
        if rows.empty:
            continue
        items = list(dict.fromkeys(rows["item"].astype(str)))
        cells = ", ".join(dict.fromkeys(rows["region"] + "/" + rows["condition"]))
        shown = ", ".join(items[:5]) + (", ..." if len(items) > 5 else "")
        notes.append(f"warning: set {stim.name}: compared region empty (no text) in {len(items)} of "
                     f"{len(stim.items)} items ({cells}; items {shown}); they are left out of the effect and the "
                     "mixed model instead of counting as 0 bits")
    return notes


def _without_items(regions: pd.DataFrame, empty: pd.DataFrame) -> pd.DataFrame:
    """``regions`` without the rows of the (set, item) pairs in ``empty``."""
    if empty.empty:
        return regions
    drop = pd.MultiIndex.from_frame(empty[["set", "item"]].astype(str))
    return regions[~pd.MultiIndex.from_frame(regions[["set", "item"]].astype(str)).isin(drop)]


def _with_empty_counts(table: pd.DataFrame, empty: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per set or per coefficient) with ``n_empty``: the set's items left out by ``empty``."""
    if table.empty:
        return table
    counts = empty.groupby("set")["item"].nunique()
    return table.assign(n_empty=table["set"].map(counts).fillna(0).astype(int))


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


def sign_note(bits: float, predicted: float, linking: Optional[Linking]) -> str:
    """Why the effect in bits and the effect predicted in the human unit have opposite signs ('' when not)."""
    if linking is None or not bits * predicted < 0:
        return ""
    slopes, unit = linking.slopes, linking.unit
    if slopes.get(0, 0.0) < 0:
        return (f"bits and {unit} of opposite sign: the {linking.measure} linking slope is negative "
                f"({slopes[0]:+.2f} {unit}/bit: more surprisal, a lower {linking.measure} value); the sign of the "
                "bits says whether the effect goes the human way")
    spill = ", ".join(f"lag {k}: {v:+.2f}" for k, v in sorted(slopes.items()) if k)
    if not spill:
        return f"bits and {unit} of opposite sign: words without a surprisal of their own count 0 in the prediction"
    return (f"bits and {unit} of opposite sign: the prediction adds spillover from the words before each cell "
            f"({spill} {unit}/bit), which the region's bits leave out")


def _with_sign_notes(comparison: pd.DataFrame, linkings: dict[str, Linking]) -> pd.DataFrame:
    """``comparison`` with ``sign_note`` (``sign_note`` per set)."""
    notes = [sign_note(bits, predicted, linkings.get(measure)) for bits, predicted, measure in
             zip(comparison["model_bits"], comparison["predicted"], comparison["human_measure"])]
    return comparison.assign(sign_note=notes)


def analyze(run_dir: Union[str, Path], stimuli: Sequence[Union[str, Path]] = (), linking: str = "ucl",
            data_root: Optional[Union[str, Path]] = None, plots: bool = True, progress: bool = True,
            model: Optional[LanguageModel] = None) -> AnalysisResult:
    """Compute the statistics of a run and write them to RUN_DIR/analysis (tables, plots, analysis.json). Items
    whose compared region is empty (``empty_compared_cells``) are counted (``n_empty``) and left out."""
    run_dir = Path(run_dir)
    if linking not in LINKING_CHOICES:
        raise PsylingError(f"unknown linking {linking!r} (choose from {', '.join(LINKING_CHOICES)})")
    manifest, tables = read_run(run_dir)
    sets, notes = run_sets(manifest, stimuli, run_dir)
    if not sets:
        raise PsylingError(f"{run_dir}: none of the run's stimulus sets could be reloaded")
    regions = tables["regions"]
    n_nan = int(regions["surprisal"].isna().sum())
    if n_nan:
        notes.append(f"{n_nan} region rows have no surprisal (NaN); items with them are left out of the effects")
    empty = empty_compared_cells(sets, regions)
    notes += _empty_notes(sets, empty)
    kept = _without_items(regions, empty)
    meta = pd.DataFrame({"set": [s.name for s in sets], "phenomenon": [s.phenomenon for s in sets]})
    predictions = tables["predictions"]
    accuracy = accuracy_by(predictions[predictions["set"].isin(meta["set"])], meta, by="phenomenon")
    mixed, mixed_random, mixed_notes = mixed_tables(sets, kept, progress)
    notes += mixed_notes
    linkings: dict[str, Linking] = {}
    if linking != "none":
        linkings = corpus_linkings(manifest, linking, Path(data_root) if data_root else None, progress, model)
    comparison = _with_sign_notes(compare_with_humans(sets, kept, tables["words"], linkings), linkings)
    result = AnalysisResult(_with_empty_counts(comparison, empty), _with_empty_counts(mixed, empty), accuracy,
                            mixed_random, linkings, run_dir / ANALYSIS, notes=notes)
    _write_analysis(result, manifest, sets, regions, plots)
    return result


def _write_plots(result: AnalysisResult, sets: list[StimulusSet], regions: pd.DataFrame, folder: Path) -> list[Path]:
    """The region profile of each set (file names from ``safe_file_names``) and the effects plot, when a set has
    a human effect (else a note says why there is none)."""
    names = safe_file_names([s.name for s in sets])
    written = [region_profile(s, regions, folder / f"profile_{names[s.name]}.png") for s in sets]
    effects = effects_plot(result.comparison, folder / "effects.png")
    if effects is None:
        result.notes.append("no set has a human effect: effects.png not written")
    return written + ([effects] if effects else [])


def _write_analysis(result: AnalysisResult, manifest: dict[str, Any], sets: list[StimulusSet],
                    regions: pd.DataFrame, plots: bool) -> None:
    """Write RUN_DIR/analysis in one step (``psyling.runs.sub_output``: no file of an earlier analysis stays);
    ``result.plots`` get their final paths."""
    with sub_output(result.out.parent, ANALYSIS, expected=manifest) as out:
        for name, table in (("comparison", result.comparison), ("mixed", result.mixed),
                            ("mixed_random", result.mixed_random), ("accuracy_by_phenomenon", result.accuracy)):
            write_parquet(out / f"{name}.parquet", table)
        write_csv(out / "verdicts.csv", result.comparison[["set", "present", "direction", "verdict"]])
        if plots:
            (out / "plots").mkdir()
            written = _write_plots(result, sets, regions, out / "plots")
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
