"""Command line: ``psyling run`` and ``psyling validate`` (thin wrappers over the API)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import PsylingError
from .models import DEFAULT_MODEL, EMBEDDED, CaptureSpec
from .models.conventions import CONVENTIONS

USER_ERROR = 2


def _run(args: argparse.Namespace) -> int:
    from .api import run
    from .report import format_summary

    if not args.stimuli and not args.battery:
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    capture = CaptureSpec(tuple(k.strip() for k in args.activations.split(",")), _layers(args.layers),
                          args.activation_dtype) if args.activations else None
    lens = (_layers(args.layers) or "all") if args.lens else None
    result = run(args.model, args.stimuli or (), args.battery, args.out, batch_size=args.batch_size,
                 device=args.device, dtype=args.dtype, context_token=args.context_token,
                 padding_side=args.padding_side, measure=args.measure, trust_remote_code=args.trust_remote_code,
                 revision=args.revision, progress=not args.quiet, max_items=args.max_items,
                 detokenize=args.detokenize, activations=capture, pool=args.pool, pool_method=args.pool_method,
                 lens_layers=lens, max_tokens=args.max_tokens,
                 reuse_prefix={"auto": None, "on": True, "off": False}[args.prefix_reuse],
                 convention=args.convention, cache=not args.no_cache, resume=args.resume,
                 masked_variant=args.masked_variant)
    print(format_summary(result.summary))
    if args.battery:
        print(_battery_score(args.battery, result.predictions))
    if result.lens:
        print("\n" + _lens_accuracy_lines(result.lens["lens_predictions"]))
    check = result.manifest["invariance_check"] or {}
    timing, reuse = result.manifest["timings"], result.manifest["settings"]["prefix_reuse"]
    saved = f"; prefix reuse saved {reuse['saved_fraction']:.0%} of tokens" if reuse["enabled"] else ""
    print(f"\n{timing['tokens_scored']} tokens in {timing['scoring_s']:.1f} s{saved}; invariance "
          f"max |diff| {check.get('max_abs_diff_bits', float('nan')):.1e} bits; outputs in {args.out}")
    for line in result.errors:
        print(f"psyling: skipped: {line}", file=sys.stderr)
    return USER_ERROR if result.errors else 0


def _layers(text: str) -> Optional[tuple[int, ...]]:
    """None for "all", else the comma-separated layer numbers."""
    if text.strip() == "all":
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PsylingError(f"--layers must be 'all' or comma-separated numbers such as 0,6,12 (got {text!r})") from None


def _lens_accuracy_lines(lens_predictions) -> str:
    """Per set, the share of items whose predictions hold when read out at each lens layer."""
    from .interp.lens import lens_accuracy

    lines = ["logit lens: accuracy when the predictions are read out at each layer"]
    for name, table in lens_accuracy(lens_predictions).groupby("set", sort=False):
        lines.append(f"  {name}: " + "  ".join(f"{r.layer}: {r.accuracy:.2f}" for r in table.itertuples()))
    return "\n".join(lines)


def _battery_score(name: str, predictions) -> str:
    """The battery's SyntaxGym score and circuits, where its file defines them (e.g. syntaxgym2020)."""
    from .stats import item_passes, sg_score
    from .stimuli import load_battery

    config = load_battery(name).score
    if not config or predictions.empty:
        return ""
    score, circuits = sg_score(item_passes(predictions), config.get("exclude", ()), config.get("circuits"))
    lines = [f"\nSG score ({name}, mean suite accuracy, excluding {', '.join(config.get('exclude', [])) or 'none'}): "
             f"{score:.3f}"]
    lines += [f"  {row.circuit:<28} {row.score:.3f} ({row.n_suites} suites)" for row in circuits.itertuples()]
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate
    from .report import format_summary

    if not args.stimuli and not args.battery:
        raise PsylingError("give the stimulus sets the table belongs to with --stimuli or --battery")
    result = evaluate(args.surprisal, args.stimuli or (), args.battery, args.out, units=args.units)
    print(format_summary(result.summary))
    if args.battery:
        print(_battery_score(args.battery, result.predictions))
    for line in result.errors:
        print(f"psyling: skipped: {line}", file=sys.stderr)
    return USER_ERROR if result.errors else 0


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze
    from .report import format_verdicts

    result = analyze(args.run_dir, args.stimuli or (), linking=args.linking, data_root=args.data_root,
                     plots=not args.no_plots, progress=not args.quiet)
    print(format_verdicts(result.comparison))
    for measure, link in result.linkings.items():
        slopes = ", ".join(f"lag {k}: {v:+.2f}" for k, v in sorted(link.slopes.items()))
        print(f"linking {measure}: {link.source}: {slopes} {link.unit}/bit")
    if not result.mixed.empty:
        kinds = result.mixed.drop_duplicates("set")["random_effects"].map(
            lambda re: "OLS" if re.startswith("none") else "random slopes" if "+" in re else "random intercepts")
        print("mixed models of the critical region: " + ", ".join(f"{n} with {k}" for k, n in
                                                                 kinds.value_counts().items())
              + " (simplifications and their reasons: mixed.parquet, column fallback)")
    for line in result.notes:
        print(f"psyling: note: {line}", file=sys.stderr)
    print(f"\nstatistics, verdicts and {len(result.plots)} plots in {result.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .analysis import compare_runs
    from .report import format_comparison, write_csv

    table = compare_runs(args.run_a, args.run_b, n_boot=args.n_boot, seed=args.seed)
    print(format_comparison(table, str(args.run_a), str(args.run_b)))
    if args.out:
        write_csv(args.out, table)
    return 0


def _probe(args: argparse.Namespace) -> int:
    from .layerwise import best_layer, probe_run

    table = probe_run(args.run_dir, args.factor, args.sets or (), args.stimuli or (), region=args.region,
                      folds=args.folds, n_permutations=args.permutations)
    wide = table.pivot_table(index=["layer", "site"], columns="metric", values="value").reset_index()
    columns = [c for c in ("accuracy", "control_accuracy", "selectivity", "majority", "p_value") if c in wide]
    print(wide[["site", *columns]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    site, value = best_layer(table, "accuracy")
    print(f"\nbest site: {site} (accuracy {value:.3f}); table and plot in {Path(args.run_dir) / 'interp'}")
    return 0


def _lens(args: argparse.Namespace) -> int:
    from .api import run
    from .layerwise import lens_plots

    if not args.stimuli and not args.battery:
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    result = run(args.model, args.stimuli or (), args.battery, args.out, batch_size=args.batch_size,
                 progress=not args.quiet, max_items=args.max_items, lens_layers=_layers(args.layers) or "all")
    print(_lens_accuracy_lines(result.lens["lens_predictions"]))
    emerged = result.lens["lens_emergence"]["emerges_at"]
    print(f"\npredictions holding at the last layer emerge at layer {emerged.median():.0f} (median; "
          f"{emerged.notna().sum()} of {len(emerged)} item predictions hold at the last layer)")
    print(f"{len(lens_plots(args.out))} plots and lens_*.parquet in {args.out}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from .layerwise import best_layer, encode_corpus

    table = encode_corpus(args.model, args.measure, args.out, _layers(args.layers), args.data_root,
                          folds=args.folds, n_permutations=args.permutations, progress=not args.quiet)
    print(table[["site", "r2", "r2_baseline", "delta_r2", "p_value", "q_value"]].to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))
    site, value = best_layer(table, "delta_r2")
    print(f"\nbest site for {args.measure}: {site} (ΔR² {value:.4f}); table and plot in {Path(args.out) / 'interp'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .stimuli import load_stimuli
    from .stimuli.quality import quality_report

    loaded = load_stimuli([Path(p) for p in args.paths])
    for stim in loaded.sets:
        print(f"ok  {stim.name}: {len(stim.items)} items x {len(stim.conditions)} conditions, "
              f"{len(stim.regions)} regions, {len(stim.predictions)} predictions ({stim.source})")
        report = quality_report(stim)
        cells = [f"{r['condition']} {r['length']:.1f} ch / {r['zipf']:.2f} zipf" for r in report.balance
                 if r["length"] is not None]
        if cells:
            print(f"    critical region {report.balance[0]['region']!r}: " + "; ".join(cells))
        for warning in report.warnings:
            print(f"    check: {warning}")
    for line in loaded.errors:
        print(f"psyling: error: {line}", file=sys.stderr)
    print(f"{len(loaded.sets)} valid, {len(loaded.errors)} invalid")
    return USER_ERROR if loaded.errors else 0


def _batteries(_: argparse.Namespace) -> int:
    from .stimuli import battery_names, load_battery, load_stimuli

    width = max(len(name) for name in [*battery_names(), "battery"])
    print(f"{'battery':<{width}} {'sets':>5} {'items':>8}  description")
    for name in battery_names():
        battery = load_battery(name)
        try:
            loaded = load_stimuli(battery.files())
            counts = f"{len(loaded.sets):>5} {sum(len(s.items) for s in loaded.sets):>8}"
            if loaded.errors:
                counts += f" ({len(loaded.errors)} files with errors)"
        except PsylingError as exc:
            counts = f"{'-':>5} {'-':>8}  (unavailable: {exc})"
        print(f"{name:<{width}} {counts}  {battery.description}")
    return 0


def _new(args: argparse.Namespace) -> int:
    from .stimuli.scaffold import scaffold

    for path in scaffold(args.name, Path(args.dir)):
        print(f"wrote {path}")
    print(f"edit both files, then: psyling validate {Path(args.dir) / (args.name + '.yaml')}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import check_model, sample_requests

    requests = sample_requests(args.stimuli or (), args.battery, args.n)
    dtypes = [d for d in args.dtypes.split(",") if d and d != "float32"]
    table = check_model(args.model, requests, batch_size=args.batch_size, dtypes=dtypes, device=args.device)
    print(f"{'comparison':<72} {'n':>4} {'max |diff|':>11} {'mean |diff|':>11}  verdict")
    for row in table.itertuples():
        verdict = "informative" if row.passed is None else "ok" if row.passed else f"FAIL (> {row.tolerance_bits:g})"
        print(f"{row.comparison:<72} {row.n_sequences:>4} {row.max_abs_diff_bits:>11.2e} "
              f"{row.mean_abs_diff_bits:>11.2e}  {verdict}")
    print("bits per token; reference: one sequence at a time in float32")
    return 0 if table.passed.dropna().all() else 1


def _cache(args: argparse.Namespace) -> int:
    from .cache import cache_dir
    from .models.store import clear_entries, list_entries, scores_root

    if args.action == "clear":
        removed = clear_entries(args.model)
        print(f"removed {removed} score cache entr{'y' if removed == 1 else 'ies'} from {scores_root()}")
        if args.models:
            import shutil
            shutil.rmtree(cache_dir() / "models", ignore_errors=True)
            print(f"removed the converted models in {cache_dir() / 'models'}")
        return 0
    rows = list_entries(model=args.model)
    print(f"score cache: {scores_root()}")
    for r in rows:
        print(f"  {r['entry']}  {r['model']:<24} {r['dtype']:<15} {r['convention']:<9} "
              f"{'capture ' if r['capture'] else ''}{r['batches']} batches, {r['mb']} MB, {r['last_written']}")
    if not rows:
        print("  (empty)")
    models = cache_dir() / "models"
    for folder in sorted(models.iterdir()) if models.is_dir() else []:
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        print(f"converted model: {folder.name} ({size:.0f} MB)")
    return 0


def _models(_: argparse.Namespace) -> int:
    for alias, emb in EMBEDDED.items():
        default = " (default)" if alias == DEFAULT_MODEL else ""
        print(f"{alias:<14} {emb.description}{default}; package {emb.pip}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyling", description="Artificial psycholinguistics test suite.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="score stimulus sets with a model and write a run directory")
    run.add_argument("--model", default=DEFAULT_MODEL,
                     help=f"alias ({', '.join(EMBEDDED)}), local folder, .gguf file or Hugging Face id "
                          f"(default {DEFAULT_MODEL})")
    run.add_argument("--stimuli", nargs="+", metavar="PATH", help="stimulus files or folders")
    run.add_argument("--battery", help="a named battery (stimuli/batteries/NAME.yaml), e.g. core")
    run.add_argument("--out", required=True, type=Path, help="run directory to write")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--context-token", help="token before each stimulus: bos, eos, an id or a token "
                                             "(default: BOS if the tokenizer has one, else EOS)")
    run.add_argument("--padding-side", default="right", choices=["right", "left"])
    run.add_argument("--measure", default="surprisal", choices=["surprisal", "surprisal_raw"],
                     help="region statistic the predictions use (default: corrected word surprisal)")
    run.add_argument("--detokenize", action="store_true",
                     help="attach the SyntaxGym 2020 suites' free-standing ' .' and ' ,' to the preceding word")
    run.add_argument("--max-items", type=int, help="score only the first N items of each set (quick checks)")
    run.add_argument("--revision", help="model revision (hub models)")
    run.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code (off by default)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--activations", metavar="KINDS",
                     help="capture activations in the scoring pass: resid, attn, mlp (comma-separated), "
                          "written to OUT/activations")
    run.add_argument("--layers", default="all", help="layers to capture (all, or e.g. 0,6,12; default all)")
    run.add_argument("--pool", default="word", choices=["word", "region"], help="pool activations per word or region")
    run.add_argument("--pool-method", default="mean", choices=["mean", "first", "last"])
    run.add_argument("--activation-dtype", default="float32", choices=["float32", "float16"])
    run.add_argument("--lens", action="store_true",
                     help="also run the logit lens at --layers: lens_regions, lens_predictions, lens_emergence")
    run.add_argument("--max-tokens", type=int,
                     help="tokens per forward batch (default: from the vocabulary size; halved on out-of-memory)")
    run.add_argument("--prefix-reuse", default="auto", choices=["auto", "on", "off"],
                     help="compute shared prefixes once (on), or one padded sequence per row with --batch-size "
                          "per batch (off); auto: on, except for the lm-eval and minicons conventions")
    run.add_argument("--convention", default="psyling", choices=list(CONVENTIONS),
                     help="score as another tool does, to match its published numbers (default psyling)")
    run.add_argument("--resume", action="store_true",
                     help="reuse the batches an identical earlier run left in the score cache (e.g. one killed)")
    run.add_argument("--no-cache", action="store_true", help="do not write batch results to the score cache")
    run.add_argument("--masked-variant", default="pll", choices=["pll", "l2r"],
                     help="masked LMs (BERT, RoBERTa): pseudo-log-likelihood, or within-word l2r (default pll)")
    run.set_defaults(func=_run)
    chk = sub.add_parser("check", help="is the model's surprisal invariant to batch size, padding and prefix reuse?")
    chk.add_argument("--model", default=DEFAULT_MODEL)
    chk.add_argument("--stimuli", nargs="+", metavar="PATH", help="sentences to use (default: the core battery)")
    chk.add_argument("--battery", default="core")
    chk.add_argument("--n", type=int, default=32, help="sequences to compare (default 32)")
    chk.add_argument("--batch-size", type=int, default=16)
    chk.add_argument("--dtypes", default="bfloat16", help="other dtypes to compare with float32 (comma-separated; "
                                                          "'' for none)")
    chk.add_argument("--device", default="cpu")
    chk.set_defaults(func=_check)
    cache = sub.add_parser("cache", help="list or clear the score cache (and converted models)")
    cache.add_argument("action", choices=["ls", "clear"])
    cache.add_argument("--model", help="only entries whose model id contains this")
    cache.add_argument("--models", action="store_true", help="clear: also delete the converted models")
    cache.set_defaults(func=_cache)
    ev = sub.add_parser("evaluate", help="evaluate predictions on a surprisal table computed elsewhere")
    ev.add_argument("--surprisal", required=True, type=Path,
                    help="CSV/TSV/parquet: item, condition, token|word, surprisal [, set]; or lm-zoo "
                         "sentence_id, token_id, token, surprisal")
    ev.add_argument("--stimuli", nargs="+", metavar="PATH", help="the sets the table belongs to")
    ev.add_argument("--battery", help="or a named battery")
    ev.add_argument("--units", default="bits", choices=["bits", "nats"])
    ev.add_argument("--out", type=Path, help="write regions, predictions, summary and a manifest here")
    ev.set_defaults(func=_evaluate)
    an = sub.add_parser("analyze", help="statistics, human comparison, verdicts and plots for a run directory")
    an.add_argument("run_dir", type=Path, help="the --out folder of psyling run")
    an.add_argument("--stimuli", nargs="+", metavar="PATH",
                    help="the run's stimulus files (default: the files its manifest lists)")
    an.add_argument("--linking", default="ucl", choices=["ucl", "naturalstories", "none"],
                    help="fit surprisal -> human-measure linking functions on a corpus scored by the run's model: "
                         "ucl (SPR, first-pass eye-tracking, N400; default), naturalstories (SPR only), or none "
                         "(effects in bits only)")
    an.add_argument("--data-root", type=Path,
                    help="data root holding devarda2023_ucl_cloze_n400/ or naturalstories/ (default: PSYLING_DATA "
                         "or ../shared/data)")
    an.add_argument("--no-plots", action="store_true")
    an.add_argument("--quiet", action="store_true", help="no progress bars")
    an.set_defaults(func=_analyze)
    cmp = sub.add_parser("compare", help="per-set paired comparison of two runs on the same stimuli")
    cmp.add_argument("run_a", type=Path)
    cmp.add_argument("run_b", type=Path)
    cmp.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--out", type=Path, help="also write the table as CSV")
    cmp.set_defaults(func=_compare)
    pr = sub.add_parser("probe", help="linear probes per layer on a run's activations, for a condition factor")
    pr.add_argument("run_dir", type=Path, help="a run made with --activations")
    pr.add_argument("--factor", required=True, help="a factor the sets declare, e.g. number")
    pr.add_argument("--sets", nargs="+", help="only these sets (default: every set declaring the factor)")
    pr.add_argument("--stimuli", nargs="+", metavar="PATH", help="the run's stimulus files (default: manifest)")
    pr.add_argument("--region", help="probe only this region's rows (a run with --pool region), e.g. verb")
    pr.add_argument("--folds", type=int, default=5)
    pr.add_argument("--permutations", type=int, default=100)
    pr.set_defaults(func=_probe)
    le = sub.add_parser("lens", help="logit lens: predictions read out at each layer, and where they emerge")
    le.add_argument("--model", default=DEFAULT_MODEL)
    le.add_argument("--stimuli", nargs="+", metavar="PATH")
    le.add_argument("--battery")
    le.add_argument("--out", required=True, type=Path)
    le.add_argument("--layers", default="all")
    le.add_argument("--batch-size", type=int, default=32)
    le.add_argument("--max-items", type=int)
    le.add_argument("--quiet", action="store_true")
    le.set_defaults(func=_lens)
    en = sub.add_parser("encode", help="per-layer encoding of UCL corpus N400 / SPR / eye-tracking")
    en.add_argument("--model", default=DEFAULT_MODEL)
    en.add_argument("--measure", default="N400", choices=["N400", "SPR", "eye-tracking"])
    en.add_argument("--out", required=True, type=Path)
    en.add_argument("--layers", default="all")
    en.add_argument("--data-root", type=Path)
    en.add_argument("--folds", type=int, default=10)
    en.add_argument("--permutations", type=int, default=200)
    en.add_argument("--quiet", action="store_true")
    en.set_defaults(func=_encode)
    validate = sub.add_parser("validate", help="check stimulus files; one line per problem")
    validate.add_argument("paths", nargs="+", help="stimulus files or folders")
    validate.set_defaults(func=_validate)
    new = sub.add_parser("new", help="scaffold a stimulus set (manifest + items) from the template")
    new.add_argument("name")
    new.add_argument("--dir", default=".", help="folder to write into (default: current folder)")
    new.set_defaults(func=_new)
    batteries = sub.add_parser("batteries", help="list the batteries with their set and item counts")
    batteries.set_defaults(func=_batteries)
    models = sub.add_parser("models", help="list the embedded offline models")
    models.set_defaults(func=_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="psyling: %(message)s", level=logging.WARNING)
    try:
        return args.func(args)
    except PsylingError as exc:
        print(f"psyling: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("psyling: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
