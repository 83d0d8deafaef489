"""``psyling sae features``: per set, the SAE latents that carry each factor's contrast at the critical region,
their top contexts (stimuli and training text), k-sparse probes beside the dense probe, and the effect of
ablating each factor's top latents on the set's metric M (with a random-latent control).

The SAE's site is captured in a scoring pass (pooled per region by ``pool_method``, default the region's last
token, so a row's latents are exactly the SAE's latents of one token) and encoded; the critical region is the
patching design's (``pairs_for``), else the human finding's region; ``region="before"`` compares the region
before it instead. Latents at the critical region cannot change that region's own surprisal (its first word is
predicted from the position before), so feature ablation is informative for ``before``."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .api import environment, load, now, pooling_consumer
from .config import RunConfig
from .errors import PsylingError
from .interp.activations import ActivationReader, ActivationWriter
from .interp.pairs import DesignError, PairSpec, pairs_for
from .interp.sae import SparseAutoencoder
from .interp.sae_effects import SAEEffectConfig, ablate_latents
from .interp.sae_features import (ContrastConfig, contrast_latents, mark_contexts, sparse_probes,
                                  stimulus_top_contexts, text_top_contexts)
from .interp.sae_files import load_sae
from .interp.sae_harvest import ReaderSource, read_sentences
from .interp.sae_splice import check_site
from .models.hooks import CaptureSpec, parse_site
from .models.loading import LanguageModel
from .models.scorer import set_requests
from .models.scoring import CausalScorer
from .report.sae_plots import plot_top_latents
from .runs import RunWriter
from .sae_experiments import stimulus_sets
from .stimuli.schema import StimulusSet


REGIONS = ("critical", "before")


@dataclass(frozen=True)
class FeatureSettings:
    """Latents reported per factor (top contexts, ablation), top contexts per latent, the region pooling, the
    sparse-probe sizes, the contrast test, the ablation settings, whether the training text is searched, and the
    region compared: "critical", or "before" (the region whose last token predicts the critical one: latents that
    can cause the critical region's surprisal, where those at the critical region can only follow from it)."""
    n_latents: int = 3
    n_contexts: int = 10
    pool_method: str = "last"
    ks: tuple[int, ...] = (1, 2, 4, 8, 16)
    contrast: ContrastConfig = ContrastConfig()
    effects: SAEEffectConfig = SAEEffectConfig()
    training_text: bool = True
    region: str = "critical"

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise PsylingError(f"unknown region {self.region!r} (choose from {', '.join(REGIONS)})")


def critical_region(stim: StimulusSet) -> str:
    """The region whose latents are compared: the patching design's critical region, else the human one."""
    try:
        return pairs_for(stim, PairSpec())[0].critical
    except DesignError:
        if stim.human is not None and stim.human.region:
            return stim.human.region
        raise PsylingError(f"{stim.source}: no critical region (no 2x2 design and no human region)") from None


def compared_region(stim: StimulusSet, region: str) -> int:
    """The index of the region whose latents are compared: the critical one, or the one "before" it (whose last
    token predicts the critical region's first word)."""
    index = stim.regions.index(critical_region(stim))
    if region == "before":
        if index == 0:
            raise PsylingError(f"{stim.source}: the critical region is the first; there is no region before it")
        return index - 1
    return index


def region_activations(lm: LanguageModel, stim: StimulusSet, run: RunConfig, site: str, folder: Path,
                       method: str, region: str = "critical") -> tuple[pd.DataFrame, np.ndarray]:
    """(meta, [rows, d]) of the site at the set's compared region (``compared_region``), one row per item x
    condition."""
    parsed = parse_site(site)
    if parsed.kind not in ("resid", "attn", "mlp") or parsed.index is not None:
        raise PsylingError(f"SAE features read resid, attn or mlp sites (not {site})")
    scorer = CausalScorer(lm, replace(run.scoring, capture=CaptureSpec((parsed.kind,), (parsed.layer,))),
                          progress=False)
    writer = ActivationWriter(folder, [site], pool="region", method=method)
    scorer.score(set_requests(stim), consumer=pooling_consumer(stim, writer), progress=False)
    writer.close({"set": stim.name, "site": site})
    reader = ActivationReader(folder)
    keep = (reader.meta["position"] == compared_region(stim, region) + 1).to_numpy()
    return reader.meta[keep].reset_index(drop=True), reader.rows(site, keep)


def _encode(sae: SparseAutoencoder, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(torch.from_numpy(np.nan_to_num(rows.astype(np.float32)))).numpy()


def _chosen(contrast: pd.DataFrame, n: int) -> dict[str, list[int]]:
    """Per factor, its ``n`` top latents (the table's order: q, then |d_z|) among those whose activation differs
    between its levels in some item (none for a factor whose levels share the compared region's tokens)."""
    differing = contrast[contrast["p_value"] < 1]
    return {factor: group["latent"].head(n).astype(int).tolist() for factor, group in differing.groupby("factor")}


def _probes(latents: np.ndarray, meta: pd.DataFrame, stim: StimulusSet, site: str, dense: np.ndarray,
            settings: FeatureSettings) -> pd.DataFrame:
    """k-sparse probes on latents and the dense probe, per factor."""
    parts = []
    ks = [k for k in settings.ks if k <= latents.shape[1]]
    for factor, levels in stim.factors.items():
        labelled = meta.assign(label=meta["condition"].map(dict(zip(stim.conditions, levels))))
        folds = min(5, labelled["item"].nunique())
        table = sparse_probes(latents, labelled, "label", ks, folds=folds, dense={site: dense})
        parts.append(table.assign(set=stim.name, factor=factor))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _ablations(lm: LanguageModel, sae: SparseAutoencoder, stim: StimulusSet, latents: np.ndarray,
               chosen: dict[str, list[int]], run: RunConfig, settings: FeatureSettings) -> pd.DataFrame:
    """Each factor's top latent alone and its top latents together, ablated (a group shared by factors once,
    ``factor`` naming them all), against random latents that are active in the compared region."""
    active = np.flatnonzero((latents > 0).any(axis=0))
    groups: dict[tuple[int, ...], list[str]] = {}
    for factor, picked in chosen.items():
        for group in dict.fromkeys([tuple(picked[:1]), tuple(picked)]):
            groups.setdefault(group, []).append(factor)
    parts = [ablate_latents(lm, sae, stim, list(group), active, settings.effects, run.scoring)
             .assign(factor=",".join(factors)) for group, factors in groups.items() if group]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def set_features(lm: LanguageModel, sae: SparseAutoencoder, stim: StimulusSet, run: RunConfig, folder: Path,
                 settings: FeatureSettings) -> tuple[dict[str, pd.DataFrame], dict[str, list[int]]]:
    """One set's tables (contrast, stimulus top contexts, sparse probes, feature ablation) and chosen latents."""
    if not stim.factors:
        raise PsylingError(f"{stim.source}: the set declares no factors to contrast")
    meta, dense = region_activations(lm, stim, run, sae.config.site, folder, settings.pool_method, settings.region)
    latents = _encode(sae, dense)
    contrast = contrast_latents(latents, meta, stim, settings.contrast)
    chosen = _chosen(contrast, settings.n_latents)
    every = sorted({latent for picked in chosen.values() for latent in picked})
    top = stimulus_top_contexts(latents, meta, every, settings.n_contexts) if every else pd.DataFrame()
    tables = {"contrast": contrast, "top_contexts": top.assign(source="stimuli"),
              "sparse_probes": _probes(latents, meta, stim, sae.config.site, dense, settings),
              "feature_ablation": _ablations(lm, sae, stim, latents, chosen, run, settings)}
    return tables, chosen


def training_folder(sae_dir: Path) -> Optional[Path]:
    """The harvest an SAE was trained on: its own ``activations/``, or the folder its manifest says it reused."""
    own = sae_dir / "activations"
    if (own / "index.parquet").is_file():
        return own
    manifest = sae_dir / "manifest.json"
    reused = json.loads(manifest.read_text()).get("harvest", {}).get("reused") if manifest.is_file() else None
    return Path(reused) if reused and (Path(reused) / "index.parquet").is_file() else None


def _training_contexts(sae_dir: Path, sae: SparseAutoencoder, chosen: list[int], n: int,
                       progress: bool = True) -> pd.DataFrame:
    """The chosen latents' top contexts in the SAE's training text (its harvest), marked in their sentences (none
    for a harvest without ``sentences.parquet``); empty when the harvest is not found."""
    folder = training_folder(sae_dir)
    if not chosen or folder is None:
        return pd.DataFrame()
    source = ReaderSource(folder, sae.config.site)
    index = source.reader.meta
    batches = tqdm(source.ordered(4096), desc="top contexts in the training text", unit="batch",
                   total=-(-source.n_rows // 4096), disable=not progress)
    top = text_top_contexts(sae, batches, index, chosen, n)
    sentences = read_sentences(folder)
    marked = mark_contexts(top, index, sentences) if sentences else top.assign(context=None)
    return marked.assign(source="training text")


def features_experiment(run: RunConfig, sae_dir: Union[str, Path], out: Union[str, Path],
                        settings: FeatureSettings = FeatureSettings(), *, lm: Optional[LanguageModel] = None,
                        replace_out: bool = False, progress: bool = True) -> tuple[Path, dict[str, pd.DataFrame], dict]:
    """Every set of ``run`` with factors: the tables of ``set_features``, the training-text contexts of every
    chosen latent, and one top-latents plot per set; sets that cannot be analysed are listed in the manifest."""
    sae_dir = Path(sae_dir)
    sae = load_sae(sae_dir)
    sets = stimulus_sets(run)
    with RunWriter(out, replace=replace_out) as writer:
        lm = lm or load(run.model)
        check_site(lm, sae)
        parts, chosen, errors = [], {}, []
        for stim in tqdm(sets, desc="SAE features", unit="set", disable=not progress):
            try:
                tables, chosen[stim.name] = set_features(lm, sae, stim, run, writer.staging / "_capture" / stim.name,
                                                         settings)
                parts.append(tables)
            except PsylingError as exc:
                errors.append(str(exc))
        if not parts:
            raise PsylingError("no set could be analysed:\n" + "\n".join(errors))
        tables = {name: pd.concat([p[name] for p in parts], ignore_index=True) for name in parts[0]}
        every = sorted({latent for per_set in chosen.values() for picked in per_set.values() for latent in picked})
        if settings.training_text:
            text = _training_contexts(sae_dir, sae, every, settings.n_contexts, progress)
            tables["top_contexts"] = pd.concat([tables["top_contexts"], text], ignore_index=True)
        plot_top_latents(tables["contrast"], writer.staging)
        shutil.rmtree(writer.staging / "_capture", ignore_errors=True)
        manifest = {"psyling_version": __version__, "created": now(), "kind": "sae-features", "model": lm.info,
                    "config": run.to_dict(), "sae": str(sae_dir.resolve()), "sae_config": sae.config.to_dict(),
                    "settings": _settings(settings), "chosen": chosen, "errors": errors,
                    "environment": environment()}
        summary = tables["contrast"].groupby(["set", "factor"], as_index=False)["significant"].sum()
        return writer.commit(manifest, tables, summary), tables, manifest


def _settings(settings: FeatureSettings) -> dict:
    plain = asdict(settings)
    plain["effects"] = {k: v for k, v in plain["effects"].items() if k in ("measure", "n_boot", "seed", "n_random")}
    return plain
