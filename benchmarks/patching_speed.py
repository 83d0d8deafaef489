"""Benchmark: an exact residual-stream patching grid with psyling's patch_set against a plain loop.

    python3 benchmarks/patching_speed.py [--items N] [--model smollm2-135m] [--layout tree|padded] [--threads T]

The grid: agreement_simple (its design pair: clean sg_match, corrupt pl_match, continuations sg_match /
sg_mismatch at the verb), denoising, resid.0 .. resid.L, regions = every region's last token and "all".
The plain loop runs it as TransformerLens's ``generic_activation_patch`` does: one clean forward per sequence
caching the residual stream of every layer, one unpatched corrupted forward, then one full forward per
(item, layer, region, sequence) with a plain PyTorch forward hook that replaces the residual stream at the
region's aligned positions (no psyling runner or hooks; the sequences are psyling's tokenization, built before
the clock starts, and the metric goes through the same ``circuit_metric`` functions). Regions with no token in
the sequences (after the critical region, which the sequences end with) are not run by the loop; psyling lists
them as known zero. ``--threads`` sets torch's CPU threads (default: torch's own); on a CPU shared with other
jobs one thread gives steadier figures (idle-spinning threads slow the loop's small forwards up to 10x).
Prints figures; not a test."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from psyling.api import load
from psyling.interp.circuit_metric import MetricReader, ReadLogits, context_metric, read_positions
from psyling.interp.pair_sequences import CONTINUATIONS, ItemSequences, item_sequences
from psyling.interp.pairs import PairSpec, pairs_for
from psyling.interp.patch_runs import Layout
from psyling.interp.patching import PatchConfig, patch_set
from psyling.models.forward import ForwardRunner
from psyling.models.options import ModelSpec, ScoringOptions
from psyling.models.scoring import CausalScorer
from psyling.stimuli.io import load_set

SET = Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml"


def _resid(output):
    return output[0] if isinstance(output, tuple) else output


class PlainPatcher:
    """Residual-stream patching with plain forward hooks on the Hugging Face decoder blocks, one sequence a pass."""

    def __init__(self, lm, reader: MetricReader, statistics) -> None:
        self.model, self.reader, self.statistics = lm.model, reader, statistics
        self.blocks = lm.model.model.layers
        self.forwards = 0
        self.block_tokens = 0

    def forward(self, ids: list[int]) -> torch.Tensor:
        self.forwards += 1
        self.block_tokens += len(ids) * len(self.blocks)
        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]

    def cache(self, ids: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the residual stream after every block ([0]: the first block's input), one forward."""
        stream: list[torch.Tensor] = []
        handles = [self.blocks[0].register_forward_pre_hook(
            lambda m, args, kwargs: stream.append((args[0] if args else kwargs["hidden_states"])[0].clone()),
            with_kwargs=True)]
        handles += [b.register_forward_hook(lambda m, a, out: stream.append(_resid(out)[0].clone()))
                    for b in self.blocks]
        try:
            logits = self.forward(ids)
        finally:
            for h in handles:
                h.remove()
        return logits, stream

    def patched(self, ids: list[int], layer: int, positions: list[int], donor: torch.Tensor) -> torch.Tensor:
        """Logits of ``ids`` with resid.``layer`` at ``positions`` replaced by ``donor`` ([len(positions), d])."""
        def replace_input(module, args, kwargs):
            hidden = (args[0] if args else kwargs["hidden_states"]).clone()
            hidden[0, positions] = donor
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

        def replace_output(module, args, output):
            resid = _resid(output).clone()
            resid[0, positions] = donor
            return (resid, *output[1:]) if isinstance(output, tuple) else resid

        handle = (self.blocks[0].register_forward_pre_hook(replace_input, with_kwargs=True) if layer == 0
                  else self.blocks[layer - 1].register_forward_hook(replace_output))
        try:
            return self.forward(ids)
        finally:
            handle.remove()

    def metric(self, seqs: ItemSequences, context: str, logits: dict[str, torch.Tensor]) -> float:
        """M of one context from each continuation's full logits, through the circuit metric."""
        read = {}
        for cont in CONTINUATIONS:
            rows = logits[cont][read_positions(seqs, (context, cont))].clone()
            log_z, log_bow, _ = self.statistics.log_masses(rows.clone())
            read[cont] = ReadLogits(rows, log_z, log_bow)
        return context_metric(read, seqs, context, self.reader).m


def plain_grid(plain: PlainPatcher, items: list[ItemSequences], layers: range, regions: list[str]) -> pd.DataFrame:
    """Every (item, layer, region) denoising patch of the grid, one full forward per sequence."""
    rows = []
    for seqs in items:
        clean = {c: plain.cache(seqs.encoded[("clean", c)].sequence) for c in CONTINUATIONS}
        corrupt_ids = {c: seqs.encoded[("corrupt", c)].sequence for c in CONTINUATIONS}
        m_clean = plain.metric(seqs, "clean", {c: clean[c][0] for c in CONTINUATIONS})
        m_corrupt = plain.metric(seqs, "corrupt", {c: plain.forward(corrupt_ids[c]) for c in CONTINUATIONS})
        for layer in layers:
            for region in regions:
                chosen = {c: seqs.positions(c, region, "last", "last") for c in CONTINUATIONS}
                if any(not pairs for pairs in chosen.values()):
                    continue
                logits = {c: plain.patched(corrupt_ids[c], layer, [b for _, b in chosen[c]],
                                           clean[c][1][layer][[a for a, _ in chosen[c]]]) for c in CONTINUATIONS}
                rows.append({"item": seqs.item, "layer": layer, "region": region, "m_clean": m_clean,
                             "m_corrupt": m_corrupt, "m_patched": plain.metric(seqs, "corrupt", logits)})
    return pd.DataFrame(rows)


def counting_runner():
    """Wrap ForwardRunner.run_inputs to count psyling's passes (patched: those with a start layer) and rows."""
    counts = {"unpatched_passes": 0, "patched_passes": 0, "patched_rows": 0}
    original = ForwardRunner.run_inputs

    def counted(self, inputs, **kwargs):
        started = kwargs.get("start") is not None
        counts["patched_passes" if started else "unpatched_passes"] += 1
        counts["patched_rows"] += inputs.input_ids.shape[0] if started else 0
        return original(self, inputs, **kwargs)

    ForwardRunner.run_inputs = counted
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layout", choices=("tree", "padded"), default="tree")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(ModelSpec(args.model))
    full = load_set(SET)
    stim = replace(full, items=full.items[:args.items])
    n_layers = lm.model.config.num_hidden_layers
    config = PatchConfig(directions=("denoise",), layout=Layout(tree=args.layout == "tree"))
    scorer = CausalScorer(lm, ScoringOptions(), progress=False)
    correct = scorer.word_correction and stim.segmentation == "whitespace"
    reader = MetricReader(scorer.statistics, scorer.markers, correct)
    pair = pairs_for(stim, PairSpec())[0]
    items = [item_sequences(stim, item, pair, scorer) for item in stim.items]
    plain = PlainPatcher(lm, reader, scorer.statistics)
    plain.forward(items[0].encoded[("clean", "good")].sequence)  # warm-up, untimed
    plain.forwards = plain.block_tokens = 0
    torch.set_grad_enabled(False)

    counts = counting_runner()
    t0 = time.perf_counter()
    res = patch_set(lm, stim, config, progress=False)
    psyling_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = plain_grid(plain, items, range(n_layers + 1), list(stim.regions) + ["all"])
    plain_s = time.perf_counter() - t0
    report(args, stim, res, counts, psyling_s, loop, plain, plain_s)


def report(args, stim, res, counts, psyling_s, loop, plain, plain_s) -> None:
    rows = res.rows
    merged = rows.merge(loop, on=["item", "layer", "region"], suffixes=("", "_plain"))
    diff = (merged["m_patched"] - merged["m_patched_plain"]).abs()
    print(f"{args.model}, {stim.name}: {len(stim.items)} items, denoise, resid.0..resid.{rows['layer'].max()}, "
          f"regions {', '.join(stim.regions)} (last token) + all; psyling layout {args.layout}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"psyling patch_set: {psyling_s:8.2f} s  ({counts['patched_passes']} patched passes holding "
          f"{counts['patched_rows']} rows, {counts['unpatched_passes']} unpatched passes)")
    print(f"plain loop       : {plain_s:8.2f} s  ({len(loop) * 2} patched full forwards, "
          f"{plain.forwards - len(loop) * 2} unpatched)")
    print(f"ratio plain / psyling: {plain_s / psyling_s:.2f}x (goal >= 3x)")
    print(f"rows: {len(rows)}; computed {int(rows['computed'].sum())}; known zero, not recomputed: "
          f"{res.counts['identical']} identical-activation patches + {res.counts['after']} after the critical region; "
          f"not aligned {res.counts['unaligned']}")
    print(f"res.counts: {res.counts}")
    work, full = res.counts["block_tokens"], res.counts["block_tokens_full_recompute"]
    print(f"block-token work: psyling {work} vs one full pass per patch {full} (x{full / max(1, work):.1f}); "
          f"plain loop ran {plain.block_tokens}")
    print(f"compared rows: {len(merged)}; max |m_patched psyling - plain| = {diff.max():.3g} bits "
          f"(median {diff.median():.3g}); max |m_clean diff| = "
          f"{(merged['m_clean'] - merged['m_clean_plain']).abs().max():.3g}, max |m_corrupt diff| = "
          f"{(merged['m_corrupt'] - merged['m_corrupt_plain']).abs().max():.3g}")
    worst = merged.assign(diff=diff).sort_values("diff", ascending=False)
    off = worst[worst["diff"] > 1e-4]
    if len(off):
        print(f"{len(off)} rows differ by more than 1e-4 bits; the largest:")
        print(off[["item", "layer", "region", "m_patched", "m_patched_plain", "diff"]].head(8).to_string(index=False))


if __name__ == "__main__":
    main()
