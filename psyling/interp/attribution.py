"""Attribution patching (AtP): the first-order estimate of every patch from two forward passes and one backward
pass per chunk and direction. The patched metric of a site z at chosen positions is estimated as
M_target + sum over positions of (z_source - z_target) . dM/dz at the target run, for every residual, attention
and MLP site, every head and every MLP unit at once; exact patching (``patching``) confirms the top ones.

The metric is M (bits, word-corrected: the correction is linear in log P(word boundary), and its weights are read
off ``token_contributions`` itself) or the first-token logit difference (``metric="logit_diff"``), on which AtP
is exact for a model without nonlinearities."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..measures.surprisal import token_contributions
from ..models.hooks import parse_site, site_order
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scorer import TokenScores
from ..models.scoring import CausalScorer
from ..stimuli.schema import StimulusSet
from .circuit_metric import MetricReader, read_positions
from .pair_sequences import CONTINUATIONS, ItemSequences, Key, item_sequences
from .patch_runs import ContextRun, context_inputs, run_context
from .patching import DIRECTIONS, PatchConfig, Patcher, chunked, site_variant, effect, patch_regions, patch_sites
from .pairs import DesignError, pairs_for

LN2 = math.log(2.0)
METRICS = ("m", "logit_diff")
ATTRIBUTION_COLUMNS = ["set", "clean", "corrupt", "item", "site", "kind", "layer", "head", "region", "direction",
                       "metric", "m_clean", "m_corrupt", "delta_atp", "m_patched_atp", "effect_atp"]


def bow_weights(seqs: ItemSequences, key: Key, reader: MetricReader) -> np.ndarray:
    """Weights w (bits) with S_critical = -sum log P(token) / ln 2 + sum_i w_i log P(word boundary at read
    position i): the word correction's coefficients, read off ``token_contributions`` (linear in log_bow)."""
    enc = seqs.encoded[key]
    span = seqs.critical[key]
    n = len(read_positions(seqs, key))
    weights = np.zeros(n)
    for i in range(n):
        bow = np.zeros(len(enc.ids) + 1)
        bow[span.start + i] = 1.0
        scores_ = _scores(seqs, key, np.zeros(len(enc.ids)), bow)
        corrected, _ = token_contributions(scores_, seqs.words[key], reader.markers, "", reader.correct)
        weights[i] = corrected[span.start:span.stop].sum()
    return weights


def _scores(seqs: ItemSequences, key: Key, logprob: np.ndarray, bow: np.ndarray) -> TokenScores:
    enc = seqs.encoded[key]
    return TokenScores(seqs.requests[key], enc.ids, enc.offsets, logprob, bow, 0.0)


def differentiable_metric(logits: torch.Tensor, chunk: list[ItemSequences], context: str, reader: MetricReader,
                          metric: str) -> torch.Tensor:
    """Each item's metric as a tensor (float32, differentiable) from logits at ``ContextRun.read`` positions."""
    boundary = reader.markers.bow.clone()
    if reader.markers.eos_id is not None:
        boundary[reader.markers.eos_id] = True
    boundary = boundary.to(logits.device)
    values, at = [], 0
    for seqs in chunk:
        s, first = {}, {}
        for cont in CONTINUATIONS:
            key = (context, cont)
            n = len(read_positions(seqs, key))
            rows = logits[at:at + n]
            at += n
            log_z = torch.logsumexp(rows, dim=-1)
            span = seqs.critical[key]
            targets = torch.tensor(seqs.encoded[key].ids[span.start:span.stop], device=rows.device)
            logprob = rows[torch.arange(len(span), device=rows.device), targets] - log_z[:len(span)]
            if reader.correct:
                log_bow = torch.logsumexp(rows[:, boundary], dim=-1) - log_z
                weights = torch.tensor(bow_weights(seqs, key, reader), dtype=rows.dtype, device=rows.device)
                s[cont] = -logprob.sum() / LN2 + (weights * log_bow).sum()
            else:
                s[cont] = -logprob.sum() / LN2
            first[cont] = (rows[0], seqs.encoded[key].ids[span.start])
        if metric == "m":
            values.append(s["bad"] - s["good"])
        else:
            values.append(first["good"][0][first["good"][1]] - first["good"][0][first["bad"][1]])
    return torch.stack(values)


@dataclass(frozen=True)
class AttributionConfig:
    """AtP over ``patch``'s pairs, regions, token choice and directions for its sites (kinds or names; every
    head and every MLP unit come from the ``head`` and ``neuron`` kinds), on ``metric`` ("m" or "logit_diff")."""
    patch: PatchConfig = PatchConfig(sites=("resid", "attn", "mlp", "head", "neuron"))
    metric: str = "m"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise DesignError(f"attribution metric {self.metric!r}: choose from {', '.join(METRICS)}")


@dataclass
class AttributionResult:
    """Per-item AtP rows for whole sites and heads (``ATTRIBUTION_COLUMNS``) and item-mean rows per MLP unit
    (``UNIT_COLUMNS``)."""
    rows: pd.DataFrame
    neurons: pd.DataFrame


def _whole_sites(lm: LanguageModel, config: PatchConfig) -> list[str]:
    """The whole sites whose activations and gradients the passes record (a head or unit: its layer's site)."""
    out = []
    for kind in config.sites:
        if "." in kind:
            out.append(parse_site(kind).whole)
        elif kind in ("head", "neuron"):
            out += [f"{kind}.{parse_site(s).layer}" for s in patch_sites(lm, ["attn"], config.layers)]
        else:
            out += patch_sites(lm, [kind], config.layers)
    return sorted(dict.fromkeys(out), key=site_order)


def _gradient_run(patcher: Patcher, chunk: list[ItemSequences], context: str, record: list[str],
                  metric: str) -> tuple[ContextRun, dict[str, torch.Tensor], np.ndarray]:
    """The target pass in gradient mode: its recorded sites, d(sum of item metrics)/d(site) and each item's
    metric (the metric of item j depends only on item j's rows)."""
    config = patcher.config
    inputs = context_inputs(chunk, context, config.layout)
    run = ContextRun(context, chunk, inputs, None, [])  # type: ignore[arg-type]
    forward = patcher.runner.run_inputs(inputs, record=record, grad=True,
                                        read=torch.tensor(run.read(), dtype=torch.long))
    values = differentiable_metric(forward.logits, chunk, context, patcher.reader, metric)
    grads = forward.gradients(values.sum(), record)
    forward.recorded = {site: value.detach() for site, value in forward.recorded.items()}
    forward.graph_nodes, forward.logits = {}, None
    run.forward = forward
    return run, grads, values.detach().cpu().numpy().astype(float)


def _deltas(site: str, variant_target: list[int], variant_source: list[int], target: ContextRun,
            source: ContextRun, grads: dict[str, torch.Tensor], width: int) -> np.ndarray:
    """sum over positions of (z_source - z_target) . dM/dz at one item's positions: one value per slice of
    ``width`` features (a head, a unit; the whole site: one)."""
    t = torch.tensor(variant_target, dtype=torch.long)
    s = torch.tensor(variant_source, dtype=torch.long)
    diff = source.forward.recorded[site][s] - target.forward.recorded[site][t]
    product = (diff.double() * grads[site][t].double()).sum(0)
    return product.reshape(-1, width).sum(1).cpu().numpy()


def _site_width(site: str, patcher: Patcher, recorded: torch.Tensor) -> int:
    """Features per estimate: a head's width, one MLP unit, or the whole site."""
    kind = parse_site(site).kind
    return patcher.arch.head_dim if kind == "head" else 1 if kind == "neuron" else recorded.shape[1]


UnitTotals = dict[tuple, list]  # (clean, corrupt, whole site, region, direction) -> [sum of deltas, n, sums of M]


def _add_units(totals: UnitTotals, key: tuple, deltas: np.ndarray, base: dict, threshold: float) -> None:
    """Add an item's per-unit estimates to the running item sums (items below the threshold left out)."""
    if abs(base["m_clean"] - base["m_corrupt"]) < threshold or np.isnan(deltas).any():
        return
    entry = totals.setdefault(key, [np.zeros(len(deltas)), 0, 0.0, 0.0])
    entry[0] += deltas
    entry[1] += 1
    entry[2] += base["m_clean"]
    entry[3] += base["m_corrupt"]


def _chunk_estimates(stim: StimulusSet, patcher: Patcher, config: AttributionConfig, record: list[str],
                     chunk: list[ItemSequences], units: UnitTotals) -> list[dict]:
    """AtP rows of one chunk in every direction for whole sites and heads; MLP units go into ``units``' item
    sums (one row per item and unit would not fit in memory: 30 layers x 1,536 units for SmolLM2)."""
    patch = config.patch
    regions = patch_regions(stim, patch)
    runs = {ctx: run_context(patcher.runner, patcher.reader, chunk, ctx, patch.layout, record)
            for ctx in ("clean", "corrupt")}
    rows: list[dict] = []
    for direction in patch.directions:
        target_ctx, source_ctx = DIRECTIONS[direction]
        target, grads, _ = _gradient_run(patcher, chunk, target_ctx, record, config.metric)
        variants = {region: site_variant(stim, record[0], region, patch, target, runs[source_ctx]) for region in regions}
        for site in record:
            parsed = parse_site(site)
            recorded = target.forward.recorded[site]
            width = _site_width(site, patcher, recorded)
            n_out = recorded.shape[1] // width
            for region, variant in variants.items():
                for j, seqs in enumerate(chunk):
                    status = variant.status[j]
                    if status == "computed":
                        deltas = _deltas(site, variant.target[j], variant.source[j], target, runs[source_ctx],
                                         grads, width)
                    else:
                        deltas = np.full(n_out, 0.0 if status in ("identical", "after") else np.nan)
                    base = _base_row(stim, seqs, runs, j, direction, region, config.metric)
                    if parsed.kind == "neuron":
                        _add_units(units, (seqs.pair.clean, seqs.pair.corrupt, site, region, direction), deltas,
                                   base, patch.threshold)
                        continue
                    named = [(site, -1)] if width == recorded.shape[1] else [(f"{site}.{k}", k) for k in range(n_out)]
                    rows.extend({**base, "site": name, "kind": parsed.kind, "layer": parsed.layer, "head": k,
                                 "delta_atp": float(d)} for (name, k), d in zip(named, deltas))
    return rows


def _base_row(stim: StimulusSet, seqs: ItemSequences, runs: dict[str, ContextRun], j: int, direction: str,
              region: str, metric: str) -> dict:
    """The columns an item's AtP rows share: the pair, the region, the unpatched metric in both contexts."""
    name = "m" if metric == "m" else "logit_diff"
    return {"set": stim.name, "clean": seqs.pair.clean, "corrupt": seqs.pair.corrupt, "item": seqs.item,
            "region": region, "direction": direction, "metric": metric,
            "m_clean": getattr(runs["clean"].values[j], name), "m_corrupt": getattr(runs["corrupt"].values[j], name)}


def _with_effects(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Add the estimated patched metric and R / D (NaN below the exclusion threshold)."""
    denoise = table["direction"] == "denoise"
    target = np.where(denoise, table["m_corrupt"], table["m_clean"])
    table["m_patched_atp"] = target + table["delta_atp"]
    values = (table["m_clean"], table["m_corrupt"], table["m_patched_atp"])
    ratio = np.where(denoise, effect("denoise", *values), effect("noise", *values))
    gap = table["m_clean"] - table["m_corrupt"]
    table["effect_atp"] = np.where(gap.abs() >= threshold, ratio, np.nan)
    return table


UNIT_COLUMNS = ["set", "clean", "corrupt", "site", "kind", "layer", "head", "region", "direction", "metric",
                "delta_atp", "m_clean", "m_corrupt", "n_items", "effect_atp"]


def unit_summary(stim: StimulusSet, totals: UnitTotals, metric: str) -> pd.DataFrame:
    """Item means per MLP unit, region and direction: the mean estimated change and the ratio-of-means effect
    (R or D) over the items above the threshold."""
    parts = []
    for (clean, corrupt, site, region, direction), (sums, n, sum_clean, sum_corrupt) in totals.items():
        layer = parse_site(site).layer
        delta = sums / n
        gap = (sum_clean - sum_corrupt) / n
        parts.append(pd.DataFrame({
            "set": stim.name, "clean": clean, "corrupt": corrupt, "site": [f"{site}.{k}" for k in range(len(sums))],
            "kind": "neuron", "layer": layer, "head": np.arange(len(sums)), "region": region, "direction": direction,
            "metric": metric, "delta_atp": delta, "m_clean": sum_clean / n, "m_corrupt": sum_corrupt / n,
            "n_items": n, "effect_atp": (delta if direction == "denoise" else -delta) / gap}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=UNIT_COLUMNS)


def attribute_set(lm: LanguageModel, stim: StimulusSet, config: AttributionConfig = AttributionConfig(),
                  scoring: Optional[ScoringOptions] = None, progress: bool = True) -> AttributionResult:
    """AtP estimates for every site, head and MLP unit of ``config`` at every region and direction (per item;
    units: item means)."""
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    patch = config.patch
    patcher = Patcher(lm, stim, patch, scorer)
    record = _whole_sites(lm, patch)
    rows: list[dict] = []
    units: UnitTotals = {}
    for pair in pairs_for(stim, patch.pairs):
        seqs = [s for s in (item_sequences(stim, item, pair, scorer) for item in stim.items) if not s.problem]
        for chunk in tqdm(list(chunked(seqs, patch.items_per_batch)), desc=f"attribution {stim.name}",
                          disable=not progress):
            rows += _chunk_estimates(stim, patcher, config, record, chunk, units)
    table = _with_effects(pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS[:-2]), patch.threshold)
    return AttributionResult(table[ATTRIBUTION_COLUMNS], unit_summary(stim, units, config.metric))


def atp_agreement(attribution: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of AtP and exact effects per set and site kind: over item rows and over
    site x region x direction cells (item means); with the number of rows and cells compared."""
    keys = ["set", "clean", "corrupt", "item", "site", "region", "direction"]
    merged = exact.merge(attribution[keys + ["effect_atp"]], on=keys)
    merged = merged[merged["effect"].notna() & merged["effect_atp"].notna()]
    out = []
    for (name, kind), group in merged.groupby(["set", "kind"], sort=False):
        cells = group.groupby(["site", "region", "direction"])[["effect", "effect_atp"]].mean()
        out.append({"set": name, "kind": kind, "r_items": _pearson(group["effect"], group["effect_atp"]),
                    "n_rows": len(group), "r_cells": _pearson(cells["effect"], cells["effect_atp"]),
                    "n_cells": len(cells)})
    return pd.DataFrame(out, columns=["set", "kind", "r_items", "n_rows", "r_cells", "n_cells"])


def _pearson(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else np.nan
