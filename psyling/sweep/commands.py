"""``psyling sweep plan | run | status | collect SWEEP.yaml``: the command line of sweeps (cli.py adds it)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from .executors import EXECUTORS, ExecutorConfig, execute
from .spec import Sweep, load_sweep
from .store import SweepStore


def default_store(sweep_file: Path) -> Path:
    """The store beside the sweep file when ``--store`` is not given: SWEEP.store/."""
    return Path(sweep_file).with_suffix(".store")


def _opened(args: argparse.Namespace) -> tuple[Sweep, SweepStore]:
    sweep = load_sweep(args.sweep)
    return sweep, SweepStore(args.store or default_store(args.sweep))


def _plan(args: argparse.Namespace) -> int:
    from .plan import format_plan, plan

    sweep, store = _opened(args)
    print(format_plan(plan(sweep, store.done_digests(), args.tokens_per_second, measured_records(store))))
    return 0


def measured_records(store: SweepStore) -> list[dict]:
    """The store's finished cells as speed records for the plan (tokens scored and scoring seconds per model)."""
    cells = store.cells()
    if cells.empty or "tokens_scored" not in cells:
        return []
    return [{"model": row.model, "timings": {"tokens_scored": row.tokens_scored, "scoring_s": row.seconds}}
            for row in cells.itertuples()]


def _run(args: argparse.Namespace) -> int:
    sweep, store = _opened(args)
    config = ExecutorConfig(args.executor, args.workers, args.address, args.retries, progress=not args.quiet)
    outcome = execute(sweep.cells, store, config)
    print(f"sweep {sweep.name}: {len(sweep.cells)} cells; {len(outcome.already_done)} already done, "
          f"{len(outcome.executed)} run now, {len(outcome.failed)} failed; store: {store.root}")
    if outcome.failed:
        print(f"failures are in {store.root}/failures (psyling sweep status {args.sweep} lists them)")
    return 1 if outcome.failed else 0


def status_table(sweep: Sweep, store: SweepStore, failures: pd.DataFrame) -> pd.DataFrame:
    """Per (model, revision): cells, done, failed (not done, with an error in ``failures``), to run."""
    done = store.done_digests()
    failed = set() if failures.empty else set(failures.loc[~failures["resolved"], "digest"])
    rows = [{"model": c.model.alias, "revision": c.model.revision, "done": c.digest in done,
             "failed": c.digest not in done and c.digest in failed} for c in sweep.cells]
    table = pd.DataFrame(rows, columns=["model", "revision", "done", "failed"])
    grouped = table.groupby(["model", "revision"], sort=False)
    out = grouped.agg(cells=("done", "size"), done=("done", "sum"), failed=("failed", "sum")).reset_index()
    return out.assign(to_run=out["cells"] - out["done"])


def _status(args: argparse.Namespace) -> int:
    sweep, store = _opened(args)
    failures = store.failures()
    table = status_table(sweep, store, failures)
    print(f"sweep {sweep.name} in {store.root}: {int(table['done'].sum())} of {int(table['cells'].sum())} cells "
          f"done, {int(table['failed'].sum())} failed")
    print(table.to_string(index=False))
    for row in ([] if failures.empty else failures[~failures["resolved"]].itertuples()):
        print(f"  failed: {row.model} {row.revision} {row.set} [{row.settings}]: {row.error}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from .collect import CollectOptions, collect

    sweep, store = _opened(args)
    out = args.out or store.root / "collect"
    paths = collect(store, out, CollectOptions(args.n_boot, args.seed, sweep.scores, sweep.name))
    print(f"sweep {sweep.name}: collected {len(store.done_digests())} cells into {out}")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    print(leaderboard_lines(pd.read_parquet(out / "leaderboard.parquet")))
    scores = pd.read_parquet(out / "battery_scores.parquet")
    if not scores.empty:
        print(battery_score_lines(scores))
    print(emergence_lines(pd.read_parquet(out / "emergence.parquet")))
    return 0


def battery_score_lines(scores: pd.DataFrame) -> str:
    """The batteries' scores (SG score first, then circuits) per model, revision and settings, with the suites
    each averages (the SG score's: "k of n", n being the battery's suites not excluded)."""
    lines = ["battery scores (battery_scores.csv):"]
    for keys, group in scores.groupby(["battery", "model", "revision", "settings"], sort=False):
        battery, model, revision, settings = keys
        lines.append(f"  {battery}: {model} {revision} [{settings}]")
        for r in group.itertuples():
            count = f"{r.n_suites} of {r.n_suites_in_battery}" if r.score.startswith("SG score") else r.n_suites
            lines.append(f"    {r.score}: {r.value:.3f} ({count} suites)")
    return "\n".join(lines)


def leaderboard_lines(board: pd.DataFrame) -> str:
    """Mean set accuracy per model, revision and settings (best first), with the number of sets."""
    if board.empty:
        return "leaderboard: no finished cells"
    means = board.groupby(["model", "revision", "settings"], sort=False).agg(
        sets=("set", "nunique"), accuracy=("accuracy", "mean")).reset_index()
    lines = ["mean accuracy over sets (leaderboard.csv has every set with its Wilson CI):"]
    lines += [f"  {r.model} {r.revision} [{r.settings}]: {r.accuracy:.3f} over {r.sets} sets"
              for r in means.sort_values("accuracy", ascending=False).itertuples()]
    return "\n".join(lines)


def emergence_lines(table: pd.DataFrame) -> str:
    """The emergence table as text: the step where each set's or phenomenon's accuracy rises (with its CI), or
    why there is none."""
    few = table["note"].fillna("").str.startswith("fewer than 3 checkpoints")
    if few.all():
        return "emergence: no learning curve (it needs a model with at least 3 checkpoints of known step)"
    lines = ["emergence step (sigmoid over log10 step, item-bootstrap 95% CI):"]
    lines += [f"  ({few.sum()} curves of models with fewer than 3 checkpoints are not fitted)"] if few.any() else []
    for r in table[~few].itertuples():
        found = (f"step {r.step:,.0f} [{r.ci_low:,.0f}, {r.ci_high:,.0f}]" if r.converged else "none")
        note = f" ({r.note})" if isinstance(r.note, str) and r.note else ""
        lines.append(f"  {r.model} [{r.settings}] {r.level} {r.name}: {found}{note}")
    return "\n".join(lines)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", type=Path, help="the sweep file (YAML: models, sets or batteries, grid)")
    parser.add_argument("--store", type=Path, help="the result store folder (default: SWEEP.store beside the file)")


def add_sweep_parser(sub: Any) -> None:
    """``psyling sweep`` with its four commands."""
    parser = sub.add_parser("sweep", help="many models x revisions x sets x settings into a resumable store")
    sweep = parser.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND", help="the sweep command")
    plan = sweep.add_parser("plan", help="the cells, their tokens and an estimated time (nothing is run)")
    _common(plan)
    plan.add_argument("--tokens-per-second", type=float, help="speed for the estimate (default: measured or "
                                                                "the reference figure, as the plan says)")
    plan.set_defaults(func=_plan)
    run = sweep.add_parser("run", help="run the cells the store does not have yet")
    _common(run)
    run.add_argument("--executor", default="local", choices=EXECUTORS,
                     help="local (this process, default), process (one worker per GPU) or ray")
    run.add_argument("--workers", type=int, help="worker processes or Ray actors (default: one per visible GPU)")
    run.add_argument("--address", help="ray: the address of an existing cluster to join (default: start one)")
    run.add_argument("--retries", type=int, default=2, help="reruns of a group whose worker died (default 2)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)
    status = sweep.add_parser("status", help="done, failed and remaining cells per model and revision")
    _common(status)
    status.set_defaults(func=_status)
    collect = sweep.add_parser("collect", help="leaderboards, learning curves and emergence steps")
    _common(collect)
    collect.add_argument("--out", type=Path, help="where the tables go (default: STORE/collect)")
    collect.add_argument("--n-boot", type=int, default=1000, help="item-bootstrap resamples (default 1000)")
    collect.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    collect.set_defaults(func=_collect)
