"""Benchmark: the cost of capturing activations in the scoring pass, and memory as the stimuli grow.

    python3 benchmarks/activations.py time [--model smollm2-135m] [--n 400]
        scoring time without capture vs with every residual-stream layer captured (word-pooled, float32)
    /usr/bin/time -v python3 benchmarks/activations.py memory --n 200      # then --n 2000: compare peak RSS
        a run with all residual layers captured and streamed to disk; read "Maximum resident set size"
        (--no-capture: the same run without capture, to separate the scorer's own growth)

Sentences are BLiMP good/bad pairs from the data root (PSYLING_DATA or ../shared/data), repeated if needed.
Prints figures only; nothing here is a test.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psyling
from psyling.models import CaptureSpec, CausalScorer, ScoreRequest, load_model
from psyling.models import n_layers
from psyling.stimuli import data_root


def sentences(n: int) -> list[str]:
    """n BLiMP sentences (good and bad of each pair), cycling through the paradigms' files."""
    out: list[str] = []
    files = sorted((data_root() / "blimp" / "data").glob("*.jsonl"))
    while len(out) < n:
        for path in files:
            for line in path.read_text().splitlines()[:10]:
                pair = json.loads(line)
                out += [pair["sentence_good"], pair["sentence_bad"]]
            if len(out) >= n:
                break
    return out[:n]


def time_capture(model: str, n: int, batch_size: int) -> None:
    lm = load_model(model)
    requests = [ScoreRequest((i,), s) for i, s in enumerate(sentences(n))]
    CausalScorer(lm, batch_size=batch_size, progress=False).score(requests[:batch_size])  # warm-up
    figures = {}
    for label, spec in (("plain", None), ("capture resid all layers", CaptureSpec(("resid",)))):
        scorer = CausalScorer(lm, batch_size=batch_size, progress=False, capture=spec)
        sink = []
        start = time.perf_counter()
        scored = scorer.score(requests, consumer=(lambda batch: sink.append(len(batch))) if spec else None)
        figures[label] = time.perf_counter() - start
        print(f"{label:<26} {figures[label]:7.1f} s  {scored.stats.n_tokens / figures[label]:7.1f} tokens/s")
    print(f"capture overhead: {figures['capture resid all layers'] / figures['plain']:.3f}x the scoring time "
          f"({n} sentences, batch {batch_size}, {model}, sites: {len(CaptureSpec().sites(n_layers(lm.model)))})")


def memory_run(model: str, n: int, batch_size: int, capture: bool = True) -> None:
    folder = Path(tempfile.mkdtemp()) / "sets"
    folder.mkdir()
    pairs = sentences(n)
    (folder / "bench.csv").write_text("good,bad\n" + "".join(
        f"\"{g}\",\"{b}\"\n" for g, b in zip(pairs[::2], pairs[1::2])))
    out = folder.parent / "run"
    start = time.perf_counter()
    result = psyling.run(model, [folder / "bench.csv"], out=out, batch_size=batch_size, progress=False,
                         activations=CaptureSpec(("resid",)) if capture else None)
    what = "all resid layers captured" if capture else "no capture"
    print(f"{n} sentences, {result.manifest['timings']['tokens_scored']} tokens, {what}: "
          f"{time.perf_counter() - start:.1f} s; compare the peak RSS of /usr/bin/time -v")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["time", "memory"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-capture", action="store_true", help="memory: the same run without capture")
    args = parser.parse_args()
    if args.what == "time":
        time_capture(args.model, args.n, args.batch_size)
    else:
        memory_run(args.model, args.n, args.batch_size, capture=not args.no_capture)


if __name__ == "__main__":
    main()
