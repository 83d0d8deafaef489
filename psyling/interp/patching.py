"""Activation patching between the two contexts of a set's items, positions addressed by region.

Denoising runs the corrupted context with the clean context's activation at a site and aligned positions
(recovery R = (M_patched - M_corrupt) / (M_clean - M_corrupt)); noising runs the clean context with the
corrupted one's (disruption D = (M_clean - M_patched) / (M_clean - M_corrupt)). Sites: ``resid.L`` (the
residual stream after block L), ``attn.L``, ``mlp.L``, single heads ``head.L.H`` and MLP units ``neuron.L.N``. For each site the
patched variants of every item of a chunk and every region go through one batched pass that starts from the
cached input of the patched layer, so the blocks below it are not recomputed; positions before the first token
where the contexts differ hold identical activations and are known to give 0 (not recomputed, ``computed``
False); regions after the critical region cannot change the metric (likewise)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models.architecture import architecture
from ..models.forward import ForwardRunner
from ..models.hooks import Intervention, Placed, parse_site, site_order
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scoring import CausalScorer
from ..stimuli.schema import StimulusSet
from .circuit_metric import MetricReader, MetricValues, kl_bits
from .pair_sequences import CONTINUATIONS, ItemSequences, alignment_table, item_sequences
from .patch_runs import ContextRun, Layout, context_inputs, metrics_from_read, run_context, tile
from .pairs import UNEQUAL, DesignError, Pair, PairSpec, pairs_for, token_spec

DIRECTIONS = {"denoise": ("corrupt", "clean"), "noise": ("clean", "corrupt")}  # direction -> (target, source)
KINDS = ("resid", "attn", "mlp", "head", "neuron")


@dataclass(frozen=True)
class PatchConfig:
    """A patching experiment: the pairs, sites (kinds or site names) and layers (None: all), regions (None:
    every region, plus "all" = every aligned position at once), the token within a region, how a region of
    differing token counts aligns, directions, the exclusion threshold (bits) and how the passes are laid out."""
    pairs: PairSpec = PairSpec()
    sites: tuple[str, ...] = ("resid",)
    layers: Optional[tuple[int, ...]] = None
    regions: Optional[tuple[str, ...]] = None
    token: Union[str, int] = "last"
    unequal: str = "last"
    directions: tuple[str, ...] = ("denoise", "noise")
    threshold: float = 0.1
    items_per_batch: int = 8
    max_tokens: int = 8192
    layout: Layout = Layout()
    skip_identical: bool = True  # known-zero patches (identical activations) are not recomputed

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", token_spec(str(self.token)))
        if self.unequal not in UNEQUAL:
            raise DesignError(f"--unequal {self.unequal!r}: choose from {', '.join(UNEQUAL)}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise DesignError(f"direction {bad[0] if bad else ''!r}: choose from {', '.join(DIRECTIONS)}")
        if not self.threshold >= 0:
            raise DesignError(f"--threshold must be a number of bits >= 0 (got {self.threshold})")


def patch_sites(lm: LanguageModel, kinds: Sequence[str], layers: Optional[Sequence[int]] = None) -> list[str]:
    """Site names in compute order: a kind expands to every layer (``head``: every head), a name is kept."""
    arch = architecture(lm.model)
    out = []
    for kind in kinds:
        if kind not in KINDS:
            site = parse_site(kind)
            if site.kind in ("head", "neuron") and site.index is None:
                raise DesignError(f"patching site {kind!r}: name one {site.kind} ({site.kind}.L.N) or the kind")
            out.append(kind)
            continue
        first = 0 if kind == "resid" else 1
        chosen = range(first, arch.n_layers + 1) if layers is None else [x for x in layers if x >= first]
        bad = [x for x in chosen if not first <= x <= arch.n_layers]
        if bad:
            raise DesignError(f"layer {bad[0]} does not exist ({kind} layers run {first}..{arch.n_layers})")
        heads = range(arch.n_heads) if kind == "head" else range(arch.n_neurons) if kind == "neuron" else [None]
        out += [f"{kind}.{x}" + ("" if h is None else f".{h}") for x in chosen for h in heads]
    return sorted(dict.fromkeys(out), key=site_order)


def start_layer(site: str) -> int:
    """The residual stream a patched pass starts from: resid.L itself, or the input of block L."""
    parsed = parse_site(site)
    return parsed.layer if parsed.kind == "resid" else parsed.layer - 1


def recorded_sites(sites: Sequence[str]) -> list[str]:
    """What the unpatched passes record: each start layer's residual stream and each patched whole site."""
    starts = [f"resid.{start_layer(s)}" for s in sites]
    wholes = [parse_site(s).whole for s in sites if parse_site(s).kind != "resid"]
    return sorted(dict.fromkeys(starts + wholes), key=site_order)


@dataclass
class Variant:
    """One patched variant of a chunk: a site at a region, each item's status ("computed", "identical":
    the same activations in both contexts, "after": past the critical region, or why it is not aligned), and
    the flat positions patched in the target batch with their sources in the source batch."""
    site: str
    region: str
    status: list[str]
    target: list[list[int]] = field(default_factory=list)
    source: list[list[int]] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return "computed" in self.status


def _status(stim: StimulusSet, seqs: ItemSequences, region: str,
            config: PatchConfig) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """An item's status in a region's variant and its (clean, corrupt) position pairs per continuation."""
    if region != "all" and stim.regions.index(region) > stim.regions.index(seqs.pair.critical):
        return "after", {}
    chosen = {cont: seqs.positions(cont, region, config.token, config.unequal) for cont in CONTINUATIONS}
    if any(v is None for v in chosen.values()):
        skipped = config.unequal == "skip" and config.token == "all"
        return (f"not aligned: region {region!r} has no token {config.token!r} in both contexts"
                f"{' (or its token counts differ: --unequal skip)' if skipped else ''}"), {}
    if config.skip_identical and all(a == b < seqs.divergence for pairs in chosen.values() for a, b in pairs):
        return "identical", {}
    return "computed", chosen  # type: ignore[return-value]


def site_variant(stim: StimulusSet, site: str, region: str, config: PatchConfig, target: ContextRun,
             source: ContextRun) -> Variant:
    """A site's variant at a region: each item's status and its flat target / source positions (a position
    that the two continuations share in a tree row is patched once)."""
    variant = Variant(site, region, [])
    t_side, s_side = (0, 1) if target.context == "clean" else (1, 0)
    for j, seqs in enumerate(target.chunk):
        status, chosen = _status(stim, seqs, region, config)
        sources: dict[int, int] = {}
        for s, cont in enumerate(CONTINUATIONS):
            for pair in chosen.get(cont, []):
                sources.setdefault(target.flat(j, s, pair[t_side]), source.flat(j, s, pair[s_side]))
        variant.status.append(status)
        variant.target.append(list(sources))
        variant.source.append(list(sources.values()))
    return variant


def patch_regions(stim: StimulusSet, config: PatchConfig) -> tuple[str, ...]:
    """The regions a config patches (default: every region, then all), checked against the set's."""
    regions = config.regions or tuple(stim.regions) + ("all",)
    unknown = [r for r in regions if r != "all" and r not in stim.regions]
    if unknown:
        raise DesignError(f"{stim.source}: field=regions: no region {unknown[0]!r} "
                          f"(regions: {', '.join(stim.regions)}, or all)")
    return regions


def copies_per_pass(stim: StimulusSet, chunk: list[ItemSequences], config: PatchConfig, size: int) -> int:
    """How many patched copies of a chunk's batch one pass holds: the regions that need computing, at most
    what ``max_tokens`` allows. Every pass of the chunk (the unpatched ones too) has this many copies, so that
    all run on tensors of one shape and a patch that restores a whole run gives its numbers bit for bit."""
    regions = patch_regions(stim, config)
    needed = sum(any(_status(stim, seqs, r, config)[0] == "computed" for seqs in chunk) for r in regions)
    return max(1, min(needed, config.max_tokens // size))


class Patcher:
    """Runs one set's patching experiment: unpatched passes per chunk and context, then every variant, batched
    by site, from the cached input of the patched layer. ``counts`` tallies patches and the block-token work."""

    def __init__(self, lm: LanguageModel, stim: StimulusSet, config: PatchConfig, scorer: CausalScorer) -> None:
        self.lm, self.stim, self.config = lm, stim, config
        self.runner = ForwardRunner(lm)
        self.arch = architecture(lm.model)
        self.reader = MetricReader(scorer.statistics, scorer.markers,
                                   scorer.word_correction and stim.segmentation == "whitespace")
        self.counts = {"patches": 0, "computed": 0, "identical": 0, "after": 0, "unaligned": 0,
                       "block_tokens": 0, "block_tokens_full_recompute": 0}

    def patched_inputs(self, group: list[Variant], target: ContextRun, source: ContextRun):
        """The start layer's residual stream for ``len(group)`` target copies, and the placed interventions."""
        site = group[0].site
        parsed = parse_site(site)
        size = target.inputs.input_ids.numel()
        hidden = target.forward.recorded[f"resid.{start_layer(site)}"].repeat(len(group), 1)
        placed = []
        for k, variant in enumerate(group):
            t = torch.tensor([k * size + f for flats in variant.target for f in flats], dtype=torch.long)
            s = torch.tensor([f for flats in variant.source for f in flats], dtype=torch.long)
            if parsed.kind == "resid":
                hidden[t] = source.forward.recorded[site][s]
                continue
            values = source.forward.recorded[parsed.whole][s]
            if parsed.index is not None:
                width = self.arch.head_dim if parsed.kind == "head" else 1
                values = values[:, parsed.index * width:(parsed.index + 1) * width]
            placed.append(Placed(Intervention(site, "set", values), t))
        rows, width = target.inputs.input_ids.shape
        return hidden.view(len(group) * rows, width, -1), placed

    def run_group(self, group: list[Variant], target: ContextRun, source: ContextRun) -> list[list[MetricValues]]:
        """Each variant's metric values per item (one batched pass from the start layer)."""
        hidden, placed = self.patched_inputs(group, target, source)
        read = torch.tensor([f for k in range(len(group)) for f in target.read(k)], dtype=torch.long)
        layer = start_layer(group[0].site)
        forward = self.runner.run_inputs(tile(target.inputs, len(group)), interventions=placed, read=read,
                                         start=(layer, hidden))
        n_read = len(target.read())
        tokens = len({f for cols in target.inputs.columns for f in cols})  # real positions, padding excluded
        self.counts["block_tokens"] += len(group) * tokens * (self.arch.n_layers - layer)
        return [metrics_from_read(forward.logits[k * n_read:(k + 1) * n_read], target.chunk, target.context,
                                  self.reader) for k in range(len(group))]

    def variants(self, site: str, target: ContextRun, source: ContextRun) -> list[Variant]:
        return [site_variant(self.stim, site, region, self.config, target, source)
                for region in patch_regions(self.stim, self.config)]

    def site_values(self, site: str, target: ContextRun, source: ContextRun,
                    copies: int) -> list[tuple[Variant, list]]:
        """(variant, per-item patched values or None) for every region at one site, ``copies`` per pass."""
        variants = self.variants(site, target, source)
        needed = [v for v in variants if v.needed]
        results: dict[int, list[MetricValues]] = {}
        for at in range(0, len(needed), copies):
            group = needed[at:at + copies]
            group += [Variant(site, "", [], [[]] * len(target.chunk), [[]] * len(target.chunk))
                      for _ in range(copies - len(group))]  # unpatched copies keep the pass's shape
            for variant, values in zip(group, self.run_group(group, target, source)):
                results[id(variant)] = values
        item_tokens = [len(target.inputs.columns[2 * j]) + len(target.inputs.columns[2 * j + 1])
                       for j in range(len(target.chunk))]
        for variant in variants:
            for status, tokens in zip(variant.status, item_tokens):
                self.counts[status if status in self.counts else "unaligned"] += 1
                self.counts["patches"] += 1
                self.counts["block_tokens_full_recompute"] += tokens * self.arch.n_layers  # one full pass each
        return [(v, results.get(id(v))) for v in variants]


ROW_COLUMNS = ["set", "clean", "corrupt", "good", "bad", "critical", "item", "site", "kind", "layer", "head",
               "region", "token", "direction", "m_clean", "m_corrupt", "m_patched", "effect", "logit_diff_clean",
               "logit_diff_corrupt", "logit_diff_patched", "kl", "computed", "note"]


def effect(direction: str, m_clean, m_corrupt, m_patched):
    """Recovery (denoise) or disruption (noise) of the clean - corrupt contrast (numbers or arrays)."""
    gap = m_clean - m_corrupt
    return (m_patched - m_corrupt) / gap if direction == "denoise" else (m_clean - m_patched) / gap


def _rows(stim: StimulusSet, direction: str, runs: dict[str, ContextRun], site: str,
          results: list[tuple[Variant, Optional[list[MetricValues]]]], config: PatchConfig) -> list[dict]:
    """One row per item x region of a site in one direction."""
    target = runs[DIRECTIONS[direction][0]]
    parsed = parse_site(site)
    rows = []
    for variant, values in results:
        for j, (seqs, status) in enumerate(zip(target.chunk, variant.status)):
            clean, corrupt = runs["clean"].values[j], runs["corrupt"].values[j]
            mine = target.values[j]
            patched = values[j] if status == "computed" else mine if status in ("identical", "after") else None
            gap = clean.m - corrupt.m
            notes = {"identical": "identical activations in both contexts: 0 by construction (not recomputed)",
                     "after": "after the critical region: cannot change the metric (not recomputed)"}
            note = notes.get(status, "" if status == "computed" else status)
            if patched is not None and (abs(gap) < config.threshold or gap == 0):
                note = f"excluded: |M_clean - M_corrupt| = {abs(gap):.3g} bit < {config.threshold:g}"
            pair = seqs.pair
            rows.append({"set": stim.name, "clean": pair.clean, "corrupt": pair.corrupt, "good": pair.good,
                         "bad": pair.bad, "critical": pair.critical, "item": seqs.item, "site": site,
                         "kind": parsed.kind, "layer": parsed.layer,
                         "head": -1 if parsed.index is None else parsed.index, "region": variant.region,
                         "token": str(config.token), "direction": direction, "m_clean": clean.m,
                         "m_corrupt": corrupt.m, "m_patched": np.nan if patched is None else patched.m,
                         "effect": effect(direction, clean.m, corrupt.m, patched.m)
                         if patched is not None and not note.startswith("excluded") else np.nan,
                         "logit_diff_clean": clean.logit_diff, "logit_diff_corrupt": corrupt.logit_diff,
                         "logit_diff_patched": np.nan if patched is None else patched.logit_diff,
                         "kl": np.nan if patched is None else kl_bits(clean.log_next, patched.log_next),
                         "computed": status == "computed", "note": note})
    return rows


@dataclass
class PatchResult:
    """A set's patching rows (``ROW_COLUMNS``), its alignment table, the pairs, the work counts and time."""
    rows: pd.DataFrame
    alignment: pd.DataFrame
    pairs: list[Pair]
    counts: dict[str, int]
    seconds: float


def _problem_rows(stim: StimulusSet, seqs: ItemSequences, sites: list[str], config: PatchConfig) -> list[dict]:
    """An item that cannot be patched, listed at every site, region and direction with the reason."""
    regions = patch_regions(stim, config)
    pair = seqs.pair
    return [{"set": stim.name, "clean": pair.clean, "corrupt": pair.corrupt, "good": pair.good, "bad": pair.bad,
             "critical": pair.critical, "item": seqs.item, "site": site, "kind": parse_site(site).kind,
             "layer": parse_site(site).layer, "head": -1 if parse_site(site).index is None else parse_site(site).index,
             "region": region, "token": str(config.token), "direction": direction, "computed": False,
             "note": f"not patched: {seqs.problem}"}
            for site in sites for region in regions for direction in config.directions]


def chunked(items: list, size: int) -> Iterator[list]:
    for at in range(0, len(items), max(1, size)):
        yield items[at:at + size]


def patch_set(lm: LanguageModel, stim: StimulusSet, config: PatchConfig = PatchConfig(),
              scoring: Optional[ScoringOptions] = None, progress: bool = True) -> PatchResult:
    """Patch every site, region and direction of ``config`` for each pair of the set (tokenized and scored
    under ``scoring``, the run's options: the same context token, convention and word correction)."""
    import time

    started = time.perf_counter()
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    patcher = Patcher(lm, stim, config, scorer)
    sites = patch_sites(lm, config.sites, config.layers)
    record = recorded_sites(sites)
    pairs = pairs_for(stim, config.pairs)
    patch_regions(stim, config)
    rows: list[dict] = []
    alignments = []
    for pair in pairs:
        seqs = [item_sequences(stim, item, pair, scorer) for item in stim.items]
        alignments.append(alignment_table(stim, seqs, lm.tokenizer, config.unequal,
                                          patcher.arch.family == "gpt2"))
        for problem in (s for s in seqs if s.problem):
            rows += _problem_rows(stim, problem, sites, config)
        good = [s for s in seqs if not s.problem]
        bar = tqdm(total=len(good) * len(sites), desc=f"patching {stim.name}", unit="item-site",
                   disable=not progress)
        for chunk in chunked(good, config.items_per_batch):
            copies = {ctx: copies_per_pass(stim, chunk, config, context_inputs(chunk, ctx, config.layout)
                                           .input_ids.numel()) for ctx in ("clean", "corrupt")}
            runs = {ctx: run_context(patcher.runner, patcher.reader, chunk, ctx, config.layout, record, copies[ctx])
                    for ctx in ("clean", "corrupt")}
            for site in sites:
                for direction in config.directions:
                    target, source = (runs[c] for c in DIRECTIONS[direction])
                    values = patcher.site_values(site, target, source, copies[target.context])
                    rows += _rows(stim, direction, runs, site, values, config)
                bar.update(len(chunk))
        bar.close()
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    table["computed"] = table["computed"].astype(bool)
    return PatchResult(table, pd.concat(alignments, ignore_index=True), pairs, patcher.counts,
                       time.perf_counter() - started)
