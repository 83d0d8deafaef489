"""Circuit analysis on stimulus sets (``psyling patch``): exact activation patching and attribution patching
between the conditions of each set's items, written to an output directory.

The directory (**contract**) holds ``patching.parquet`` (one row per item x site x region x direction: set,
item, site, layer, region, direction, m_clean, m_corrupt, m_patched, effect, note, ...), ``patching_summary``
(ratio of item means with a bootstrap CI, also as summary.csv), ``alignment.parquet`` (every alignment
decision), with attribution patching ``attribution.parquet``, ``attribution_units.parquet`` (item means per MLP
unit) and ``atp_agreement.parquet`` (AtP against exact patching), PNG heatmaps and ``manifest.json`` (the
RunConfig, the PatchConfig, the model, per-set pairs, work counts and errors). Written atomically, like a run.
``psyling mediate``, ``psyling ablate`` and ``psyling steer`` write their tables the same way
(``mediation_effects`` / ``mediation_top``; ``ablation`` / ``faithfulness``; ``causal_probes`` / ``_summary``)."""
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
from .interp.ablation import AblationConfig, ablate, faithfulness
from .interp.mediation import MediationConfig, mediate
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
    regions and directions; AtP over ``atp_sites``), the exact confirmation of AtP's ``confirm`` top heads and
    top MLP units, the bootstrap, and whether to draw heatmaps."""
    patch: PatchConfig = PatchConfig()
    exact: bool = True
    attribution: bool = False
    atp_sites: tuple[str, ...] = ("resid", "attn", "mlp", "head", "neuron")
    confirm: int = 0
    n_boot: int = 1000
    seed: int = 0
    plots: bool = True


def top_attributed(attribution: pd.DataFrame, units: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` heads and the ``k`` MLP units with the largest item-mean |AtP effect| in any region and
    direction (the screen whose top is then patched exactly)."""
    heads = attribution[attribution["kind"] == "head"].groupby(["site", "region", "direction"])["effect_atp"].mean()
    unit_scores = units["effect_atp"].abs().groupby(units["site"]).max() if not units.empty else pd.Series(dtype=float)
    ranked = [heads.abs().groupby(level="site").max(), unit_scores]
    return [site for scores in ranked for site in scores.sort_values(ascending=False).index[:k]]



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
        top = top_attributed(attributed.rows, attributed.neurons, circuit.confirm) if circuit.confirm else []
        if top:
            confirmed = patch_set(lm, stim, replace(circuit.patch, sites=tuple(top)), run.scoring, progress)
            tables["patching"] = pd.concat([tables.get("patching"), confirmed.rows], ignore_index=True)
            entry["confirmed"] = top
        if "patching" in tables:
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
    loaded = gather_stimuli(list(run.stimuli), run.battery, run.reader_options)
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


def mediate_experiment(run: RunConfig, config: MediationConfig, out: Union[str, Path], *,
                       lm: Optional[LanguageModel] = None, replace_out: bool = False,
                       progress: bool = True) -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Causal mediation (Finlayson et al. 2021) on every set of ``run`` (``psyling mediate``): TE, NIE and NDE
    per layer component, head and screened MLP unit; the top-k heads and units; the patches behind them."""
    def per_set(model: LanguageModel, stim: StimulusSet) -> tuple[dict[str, pd.DataFrame], dict]:
        result = mediate(model, stim, config, run.scoring, progress)
        return ({"mediation_effects": result.effects, "mediation_top": result.top, "patching": result.rows,
                 "mediation_screen": result.screen.assign(set=stim.name)}, {"region": result.region})

    return circuit_experiment(run, "mediation", asdict(config), per_set, out,
                              precheck=lambda stim: pairs_for(stim, config.pairs), lm=lm, replace_out=replace_out,
                              summary="mediation_top")


def top_units(folder: Union[str, Path], kind: str, k: int) -> list[str]:
    """The top ``k`` units of a kind (head or neuron) from a ``psyling mediate`` output (``mediation_top``, by
    NIE over its sets) or a ``psyling patch --method atp|both`` output (AtP's screen): the units to ablate."""
    folder = Path(folder)
    if (folder / "mediation_top.parquet").exists():
        top = pd.read_parquet(folder / "mediation_top.parquet")
        ranked = top[top["component"] == kind].groupby("site")["nie"].mean().sort_values(ascending=False)
        return list(ranked.index[:k])
    if (folder / "attribution.parquet").exists():
        units = folder / "attribution_units.parquet"
        chosen = top_attributed(pd.read_parquet(folder / "attribution.parquet"),
                                pd.read_parquet(units) if units.exists() else pd.DataFrame(), k)
        return [site for site in chosen if site.startswith(f"{kind}.")]
    raise PsylingError(f"{folder}: neither mediation_top.parquet (psyling mediate) nor attribution.parquet "
                       "(psyling patch --method atp) is there to take the top units from")


def ablate_experiment(run: RunConfig, units: list[str], config: AblationConfig, out: Union[str, Path], *,
                      faithful: bool = False, lm: Optional[LanguageModel] = None, replace_out: bool = False,
                      progress: bool = True) -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Ablate ``units`` (and random units of the same layers) in every set of ``run`` and rerun its predictions
    (``psyling ablate``); with ``faithful`` also the faithfulness of the units as a circuit, on the sets whose
    design gives a patching metric (the others are noted)."""
    if not units:
        raise PsylingError("no units to ablate: give --units or --units-from")

    def per_set(model: LanguageModel, stim: StimulusSet) -> tuple[dict[str, pd.DataFrame], dict]:
        tables = {"ablation": ablate(model, [stim], units, config, run.scoring, progress)}
        entry: dict = {}
        if faithful:
            try:
                tables["faithfulness"] = faithfulness(model, stim, units, config, run.scoring)
            except PsylingError as exc:
                entry["faithfulness"] = f"not computed: {exc}"
        return tables, entry

    return circuit_experiment(run, "ablation", {**asdict(config), "units": units, "faithfulness": faithful},
                              per_set, out, lm=lm, replace_out=replace_out, summary="ablation")
