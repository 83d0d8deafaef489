"""Causal mediation analysis of number agreement (Finlayson et al. 2021, "Causal analysis of syntactic agreement
mechanisms in neural language models"), on top of the patching engine.

The response is y = P(wrong verb) / P(right verb) = 2 ** (-M), where M is the engine's metric in bits
(S(bad) - S(good) at the critical region, word-corrected as scoring computes it; the "right" verb is the good
continuation, the one that agrees with the clean context u). With u' the corrupted context (the number swap),
per item:

- total effect TE = y(u') / y(u) - 1 = 2 ** (M_clean - M_corrupt) - 1;
- natural indirect effect of a component z: NIE(z) = y(u, z <- z(u')) / y(u) - 1, the noising patch of z
  (the clean run with z from the corrupted one): 2 ** (M_clean - M_patched,noise) - 1;
- natural direct effect NDE(z) = y(u', z <- z(u)) / y(u) - 1, the denoising patch:
  2 ** (M_clean - M_patched,denoise) - 1.

Effects are means of the per-item effects (as Finlayson et al. average them) with an item-bootstrap 95% CI;
items whose |M_clean - M_corrupt| is below the engine's threshold are excluded and counted. Identities: noising
resid.L at every position ("all") gives the corrupted run, so NIE = TE and NDE = 0; where M is additive in z and
the rest, 1 + TE = (1 + NIE)(1 + NDE) (the effects multiply, they do not add). Components: attn.L and mlp.L
("layer"), heads head.L.H and MLP units neuron.L.N at the region where the contexts differ; units are screened
(attribution patching, or the units of the layers whose MLP mediates most) and the top-k patched exactly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import pandas as pd

from ..models.architecture import architecture
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scoring import CausalScorer
from ..stimuli.schema import StimulusSet
from .pair_sequences import item_sequences
from .pairs import DesignError, PairSpec, pairs_for, token_spec
from .patching import PatchConfig, patch_set

SCREENS = ("atp", "layers")
MEDIATION_KINDS = ("resid", "attn", "mlp", "head", "neuron")
KEYS = ["set", "clean", "corrupt", "site", "kind", "layer", "head", "region"]
EFFECT_COLUMNS = ["set", "clean", "corrupt", "component", "kind", "site", "layer", "unit", "region", "te", "nie",
                  "nde", "nie_ci_low", "nie_ci_high", "nde_ci_low", "nde_ci_high", "n_items", "n_excluded",
                  "n_not_patched"]
SCREEN_COLUMNS = ["site", "layer", "unit", "score", "screen"]


@dataclass(frozen=True)
class MediationConfig:
    """A mediation analysis: the pairs, the context-manipulated region (None: the first region in which the
    clean and corrupted contexts differ; "all": every aligned position), the token within it, the layers (None:
    all), the component kinds, how many heads and units the ``top`` table keeps and units are patched exactly
    (``top_k``), the unit screen ("atp": attribution patching; "layers": every unit of the ``screen_layers``
    layers with the largest MLP NIE), the bootstrap, the exclusion threshold (bits) and the batch size."""
    pairs: PairSpec = PairSpec()
    region: Optional[str] = None
    token: Union[str, int] = "last"
    layers: Optional[tuple[int, ...]] = None
    top_k: int = 20
    screen: str = "atp"
    n_boot: int = 1000
    seed: int = 0
    kinds: tuple[str, ...] = ("attn", "mlp", "head", "neuron")
    screen_layers: int = 1
    threshold: float = 0.1
    items_per_batch: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", token_spec(str(self.token)))
        if self.screen not in SCREENS:
            raise DesignError(f"mediation screen {self.screen!r}: choose from {', '.join(SCREENS)}")
        bad = [k for k in self.kinds if k not in MEDIATION_KINDS]
        if bad or not self.kinds:
            raise DesignError(f"mediation kind {bad[0] if bad else ''!r}: choose from {', '.join(MEDIATION_KINDS)}")
        if self.top_k < 1 or self.screen_layers < 1:
            raise DesignError(f"mediation top_k ({self.top_k}) and screen_layers ({self.screen_layers}) must be >= 1")

    def patch(self, region: str, sites: tuple[str, ...], directions: tuple[str, ...] = ("denoise", "noise")
              ) -> PatchConfig:
        """The patching experiment behind one step: these sites at the region, both directions by default."""
        return PatchConfig(pairs=self.pairs, sites=sites, layers=self.layers, regions=(region,), token=self.token,
                           directions=directions, threshold=self.threshold, items_per_batch=self.items_per_batch)


@dataclass
class MediationResult:
    """``effects`` (``EFFECT_COLUMNS``, one row per pair x component), ``top`` (the top-k heads and units by
    NIE, with ``rank``), the engine's ``rows`` behind them, the region used and the unit screen."""
    effects: pd.DataFrame
    top: pd.DataFrame
    rows: pd.DataFrame
    region: str
    screen: pd.DataFrame


def manipulated_region(stim: StimulusSet, scorer: CausalScorer, spec: PairSpec) -> str:
    """The first region of the set (in order) in which the clean and corrupted contexts of some item differ."""
    differing = set()
    for pair in pairs_for(stim, spec):
        for item in stim.items:
            seqs = item_sequences(stim, item, pair, scorer)
            if not seqs.problem:
                differing |= {r.region for r in seqs.regions["good"] if r.mode != "identical"}
    found = [region for region in stim.regions if region in differing]
    if not found:
        raise DesignError(f"{stim.source}: field=regions: the clean and corrupted contexts do not differ in any "
                          "region; give the region to mediate")
    return found[0]


def item_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Per item x component: TE, NIE (noise patch) and NDE (denoise patch) as ratios of y = 2 ** -M minus 1,
    whether the item is used (both patches computed, not excluded) and whether it is excluded (threshold)."""
    index = KEYS + ["item"]
    out = rows.drop_duplicates(index).set_index(index)[["m_clean", "m_corrupt"]].astype(float)
    excluded = rows["note"].fillna("").str.startswith("excluded")
    out["excluded"] = excluded.groupby([rows[k] for k in index], sort=False).any()
    used = pd.Series(True, index=out.index)
    for direction in ("noise", "denoise"):
        part = rows[rows["direction"] == direction].set_index(index)
        out[f"m_{direction}"] = part["m_patched"].astype(float)
        used &= part["effect"].notna().reindex(out.index, fill_value=False)
    out["used"] = used
    out["te"] = np.exp2(out["m_clean"] - out["m_corrupt"]) - 1
    out["nie"] = np.exp2(out["m_clean"] - out["m_noise"]) - 1
    out["nde"] = np.exp2(out["m_clean"] - out["m_denoise"]) - 1
    return out.reset_index()


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Percentile 95% CIs of the column means of ``values`` [n_items, k], resampling items: [k, 2]."""
    n = values.shape[0]
    if n < 2 or n_boot < 1:
        return np.full((values.shape[1], 2), np.nan)
    means = values[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    return np.percentile(means, [2.5, 97.5], axis=0).T


def mediation_effects(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per pair x component: mean TE, NIE and NDE over the used items, with item-bootstrap 95% CIs
    (one resampling of the items for NIE and NDE) and the items used, excluded and not patched."""
    items = item_effects(rows)
    rng = np.random.default_rng(seed)
    out = []
    for key, group in items.groupby(KEYS, sort=False):
        row = dict(zip(KEYS, key))
        used = group[group["used"]]
        values = used[["te", "nie", "nde"]].to_numpy(float)
        means = values.mean(0) if len(used) else np.full(3, np.nan)
        ci = _bootstrap_means(values[:, 1:], n_boot, rng)
        n_excluded = int(group["excluded"].sum())
        kind = row["kind"]
        out.append({**row, "component": kind if kind in ("head", "neuron") else "layer", "unit": row["head"],
                    "te": means[0], "nie": means[1], "nde": means[2], "nie_ci_low": ci[0, 0],
                    "nie_ci_high": ci[0, 1], "nde_ci_low": ci[1, 0], "nde_ci_high": ci[1, 1],
                    "n_items": len(used), "n_excluded": n_excluded,
                    "n_not_patched": len(group) - len(used) - n_excluded})
    return pd.DataFrame(out, columns=EFFECT_COLUMNS)


def top_components(effects: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k heads and the k units with the largest NIE per pair, ranked 1..k (NaN effects last, dropped)."""
    chosen = effects[effects["component"].isin(["head", "neuron"]) & effects["nie"].notna()]
    ranked = chosen.sort_values(["set", "clean", "corrupt", "component", "nie"],
                                ascending=[True, True, True, True, False], kind="stable")
    top = ranked.groupby(["set", "clean", "corrupt", "component"], sort=False).head(k).copy()
    top["rank"] = top.groupby(["set", "clean", "corrupt", "component"], sort=False).cumcount() + 1
    return top.reset_index(drop=True)


def atp_unit_scores(lm: LanguageModel, stim: StimulusSet, patch: PatchConfig,
                    scoring: Optional[ScoringOptions]) -> pd.DataFrame:
    """Attribution patching's estimate for every MLP unit (noising at the region): the screen's one link to
    ``psyling.interp.attribution``. Score = -(mean estimated M_patched - M_clean), averaged over the pairs:
    the larger, the larger the unit's estimated NIE."""
    from .attribution import AttributionConfig, attribute_set

    units = attribute_set(lm, stim, AttributionConfig(patch=patch), scoring, progress=False).neurons
    units = units[units["direction"] == "noise"]
    scores = units.groupby(["site", "layer", "head"], sort=False)["delta_atp"].mean()
    return pd.DataFrame({"site": [s for s, _, _ in scores.index], "layer": [x for _, x, _ in scores.index],
                         "unit": [h for _, _, h in scores.index], "score": -scores.to_numpy(), "screen": "atp"})


def layer_unit_candidates(lm: LanguageModel, effects: pd.DataFrame, config: MediationConfig) -> pd.DataFrame:
    """The fallback screen: every unit of the ``screen_layers`` layers whose MLP has the largest mean NIE
    (score: that layer's NIE)."""
    mlp = effects[(effects["kind"] == "mlp") & effects["nie"].notna()]
    layer_nie = mlp.groupby("layer")["nie"].mean().sort_values(ascending=False, kind="stable")
    n_units = architecture(lm.model).n_neurons
    rows = [{"site": f"neuron.{layer}.{unit}", "layer": int(layer), "unit": unit, "score": float(nie),
             "screen": "layers"} for layer, nie in layer_nie.head(config.screen_layers).items()
            for unit in range(n_units)]
    return pd.DataFrame(rows, columns=SCREEN_COLUMNS)


def _unit_candidates(lm: LanguageModel, stim: StimulusSet, config: MediationConfig, region: str,
                     layer_effects: pd.DataFrame, scoring: Optional[ScoringOptions],
                     progress: bool) -> pd.DataFrame:
    """The units to patch exactly: the top-k of the attribution screen, or the fallback's layers' units."""
    if config.screen == "atp":
        scores = atp_unit_scores(lm, stim, config.patch(region, ("neuron",), ("noise",)), scoring)
        return scores.sort_values("score", ascending=False, kind="stable").head(config.top_k)[SCREEN_COLUMNS]
    if not (layer_effects["kind"] == "mlp").any():
        mlp_rows = patch_set(lm, stim, config.patch(region, ("mlp",)), scoring, progress).rows
        layer_effects = mediation_effects(mlp_rows, 0, config.seed)
    return layer_unit_candidates(lm, layer_effects, config)


def mediate(lm: LanguageModel, stim: StimulusSet, config: MediationConfig = MediationConfig(),
            scoring: Optional[ScoringOptions] = None, progress: bool = True) -> MediationResult:
    """TE, NIE and NDE of every layer component and head, and of the screened MLP units, at the region where
    the contexts differ (tokenized and scored under ``scoring``, the run's options)."""
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    region = config.region or manipulated_region(stim, scorer, config.pairs)
    wholes = tuple(k for k in config.kinds if k != "neuron")
    parts = [patch_set(lm, stim, config.patch(region, wholes), scoring, progress).rows] if wholes else []
    effects = mediation_effects(parts[0], config.n_boot, config.seed) if parts else \
        pd.DataFrame(columns=EFFECT_COLUMNS)
    screen = pd.DataFrame(columns=SCREEN_COLUMNS)
    if "neuron" in config.kinds:
        screen = _unit_candidates(lm, stim, config, region, effects, scoring, progress).reset_index(drop=True)
        if len(screen):
            parts.append(patch_set(lm, stim, config.patch(region, tuple(screen["site"])), scoring, progress).rows)
            # one bootstrap stream over all components, as if patched at once
            effects = mediation_effects(pd.concat(parts, ignore_index=True), config.n_boot, config.seed)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return MediationResult(effects, top_components(effects, config.top_k), rows, region, screen)
