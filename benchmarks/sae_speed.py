"""Benchmark: harvesting token activations for an SAE against plain scoring, and SAE training speed.

    python3 benchmarks/sae_speed.py [--battery core] [--model smollm2-135m] [--site resid.15] [--latents 4608]
                                    [--k 32] [--train-tokens 200000] [--threads T]

Harvest: every text token of the battery at the site, with the forward pass stopped after the site's block and no
output layer (``psyling.interp.sae_harvest.harvest``), against scoring the same requests (``CausalScorer.score``:
all blocks and the output layer, the word-boundary statistics). Both use scoring's plan (prefix reuse). Training:
a TopK SAE (AuxK on) on the harvested rows, repeated passes up to ``--train-tokens``; tokens per second of the
whole ``train_sae`` call, initialisation included. Prints figures; not a test."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from psyling.api import gather_stimuli, load
from psyling.interp.sae_harvest import HarvestConfig, ReaderSource, harvest
from psyling.interp.sae_train import TrainConfig, train_sae
from psyling.models.options import ModelSpec, ScoringOptions
from psyling.models.scorer import set_requests
from psyling.models.scoring import CausalScorer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--battery", default="core")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--site", default="resid.15")
    parser.add_argument("--latents", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train-tokens", type=int, default=200_000)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(ModelSpec(args.model))
    sets = gather_stimuli([], args.battery).sets
    requests = [r for s in sets for r in set_requests(s)]
    started = time.perf_counter()
    scored = CausalScorer(lm, ScoringOptions(), progress=False).score(requests, progress=False)
    score_seconds = time.perf_counter() - started
    print(f"scoring:    {scored.stats.n_tokens} tokens in {score_seconds:.1f} s = "
          f"{scored.stats.n_tokens / score_seconds:.0f} tokens/s (all {lm.model.config.num_hidden_layers} blocks "
          "and the output layer)")
    with tempfile.TemporaryDirectory() as tmp:
        stats = harvest(lm, sets, Path(tmp) / "h", HarvestConfig(sites=(args.site,)), progress=False)
        print(f"harvesting: {stats.n_tokens} tokens ({stats.n_repeats} repeated sequences dropped) in "
              f"{stats.seconds:.1f} s = {stats.tokens_per_second:.0f} tokens/s (blocks 1..{args.site.split('.')[1]}, "
              f"no output layer): {stats.tokens_per_second / (scored.stats.n_tokens / score_seconds):.2f}x scoring")
        source = ReaderSource(Path(tmp) / "h", args.site)
        config = TrainConfig(latents=args.latents, k=args.k, n_tokens=args.train_tokens, checkpoint_every=None)
        result = train_sae(source, config, {"site": args.site}, progress=False)
        print(f"training:   {result.n_tokens} tokens (d_in {source.d_in}, {args.latents} latents, k {args.k}) "
              f"= {result.tokens_per_second:.0f} tokens/s; final batch FVU {result.history['fvu'].iloc[-1]:.3f}")


if __name__ == "__main__":
    main()
