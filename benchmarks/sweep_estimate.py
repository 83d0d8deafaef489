"""Estimate: the Pythia suite (8 sizes x 154 checkpoints) x BLiMP + SyntaxGym 2020 + core on 8 GPUs.

    python3 benchmarks/sweep_estimate.py [--tokenizer-model smollm2-135m] [--peak-tflops 312] [--mfu 0.3,0.4]
        [--gpus 8] [--checkpoints 154] [--load-gbps 2.0,0.11] [--load-fixed-s 3]

A written estimate from FLOP counts, not a measurement: no GPU was used. Tokens are counted as ``psyling run``
plans them (one plan per set; ``prefix_reuse.count``) with a stand-in tokenizer (Pythia's GPT-NeoX tokenizer is
not available offline; SmolLM2's is also a ~49k byte-level BPE). Forward FLOPs per token = 2 x (non-embedding
parameters + d_model x padded vocabulary): the unembedding is a matmul, the input embedding a lookup (attention's
sequence-length term is left out: the sequences are ~10-20 tokens). Compute time = FLOPs / (peak x MFU), spread
over the GPUs; loading = checkpoint bytes (fp16, 2 bytes a parameter) / a node-wide throughput shared by all GPUs
(default 2.0 GB/s: local NVMe, 0.11 GB/s: a 1 Gbit/s link from the hub) + a fixed cost per load. Prints tables.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from prefix_reuse import count  # benchmarks/ is on sys.path when this file runs as a script

from psyling.models import CausalScorer, load_model
from psyling.stimuli import battery_files, data_root, load_blimp, load_stimuli

PYTHIA_VOCAB = 50304  # GPT-NeoX vocabulary padded to a multiple of 128 (the unembedding's width)


@dataclass(frozen=True)
class PythiaSize:
    """One Pythia model: name, total and non-embedding parameters (Pythia's README), d_model."""
    name: str
    total: int
    non_embedding: int
    d_model: int

    def flops_per_token(self) -> float:
        """Forward FLOPs per token: 2 x (non-embedding parameters + the unembedding matmul)."""
        return 2.0 * (self.non_embedding + self.d_model * PYTHIA_VOCAB)


PYTHIA = (PythiaSize("70M", 70_426_624, 18_915_328, 512), PythiaSize("160M", 162_322_944, 85_056_000, 768),
          PythiaSize("410M", 405_334_016, 302_311_424, 1024), PythiaSize("1B", 1_011_781_632, 805_736_448, 2048),
          PythiaSize("1.4B", 1_414_647_808, 1_208_602_624, 2048),
          PythiaSize("2.8B", 2_775_208_960, 2_517_652_480, 2560),
          PythiaSize("6.9B", 6_857_302_016, 6_444_163_072, 4096),
          PythiaSize("12B", 11_846_072_320, 11_327_027_200, 5120))


def count_tokens(model: str) -> dict[str, tuple[int, int, int, int]]:
    """Per dataset: (sets, sequences, tokens without prefix reuse, tokens with it), as psyling run plans them."""
    scorer = CausalScorer(load_model(model), reuse_prefix=True, progress=False)
    datasets = {"BLiMP": [load_blimp(p) for p in sorted((data_root() / "blimp" / "data").glob("*.jsonl"))],
                "SyntaxGym 2020": load_stimuli(battery_files("syntaxgym2020")).sets,
                "core": load_stimuli(battery_files("core")).sets}
    return {name: count(scorer, sets) for name, sets in datasets.items()}


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    return [float(x) for x in text.split(",")]


def print_tokens(counts: dict[str, tuple[int, int, int, int]], model: str) -> int:
    """The token table; returns the tokens one checkpoint computes (with prefix reuse, all datasets)."""
    print(f"tokens per checkpoint (stand-in tokenizer: {model}; psyling's plan, one per set)")
    print(f"{'dataset':<16} {'sets':>5} {'sequences':>10} {'tokens':>11} {'with reuse':>11}")
    for name, (n_sets, n_seq, without, with_reuse) in counts.items():
        print(f"{name:<16} {n_sets:>5} {n_seq:>10} {without:>11,} {with_reuse:>11,}")
    total = sum(c[3] for c in counts.values())
    print(f"{'total':<16} {'':>5} {sum(c[1] for c in counts.values()):>10} "
          f"{sum(c[2] for c in counts.values()):>11,} {total:>11,}\n")
    return total


def print_compute(tokens: int, args: argparse.Namespace) -> dict[float, float]:
    """Per size: FLOPs per checkpoint and GPU-hours over all checkpoints at each MFU; returns GPU-hours per MFU."""
    mfus = floats(args.mfu)
    print(f"compute: {tokens:,} tokens x {args.checkpoints} checkpoints, peak {args.peak_tflops:g} TFLOP/s bf16")
    print(f"{'size':<6} {'GFLOP/token':>12} {'PFLOP/ckpt':>11} " +
          " ".join(f"{f's/ckpt@{m:.0%}':>11} {f'GPU-h@{m:.0%}':>10}" for m in mfus))
    gpu_hours = dict.fromkeys(mfus, 0.0)
    for size in PYTHIA:
        flops = size.flops_per_token() * tokens
        cells = []
        for m in mfus:
            seconds = flops / (args.peak_tflops * 1e12 * m)
            gpu_hours[m] += seconds * args.checkpoints / 3600
            cells.append(f"{seconds:>11.1f} {seconds * args.checkpoints / 3600:>10.2f}")
        print(f"{size.name:<6} {size.flops_per_token() / 1e9:>12.3f} {flops / 1e15:>11.3f} " + " ".join(cells))
    print(f"{'total':<6} {'':>12} {'':>11} " + " ".join(f"{'':>11} {h:>10.2f}" for h in gpu_hours.values()) + "\n")
    return gpu_hours


def print_loading(args: argparse.Namespace) -> dict[float, float]:
    """Per size: checkpoint bytes and load hours over all checkpoints at each node throughput (GB/s, shared
    by every GPU of the node, plus the fixed cost per load spread over the GPUs); returns wall hours per rate."""
    rates = floats(args.load_gbps)
    print(f"loading: fp16 checkpoints, {args.load_fixed_s:g} s fixed per load (spread over {args.gpus} GPUs), "
          f"node-wide read rate shared by all GPUs")
    print(f"{'size':<6} {'GB/ckpt':>8} {'TB all':>7} " + " ".join(f"{f'wall h@{r:g}GB/s':>15}" for r in rates))
    hours = dict.fromkeys(rates, 0.0)
    for size in PYTHIA:
        gigabytes = 2 * size.total / 1e9
        cells = []
        for r in rates:
            h = args.checkpoints * (gigabytes / r + args.load_fixed_s / args.gpus) / 3600
            hours[r] += h
            cells.append(f"{h:>15.2f}")
        print(f"{size.name:<6} {gigabytes:>8.2f} {gigabytes * args.checkpoints / 1e3:>7.2f} " + " ".join(cells))
    print(f"{'total':<6} {'':>8} {sum(2 * s.total for s in PYTHIA) * args.checkpoints / 1e12:>7.2f} " +
          " ".join(f"{h:>15.2f}" for h in hours.values()) + "\n")
    return hours


def print_total(gpu_hours: dict[float, float], load_hours: dict[float, float], gpus: int) -> None:
    """Wall hours on the GPUs: compute spread over them, loading shared; overlapped (max) and serial (sum)."""
    print(f"wall time on {gpus} GPUs (compute GPU-hours / {gpus}; loading is node-wide, so not divided):")
    for m, gh in gpu_hours.items():
        for r, lh in load_hours.items():
            compute = gh / gpus
            print(f"  MFU {m:.0%}, load {r:g} GB/s: compute {compute:.2f} h, loading {lh:.2f} h -> "
                  f"{max(compute, lh):.2f} h if loads overlap scoring, {compute + lh:.2f} h if not")


def main() -> None:
    """Count the tokens, then print the compute, loading and wall-time tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer-model", default="smollm2-135m", help="the stand-in tokenizer's model")
    parser.add_argument("--peak-tflops", type=float, default=312.0, help="bf16 dense peak (A100 312, H100 SXM 989)")
    parser.add_argument("--mfu", default="0.3,0.4", help="assumed sustained fractions of peak")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--checkpoints", type=int, default=154)
    parser.add_argument("--load-gbps", default="2.0,0.11", help="node-wide checkpoint read rates, GB/s")
    parser.add_argument("--load-fixed-s", type=float, default=3.0, help="fixed seconds per load (init, to GPU)")
    args = parser.parse_args()
    print("ESTIMATE from FLOP counts; no GPU was measured.\n")
    tokens = print_tokens(count_tokens(args.tokenizer_model), args.tokenizer_model)
    print_total(print_compute(tokens, args), print_loading(args), args.gpus)


if __name__ == "__main__":
    main()
