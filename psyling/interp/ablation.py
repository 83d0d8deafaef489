"""Ablation of attention heads (``head.L.H``) and MLP units (``neuron.L.N``) with a random control, and the
faithfulness of a circuit.

A unit is ablated at every position of every sequence (the context token included): set to 0 ("zero"), to its
mean activation over every position of the set's sentences as scored, context token included ("mean"), or,
position by position, to its value at a random position of a random sentence of the same set ("resample"; one
draw per position shared by the units of a site, seeded; the draw may land on the position's own sentence with
probability 1 / n_sentences, since a scorer's intervention does not know which sentence a row belongs to).

``ablate`` reruns each set's predictions with the units ablated (accuracy as psyling scores it: surprisal tables
-> ``evaluate_predictions`` -> an item passes when all its predictions hold) and reports the change against the
unablated baseline with an item-bootstrap 95% CI of the paired change; the control ablates as many random units
of the same kinds and layers (never one of the given units), ``n_random`` seeded draws, whose spread (2.5 and
97.5 percentiles of the change) forms the "random" row.

``faithfulness`` of a circuit C: F(C) = (M(C) - M(empty)) / (M(full) - M(empty)), M the mean metric of the clean
contexts (the patching engine's M, ``circuit_metric``), M(C) with every unit of C's kinds outside C ablated,
M(empty) with all of them ablated, M(full) with none; with an item-bootstrap CI and random circuits of the same
size drawn like the control."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..measures.surprisal import surprisal_tables
from ..models.architecture import architecture
from ..models.hooks import Intervention, parse_site, site_order
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scorer import set_requests
from ..models.scoring import CausalScorer
from ..stats.accuracy import wilson_interval
from ..stats.predictions import evaluate_predictions
from ..stats.sg_score import item_passes
from ..stimuli.schema import StimulusSet
from .pair_sequences import ItemSequences, item_sequences
from .pairs import DesignError, PairSpec, pairs_for
from .patch_runs import Layout, run_context
from .patching import PatchConfig, Patcher, chunked

METHODS = ("zero", "mean", "resample")
UNIT_KINDS = ("head", "neuron")
ABLATION_COLUMNS = ["set", "units", "method", "k", "accuracy", "baseline", "change", "ci_low", "ci_high", "interval",
                    "acc_ci_low", "acc_ci_high", "n_items"]
FAITHFULNESS_COLUMNS = ["set", "clean", "corrupt", "circuit", "method", "k", "m_circuit", "m_empty", "m_full",
                        "faithfulness", "ci_low", "ci_high", "interval", "n_items"]


@dataclass(frozen=True)
class AblationConfig:
    """Ablation methods, random control draws and their seed (also the resampling's and the bootstrap's), the
    bootstrap size and the prediction measure; for ``faithfulness`` the pairs whose clean contexts give M, the
    unit kinds whose units outside the circuit are ablated (None: the circuit's kinds), their layers (None:
    all) and the layout and batch size of its passes."""
    methods: tuple[str, ...] = METHODS
    n_random: int = 10
    seed: int = 0
    n_boot: int = 1000
    measure: str = "surprisal"
    pairs: PairSpec = PairSpec()
    kinds: Optional[tuple[str, ...]] = None
    layers: Optional[tuple[int, ...]] = None
    layout: Layout = Layout()
    items_per_batch: int = 8
    sentences_per_batch: int = 32

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise DesignError(f"ablation method {bad[0] if bad else ''!r}: choose from {', '.join(METHODS)}")
        kinds = [k for k in self.kinds or () if k not in UNIT_KINDS]
        if kinds:
            raise DesignError(f"ablation unit kind {kinds[0]!r}: choose from {', '.join(UNIT_KINDS)}")
        if self.n_random < 0:
            raise DesignError(f"ablation n_random must be >= 0 (got {self.n_random})")


def check_units(lm: LanguageModel, units: Sequence[str]) -> list[str]:
    """The units in compute order, without repeats; a one-line error for anything but head.L.H / neuron.L.N in
    range."""
    arch = architecture(lm.model)
    for name in units:
        site = parse_site(name)
        limit = arch.n_heads if site.kind == "head" else arch.n_neurons
        if site.kind not in UNIT_KINDS or site.index is None:
            raise DesignError(f"ablation unit {name!r}: name a head (head.L.H) or an MLP unit (neuron.L.N)")
        if not 1 <= site.layer <= arch.n_layers or site.index >= limit:
            raise DesignError(f"ablation unit {name!r}: out of range (layers 1..{arch.n_layers}, "
                              f"{site.kind} 0..{limit - 1})")
    return sorted(dict.fromkeys(units), key=site_order)


def all_units(lm: LanguageModel, kinds: Sequence[str], layers: Optional[Sequence[int]] = None) -> list[str]:
    """Every head or MLP unit of the given kinds in the given layers (None: all)."""
    arch = architecture(lm.model)
    chosen = range(1, arch.n_layers + 1) if layers is None else layers
    return check_units(lm, [f"{kind}.{layer}.{i}" for kind in kinds for layer in chosen
                            for i in range(arch.n_heads if kind == "head" else arch.n_neurons)])


def random_units(lm: LanguageModel, units: Sequence[str], n: int, seed: int) -> list[list[str]]:
    """``n`` seeded draws of random units matching ``units`` kind by kind and layer by layer (as many per kind
    and layer), never one of ``units``."""
    units = check_units(lm, units)
    if n == 0:
        return []
    groups: dict[tuple[str, int], int] = {}
    for name in units:
        site = parse_site(name)
        groups[(site.kind, site.layer)] = groups.get((site.kind, site.layer), 0) + 1
    given = set(units)
    pools = {}
    for (kind, layer), count in groups.items():
        pools[(kind, layer)] = [u for u in all_units(lm, [kind], [layer]) if u not in given]
        if len(pools[(kind, layer)]) < count:
            raise DesignError(f"random control: layer {layer} has {len(pools[(kind, layer)])} {kind} units outside "
                              f"the given ones, {count} are needed")
    rng = np.random.default_rng(seed)
    return [check_units(lm, [pools[key][i] for key, count in groups.items()
                             for i in rng.choice(len(pools[key]), size=count, replace=False)]) for _ in range(n)]


def unit_columns(lm: LanguageModel, units: Sequence[str]) -> dict[str, list[int]]:
    """Whole site -> the columns of its tensor that the units occupy (a head: ``head_dim`` columns)."""
    arch = architecture(lm.model)
    out: dict[str, list[int]] = {}
    for name in check_units(lm, units):
        site = parse_site(name)
        width = arch.head_dim if site.kind == "head" else 1
        out.setdefault(site.whole, []).extend(range(site.index * width, (site.index + 1) * width))
    return out


def site_pools(stim: StimulusSet, scorer: CausalScorer, wholes: Sequence[str],
               config: AblationConfig) -> dict[str, torch.Tensor]:
    """Each whole site's activation at every position of every sentence of the set as scored (context token
    included), unablated: [n_positions, d] float32 rows, sentence by sentence."""
    sequences = [scorer.encode(r).sequence for r in set_requests(stim)]
    parts: dict[str, list[torch.Tensor]] = {site: [] for site in wholes}
    batches = list(chunked(sequences, config.sentences_per_batch))
    for batch in tqdm(batches, desc=f"unit activations {stim.name}", disable=len(batches) < 4):
        forward = scorer.runner.run_sequences(batch, record=list(wholes))
        for site in wholes:
            parts[site] += [forward.at(site, i).float().cpu() for i in range(len(batch))]
    return {site: torch.cat(rows) for site, rows in parts.items()}


def _replacement(method: str, columns: list[int], pool: Optional[torch.Tensor],
                 generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map that ablates ``columns`` of a whole site's activation rows."""
    cols = torch.tensor(columns, dtype=torch.long)
    mean = None if pool is None else pool[:, cols].double().mean(0).float()

    def ablated(x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        index = cols.to(x.device)
        if method == "zero":
            out[:, index] = 0
        elif method == "mean":
            out[:, index] = mean.to(x.device, x.dtype)
        else:
            draw = torch.randint(len(pool), (x.shape[0],), generator=generator)
            out[:, index] = pool[draw][:, cols].to(x.device, x.dtype)
        return out
    return ablated


def ablation_interventions(lm: LanguageModel, units: Sequence[str], method: str,
                           pools: Optional[dict[str, torch.Tensor]], seed: int = 0) -> list[Intervention]:
    """One "map" intervention per whole site that ablates the units at every position (``pools`` from
    ``site_pools``: needed by "mean" and "resample"; the resampling generator of site i is seeded seed + i)."""
    out = []
    for i, (whole, columns) in enumerate(unit_columns(lm, units).items()):
        pool = None if method == "zero" else pools[whole]
        generator = torch.Generator().manual_seed(seed + i)
        out.append(Intervention(whole, "map", _replacement(method, columns, pool, generator)))
    return out


def scored_tables(scorer: CausalScorer, stim: StimulusSet, measure: str) -> tuple[pd.DataFrame, pd.Series]:
    """The set's regions table and each item's pass (all predictions hold), scored as a run scores it."""
    if not stim.predictions:
        raise DesignError(f"{stim.source}: field=predictions: the set has no prediction to measure accuracy on")
    result = scorer.score(set_requests(stim), progress=False)
    scores = {s.request.key: s for s in result}
    _, _, regions = surprisal_tables(stim, scores, scorer.markers, scorer.lm.tokenizer, scorer.word_correction)
    passes = item_passes(evaluate_predictions(stim, regions, measure)).set_index("item")["passed"]
    return regions, passes.astype(float)


def _change_row(stim: StimulusSet, label: str, method: str, k: int, passes: pd.Series, base: pd.Series,
                config: AblationConfig, rng: np.random.Generator) -> dict:
    """Accuracy with the units ablated against the baseline; item-bootstrap CI of the paired change."""
    diff = (passes - base.reindex(passes.index)).to_numpy()
    n = len(diff)
    if n > 1 and config.n_boot > 0:
        low, high = np.percentile(diff[rng.integers(0, n, size=(config.n_boot, n))].mean(1), [2.5, 97.5])
    else:
        low = high = np.nan
    acc_low, acc_high = wilson_interval(int(passes.sum()), n)
    return {"set": stim.name, "units": label, "method": method, "k": k, "accuracy": passes.mean(),
            "baseline": base.mean(), "change": diff.mean(), "ci_low": low, "ci_high": high,
            "interval": "item bootstrap", "acc_ci_low": acc_low, "acc_ci_high": acc_high, "n_items": n}


def _random_summary(draws: list[dict]) -> dict:
    """The random control over its draws: mean accuracy and change, and the 2.5 / 97.5 percentiles of the change."""
    changes = np.array([d["change"] for d in draws])
    low, high = np.percentile(changes, [2.5, 97.5])
    return {**draws[0], "units": "random", "accuracy": float(np.mean([d["accuracy"] for d in draws])),
            "change": float(changes.mean()), "ci_low": low, "ci_high": high, "interval": "random draws",
            "acc_ci_low": np.nan, "acc_ci_high": np.nan}


def ablate(lm: LanguageModel, sets: Sequence[StimulusSet], units: Sequence[str],
           config: AblationConfig = AblationConfig(), scoring: Optional[ScoringOptions] = None,
           progress: bool = True) -> pd.DataFrame:
    """Each set's accuracy with ``units`` ablated by each method (``units`` "top"), and with the random
    control's draws ("random-i", summarised as "random"), against the unablated baseline."""
    units = check_units(lm, units)
    draws = random_units(lm, units, config.n_random, config.seed)
    wholes = sorted({parse_site(u).whole for u in units + [u for d in draws for u in d]}, key=site_order)
    rng = np.random.default_rng(config.seed)
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    rows = []
    bar = tqdm(total=len(sets) * len(config.methods) * (1 + len(draws)), desc="ablation", unit="pass",
               disable=not progress)
    for stim in sets:
        _, base = scored_tables(scorer, stim, config.measure)
        pools = site_pools(stim, scorer, wholes, config) if set(config.methods) - {"zero"} else None
        for method in config.methods:
            drawn = []
            for label, chosen in [("top", units)] + [(f"random-{i}", d) for i, d in enumerate(draws)]:
                ablated = scorer.with_interventions(ablation_interventions(lm, chosen, method, pools, config.seed))
                _, passes = scored_tables(ablated, stim, config.measure)
                row = _change_row(stim, label, method, len(units), passes, base, config, rng)
                (rows if label == "top" else drawn).append(row)
                bar.update()
            rows += drawn + ([_random_summary(drawn)] if drawn else [])
    bar.close()
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def clean_metrics(patcher: Patcher, seqs: list[ItemSequences], config: AblationConfig,
                  interventions: Sequence[Intervention]) -> np.ndarray:
    """Each item's M in its clean context (the engine's sequences, layout and metric) under interventions."""
    values = []
    for chunk in chunked(seqs, config.items_per_batch):
        run = run_context(patcher.runner, patcher.reader, chunk, "clean", config.layout, (),
                          interventions=interventions)
        values += [v.m for v in run.values]
    return np.array(values, dtype=float)


def _faithfulness_ratio(m: np.ndarray) -> np.ndarray:
    """F of item means along the last axis; ``m`` = [circuit, empty, full] x ... x items."""
    circuit, empty, full = m.mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (circuit - empty) / (full - empty)


def _faithfulness_row(base: dict, label: str, m: np.ndarray, config: AblationConfig,
                      rng: np.random.Generator) -> dict:
    """F with its item-bootstrap 95% CI, from the items' M ([circuit, empty, full] x items)."""
    n = m.shape[1]
    low = high = np.nan
    if n > 1 and config.n_boot > 0:
        low, high = np.nanpercentile(_faithfulness_ratio(m[:, rng.integers(0, n, size=(config.n_boot, n))]),
                                     [2.5, 97.5])
    means = m.mean(1)
    return {**base, "circuit": label, "m_circuit": means[0], "m_empty": means[1], "m_full": means[2],
            "faithfulness": float(_faithfulness_ratio(m)), "ci_low": low, "ci_high": high,
            "interval": "item bootstrap", "n_items": n}


def _universe(lm: LanguageModel, circuit: list[str], config: AblationConfig) -> list[str]:
    """The units whose complement in the circuit is ablated: every unit of the circuit's (or the given) kinds."""
    kinds = config.kinds or tuple(dict.fromkeys(parse_site(u).kind for u in circuit))
    if not kinds:
        raise DesignError("faithfulness of an empty circuit: give the unit kinds (AblationConfig.kinds)")
    universe = all_units(lm, kinds, config.layers)
    outside = sorted(set(circuit) - set(universe))
    if outside:
        raise DesignError(f"circuit unit {outside[0]} is not among the {'/'.join(kinds)} units of the chosen layers")
    return universe


def _method_rows(patcher: Patcher, seqs: list[ItemSequences], universe: list[str],
                 circuits: list[tuple[str, list[str]]], method: str, pools: Optional[dict[str, torch.Tensor]],
                 base: dict, full: np.ndarray, config: AblationConfig, rng: np.random.Generator) -> list[dict]:
    """F of each circuit under one ablation method (every unit of the universe outside it ablated)."""
    lm = patcher.lm

    def metric(kept: Sequence[str]) -> np.ndarray:
        keep = set(kept)
        ablated = [u for u in universe if u not in keep]
        return clean_metrics(patcher, seqs, config, ablation_interventions(lm, ablated, method, pools, config.seed)
                             if ablated else [])
    empty = metric([])
    drawn = [_faithfulness_row({**base, "method": method}, label, np.stack([metric(kept), empty, full]), config, rng)
             for label, kept in circuits]
    return drawn + ([_random_faithfulness(drawn[1:])] if len(drawn) > 1 else [])


def faithfulness(lm: LanguageModel, stim: StimulusSet, circuit: Sequence[str],
                 config: AblationConfig = AblationConfig(), scoring: Optional[ScoringOptions] = None) -> pd.DataFrame:
    """F of the circuit and of ``n_random`` random circuits of its size (and their spread, "random") per pair
    and ablation method."""
    circuit = check_units(lm, circuit)
    universe = _universe(lm, circuit, config)
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    patcher = Patcher(lm, stim, PatchConfig(pairs=config.pairs, layout=config.layout), scorer)
    wholes = sorted({parse_site(u).whole for u in universe}, key=site_order)
    pools = site_pools(stim, scorer, wholes, config) if set(config.methods) - {"zero"} else None
    circuits = [("circuit", circuit)] + [(f"random-{i}", d) for i, d in
                                         enumerate(random_units(lm, circuit, config.n_random, config.seed))]
    rng = np.random.default_rng(config.seed)
    rows = []
    for pair in pairs_for(stim, config.pairs):
        seqs = [s for s in (item_sequences(stim, item, pair, scorer) for item in stim.items) if not s.problem]
        base = {"set": stim.name, "clean": pair.clean, "corrupt": pair.corrupt, "k": len(circuit)}
        full = clean_metrics(patcher, seqs, config, [])
        for method in tqdm(config.methods, desc=f"faithfulness {stim.name}", disable=len(config.methods) < 2):
            rows += _method_rows(patcher, seqs, universe, circuits, method, pools, base, full, config, rng)
    return pd.DataFrame(rows, columns=FAITHFULNESS_COLUMNS)


def _random_faithfulness(draws: list[dict]) -> dict:
    """The random circuits' mean F and the 2.5 / 97.5 percentiles of their F."""
    values = np.array([d["faithfulness"] for d in draws])
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return {**draws[0], "circuit": "random", "m_circuit": float(np.mean([d["m_circuit"] for d in draws])),
            "faithfulness": float(np.nanmean(values)), "ci_low": low, "ci_high": high, "interval": "random draws"}
