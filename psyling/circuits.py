"""Circuit analysis on stimulus sets (``psyling patch``): exact activation patching and attribution patching
between the conditions of each set's items, written to an output directory.

The directory (**contract**) holds ``patching.parquet`` (one row per item x site x region x direction: set,
item, site, layer, region, direction, m_clean, m_corrupt, m_patched, effect, note, ...), ``patching_summary``
(ratio of item means with a bootstrap CI, also as summary.csv), ``alignment.parquet`` (every alignment
decision), with attribution patching ``attribution.parquet``, ``attribution_units.parquet`` (item means per MLP
unit) and ``atp_agreement.parquet`` (AtP against exact patching), PNG heatmaps and ``manifest.json`` (the
RunConfig, the PatchConfig, the model, per-set pairs, work counts and errors). Written atomically, like a run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import pandas as pd

from . import __version__
from .api import environment, gather_stimuli, load, now
from .config import RunConfig
from .errors import PsylingError
from .interp.causal_probes import CausalProbeConfig, causal_probes
from .interp.attribution import AttributionConfig, atp_agreement, attribute_set
from .interp.patch_summary import summarise_patching
from .interp.pairs import pairs_for
from .interp.patching import PatchConfig, patch_set
from .models import LanguageModel
from .runs import RunWriter
from .stimuli import StimulusSet


@dataclass(frozen=True)
class CircuitConfig:
    """What ``patch_experiment`` computes: exact patching and / or attribution patching (on ``patch``'s pairs,
    regions and directions; AtP over ``atp_sites``), the bootstrap, and whether to draw heatmaps."""
    patch: PatchConfig = PatchConfig()
    exact: bool = True
    attribution: bool = False
    atp_sites: tuple[str, ...] = ("resid", "attn", "mlp", "head", "neuron")
    n_boot: int = 1000
    seed: int = 0
    plots: bool = True



def _set_tables(lm: LanguageModel, stim: StimulusSet, run: RunConfig, circuit: CircuitConfig,
                progress: bool) -> tuple[dict[str, pd.DataFrame], dict]:
    """One set's tables and its manifest entry."""
    tables, entry = {}, {}
    if circuit.exact:
        result = patch_set(lm, stim, circuit.patch, run.scoring, progress)
        tables.update(patching=result.rows, alignment=result.alignment)
        entry.update(pairs=[vars(p) for p in result.pairs], counts=result.counts, seconds=round(result.seconds, 2))
    if circuit.attribution:
        config = AttributionConfig(replace(circuit.patch, sites=circuit.atp_sites))
        attributed = attribute_set(lm, stim, config, run.scoring, progress)
        tables.update(attribution=attributed.rows, attribution_units=attributed.neurons)
        if circuit.exact:
            tables["atp_agreement"] = atp_agreement(attributed.rows, tables["patching"])
    return tables, entry


def _concat(parts: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    names = dict.fromkeys(name for part in parts for name in part)
    return {name: pd.concat([p[name] for p in parts if name in p], ignore_index=True) for name in names}


SetAnalysis = Callable[[LanguageModel, StimulusSet], tuple[dict[str, pd.DataFrame], dict]]
Finish = Callable[[dict[str, pd.DataFrame], Path], dict[str, pd.DataFrame]]


def _designed_sets(run: RunConfig, precheck: Callable[[StimulusSet], object]) -> tuple[list[StimulusSet], list[str]]:
    """The run's sets that pass ``precheck`` (e.g. have a patching design), and one error line per other set;
    an error if none is left (before any model is loaded)."""
    loaded = gather_stimuli(list(run.stimuli), run.battery, run.detokenize)
    chosen, errors = [], list(loaded.errors)
    for stim in loaded.sets:
        try:
            precheck(stim)
            chosen.append(stim)
        except PsylingError as exc:
            errors.append(f"{stim.source}: {exc}" if stim.source not in str(exc) else str(exc))
    if not chosen:
        raise PsylingError("no set can be analysed: " + "; ".join(errors))
    return chosen, errors


def circuit_experiment(run: RunConfig, kind: str, settings: dict, per_set: SetAnalysis, out: Union[str, Path], *,
                       precheck: Callable[[StimulusSet], object] = lambda stim: None, finish: Optional[Finish] = None,
                       lm: Optional[LanguageModel] = None, replace_out: bool = False,
                       summary: str = "") -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Run ``per_set`` on every set of ``run`` (stimuli, battery, model) and write the directory ``out``
    atomically: the concatenated tables, what ``finish`` adds (given the tables and the folder, e.g. summaries
    and plots), summary.csv (the table named ``summary``) and the manifest. A set that ``precheck`` or
    ``per_set`` refuses (a one-line error: e.g. no 2x2 design) is listed in the manifest's errors; the others
    go on."""
    with RunWriter(out, replace=replace_out) as writer:
        chosen, errors = _designed_sets(run, precheck)
        lm = lm or load(run.model)
        parts, sets = [], {}
        for stim in chosen:
            if run.max_items is not None:
                stim.items = stim.items[:run.max_items]
            try:
                tables, sets[stim.name] = per_set(lm, stim)
                parts.append(tables)
            except PsylingError as exc:
                errors.append(f"{stim.source}: {exc}")
        if not parts:
            raise PsylingError("no set could be analysed:\n" + "\n".join(errors))
        tables = _concat(parts)
        if finish is not None:
            tables = finish(tables, writer.staging)
        manifest = {"psyling_version": __version__, "created": now(), "kind": kind, "model": lm.info,
                    "config": run.to_dict(), kind: settings, "sets": sets, "errors": errors,
                    "environment": environment()}
        return writer.commit(manifest, tables, tables.get(summary, pd.DataFrame())), tables, manifest


def _patching_finish(circuit: CircuitConfig) -> Finish:
    def finish(tables: dict[str, pd.DataFrame], folder: Path) -> dict[str, pd.DataFrame]:
        from .report.circuit_plots import circuit_heatmaps

        if "patching" in tables:
            tables["patching_summary"] = summarise_patching(tables["patching"], circuit.n_boot, circuit.seed)
            if circuit.plots:
                circuit_heatmaps(tables["patching_summary"], folder)
        return tables
    return finish


def patch_experiment(run: RunConfig, circuit: CircuitConfig, out: Union[str, Path], *,
                     lm: Optional[LanguageModel] = None, replace_out: bool = False,
                     progress: bool = True) -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Exact and / or attribution patching of every set of ``run``, written to ``out`` (``psyling patch``)."""
    return circuit_experiment(run, "patching", asdict(circuit),
                              lambda model, stim: _set_tables(model, stim, run, circuit, progress), out,
                              precheck=lambda stim: pairs_for(stim, circuit.patch.pairs),
                              finish=_patching_finish(circuit), lm=lm, replace_out=replace_out,
                              summary="patching_summary" if circuit.exact else "atp_agreement")


def steer_experiment(run: RunConfig, config: CausalProbeConfig, out: Union[str, Path], *,
                     lm: Optional[LanguageModel] = None, replace_out: bool = False,
                     progress: bool = True) -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Probes made causal on every set of ``run`` (``psyling steer``): per-item rows and the per-layer summary."""
    def per_set(model: LanguageModel, stim: StimulusSet) -> tuple[dict[str, pd.DataFrame], dict]:
        result = causal_probes(model, stim, config, run.scoring, progress)
        return {"causal_probes": result.rows, "causal_probes_summary": result.summary}, {}

    return circuit_experiment(run, "causal_probes", asdict(config), per_set, out,
                              precheck=lambda stim: pairs_for(stim, config.pairs), lm=lm, replace_out=replace_out,
                              summary="causal_probes_summary")
