"""Probes made causal: per layer L, a direction in the residual stream ``resid.L`` that separates the clean from
the corrupted context (e.g. a singular from a plural subject) at one position, and what moving the clean run
along it there does to the model's preference M (``circuit_metric``: M > 0 when the good continuation wins).

Directions, fitted with item-grouped cross-validation (the direction used on an item never saw that item):
``mean-diff`` = mean(resid.L | corrupt) - mean(resid.L | clean); ``probe`` = the weight vector of an L2
logistic-regression probe (scikit-learn, C=1) fitted on standardised features, folded back into the raw space
(weight / feature scale), oriented toward the corrupted class. Both are normalised to unit length u (a zero
difference gives u = 0: no change). Intervention on the clean run, at the position in both continuations'
sequences: ``interchange`` h' = h + ((mu_corrupt . u) - (h . u)) u (the corrupted class mean's projection);
``add`` h' = h + alpha ((mu_corrupt - mu_clean) . u) u (for mean-diff: h + alpha (mu_corrupt - mu_clean)).

Per item: M clean, M corrupt, M steered, ``flipped`` = sign(M steered) != sign(M clean) and ``toward`` =
(M clean - M steered) / (M clean - M corrupt) (NaN when |M clean - M corrupt| < threshold bits). Each
direction's own held-out classifier is scored beside it (``correct``: the fraction of the item's two rows,
clean and corrupt, classified right; mean-diff: the side of the class means' midpoint along u; probe: its
prediction), and on a Hewitt & Liang (2019) control task (``probes.control_labels`` keyed by item: each item
gets one random label for both its rows), so selectivity = accuracy - control accuracy. With item-grouped folds
a held-out item's control label cannot be learnt, so the control accuracy is chance by construction.

Passes: the unpatched clean and corrupted runs of a chunk record ``resid.L`` (``patch_runs.run_context``); the
steered copies of a chunk (``layers_per_pass`` layers x direction kinds) go through one pass that starts from
the clean run's cached ``resid`` of the group's lowest layer (that layer steered in the cached stream, higher
ones by a ``map`` intervention), read by ``patch_runs.metrics_from_read``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ..models.architecture import architecture
from ..models.forward import ForwardRunner
from ..models.hooks import Intervention, Placed
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scoring import CausalScorer
from ..stats.accuracy import wilson_interval
from ..stimuli.schema import StimulusSet
from .circuit_metric import MetricReader, MetricValues
from .pair_sequences import CONTEXT_REGION, CONTINUATIONS, ItemSequences, item_sequences
from .patch_runs import ContextRun, Layout, metrics_from_read, run_context, tile
from .pairs import UNEQUAL, DesignError, Pair, PairSpec, pairs_for, token_spec
from .probes import control_labels

DIRECTION_KINDS = ("mean-diff", "probe")
MODES = ("interchange", "add")
LAST_CONTEXT = "<last context token>"
ROW_COLUMNS = ["set", "clean", "corrupt", "good", "bad", "critical", "item", "fold", "layer", "site",
               "direction_kind", "mode", "region", "token", "position", "m_clean", "m_corrupt", "m_steered",
               "flipped", "toward", "correct", "control_correct", "note"]
GROUP = ["set", "clean", "corrupt", "layer", "site", "direction_kind"]
SUMMARY_COLUMNS = GROUP + ["n_items", "iia", "iia_low", "iia_high", "toward", "toward_low", "toward_high",
                           "n_toward", "accuracy", "control_accuracy", "selectivity", "corrupt_flips",
                           "m_clean", "m_corrupt", "m_steered"]


@dataclass(frozen=True)
class CausalProbeConfig:
    """A causal-probe experiment: the pairs, layers (None: all, 0 = embeddings), the position (``region`` None:
    the last context token, which predicts the critical region's first token; else a region before the critical
    one and a ``token`` in it: first, last or an integer), how a region of unequal token counts aligns, the
    direction kinds, the folds, the intervention mode (``alpha`` scales "add"), the threshold (bits) below which
    an item's toward-ratio is not computed, the seed (folds, control labels, bootstrap), and the batching."""
    pairs: PairSpec = PairSpec()
    layers: Optional[tuple[int, ...]] = None
    region: Optional[str] = None
    token: Union[str, int] = "last"
    unequal: str = "last"
    directions: tuple[str, ...] = DIRECTION_KINDS
    folds: int = 5
    mode: str = "interchange"
    alpha: float = 1.0
    threshold: float = 0.1
    seed: int = 0
    items_per_batch: int = 8
    layers_per_pass: int = 1
    n_boot: int = 1000
    max_iter: int = 1000
    layout: Layout = Layout()

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", token_spec(str(self.token)))
        if self.token == "all":
            raise DesignError("causal probes steer one position: choose token first, last or an integer, not all")
        if self.unequal not in UNEQUAL:
            raise DesignError(f"--unequal {self.unequal!r}: choose from {', '.join(UNEQUAL)}")
        bad = [d for d in self.directions if d not in DIRECTION_KINDS]
        if bad or not self.directions:
            raise DesignError(f"direction kind {bad[0] if bad else ''!r}: choose from {', '.join(DIRECTION_KINDS)}")
        if self.mode not in MODES:
            raise DesignError(f"steering mode {self.mode!r}: choose from {', '.join(MODES)}")
        if self.folds < 2 or self.items_per_batch < 1 or self.layers_per_pass < 1:
            raise DesignError("causal probes need folds >= 2, items_per_batch >= 1 and layers_per_pass >= 1")


@dataclass(frozen=True)
class SteerPosition:
    """An item's steered position: its sequence position in the clean context for each continuation (good,
    bad) and the aligned position in the corrupted context (good continuation), where features are read."""
    clean: tuple[int, int]
    corrupt: int


def steer_position(seqs: ItemSequences, config: CausalProbeConfig) -> Union[SteerPosition, str]:
    """The item's steered position under ``config``, or why it has none (a problem string)."""
    if seqs.problem:
        return seqs.problem
    if config.region is None:
        last = {key: len(enc.context) + seqs.critical[key].start - 1 for key, enc in seqs.encoded.items()}
        return SteerPosition((last[("clean", "good")], last[("clean", "bad")]), last[("corrupt", "good")])
    chosen = [seqs.positions(cont, config.region, config.token, config.unequal) for cont in CONTINUATIONS]
    if any(c is None for c in chosen):
        return f"region {config.region!r} has no token {config.token!r} in both contexts"
    (good, bad) = (c[0] for c in chosen)  # type: ignore[index]
    return SteerPosition((good[0], bad[0]), good[1])


def _check_region(stim: StimulusSet, pair: Pair, config: CausalProbeConfig) -> None:
    """A configured region must lie before the critical region (or be the context token's pseudo-region)."""
    if config.region is None or config.region == CONTEXT_REGION:
        return
    if config.region not in stim.regions or stim.regions.index(config.region) >= stim.regions.index(pair.critical):
        before = stim.regions[:stim.regions.index(pair.critical)]
        raise DesignError(f"{stim.source}: field=regions: the steered region must come before the critical region "
                          f"{pair.critical!r} (got {config.region!r}; choose from {', '.join(before)} or "
                          f"{CONTEXT_REGION})")


def check_layers(layers: Optional[Sequence[int]], n_layers: int) -> list[int]:
    """The residual-stream layers to steer, sorted (None: 0..n_layers); a layer that does not exist raises."""
    chosen = sorted(set(range(n_layers + 1) if layers is None else layers))
    bad = [x for x in chosen if not 0 <= x <= n_layers]
    if bad or not chosen:
        raise DesignError(f"layer {bad[0] if bad else 'none'} does not exist (resid layers run 0..{n_layers})")
    return chosen


# -- the intervention ------------------------------------------------------------------------------------------

def steer(h: torch.Tensor, direction: torch.Tensor, value: torch.Tensor, mode: str) -> torch.Tensor:
    """Move rows ``h`` [n, d] along unit (or zero) rows ``direction`` [n, d]: "interchange" sets h . u to
    ``value`` [n]; "add" adds ``value`` times u. Computed in float64 and returned in h's dtype (u = 0: h)."""
    x, u, v = h.double(), direction.to(h.device, torch.float64), value.to(h.device, torch.float64)
    shift = v - (x * u).sum(-1) if mode == "interchange" else v
    return (x + shift[:, None] * u).to(h.dtype)


@dataclass(frozen=True)
class Steering:
    """One steered copy of a chunk: at ``resid.layer``, item j moves along ``directions[j]`` (unit or zero,
    [n_items, d]) to ``values[j]`` ("interchange": the target projection) or by it ("add")."""
    layer: int
    directions: np.ndarray
    values: np.ndarray
    mode: str = "interchange"

    def intervene(self, hidden: torch.Tensor, owners: list[int]) -> torch.Tensor:
        """Rows ``hidden`` steered, row i belonging to item ``owners[i]``."""
        u = torch.as_tensor(self.directions[owners])
        return steer(hidden, u, torch.as_tensor(self.values[owners]), self.mode)


def _steered_flats(run: ContextRun, positions: Sequence[SteerPosition], copy: int) -> tuple[list[int], list[int]]:
    """The flat positions steered in copy ``copy`` of a clean batch (both continuations; a position shared in a
    tree row once) and the item each belongs to."""
    size = run.inputs.input_ids.numel()
    owner: dict[int, int] = {}
    for j, pos in enumerate(positions):
        for s, p in enumerate(pos.clean):
            owner.setdefault(copy * size + run.flat(j, s, p), j)
    return list(owner), list(owner.values())


def steered_values(runner: ForwardRunner, reader: MetricReader, clean: ContextRun,
                   positions: Sequence[SteerPosition], steerings: Sequence[Steering]) -> list[list[MetricValues]]:
    """Each steering's metric values per item of the clean run's chunk, all in one pass of ``len(steerings)``
    copies that starts from the clean run's recorded ``resid`` of the lowest layer steered (it must be recorded)."""
    start = min(s.layer for s in steerings)
    copies = len(steerings)
    rows, width = clean.inputs.input_ids.shape
    hidden = clean.forward.recorded[f"resid.{start}"].repeat(copies, 1)
    placed = []
    for k, steering in enumerate(steerings):
        flats, owners = _steered_flats(clean, positions, k)
        index = torch.tensor(flats, dtype=torch.long, device=hidden.device)
        if steering.layer == start:
            hidden[index] = steering.intervene(hidden[index], owners)
            continue
        change: Callable[[torch.Tensor], torch.Tensor] = lambda x, s=steering, o=owners: s.intervene(x, o)
        placed.append(Placed(Intervention(f"resid.{steering.layer}", "map", change), index))
    read = torch.tensor([f for k in range(copies) for f in clean.read(k)], dtype=torch.long)
    forward = runner.run_inputs(tile(clean.inputs, copies), interventions=placed, read=read,
                                start=(start, hidden.view(copies * rows, width, -1)))
    n_read = len(clean.read())
    return [metrics_from_read(forward.logits[k * n_read:(k + 1) * n_read], clean.chunk, "clean", reader)
            for k in range(copies)]


# -- features and directions -----------------------------------------------------------------------------------

@dataclass
class Features:
    """The residual stream at the steered position of each item: ``clean[L]`` and ``corrupt[L]`` [n_items, d]
    (float64), and each item's unpatched corrupted-run M."""
    clean: dict[int, np.ndarray]
    corrupt: dict[int, np.ndarray]
    m_corrupt: np.ndarray


def collect_features(runner: ForwardRunner, reader: MetricReader, items: list[ItemSequences],
                     positions: list[SteerPosition], layers: Sequence[int], config: CausalProbeConfig) -> Features:
    """Unpatched clean and corrupted passes, chunk by chunk, recording ``resid.L`` at each item's position."""
    sites = [f"resid.{x}" for x in layers]
    parts: dict[str, list[list[np.ndarray]]] = {"clean": [], "corrupt": []}
    m_corrupt: list[float] = []
    for at in range(0, len(items), config.items_per_batch):
        chunk, where = items[at:at + config.items_per_batch], positions[at:at + config.items_per_batch]
        for ctx in ("clean", "corrupt"):
            run = run_context(runner, reader, chunk, ctx, config.layout, sites)
            flats = torch.tensor([run.flat(j, 0, pos.clean[0] if ctx == "clean" else pos.corrupt)
                                  for j, pos in enumerate(where)], dtype=torch.long)
            parts[ctx].append([run.forward.recorded[s][flats.to(run.forward.recorded[s].device)].double().cpu()
                               .numpy() for s in sites])
            if ctx == "corrupt":
                m_corrupt += [v.m for v in run.values]
    stacked = {ctx: {x: np.concatenate([part[i] for part in parts[ctx]]) for i, x in enumerate(layers)}
               for ctx in parts}
    return Features(stacked["clean"], stacked["corrupt"], np.array(m_corrupt))


def item_folds(n_items: int, folds: int, seed: int) -> np.ndarray:
    """A fold number per item (a random balanced assignment): the item's two rows share it."""
    if n_items < folds:
        raise DesignError(f"cross-validation: {folds} folds need at least {folds} usable items, have {n_items} "
                          "(lower folds)")
    fold = np.empty(n_items, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n_items)] = np.arange(n_items) % folds
    return fold


Classifier = Callable[[np.ndarray], np.ndarray]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else np.zeros_like(vector)


def _constant(label: int) -> Classifier:
    return lambda x: np.full(len(x), label)


def mean_diff_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Classifier]:
    """Unit mean(x | y=1) - mean(x | y=0) and the classifier by the side of the class means' midpoint along it."""
    if len(np.unique(y)) < 2:
        return np.zeros(x.shape[1]), _constant(int(y[0]))
    mu0, mu1 = x[y == 0].mean(0), x[y == 1].mean(0)
    u = _unit(mu1 - mu0)
    middle = float((mu0 + mu1) @ u) / 2
    return u, lambda z: (z @ u > middle).astype(int)


def probe_fit(x: np.ndarray, y: np.ndarray, max_iter: int = 1000) -> tuple[np.ndarray, Classifier]:
    """Unit raw-space weight vector of a standardised logistic-regression probe (toward y=1), and its predictor."""
    if len(np.unique(y)) < 2:
        return np.zeros(x.shape[1]), _constant(int(y[0]))
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=max_iter).fit(scaler.transform(x), y)
    return _unit(model.coef_[0] / scaler.scale_), lambda z: model.predict(scaler.transform(z))


FITS: dict[str, Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, Classifier]]] = {
    "mean-diff": lambda x, y, max_iter: mean_diff_fit(x, y), "probe": probe_fit}


@dataclass
class DirectionFit:
    """A layer's direction of one kind: per fold the unit direction [folds, d] and the steering value (the
    interchange target or the add shift); per item the held-out correctness on the context and control tasks."""
    directions: np.ndarray
    values: np.ndarray
    correct: np.ndarray
    control: np.ndarray


def fit_direction(clean: np.ndarray, corrupt: np.ndarray, fold: np.ndarray, control: np.ndarray, kind: str,
                  config: CausalProbeConfig) -> DirectionFit:
    """Fit a direction of ``kind`` per fold on the other folds' items (clean rows label 0, corrupt rows 1) and
    score it on the fold's items; likewise a control classifier on the items' control labels."""
    n, d = clean.shape
    folds = int(fold.max()) + 1
    fit = DirectionFit(np.zeros((folds, d)), np.zeros(folds), np.zeros(n), np.zeros(n))
    for f in range(folds):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        x = np.vstack([clean[train], corrupt[train]])
        y = np.r_[np.zeros(len(train), int), np.ones(len(train), int)]
        u, classify = FITS[kind](x, y, config.max_iter)
        mu_clean, mu_corrupt = clean[train].mean(0), corrupt[train].mean(0)
        fit.directions[f] = u
        shift = config.alpha * ((mu_corrupt - mu_clean) @ u)
        fit.values[f] = mu_corrupt @ u if config.mode == "interchange" else shift
        fit.correct[test] = ((classify(clean[test]) == 0).astype(float) + (classify(corrupt[test]) == 1)) / 2
        _, classify_control = FITS[kind](x, np.r_[control[train], control[train]], config.max_iter)
        fit.control[test] = ((classify_control(clean[test]) == control[test]).astype(float)
                             + (classify_control(corrupt[test]) == control[test])) / 2
    return fit


# -- the experiment --------------------------------------------------------------------------------------------

@dataclass
class CausalProbeResult:
    """Per-item rows (``ROW_COLUMNS``) and the per-layer summary (``SUMMARY_COLUMNS``)."""
    rows: pd.DataFrame
    summary: pd.DataFrame


def _steer_items(runner: ForwardRunner, reader: MetricReader, items: list[ItemSequences],
                 positions: list[SteerPosition], fold: np.ndarray, fits: dict[tuple[int, str], DirectionFit],
                 layers: list[int], config: CausalProbeConfig, bar: tqdm) -> tuple[np.ndarray, dict]:
    """M of each item's clean run and of its steered runs per (layer, kind): one pass per chunk and layer group,
    every pass ``layers_per_pass`` x kinds copies wide (a short last group is padded with no-op steerings)."""
    groups = [layers[i:i + config.layers_per_pass] for i in range(0, len(layers), config.layers_per_pass)]
    copies = config.layers_per_pass * len(config.directions)
    m_clean: list[float] = []
    steered: dict[tuple[int, str], list[float]] = {key: [] for key in fits}
    for at in range(0, len(items), config.items_per_batch):
        chunk, where = items[at:at + config.items_per_batch], positions[at:at + config.items_per_batch]
        folds = fold[at:at + config.items_per_batch]
        clean = run_context(runner, reader, chunk, "clean", config.layout, [f"resid.{g[0]}" for g in groups], copies)
        m_clean += [v.m for v in clean.values]
        for group in groups:
            keys = [(x, kind) for x in group for kind in config.directions]
            steerings = [Steering(x, fits[(x, kind)].directions[folds], fits[(x, kind)].values[folds], config.mode)
                         for x, kind in keys]
            d = steerings[0].directions.shape[1]
            steerings += [Steering(group[0], np.zeros((len(chunk), d)), np.zeros(len(chunk)))] * (copies - len(keys))
            for key, values in zip(keys, steered_values(runner, reader, clean, where, steerings)):
                steered[key] += [v.m for v in values]
            bar.update(len(chunk) * len(group))
    return np.array(m_clean), {key: np.array(v) for key, v in steered.items()}


def _pair_rows(stim: StimulusSet, pair: Pair, scorer: CausalScorer, runner: ForwardRunner, reader: MetricReader,
               layers: list[int], config: CausalProbeConfig, progress: bool) -> list[dict]:
    """Every row of one pair: fit the directions on all items' features, then steer each item's clean run."""
    _check_region(stim, pair, config)
    seqs = [item_sequences(stim, item, pair, scorer) for item in stim.items]
    found = [steer_position(s, config) for s in seqs]
    base = {"set": stim.name, "clean": pair.clean, "corrupt": pair.corrupt, "good": pair.good, "bad": pair.bad,
            "critical": pair.critical, "mode": config.mode, "region": config.region or LAST_CONTEXT,
            "token": str(config.token)}
    rows = [{**base, "item": s.item, "layer": x, "site": f"resid.{x}", "direction_kind": kind,
             "note": f"not steered: {p}"} for s, p in zip(seqs, found) if isinstance(p, str)
            for x in layers for kind in config.directions]
    usable = [(s, p) for s, p in zip(seqs, found) if isinstance(p, SteerPosition)]
    items, positions = [s for s, _ in usable], [p for _, p in usable]
    seeds = np.random.SeedSequence(config.seed).spawn(2)
    fold = item_folds(len(items), config.folds, int(seeds[0].generate_state(1)[0]))
    control = control_labels([s.item for s in items], np.arange(len(items)) % 2, int(seeds[1].generate_state(1)[0]))
    features = collect_features(runner, reader, items, positions, layers, config)
    fits = {(x, kind): fit_direction(features.clean[x], features.corrupt[x], fold, control, kind, config)
            for x in layers for kind in config.directions}
    with tqdm(total=len(items) * len(layers), desc=f"causal probes {stim.name}", unit="item-layer",
              disable=not progress) as bar:
        m_clean, steered = _steer_items(runner, reader, items, positions, fold, fits, layers, config, bar)
    for (x, kind), fit in fits.items():
        for j, seqs_j in enumerate(items):
            rows.append({**base, **_item_values(m_clean[j], features.m_corrupt[j], steered[(x, kind)][j], config),
                         "item": seqs_j.item, "fold": int(fold[j]), "layer": x, "site": f"resid.{x}",
                         "direction_kind": kind, "position": positions[j].clean[0], "correct": fit.correct[j],
                         "control_correct": fit.control[j]})
    return rows


def _item_values(m_clean: float, m_corrupt: float, m_steered: float, config: CausalProbeConfig) -> dict:
    """An item's M values, whether the steered preference flipped, and the toward-ratio (or why it is NaN)."""
    gap = m_clean - m_corrupt
    excluded = abs(gap) < config.threshold
    return {"m_clean": m_clean, "m_corrupt": m_corrupt, "m_steered": m_steered,
            "flipped": bool(np.sign(m_steered) != np.sign(m_clean)),
            "toward": np.nan if excluded else (m_clean - m_steered) / gap,
            "note": f"toward excluded: |M_clean - M_corrupt| = {abs(gap):.3g} bit < {config.threshold:g}"
            if excluded else ""}


def _bootstrap_mean(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% CI of the mean, resampling items (NaN with fewer than two)."""
    if len(values) < 2 or n_boot < 1:
        return np.nan, np.nan
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise_causal_probes(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per set x pair x layer x direction kind over the steered items: IIA (fraction flipped) with a
    Wilson 95% CI, the mean toward-ratio with an item-bootstrap CI, held-out accuracy, control accuracy and
    selectivity, the fraction of items whose corrupted run itself flips, and the mean M values."""
    rng = np.random.default_rng(seed)
    out = []
    for key, group in rows.groupby(GROUP, sort=False):
        used = group[group["m_steered"].notna()]
        n = len(used)
        flips = int(used["flipped"].astype(bool).sum())
        toward = used["toward"].dropna().to_numpy(float)
        accuracy, control = used["correct"].mean(), used["control_correct"].mean()
        low, high = wilson_interval(flips, n)
        t_low, t_high = _bootstrap_mean(toward, n_boot, rng)
        out.append(dict(zip(GROUP, key), n_items=n, iia=flips / n if n else np.nan, iia_low=low, iia_high=high,
                        toward=toward.mean() if len(toward) else np.nan, toward_low=t_low, toward_high=t_high,
                        n_toward=len(toward), accuracy=accuracy, control_accuracy=control,
                        selectivity=accuracy - control,
                        corrupt_flips=float((np.sign(used["m_corrupt"]) != np.sign(used["m_clean"])).mean()),
                        m_clean=used["m_clean"].mean(), m_corrupt=used["m_corrupt"].mean(),
                        m_steered=used["m_steered"].mean()))
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def causal_probes(lm: LanguageModel, stim: StimulusSet, config: CausalProbeConfig = CausalProbeConfig(),
                  scoring: Optional[ScoringOptions] = None, progress: bool = True) -> CausalProbeResult:
    """Fit and steer along each layer's directions for every pair of the set (tokenized and scored under
    ``scoring``: the run's context token, convention and word correction); rows and per-layer summary."""
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    runner = ForwardRunner(lm)
    reader = MetricReader(scorer.statistics, scorer.markers,
                          scorer.word_correction and stim.segmentation == "whitespace")
    layers = check_layers(config.layers, architecture(lm.model).n_layers)
    rows = [row for pair in pairs_for(stim, config.pairs)
            for row in _pair_rows(stim, pair, scorer, runner, reader, layers, config, progress)]
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    table["flipped"] = table["flipped"].astype("boolean")
    table["fold"] = table["fold"].astype("Int64")
    table["position"] = table["position"].astype("Int64")
    return CausalProbeResult(table, summarise_causal_probes(table, config.n_boot, config.seed))
