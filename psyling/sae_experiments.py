"""SAE experiments as commands run them: train an SAE on the stimuli's (and corpora's) token activations, evaluate
it, and find the latents that carry each set's contrast. Each writes one folder atomically (``RunWriter``).

A trained SAE's folder is SAELens's layout (``cfg.json``, ``sae_weights.safetensors``) plus psyling's
``manifest.json`` (model, site, harvest and training settings, token counts, times and tokens/s),
``history.parquet`` (one row per training step), ``checkpoints/`` and, unless another harvest was reused,
``activations/`` (the harvested training tokens, which ``features`` reads for the top contexts)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import __version__
from .api import environment, gather_stimuli, load, now
from .config import RunConfig
from .errors import PsylingError
from .fileio import write_json
from .interp.sae_effects import SAEEffectConfig, preserve_effects
from .interp.sae_files import load_sae, save_sae
from .interp.sae_harvest import HarvestConfig, ReaderSource, harvest
from .interp.sae_splice import check_site, evaluate_sae
from .interp.sae_train import TrainConfig, train_sae
from .models.loading import LanguageModel
from .report.sae_plots import plot_l0_fvu
from .runs import RunWriter
from .stimuli.batteries import data_root
from .stimuli.corpora import load_natural_stories, load_ucl
from .stimuli.schema import StimulusSet

CORPORA = {"naturalstories": load_natural_stories, "ucl": load_ucl}


@dataclass(frozen=True)
class SAETraining:
    """What ``train_experiment`` does: harvest settings (sites: the one site the SAE reads), the corpora added to
    the stimuli (``CORPORA``), an earlier harvest folder to train on instead, and the training config."""
    harvest: HarvestConfig = HarvestConfig()
    corpora: tuple[str, ...] = ()
    activations: Optional[str] = None
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        if len(self.harvest.sites) != 1:
            raise PsylingError(f"an SAE reads one site (got {', '.join(self.harvest.sites)})")
        unknown = [c for c in self.corpora if c not in CORPORA]
        if unknown:
            raise PsylingError(f"unknown corpus {unknown[0]!r} (choose from {', '.join(CORPORA)})")


def stimulus_sets(run: RunConfig, corpora: Sequence[str] = ()) -> list[StimulusSet]:
    """The run's sets (stimuli, battery; cut to ``max_items``) and the named corpora's texts as sets."""
    sets: list[StimulusSet] = []
    if run.stimuli or run.battery:
        sets = gather_stimuli(list(run.stimuli), run.battery, run.reader_options).sets
        if run.max_items is not None:
            sets = [replace(s, items=s.items[:run.max_items]) for s in sets]
    sets += [CORPORA[name](data_root()).stimuli for name in corpora]
    if not sets:
        raise PsylingError("no stimuli: give stimulus paths, a battery or a corpus")
    return sets


def _harvested(lm: LanguageModel, run: RunConfig, settings: SAETraining, staging: Path,
               progress: bool) -> tuple[Path, dict]:
    """The activations folder to train on (harvested now into the staging folder, or the one given) and a
    description of it for the manifest."""
    if settings.activations:
        source = ReaderSource(Path(settings.activations), settings.harvest.sites[0])
        return Path(settings.activations), {"reused": str(Path(settings.activations).resolve()),
                                             "n_tokens": source.n_rows}
    sets = stimulus_sets(run, settings.corpora)
    stats = harvest(lm, sets, staging / "activations", settings.harvest, run.scoring, progress)
    return staging / "activations", {**asdict(stats), "tokens_per_second": stats.tokens_per_second,
                                     "sets": len(sets), "corpora": list(settings.corpora)}


def train_experiment(run: RunConfig, settings: SAETraining, out: Union[str, Path], *,
                     lm: Optional[LanguageModel] = None, replace_out: bool = False,
                     progress: bool = True) -> tuple[Path, dict]:
    """Harvest (or reuse) token activations at the site, train an SAE on them and write its folder."""
    site = settings.harvest.sites[0]
    with RunWriter(out, replace=replace_out) as writer:
        lm = lm or load(run.model)
        folder, harvested = _harvested(lm, run, settings, writer.staging, progress)
        source = ReaderSource(folder, site)
        extras = {"site": site, "model": str(lm.info.get("id", "")),
                  "metadata": {"psyling_version": __version__, "harvest": harvested}}
        result = train_sae(source, settings.train, extras, checkpoints=writer.staging / "checkpoints",
                           progress=progress)
        check_site(lm, result.sae)
        save_sae(result.sae, writer.staging)
        seconds = float(result.history["seconds"].iloc[-1]) if len(result.history) else 0.0
        manifest = {"psyling_version": __version__, "created": now(), "kind": "sae", "model": lm.info,
                    "config": run.to_dict(), "site": site, "harvest": harvested,
                    "training": {"config": _plain(asdict(settings.train.resolved(source.d_in, source.n_rows))),
                                 "n_tokens": result.n_tokens, "seconds": seconds,
                                 "tokens_per_second": result.tokens_per_second},
                    "environment": environment()}
        summary = result.history.tail(1)
        return writer.commit(manifest, {"history": result.history}, summary), manifest


def _plain(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _l0_fvu_points(sae_dir: Path, metrics: dict, n_steps: int = 8) -> pd.DataFrame:
    """The evaluated SAE's (L0, FVU), and from its training history up to ``n_steps`` steps' batch figures."""
    points = [{"l0": metrics["l0"], "fvu": metrics["fvu"], "label": "evaluated"}]
    history = sae_dir / "history.parquet"
    if history.is_file():
        steps = pd.read_parquet(history)
        steps = steps[(steps["l0"] > 0) & steps["fvu"].notna()]
        chosen = steps.iloc[np.unique(np.linspace(0, len(steps) - 1, n_steps).astype(int))] if len(steps) else steps
        points += [{"l0": r.l0, "fvu": r.fvu, "label": f"step {r.step} (train batch)"} for r in chosen.itertuples()]
    return pd.DataFrame(points)


def eval_experiment(run: RunConfig, sae_dir: Union[str, Path], out: Union[str, Path], *,
                    effects: bool = True, lm: Optional[LanguageModel] = None, replace_out: bool = False,
                    progress: bool = True) -> tuple[Path, dict, pd.DataFrame]:
    """Reconstruction metrics, CE / KL recovered (``metrics.json``) and, with ``effects``, effect preservation
    per set (``preservation.parquet``) of the SAE in ``sae_dir`` on the run's stimuli."""
    sae = load_sae(sae_dir)
    sets = stimulus_sets(run)
    with RunWriter(out, replace=replace_out) as writer:
        lm = lm or load(run.model)
        check_site(lm, sae)
        metrics = evaluate_sae(lm, sae, sets, run.scoring, progress=progress)
        write_json(writer.staging / "metrics.json", metrics)
        plot_l0_fvu(_l0_fvu_points(Path(sae_dir), metrics), writer.staging / "l0_fvu.png")
        table = preserve_effects(lm, sae, [s for s in sets if s.predictions], SAEEffectConfig(measure=run.measure),
                                 run.scoring) if effects else pd.DataFrame()
        manifest = {"psyling_version": __version__, "created": now(), "kind": "sae-eval", "model": lm.info,
                    "config": run.to_dict(), "sae": str(Path(sae_dir).resolve()), "sae_config": sae.config.to_dict(),
                    "metrics": metrics, "environment": environment()}
        tables = {"preservation": table} if effects else {}
        return writer.commit(manifest, tables, table), metrics, table
