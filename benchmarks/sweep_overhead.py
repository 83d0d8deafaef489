"""Benchmark: the core battery on one model through a sweep (Ray and local executors) against ``psyling.run``.

    python3 benchmarks/sweep_overhead.py [--model smollm2-135m] [--max-items 10] [--device cpu|cuda] [--num-cpus 2]
        [--no-local]

The same work both ways, score cache off in both: (a) ``psyling.run(model, battery="core", max_items=N,
cache=False)``, model load included; (b) a sweep file with that model x ``batteries: [core]`` x ``max_items: N``
run by ``execute(..., ExecutorConfig("ray"))`` into a temporary store, timed with and without ``ray.init``
(actor start, model load in the actor and store writes are always inside); (c) the same sweep on the local
executor. ``--threads`` sets torch's threads in every process alike (Ray gives a 1-CPU actor 1 thread; on a
busy CPU that alone decides the comparison). Planning (``load_sweep``: set and weight digests) is timed apart. One untimed model load first warms
the page cache and the imports. Outputs go to a temporary folder; prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psyling
import torch
from psyling.models import load_model
from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import Sweep, load_sweep
from psyling.sweep.store import SweepStore


@dataclass(frozen=True)
class Timing:
    """One variant's wall time, tokens scored, and the cells' own figures (None for ``psyling.run``)."""
    label: str
    seconds: float
    tokens: int
    load_s: Optional[float] = None
    cell_s: Optional[float] = None


def time_run(model: str, max_items: int, device: str) -> Timing:
    """``psyling.run`` on the core battery, model load included."""
    t0 = time.perf_counter()
    result = psyling.run(model, battery="core", max_items=max_items, cache=False, progress=False, device=device)
    seconds = time.perf_counter() - t0
    return Timing("psyling.run", seconds, int(result.manifest["timings"]["tokens_scored"]))


def write_sweep(folder: Path, model: str, max_items: int, device: str) -> Path:
    """A sweep file: one model x the core battery x ``max_items`` on ``device``, score cache off."""
    path = folder / "overhead.yaml"
    path.write_text(f"name: overhead\nmodels:\n  - name: {model}\nbatteries: [core]\nmax_items: {max_items}\n"
                    f"cache: false\ndevice: {device}\n")
    return path


def time_plan(path: Path) -> tuple[Sweep, float, float]:
    """The sweep loaded twice: (sweep, seconds with a cold digest cache, seconds with it warm)."""
    t0 = time.perf_counter()
    load_sweep(path)
    t1 = time.perf_counter()
    sweep = load_sweep(path)
    return sweep, t1 - t0, time.perf_counter() - t1


def time_sweep(label: str, sweep: Sweep, root: Path, executor: ExecutorConfig) -> Timing:
    """One executor's run of the sweep into an empty store; tokens and cell figures from its manifests."""
    store = SweepStore(root)
    t0 = time.perf_counter()
    outcome = execute(sweep.cells, store, executor)
    seconds = time.perf_counter() - t0
    if outcome.failed:
        print(f"  {label}: {len(outcome.failed)} cell(s) failed: {store.failures()['error'].iloc[0]}")
    cells = store.cells()
    return Timing(label, seconds, int(cells["tokens_scored"].sum()), float(cells["load_s"].max()),
                  float(cells["seconds"].sum()))


def time_ray(sweep: Sweep, root: Path, num_cpus: int) -> tuple[Timing, float, tuple[int, int]]:
    """The Ray executor: (timing without ray.init, ray.init seconds, (torch threads, niceness) of a 1-CPU Ray
    worker)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # as psyling's executor starts a local cluster
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0
    try:
        threads = ray.get(ray.remote(num_cpus=1)(_threads_and_niceness).remote())
        timing = time_sweep("sweep, ray", sweep, root, ExecutorConfig("ray", progress=False))
    finally:
        ray.shutdown()
    return timing, init_s, threads


def _threads_and_niceness() -> tuple[int, int]:
    """torch's intra-op threads and the niceness of this process (as a Ray task: what an actor gets)."""
    return torch.get_num_threads(), os.nice(0)


def report(base: Timing, rows: list[Timing]) -> None:
    """The table: seconds, tokens, tokens/s and the overhead against ``base``."""
    print(f"{'variant':<34} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'overhead':>9} {'load_s':>7} {'cells_s':>8}")
    for row in [base, *rows]:
        extra = "" if row.load_s is None else f" {row.load_s:>7.1f} {row.cell_s:>8.1f}"
        print(f"{row.label:<34} {row.seconds:>8.1f} {row.tokens:>7} {row.tokens / row.seconds:>9.1f} "
              f"{row.seconds / base.seconds - 1:>+9.1%}{extra}")


def main() -> None:
    """Time the three variants in a temporary folder and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-items", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Ray then gives each actor one GPU)")
    parser.add_argument("--num-cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    parser.add_argument("--no-local", action="store_true", help="skip the local executor")
    parser.add_argument("--ray-niceness", type=int, help="RAY_worker_niceness for the actors (default 0, as psyling's "
                        "executor sets it for a local cluster; Ray's own default is 15)")
    parser.add_argument("--threads", type=int, help="torch threads everywhere (OMP_NUM_THREADS, which Ray keeps "
                        "for its actors; default: torch's here, Ray's 1 per 1-CPU actor)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    if args.ray_niceness is not None:
        os.environ["RAY_worker_niceness"] = str(args.ray_niceness)
    with tempfile.TemporaryDirectory(prefix="psyling-sweep-overhead-") as tmp:
        folder = Path(tmp)
        os.environ["PSYLING_CACHE"] = str(folder / "cache")  # the sweep's digest cache starts cold, in tmp
        load_model(args.model)  # untimed: page cache and imports warm for every variant
        base = time_run(args.model, args.max_items, args.device)
        sweep, cold_s, warm_s = time_plan(write_sweep(folder, args.model, args.max_items, args.device))
        ray_timing, init_s, threads = time_ray(sweep, folder / "store-ray", args.num_cpus)
        rows = [Timing("sweep, ray incl. ray.init", ray_timing.seconds + init_s, ray_timing.tokens,
                       ray_timing.load_s, ray_timing.cell_s), ray_timing]
        if not args.no_local:
            rows.append(time_sweep("sweep, local", sweep, folder / "store-local",
                                   ExecutorConfig("local", progress=False)))
    print(f"model {args.model}; core battery, {len(sweep.cells)} sets, max_items {args.max_items}; cache off; "
          f"(torch threads, niceness) here {_threads_and_niceness()}, in a 1-CPU Ray worker {threads}")
    print(f"plan (load_sweep): {cold_s:.1f} s with a cold digest cache, {warm_s:.1f} s warm (not in the table)")
    print(f"ray.init(num_cpus={args.num_cpus}): {init_s:.1f} s")
    report(base, rows)


if __name__ == "__main__":
    main()
