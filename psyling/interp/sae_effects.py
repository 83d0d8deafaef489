"""What an SAE keeps of a set's effect, and what its latents do: effect preservation on a battery and
feature-level ablation on a set's minimal pairs.

Effect preservation (``preserve_effects``) reruns each set's predictions with the SAE's reconstruction spliced in
(``sae_splice.splice``): accuracy with and without (McNemar on the paired item passes), and the ratio of the mean
spliced to the mean original effect in bits with an item-bootstrap 95% CI. A set's effect is its human-effect
expression, else the first comparison of its first prediction (left - right for ">", right - left for "<": positive
when the prediction holds).

Feature ablation (``ablate_latents``) sets chosen latents to 0 at every position but the context token, keeping the
reconstruction error (x -> x - z_S W_dec[S]), and measures each item's M = S(bad | clean) - S(good | clean) in bits
(the patching engine's metric, ``circuit_metric``) against the unablated model; a random control ablates as many
latents drawn from those active on the set's critical tokens, seeded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import PsylingError
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scoring import CausalScorer
from ..stats.compare import mcnemar
from ..stats.predictions import item_values
from ..stimuli.formula import BinOp, Node
from ..stimuli.schema import StimulusSet
from .ablation import clean_metrics, scored_tables
from .pair_sequences import item_sequences
from .pairs import PairSpec, pairs_for
from .patch_runs import Layout
from .patching import PatchConfig, Patcher
from .sae import SparseAutoencoder
from .sae_splice import splice

PRESERVATION_COLUMNS = ["set", "n_items", "accuracy", "accuracy_spliced", "accuracy_change", "mcnemar_p",
                        "effect", "effect_spliced", "effect_ratio", "ratio_ci_low", "ratio_ci_high", "expression",
                        "note"]
ABLATION_COLUMNS = ["set", "clean", "corrupt", "latents", "k", "m_clean", "m_ablated", "change", "fraction",
                    "ci_low", "ci_high", "n_items"]


@dataclass(frozen=True)
class SAEEffectConfig:
    """Prediction measure, bootstrap size and seed (also the random control's), random control draws, and for
    feature ablation the pairs, layout and items per pass of the patching engine."""
    measure: str = "surprisal"
    n_boot: int = 1000
    seed: int = 0
    n_random: int = 5
    pairs: PairSpec = PairSpec()
    layout: Layout = Layout()
    items_per_batch: int = 8


def effect_expression(stim: StimulusSet) -> Optional[Node]:
    """The set's effect as an expression over cells (see the module docstring); None when it has neither."""
    if stim.human is not None and stim.human.effect_tree is not None:
        return stim.human.effect_tree
    node = stim.predictions[0].tree if stim.predictions else None
    while isinstance(node, BinOp) and node.op in ("&", "|"):
        node = node.left
    if isinstance(node, BinOp) and node.op in ("<", ">"):
        return BinOp("-", node.left, node.right) if node.op == ">" else BinOp("-", node.right, node.left)
    return None


def _ratio_ci(numerator: np.ndarray, denominator: np.ndarray, config: SAEEffectConfig) -> tuple[float, float]:
    """Item-bootstrap 95% CI of mean(numerator) / mean(denominator), items resampled in pairs."""
    n = len(denominator)
    if n < 2 or config.n_boot < 1:
        return float("nan"), float("nan")
    draws = np.random.default_rng(config.seed).integers(0, n, size=(config.n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = numerator[draws].mean(1) / denominator[draws].mean(1)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def _preservation_row(stim: StimulusSet, base: CausalScorer, spliced: CausalScorer,
                      config: SAEEffectConfig) -> dict:
    expression = effect_expression(stim)
    if not stim.predictions:
        return {"set": stim.name, "n_items": len(stim.items), "note": "no prediction"}
    regions, passes = scored_tables(base, stim, config.measure)
    regions_s, passes_s = scored_tables(spliced, stim, config.measure)
    test = mcnemar(passes.to_numpy().astype(bool), passes_s.reindex(passes.index).to_numpy().astype(bool))
    row = {"set": stim.name, "n_items": len(passes), "accuracy": passes.mean(), "accuracy_spliced": passes_s.mean(),
           "accuracy_change": passes_s.mean() - passes.mean(), "mcnemar_p": test.p_value, "note": ""}
    if expression is None:
        return {**row, "note": "no effect expression"}
    effect = item_values(stim, regions, expression, config.measure)
    effect_s = item_values(stim, regions_s, expression, config.measure).reindex(effect.index)
    keep = (effect.notna() & effect_s.notna()).to_numpy()
    a, b = effect.to_numpy()[keep], effect_s.to_numpy()[keep]
    low, high = _ratio_ci(b, a, config)  # spliced / original
    return {**row, "effect": a.mean(), "effect_spliced": b.mean(),
            "effect_ratio": b.mean() / a.mean() if a.mean() else float("nan"), "ratio_ci_low": low,
            "ratio_ci_high": high, "expression": str(stim.human.effect if stim.human and stim.human.effect else
                                                     stim.predictions[0].formula)}


def preserve_effects(lm: LanguageModel, sae: SparseAutoencoder, sets: Sequence[StimulusSet],
                     config: SAEEffectConfig = SAEEffectConfig(), scoring: Optional[ScoringOptions] = None
                     ) -> pd.DataFrame:
    """Per set: accuracy and effect with the SAE's reconstruction spliced in, against the model."""
    base = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    spliced = base.with_interventions([splice(sae)])
    rows = [_preservation_row(stim, base, spliced, config) for stim in sets]
    return pd.DataFrame(rows, columns=PRESERVATION_COLUMNS)


def zero_latents(latents: Sequence[int]):
    """A latent change that sets ``latents`` to 0."""
    index = torch.as_tensor(list(latents), dtype=torch.long)

    def change(z: torch.Tensor) -> torch.Tensor:
        out = z.clone()
        out[..., index] = 0
        return out
    return change


def _ablation_row(base: dict, label: str, latents: Sequence[int], m_clean: np.ndarray, m_ablated: np.ndarray,
                  config: SAEEffectConfig) -> dict:
    """The mean change of M with the latents ablated, and the fraction of M removed, with an item-bootstrap CI."""
    change = m_ablated - m_clean
    n = len(change)
    low, high = _ratio_ci(-change, m_clean, config)
    return {**base, "latents": label, "k": len(latents), "m_clean": m_clean.mean(), "m_ablated": m_ablated.mean(),
            "change": change.mean(), "fraction": -change.mean() / m_clean.mean() if m_clean.mean() else np.nan,
            "ci_low": low, "ci_high": high, "n_items": n}


def ablate_latents(lm: LanguageModel, sae: SparseAutoencoder, stim: StimulusSet, latents: Sequence[int],
                   candidates: Sequence[int] = (), config: SAEEffectConfig = SAEEffectConfig(),
                   scoring: Optional[ScoringOptions] = None) -> pd.DataFrame:
    """Per pair of the set: M with ``latents`` ablated, and with ``n_random`` draws of as many of ``candidates``
    (latents to draw the control from, e.g. those active at the critical region; the chosen ones excluded)."""
    if not latents:
        raise PsylingError(f"{stim.source}: no latents to ablate")
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    patcher = Patcher(lm, stim, PatchConfig(pairs=config.pairs, layout=config.layout), scorer)
    pool = np.setdiff1d(np.asarray(candidates, dtype=int), np.asarray(latents, dtype=int))
    rng = np.random.default_rng(config.seed)
    draws = [sorted(rng.choice(pool, size=len(latents), replace=False).tolist())
             for _ in range(config.n_random)] if len(pool) >= len(latents) else []
    rows = []
    for pair in pairs_for(stim, config.pairs):
        seqs = [s for s in (item_sequences(stim, item, pair, scorer) for item in stim.items) if not s.problem]
        base = {"set": stim.name, "clean": pair.clean, "corrupt": pair.corrupt}
        m_clean = clean_metrics(patcher, seqs, config, [])
        for label, chosen in [(",".join(map(str, latents)), latents)] + [(f"random-{i}", d) for i, d in
                                                                         enumerate(draws)]:
            m = clean_metrics(patcher, seqs, config, [splice(sae, zero_latents(chosen))])
            rows.append(_ablation_row(base, label, chosen, m_clean, m, config))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)
