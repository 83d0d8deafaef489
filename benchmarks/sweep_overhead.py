"""Benchmark: the core battery on K checkpoints of one model through a sweep (Ray and local executors) against
``psyling.run`` on each checkpoint.

    python3 benchmarks/sweep_overhead.py [--model smollm2-135m] [--checkpoints 1,3] [--max-items N]
        [--device cpu|cuda] [--num-cpus 2] [--no-local] [--cli]

The checkpoints are K folders ``step-1 … step-K`` in a temporary folder, each holding links to the files of the
model's safetensors folder (for an embedded alias, the conversion psyling keeps in its cache), so that every
variant loads every checkpoint from disk as a checkpoint sweep does. Score cache off everywhere. For each K:
(a) ``psyling.run(step-i, battery="core", cache=False)`` for each checkpoint in turn, loads included; (b) a sweep
file with ``checkpoints: ckpt/step-*`` x ``batteries: [core]`` through ``execute(..., ExecutorConfig("ray"))``
into an empty store, timed with and without ``ray.init`` (actor start, its imports, its model loads and the
store's writes are always inside); (c) the same sweep on the local executor. ``--cli`` adds, for K = 1, the two
commands a user types, each a fresh process: ``psyling run --model step-1 --battery core --no-cache`` against
``psyling sweep run FILE --executor ray``. The overhead is split into a fixed start (once per sweep) and the cost
per checkpoint, from the Ray timings at two K. Planning (``load_sweep``) is not timed. One untimed load warms
the page cache and the imports. Each round also times Ray's own floor: a fresh process that starts a local
cluster, gets one answer from a trivial actor and shuts down, less a process that only imports ray (no executor
can cost less). Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psyling
from psyling.models import load_model
from psyling.models.loading import resolve_model
from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import Sweep, load_sweep
from psyling.sweep.store import SweepStore


@dataclass(frozen=True)
class Timing:
    """One variant's wall time and tokens scored; for sweeps, the store's model loads and cell seconds."""
    label: str
    seconds: float
    tokens: int
    load_s: Optional[float] = None
    cell_s: Optional[float] = None


@dataclass(frozen=True)
class Setup:
    """What every variant shares: the work folder, the checkpoint source folder and the run settings."""
    folder: Path
    source: Path
    max_items: Optional[int]
    device: str
    num_cpus: int


def checkpoint_folders(setup: Setup, k: int) -> list[Path]:
    """``k`` checkpoint folders ``ckpt-K/step-i``, each linking the source folder's files."""
    folders = []
    for step in range(1, k + 1):
        folder = setup.folder / f"ckpt-{k}" / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        for file in setup.source.iterdir():
            link = folder / file.name
            if file.is_file() and not link.exists():
                link.symlink_to(file.resolve())
        folders.append(folder)
    return folders


def time_runs(setup: Setup, folders: list[Path]) -> Timing:
    """``psyling.run`` on the core battery for each checkpoint in turn, model loads included."""
    t0, tokens = time.perf_counter(), 0
    for folder in folders:
        result = psyling.run(str(folder), battery="core", max_items=setup.max_items, cache=False, progress=False,
                             device=setup.device)
        tokens += int(result.manifest["timings"]["tokens_scored"])
    return Timing("psyling.run per checkpoint", time.perf_counter() - t0, tokens)


def write_sweep(setup: Setup, k: int) -> Path:
    """The sweep file: the ``k`` checkpoints x the core battery, score cache off."""
    path = setup.folder / f"overhead-{k}.yaml"
    items = f"max_items: {setup.max_items}\n" if setup.max_items else ""
    path.write_text(f"name: overhead\nmodels:\n  - name: ckpt\n    checkpoints: ckpt-{k}/step-*\n"
                    f"batteries: [core]\n{items}cache: false\ndevice: {setup.device}\n")
    return path


def time_sweep(label: str, sweep: Sweep, root: Path, executor: ExecutorConfig) -> Timing:
    """One executor's run of the sweep into an empty store; tokens, loads and cell seconds from its manifests."""
    store = SweepStore(root)
    t0 = time.perf_counter()
    outcome = execute(sweep.cells, store, executor)
    seconds = time.perf_counter() - t0
    if outcome.failed:
        print(f"  {label}: {len(outcome.failed)} cell(s) failed: {store.failures()['error'].iloc[0]}")
    cells = store.cells()
    loads = cells.drop_duplicates("load_id")["load_s"].sum()
    return Timing(label, seconds, int(cells["tokens_scored"].sum()), float(loads), float(cells["seconds"].sum()))


def time_ray(sweep: Sweep, root: Path, num_cpus: int) -> tuple[Timing, float]:
    """The Ray executor on a fresh local cluster: (timing without ray.init, ray.init seconds)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # as psyling's executor starts a local cluster
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0
    try:
        return time_sweep("sweep, ray", sweep, root, ExecutorConfig("ray", progress=False)), init_s
    finally:
        ray.shutdown()


def time_command(label: str, command: list[str], cwd: Path) -> Timing:
    """A psyling command in a fresh process (imports, start and loads included); tokens are not counted."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from psyling.cli import main; main()", *command], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Timing(label, time.perf_counter() - t0, 0)


RAY_FLOOR = """
import os, ray
os.environ.setdefault("RAY_worker_niceness", "0")
ray.init(num_cpus={num_cpus}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
@ray.remote(num_cpus={num_cpus})
class Trivial:
    def ping(self):
        return 1
actor = Trivial.remote()
ray.get(actor.ping.remote())
ray.kill(actor)
ray.shutdown()
"""


def time_ray_floor(num_cpus: int) -> float:
    """Ray's own cost of a sweep, nothing of psyling's: a fresh process that starts a local cluster, makes one
    trivial actor answer once and shuts down, less a process that only imports ray."""
    def wall(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0
    return wall(RAY_FLOOR.format(num_cpus=num_cpus)) - wall("import ray")


def time_cli(setup: Setup, round_: int) -> list[Timing]:
    """For one checkpoint, ``psyling run`` against ``psyling sweep run --executor ray``, each a fresh process."""
    folder = checkpoint_folders(setup, 1)[0]
    items = ["--max-items", str(setup.max_items)] if setup.max_items else []
    run = time_command("CLI: psyling run", ["run", "--model", str(folder), "--battery", "core", "--no-cache",
                                            "--device", setup.device, "--quiet", "--out", f"cli-run-{round_}", *items],
                       setup.folder)
    sweep = time_command("CLI: psyling sweep run --executor ray",
                         ["sweep", "run", str(write_sweep(setup, 1)), "--executor", "ray", "--quiet", "--store",
                          f"cli-store-{round_}"], setup.folder)
    return [run, sweep]


def time_k(setup: Setup, k: int, local: bool, round_: int) -> tuple[list[Timing], float]:
    """Every variant for ``k`` checkpoints (the baseline listed first) and the ray.init seconds. Even rounds time
    the baseline before the Ray sweep, odd rounds after it, so that a machine drifting in speed over the minutes
    of a round does not always favour the same variant."""
    folders = checkpoint_folders(setup, k)
    sweep = load_sweep(write_sweep(setup, k))  # planning is not timed
    store = setup.folder / f"store-ray-{k}-{round_}"
    if round_ % 2 == 0:
        base = time_runs(setup, folders)
        ray_timing, init_s = time_ray(sweep, store, setup.num_cpus)
    else:
        ray_timing, init_s = time_ray(sweep, store, setup.num_cpus)
        base = time_runs(setup, folders)
    rows = [Timing("sweep, ray incl. ray.init", ray_timing.seconds + init_s, ray_timing.tokens, ray_timing.load_s,
                   ray_timing.cell_s), ray_timing]
    if local:
        rows.append(time_sweep("sweep, local", sweep, setup.folder / f"store-local-{k}-{round_}",
                               ExecutorConfig("local", progress=False)))
    return [base, *rows], init_s


def best(rounds: list[list[Timing]]) -> list[Timing]:
    """Per variant, the round with the fewest seconds (the machine's noise only ever adds time)."""
    return [min(variant, key=lambda t: t.seconds) for variant in zip(*rounds)]


def report(k: int, rows: list[Timing], rounds: int) -> None:
    """One K's table (best of ``rounds``): seconds, tokens, tokens/s, overhead against the first row, the
    sweeps' model loads and cell seconds."""
    print(f"\nK = {k} checkpoint(s), best of {rounds}")
    print(f"{'variant':<40} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'overhead':>9} {'loads_s':>8} "
          f"{'cells_s':>8}")
    for row in rows:
        extra = "" if row.load_s is None else f" {row.load_s:>8.1f} {row.cell_s:>8.1f}"
        rate = f"{row.tokens / row.seconds:>9.1f}" if row.tokens else f"{'':>9}"
        print(f"{row.label:<40} {row.seconds:>8.1f} {row.tokens:>7} {rate} {row.seconds / rows[0].seconds - 1:>+9.1%}"
              f"{extra}")


def split_overhead(figures: dict[int, tuple[float, float]]) -> None:
    """From (psyling.run seconds, Ray incl. init seconds) at two K: the fixed start, the overhead per checkpoint,
    and the K from which the whole sweep is within 10% of the runs."""
    (k1, (run1, ray1)), (k2, (run2, ray2)) = sorted(figures.items())[:2]
    run_per, ray_per = (run2 - run1) / (k2 - k1), (ray2 - ray1) / (k2 - k1)
    fixed = ray1 - k1 * ray_per - (run1 - k1 * run_per)
    print(f"\nper checkpoint: psyling.run {run_per:.1f} s, Ray sweep {ray_per:.1f} s ({ray_per / run_per - 1:+.1%}); "
          f"fixed start of the Ray sweep {fixed:.1f} s")
    margin = 0.1 * run_per - (ray_per - run_per)
    print(f"within 10% from K = {fixed / margin:.1f} checkpoints" if margin > 0 else
          "the per-checkpoint overhead alone is above 10%")


def main() -> None:
    """Time every variant for each K, ``--repeat`` rounds interleaved, in a temporary folder; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="an alias or a local model folder")
    parser.add_argument("--checkpoints", default="1,3", help="the K values, comma-separated")
    parser.add_argument("--max-items", type=int, help="items per set (default: every item)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Ray then gives each actor one GPU)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="ray.init(num_cpus=...)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each variant's best round is reported")
    parser.add_argument("--no-local", action="store_true", help="skip the local executor")
    parser.add_argument("--cli", action="store_true", help="also time the two commands, K = 1, fresh processes")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.checkpoints.split(",")})
    source = Path(resolve_model(args.model)[0])  # before the cache moves: an alias's conversion is kept there
    with tempfile.TemporaryDirectory(prefix="psyling-sweep-overhead-") as tmp:
        os.environ["PSYLING_CACHE"] = str(Path(tmp) / "cache")  # the digest cache starts cold, in tmp
        setup = Setup(Path(tmp), source, args.max_items, args.device, args.num_cpus)
        load_model(str(setup.source))  # untimed: page cache and imports warm for every variant
        rounds: dict[int, list[list[Timing]]] = {k: [] for k in ks}
        inits, cli_rounds, floors = [], [], []
        for round_ in range(args.repeat):
            for k in ks:
                rows, init_s = time_k(setup, k, not args.no_local, round_)
                rounds[k].append(rows)
                inits.append(init_s)
            if args.cli:
                cli_rounds.append(time_cli(setup, round_))
            floors.append(time_ray_floor(args.num_cpus))
    print(f"model {args.model}; core battery, max_items {args.max_items or 'all'}; cache off; device {args.device}; "
          f"ray.init(num_cpus={args.num_cpus}) {min(inits):.1f}-{max(inits):.1f} s")
    for k in ks:
        report(k, best(rounds[k]), args.repeat)
    if len(ks) > 1:
        split_overhead({k: (best(rounds[k])[0].seconds, best(rounds[k])[1].seconds) for k in ks[:2]})
    if cli_rounds:
        report(1, best(cli_rounds), args.repeat)
    floor, run_s = min(floors), best(rounds[ks[0]])[0].seconds / ks[0]
    print(f"\nRay's own floor (start a local cluster, one trivial actor's answer, shut down; a fresh process less "
          f"`import ray`): {floor:.1f} s, {floor / run_s:.1%} of one checkpoint's psyling.run"
          + (f", {floor / best(cli_rounds)[0].seconds:.1%} of the psyling run command" if cli_rounds else ""))


if __name__ == "__main__":
    main()
