"""Command line: ``psyling run`` (and ``lens``) score stimulus sets into a run directory; ``analyze``, ``compare``,
``probe`` and ``encode`` work on runs and corpora; ``patch``, ``mediate``, ``ablate`` and ``steer`` analyse circuits
between the conditions of each item; ``evaluate`` scores predictions on surprisal computed
elsewhere; ``check`` tests a model's batching invariance; ``reproduce`` runs the registered reproductions;
``validate``, ``new``, ``batteries``, ``models`` and ``cache`` manage stimuli, models and the score cache.

A thin layer over the API: options shared by several commands (model, scoring, stimuli, output) are declared
once below, and a scoring command builds one ``RunConfig`` from them and calls ``psyling.api.run``."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import __version__
from .circuits import CircuitConfig
from .config import MEASURES, RunConfig
from .errors import PsylingError
from .interp.activations import METHODS, POOLS
from .interp.pairs import UNEQUAL, PairSpec
from .interp.patch_runs import Layout
from .interp.patching import PatchConfig
from .models import DEFAULT_MODEL, EMBEDDED, CaptureSpec, ModelSpec, ScoringOptions
from .models.conventions import CONVENTIONS
from .models.hooks import DTYPES as ACTIVATION_DTYPES
from .models.hooks import KINDS
from .models.options import MASKED_VARIANTS, PADDING_SIDES
from .progress import quiet
from .stimuli.corpora import UCL_MEASURES
from .stimuli.segmentation import SEGMENTATION_CHOICES

USER_ERROR = 2
MODEL_DTYPES = ("float32", "bfloat16", "float16")
PREFIX_REUSE = {"auto": None, "on": True, "off": False}


# ---- option groups, each declared once -------------------------------------------------------------------------

def _model_options(parser: argparse.ArgumentParser, loading: bool = True) -> None:
    """--model and --device; with ``loading`` also --revision, --dtype and --trust-remote-code (a ModelSpec)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"alias ({', '.join(EMBEDDED)}), local folder, .gguf file or Hugging Face id "
                            f"(default {DEFAULT_MODEL})")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    if loading:
        group.add_argument("--revision", help="model revision (hub models)")
        group.add_argument("--dtype", default="float32", choices=MODEL_DTYPES,
                           help="precision the model is loaded in (default float32)")
        group.add_argument("--trust-remote-code", action="store_true",
                           help="allow a model's own code (off by default)")


def _batch_size_option(parser: Any, default: int = 32) -> None:
    parser.add_argument("--batch-size", type=int, default=default,
                        help=f"sequences per padded batch (default {default})")


def _scoring_options(parser: argparse.ArgumentParser) -> None:
    """How to score (a ScoringOptions, capture and logit lens aside)."""
    group = parser.add_argument_group("scoring")
    _batch_size_option(group)
    group.add_argument("--max-tokens", type=int,
                       help="tokens per forward batch (default: from the vocabulary size; halved on out-of-memory)")
    group.add_argument("--context-token", help="token before each stimulus: bos, eos, an id or a token "
                                               "(default: BOS if the tokenizer has one, else EOS)")
    group.add_argument("--padding-side", default="right", choices=PADDING_SIDES,
                       help="side padded sequences are padded on (results do not depend on it; default right)")
    group.add_argument("--prefix-reuse", default="auto", choices=list(PREFIX_REUSE),
                       help="compute shared prefixes once (on), or one padded sequence per row with --batch-size "
                            "per batch (off); auto: on, except for the lm-eval and minicons conventions")
    group.add_argument("--convention", default="psyling", choices=list(CONVENTIONS),
                       help="score as another tool does, to match its published numbers (default psyling)")
    group.add_argument("--masked-variant", default="pll", choices=MASKED_VARIANTS,
                       help="masked LMs (BERT, RoBERTa): pseudo-log-likelihood, or within-word l2r (default pll)")


def _stimulus_options(parser: argparse.ArgumentParser, selection: bool = True) -> None:
    """--stimuli and --battery; with ``selection`` also --max-items, --detokenize and --segmentation."""
    group = parser.add_argument_group("stimuli")
    group.add_argument("--stimuli", nargs="+", metavar="PATH", help="stimulus files or folders")
    group.add_argument("--battery", help="a named battery (psyling batteries lists them), e.g. core")
    if selection:
        group.add_argument("--max-items", type=int, help="score only the first N items of each set (quick checks)")
        group.add_argument("--detokenize", action="store_true",
                           help="attach the SyntaxGym 2020 suites' free-standing ' .' and ' ,' to the preceding word")
        _segmentation_option(group)


def _segmentation_option(group: Any) -> None:
    group.add_argument("--segmentation", default="auto", choices=SEGMENTATION_CHOICES,
                       help="how the stimulus text divides into words: auto (default: detected from the script, "
                            "unless a file or its sidecar declares it), whitespace, or none (scripts written "
                            "without spaces: regions only, joined without a separator); overrides the files")


def _measure_option(group: Any) -> None:
    group.add_argument("--measure", default="surprisal", choices=MEASURES,
                       help="region statistic of the predictions' bare (region;%%condition%%) terms: surprisal "
                            "(summed corrected word surprisal, the default), surprisal_raw (summed token "
                            "surprisal), mean (surprisal per token) or slor (NEGATIVE SLOR, (surprisal - wordfreq "
                            "unigram surprisal) / tokens, bits per token: lower = more acceptable, so formulas "
                            "keep their direction); mean(...) and slor(...) in a formula fix a term's own")


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The run's own settings: prediction statistic and score cache."""
    group = parser.add_argument_group("run")
    _measure_option(group)
    group.add_argument("--resume", action="store_true",
                       help="reuse the batches an identical earlier run left in the score cache (e.g. one killed)")
    group.add_argument("--no-cache", action="store_true", help="do not write batch results to the score cache")


def _layers_option(parser: Any, what: str) -> None:
    parser.add_argument("--layers", default="all", help=f"layers {what} (all, or e.g. 0,6,12; default all)")


def _capture_options(parser: argparse.ArgumentParser) -> None:
    """Activation capture and the logit lens in the scoring pass."""
    group = parser.add_argument_group("activations and logit lens")
    group.add_argument("--activations", metavar="KINDS",
                       help=f"capture activations in the scoring pass: {', '.join(KINDS)} (comma-separated), "
                            "written to OUT/activations")
    _layers_option(group, "to capture or read out")
    group.add_argument("--pool", default="word", choices=POOLS, help="pool activations per unit (default word)")
    group.add_argument("--pool-method", default="mean", choices=METHODS,
                       help="how the tokens of a unit are pooled (default mean)")
    group.add_argument("--activation-dtype", default="float32", choices=list(ACTIVATION_DTYPES),
                       help="how captured activations are stored (default float32)")
    group.add_argument("--lens", action="store_true",
                       help="also run the logit lens at --layers: lens_regions, lens_predictions, lens_emergence")


def _quiet_option(parser: Any) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _output_options(parser: argparse.ArgumentParser, required: bool = True, replace: bool = True) -> None:
    """--out (a run directory), --replace (replace the run there) and --quiet."""
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=required, type=Path, help="run directory to write")
    if replace:
        group.add_argument("--replace", action="store_true",
                           help="replace the run already in --out (default: refuse a non-empty folder)")
    _quiet_option(group)


def _run_stimuli_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", nargs="+", metavar="PATH",
                        help="the run's stimulus files (default: the files its manifest lists)")


def _data_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")


def _pair_options(parser: argparse.ArgumentParser) -> None:
    """Which conditions a patching experiment contrasts (default: derived from a 2x2 set's design)."""
    group = parser.add_argument_group("pairs (default: derived from each 2x2 set's factors and first prediction)")
    group.add_argument("--clean", help="condition giving the clean context (and the good continuation)")
    group.add_argument("--corrupt", help="condition giving the corrupted context")
    group.add_argument("--good", help="condition whose critical region is the continuation that agrees with clean")
    group.add_argument("--bad", help="condition whose critical region is the other continuation")
    group.add_argument("--critical", help="the critical region (the metric's region)")
    group.add_argument("--factor", help="every pair that swaps this factor's two levels (both orders)")


def _patch_options(parser: argparse.ArgumentParser) -> None:
    """Sites, positions, directions and methods of ``psyling patch``."""
    group = parser.add_argument_group("patching")
    group.add_argument("--sites", default="resid", help="kinds (resid, attn, mlp, head, neuron) or site names such "
                                                        "as head.5.2, comma-separated (default resid)")
    _layers_option(group, "to patch")
    group.add_argument("--regions", help="regions to patch, comma-separated, 'all' = every position at once "
                                         "(default: every region and all)")
    group.add_argument("--token", default="last", help="token within a region: first, last, all or k (default last)")
    group.add_argument("--unequal", default="last", choices=UNEQUAL,
                       help="a region whose token counts differ between the contexts aligns on its last token, "
                            "its first, or not at all (default last)")
    group.add_argument("--directions", default="denoise,noise", help="denoise (clean into corrupt), noise (corrupt "
                                                                     "into clean); default both")
    _threshold_option(group)
    group.add_argument("--method", default="exact", choices=("exact", "atp", "both"),
                       help="exact activation patching, attribution patching (AtP), or both (with their agreement)")
    group.add_argument("--atp-sites", default="resid,attn,mlp,head,neuron", help="site kinds for AtP")
    group.add_argument("--confirm", type=int, default=0, metavar="K",
                       help="with AtP: patch its top K heads and top K MLP units exactly (default 0)")
    group.add_argument("--items-per-batch", type=int, default=8, help="items patched together (default 8)")
    _bootstrap_option(group)
    group.add_argument("--no-plots", action="store_true", help="no PNG heatmaps")


def _threshold_option(group: Any) -> None:
    group.add_argument("--threshold", type=float, default=0.1,
                       help="exclude items with |M_clean - M_corrupt| below this many bits (default 0.1)")


def _bootstrap_option(group: Any) -> None:
    group.add_argument("--bootstrap", type=int, default=1000,
                       help="item-bootstrap resamples for the confidence intervals (default 1000)")


def _steer_options(parser: argparse.ArgumentParser) -> None:
    """Where and how ``psyling steer`` moves the residual stream along a probe's direction."""
    group = parser.add_argument_group("causal probes")
    _layers_option(group, "to steer")
    group.add_argument("--region", help="steer this region (before the critical one); default: the last context token")
    group.add_argument("--token", default="last", help="token within --region: first, last or k (default last)")
    group.add_argument("--unequal", default="last", choices=UNEQUAL,
                       help="a region whose token counts differ between the contexts aligns on its last token, "
                            "its first, or not at all (default last)")
    group.add_argument("--kinds", default="mean-diff,probe", help="direction kinds (default mean-diff,probe)")
    group.add_argument("--mode", default="interchange", choices=("interchange", "add"),
                       help="set the projection to the corrupted class mean's (interchange), or add alpha times "
                            "the class-mean difference (add)")
    group.add_argument("--alpha", type=float, default=1.0,
                       help="with --mode add: the multiple of the class-mean difference added (default 1)")
    group.add_argument("--folds", type=int, default=5, help="item-grouped folds (default 5)")
    _threshold_option(group)
    _bootstrap_option(group)


def _mediation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("causal mediation")
    _layers_option(group, "to analyse")
    group.add_argument("--region", help="where to intervene (default: the first region in which the contexts differ)")
    group.add_argument("--token", default="last", help="token within the region: first, last, all or k")
    group.add_argument("--kinds", default="attn,mlp,head,neuron", help="component kinds (default attn,mlp,head,neuron)")
    group.add_argument("--top-k", type=int, default=20, help="heads and MLP units kept in the top table (default 20)")
    group.add_argument("--screen", default="atp", choices=("atp", "layers"),
                       help="how MLP units are screened before exact patching (default: attribution patching)")
    _threshold_option(group)
    _bootstrap_option(group)


def _ablation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ablation")
    group.add_argument("--units", help="heads / MLP units to ablate, comma-separated (head.L.H, neuron.L.N)")
    group.add_argument("--units-from", type=Path, metavar="DIR",
                       help="take them from a psyling mediate or psyling patch --method atp output")
    group.add_argument("--kind", default="head", choices=("head", "neuron"), help="with --units-from (default head)")
    group.add_argument("--top", type=int, default=5, help="with --units-from: how many (default 5)")
    group.add_argument("--methods", default="zero,mean,resample", help="ablation methods (default all three)")
    group.add_argument("--random", type=int, default=10, help="random control draws (default 10)")
    group.add_argument("--faithfulness", action="store_true", help="also the faithfulness of the units as a circuit")
    _bootstrap_option(group)


# ---- from options to settings ----------------------------------------------------------------------------------

def _layers(text: str) -> Optional[tuple[int, ...]]:
    """None for "all", else the comma-separated layer numbers."""
    if text.strip() == "all":
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PsylingError(f"--layers must be 'all' or comma-separated numbers such as 0,6,12 (got {text!r})") from None


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(args.model, args.revision, args.dtype, args.device, args.trust_remote_code)


def _scoring(args: argparse.Namespace, capture: Optional[CaptureSpec] = None, lens: Any = None) -> ScoringOptions:
    token = args.context_token
    return ScoringOptions(int(token) if token and token.isdigit() else token, args.batch_size, args.max_tokens,
                          args.padding_side, PREFIX_REUSE[args.prefix_reuse], args.convention, args.masked_variant,
                          capture, lens)


def _run_config(args: argparse.Namespace, capture: Optional[CaptureSpec] = None, lens: Any = None,
                **settings: Any) -> RunConfig:
    """The RunConfig of a scoring command: model, scoring, stimulus and run options (plus ``settings``)."""
    if not args.stimuli and not args.battery:
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    return RunConfig(_model_spec(args), _scoring(args, capture, lens), tuple(args.stimuli or ()), args.battery,
                     args.max_items, args.detokenize, args.measure, cache=not args.no_cache, resume=args.resume,
                     segmentation=args.segmentation, **settings)


def _csv(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def _circuit_run(args: argparse.Namespace) -> RunConfig:
    """The model, scoring options and stimuli of a circuit command."""
    if not args.stimuli and not args.battery:
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    return RunConfig(_model_spec(args), _scoring(args), tuple(args.stimuli or ()), args.battery, args.max_items,
                     args.detokenize, segmentation=args.segmentation)


def _circuit_config(args: argparse.Namespace) -> CircuitConfig:
    patch = PatchConfig(_pairs(args), _csv(args.sites), _layers(args.layers), _csv(args.regions), args.token, args.unequal,
                        _csv(args.directions), args.threshold, args.items_per_batch,
                        max_tokens=args.max_tokens or PatchConfig.max_tokens,
                        layout=Layout(PREFIX_REUSE[args.prefix_reuse] is not False, args.padding_side))
    return CircuitConfig(patch, exact=args.method != "atp", attribution=args.method != "exact",
                         atp_sites=_csv(args.atp_sites), confirm=args.confirm, n_boot=args.bootstrap,
                         plots=not args.no_plots)


# ---- commands --------------------------------------------------------------------------------------------------

def _run(args: argparse.Namespace) -> int:
    from .api import run
    from .report import format_summary

    capture = CaptureSpec(tuple(k.strip() for k in args.activations.split(",")), _layers(args.layers),
                          args.activation_dtype) if args.activations else None
    lens = (_layers(args.layers) or "all") if args.lens else None
    config = _run_config(args, capture, lens, pool=args.pool, pool_method=args.pool_method)
    result = run(config, out=args.out, replace=args.replace, progress=not args.quiet)
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
    return _skipped(result.errors)


def _lens(args: argparse.Namespace) -> int:
    from .api import run
    from .layerwise import lens_plots

    config = _run_config(args, lens=_layers(args.layers) or "all")
    result = run(config, out=args.out, replace=args.replace, progress=not args.quiet)
    if result.lens:
        print(_lens_accuracy_lines(result.lens["lens_predictions"]))
        emerged = result.lens["lens_emergence"]["emerges_at"]
        print(f"\npredictions holding at the last layer emerge at layer {emerged.median():.0f} (median; "
              f"{emerged.notna().sum()} of {len(emerged)} item predictions hold at the last layer)")
        print(f"{len(lens_plots(args.out))} plots and lens_*.parquet in {args.out}")
    return _skipped(result.errors)


def _skipped(errors: Sequence[str]) -> int:
    """Print the files and sets a command could not use (one line each); the exit code: 2 if any."""
    for line in errors:
        print(f"psyling: skipped: {line}", file=sys.stderr)
    return USER_ERROR if errors else 0


def _encode(args: argparse.Namespace) -> int:
    from .layerwise import best_layer, encode_corpus

    table = encode_corpus(_model_spec(args), target=args.target, out=args.out, layers=_layers(args.layers),
                          data_root=args.data_root, folds=args.folds, n_permutations=args.permutations,
                          progress=not args.quiet, replace=args.replace)
    print(table[["site", "r2", "r2_baseline", "delta_r2", "p_value", "q_value"]].to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))
    site, value = best_layer(table, "delta_r2")
    print(f"\nbest site for {args.target}: {site} (ΔR² {value:.4f}); table and plot in {Path(args.out) / 'interp'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate
    from .report import format_summary

    if not args.stimuli and not args.battery:
        raise PsylingError("give the stimulus sets the table belongs to with --stimuli or --battery")
    result = evaluate(args.surprisal, args.stimuli or (), args.battery, args.out, units=args.units,
                      replace=args.replace, measure=args.measure)
    print(format_summary(result.summary))
    if args.battery:
        print(_battery_score(args.battery, result.predictions))
    _unevaluated_suites(args.surprisal, result.manifest["surprisal_table"]["suites_without_a_set"])
    return _skipped(result.errors)


def _unevaluated_suites(surprisal: Path, left: list[str]) -> None:
    """List (on stderr) the suites of a multi-suite surprisal table that no evaluated set is named after."""
    if left:
        print(f"psyling: note: {len(left)} suite{'s' * (len(left) != 1)} of {surprisal} not evaluated (no set of "
              f"that name was evaluated): {', '.join(left)}", file=sys.stderr)


def _reproduce(args: argparse.Namespace) -> int:
    from .reproductions import reproduce_command
    return reproduce_command(args)


def _lens_accuracy_lines(lens_predictions) -> str:
    """Per set, the share of items whose predictions hold when read out at each lens layer."""
    from .interp.lens import lens_accuracy

    lines = ["logit lens: accuracy when the predictions are read out at each layer"]
    for name, table in lens_accuracy(lens_predictions).groupby("set", sort=False):
        lines.append(f"  {name}: " + "  ".join(f"{r.layer}: {r.accuracy:.2f}" for r in table.itertuples()))
    return "\n".join(lines)


def _battery_score(name: str, predictions) -> str:
    """The battery's SyntaxGym score and circuits, where its file defines them (e.g. syntaxgym2020)."""
    from .stats import battery_score_rows, item_passes
    from .stimuli import load_battery

    config = load_battery(name).score
    if not config or predictions.empty:
        return ""
    rows = battery_score_rows(item_passes(predictions), name, config)
    excluded = ", ".join(config.get("exclude", ())) or "none"
    lines = [f"\nSG score of {name} (mean accuracy over {rows.n_suites.iloc[0]} suites, excluding {excluded}): "
             f"{rows.value.iloc[0]:.3f}"]
    lines += [f"  {r.score.removeprefix('circuit: '):<28} {r.value:.3f} ({r.n_suites} suites)"
              for r in rows.iloc[1:].itertuples()]
    return "\n".join(lines)


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
        print("mixed models of each set's compared region: " + ", ".join(f"{n} with {k}" for k, n in
                                                                 kinds.value_counts().items())
              + " (the region and why: mixed.parquet, columns region and region_from; simplifications and their "
                "reasons: column fallback)")
    for line in result.notes:
        print(f"psyling: note: {line}", file=sys.stderr)
    print(f"\nstatistics, verdicts and {len(result.plots)} plots in {result.out}")
    print(f"one page with the plots and tables: psyling report {result.out.parent} --out report.html")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .analysis import compare_runs
    from .fileio import write_csv
    from .report import format_comparison

    table = compare_runs(args.run_a, args.run_b, n_boot=args.n_boot, seed=args.seed)
    print(format_comparison(table, str(args.run_a), str(args.run_b)))
    if args.out:
        write_csv(args.out, table)
    print(f"both runs on one page: psyling report {args.run_a} {args.run_b} --out report.html")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report.html import build_report

    print(build_report(args.run_dirs, args.out, static=args.static))
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


def _circuit_done(manifest: dict, where: str) -> None:
    """The end of a circuit command: the sets it skipped (``_skipped``, on stderr) and where its tables are. The
    exit code stays 0 when some sets were skipped (``psyling run`` gives 2; see the issue 12 note)."""
    _skipped(manifest["errors"])
    print(f"\n{where}")


def _patch(args: argparse.Namespace) -> int:
    from .circuits import patch_experiment
    from .report.terminal import format_patching

    out, tables, manifest = patch_experiment(_circuit_run(args), _circuit_config(args), args.out,
                                             replace_out=args.replace,
                                             progress=not args.quiet)
    print(format_patching(tables))
    _circuit_done(manifest, f"patching tables, alignment and heatmaps in {out}")
    return 0


def _steer(args: argparse.Namespace) -> int:
    from .circuits import steer_experiment
    from .interp.causal_probes import CausalProbeConfig

    config = CausalProbeConfig(_pairs(args), _layers(args.layers), args.region, args.token, args.unequal, _csv(args.kinds),
                               args.folds, args.mode, args.alpha, args.threshold, n_boot=args.bootstrap,
                               layout=Layout(PREFIX_REUSE[args.prefix_reuse] is not False, args.padding_side))
    out, tables, manifest = steer_experiment(_circuit_run(args), config, args.out, replace_out=args.replace,
                                             progress=not args.quiet)
    columns = ["set", "layer", "direction_kind", "iia", "toward", "accuracy", "selectivity", "corrupt_flips", "n_items"]
    print(tables["causal_probes_summary"][columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    _circuit_done(manifest, f"rows and per-layer summary in {out}")
    return 0


def _pairs(args: argparse.Namespace) -> PairSpec:
    return PairSpec(args.clean, args.corrupt, args.good, args.bad, args.critical, args.factor)


def _mediate(args: argparse.Namespace) -> int:
    from .circuits import mediate_experiment
    from .interp.mediation import MediationConfig

    config = MediationConfig(_pairs(args), args.region, args.token, _layers(args.layers), args.top_k, args.screen,
                             args.bootstrap, kinds=_csv(args.kinds), threshold=args.threshold)
    out, tables, manifest = mediate_experiment(_circuit_run(args), config, args.out, replace_out=args.replace,
                                               progress=not args.quiet)
    columns = ["set", "component", "site", "te", "nie", "nie_ci_low", "nie_ci_high", "nde", "rank"]
    print(tables["mediation_top"][columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _circuit_done(manifest, f"mediation effects, top components and patches in {out}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from .circuits import ablate_experiment, top_units
    from .interp.ablation import AblationConfig

    units = list(_csv(args.units) or ()) + (top_units(args.units_from, args.kind, args.top) if args.units_from else [])
    config = AblationConfig(_csv(args.methods), args.random, n_boot=args.bootstrap, pairs=_pairs(args))
    out, tables, manifest = ablate_experiment(_circuit_run(args), units, config, args.out, faithful=args.faithfulness,
                                              replace_out=args.replace, progress=not args.quiet)
    print(f"ablated: {', '.join(units)}")
    columns = ["set", "units", "method", "accuracy", "baseline", "change", "ci_low", "ci_high"]
    print(tables["ablation"][columns].query("not units.str.startswith('random-')", engine="python")
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _circuit_done(manifest, f"ablation (and faithfulness) tables in {out}")
    return 0


def _sae_run(args: argparse.Namespace) -> RunConfig:
    """The model, scoring options and stimuli of an SAE command (stimuli may be empty for corpora only)."""
    return RunConfig(_model_spec(args), _scoring(args), tuple(args.stimuli or ()), args.battery, args.max_items,
                     args.detokenize, args.measure, segmentation=args.segmentation)


def _sae_train(args: argparse.Namespace) -> int:
    from .interp.sae_harvest import HarvestConfig
    from .interp.sae_train import TrainConfig
    from .sae_experiments import SAETraining, train_experiment

    if not (args.stimuli or args.battery or args.corpus or args.activations):
        raise PsylingError("give stimulus paths with --stimuli, a --battery, a --corpus or --activations")
    train = TrainConfig(architecture=args.architecture, latents=args.latents, k=args.k, lr=args.lr,
                        batch_size=args.train_batch, n_tokens=args.tokens, seed=args.seed,
                        l1_coeff=args.l1_coeff)
    settings = SAETraining(HarvestConfig(sites=(args.site,), dtype=args.activation_dtype,
                                         max_tokens=args.max_harvest), tuple(args.corpus or ()), args.activations,
                           train)
    out, manifest = train_experiment(_sae_run(args), settings, args.out, replace_out=args.replace,
                                     progress=not args.quiet)
    harvested, trained = manifest["harvest"], manifest["training"]
    print(f"harvested {harvested['n_tokens']} tokens; trained on {trained['n_tokens']} tokens in "
          f"{trained['seconds']:.0f} s ({trained['tokens_per_second']:.0f} tokens/s)")
    print(f"\nSAE (SAELens layout), history and manifest in {out}")
    return 0


def _sae_eval(args: argparse.Namespace) -> int:
    from .sae_experiments import eval_experiment

    if not (args.stimuli or args.battery):
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    out, metrics, table = eval_experiment(_sae_run(args), args.sae, args.out, effects=not args.no_effects,
                                          replace_out=args.replace, progress=not args.quiet)
    names = ("n_tokens", "l0", "fvu", "explained_variance", "dead_fraction", "ce_recovered", "kl_recovered")
    print("  ".join(f"{name} {metrics[name]:.4g}" for name in names))
    if len(table):
        print(table[["set", "accuracy", "accuracy_spliced", "mcnemar_p", "effect", "effect_ratio"]]
              .to_string(index=False, float_format="%.3f"))
    print(f"\nmetrics.json and preservation.parquet in {out}")
    return 0


def _sae_features(args: argparse.Namespace) -> int:
    from .sae_contrasts import FeatureSettings, features_experiment

    if not (args.stimuli or args.battery):
        raise PsylingError("give stimulus paths with --stimuli or a battery with --battery")
    settings = FeatureSettings(n_latents=args.per_factor, n_contexts=args.contexts,
                               training_text=not args.no_training_text, region=args.region)
    out, tables, manifest = features_experiment(_sae_run(args), args.sae, args.out, settings,
                                                replace_out=args.replace, progress=not args.quiet)
    for (set_name, factor), group in tables["contrast"].groupby(["set", "factor"], sort=False):
        top = group.head(args.per_factor)
        listed = ", ".join(f"{r.latent} (d_z {r.d_z:+.2f}, q {r.q_value:.2g})" for r in top.itertuples())
        print(f"{set_name} {factor}: {int(group['significant'].sum())} latents with q < 0.05; top {listed}")
    _skipped(manifest["errors"])
    print(f"\ncontrast, top contexts, sparse probes, feature ablation and plots in {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .stimuli import load_stimuli
    from .stimuli.quality import quality_report
    from .stimuli.reading import ReaderOptions

    loaded = load_stimuli([Path(p) for p in args.paths], ReaderOptions(segmentation=args.segmentation))
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
    from .stimuli import battery_names, load_battery
    from .stimuli.batteries import battery_count

    width = max(len(name) for name in [*battery_names(), "battery"])
    print(f"{'battery':<{width}} {'sets':>5} {'items':>8}  description")
    for name in battery_names():
        battery = load_battery(name)
        try:
            count = battery_count(battery)
            counts = f"{count.n_sets:>5} {count.n_items:>8}"
            if count.n_errors:
                counts += f" ({count.n_errors} files with errors)"
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
    table = check_model(args.model, requests, batch_size=args.batch_size, dtypes=dtypes, device=args.device,
                        progress=not args.quiet)
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


# ---- the parser, one function per command ----------------------------------------------------------------------

Sub = Any  # argparse's subparsers action


def _run_parser(sub: Sub) -> None:
    run = sub.add_parser("run", help="score stimulus sets with a model and write a run directory")
    for add in (_model_options, _scoring_options, _stimulus_options, _run_options, _capture_options, _output_options):
        add(run)
    run.set_defaults(func=_run)


def _lens_parser(sub: Sub) -> None:
    lens = sub.add_parser("lens", help="logit lens: predictions read out at each layer, and where they emerge")
    for add in (_model_options, _scoring_options, _stimulus_options, _run_options, _output_options):
        add(lens)
    _layers_option(lens, "to read out")
    lens.set_defaults(func=_lens)


def _check_parser(sub: Sub) -> None:
    chk = sub.add_parser("check", help="is the model's surprisal invariant to batch size, padding and prefix reuse?")
    _model_options(chk, loading=False)
    _stimulus_options(chk, selection=False)
    _batch_size_option(chk, default=16)
    chk.add_argument("--n", type=int, default=32, help="sequences to compare (default 32)")
    chk.add_argument("--dtypes", default="bfloat16", help="other dtypes to compare with float32 (comma-separated; "
                                                          "'' for none)")
    _quiet_option(chk)
    chk.set_defaults(func=_check, battery="core")


def _encode_parser(sub: Sub) -> None:
    enc = sub.add_parser("encode", help="per-layer encoding of the UCL corpus N400, SPR or eye-tracking")
    _model_options(enc)
    enc.add_argument("--target", default="ERP-N400", choices=list(UCL_MEASURES),
                     help="the human measure to predict from each layer (default ERP-N400)")
    _output_options(enc)
    _layers_option(enc, "to encode from")
    _data_root_option(enc)
    enc.add_argument("--folds", type=int, default=10, help="cross-validation folds of the encoding model (default 10)")
    enc.add_argument("--permutations", type=int, default=200,
                     help="permutations for each layer's p-value (default 200)")
    enc.set_defaults(func=_encode)


def _evaluate_parser(sub: Sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate predictions on a surprisal table computed elsewhere")
    ev.add_argument("--surprisal", required=True, type=Path,
                    help="CSV/TSV/parquet: item, condition, token|word, surprisal; or lm-zoo sentence_id, "
                         "token_id, token, surprisal; one file may hold several sets with a set or suite column "
                         "(each set takes the rows of its name; suites without a set are listed)")
    _stimulus_options(ev, selection=False)
    ev.add_argument("--units", default="bits", choices=["bits", "nats"],
                    help="units of the table's surprisal: bits (log base 2, lm-zoo's; default) or nats")
    _measure_option(ev)
    _output_options(ev, required=False)
    ev.set_defaults(func=_evaluate)


def _analyze_parser(sub: Sub) -> None:
    an = sub.add_parser("analyze", help="statistics, human comparison, verdicts and plots for a run directory")
    an.add_argument("run_dir", type=Path, help="the --out folder of psyling run")
    _run_stimuli_option(an)
    an.add_argument("--linking", default="ucl", choices=["ucl", "naturalstories", "none"],
                    help="fit surprisal -> human-measure linking functions on a corpus scored by the run's model: "
                         "ucl (SPR, first-pass eye-tracking, N400; default), naturalstories (SPR only), or none "
                         "(effects in bits only)")
    _data_root_option(an)
    an.add_argument("--no-plots", action="store_true", help="write the tables only, no PNG plots")
    _quiet_option(an)
    an.set_defaults(func=_analyze)


def _compare_parser(sub: Sub) -> None:
    cmp = sub.add_parser("compare", help="per-set paired comparison of two runs on the same stimuli")
    cmp.add_argument("run_a", type=Path, help="the first run directory")
    cmp.add_argument("run_b", type=Path, help="the second run directory (same stimuli)")
    cmp.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    cmp.add_argument("--out", type=Path, help="also write the table as CSV")
    cmp.set_defaults(func=_compare)


def _report_parser(sub: Sub) -> None:
    rep = sub.add_parser("report", help="one self-contained HTML page over runs (no network needed to open it)")
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="FOLDER",
                     help="run directories (one model each), experiment folders, sweep stores or collect folders")
    rep.add_argument("--out", type=Path, required=True, help="the HTML file to write, e.g. report.html")
    rep.add_argument("--static", action="store_true", help="embed PNG plots instead of interactive ones (no plotly)")
    rep.set_defaults(func=_report)


def _probe_parser(sub: Sub) -> None:
    pr = sub.add_parser("probe", help="linear probes per layer on a run's activations, for a condition factor")
    pr.add_argument("run_dir", type=Path, help="a run made with --activations")
    pr.add_argument("--factor", required=True, help="a factor the sets declare, e.g. number")
    pr.add_argument("--sets", nargs="+", help="only these sets (default: every set declaring the factor)")
    _run_stimuli_option(pr)
    pr.add_argument("--region", help="probe only this region's rows (a run with --pool region), e.g. verb")
    pr.add_argument("--folds", type=int, default=5, help="item-grouped cross-validation folds (default 5)")
    pr.add_argument("--permutations", type=int, default=100,
                    help="label permutations for each site's p-value (default 100; 0 for none)")
    _quiet_option(pr)
    pr.set_defaults(func=_probe)


def _circuit_parser(sub: Sub, name: str, help_text: str, options: Callable[[argparse.ArgumentParser], None],
                    func: Callable[[argparse.Namespace], int]) -> None:
    """A circuit command: model, scoring, stimuli, pairs, its own ``options`` and the output."""
    parser = sub.add_parser(name, help=help_text)
    for add in (_model_options, _scoring_options, _stimulus_options, _pair_options, options, _output_options):
        add(parser)
    parser.set_defaults(func=func)


def _patch_parser(sub: Sub) -> None:
    _circuit_parser(sub, "patch", "activation / attribution patching between the conditions of each item",
                    _patch_options, _patch)


def _steer_parser(sub: Sub) -> None:
    _circuit_parser(sub, "steer", "probes made causal: move the residual stream along a probe direction and count "
                                  "flipped preferences (interchange-intervention accuracy)", _steer_options, _steer)


def _mediate_parser(sub: Sub) -> None:
    _circuit_parser(sub, "mediate", "causal mediation (Finlayson et al. 2021): total, natural direct and indirect "
                                    "effects per layer, head and MLP unit", _mediation_options, _mediate)


def _ablate_parser(sub: Sub) -> None:
    _circuit_parser(sub, "ablate", "zero / mean / resample ablation of heads or MLP units against random units of "
                                   "the same layers; accuracy change per set, faithfulness", _ablation_options, _ablate)


def _reproduce_parser(sub: Sub) -> None:
    rep = sub.add_parser("reproduce", help="published figures vs measured ones, for the registered reproductions")
    rep.add_argument("names", nargs="*", default=["list"], metavar="list|all|NAME",
                     help="list the reproductions (default), run all the short ones, or run the NAMEd ones")
    rep.add_argument("--long", action="store_true", help="with all: also the long ones")
    _data_root_option(rep)
    rep.set_defaults(func=_reproduce)


def _stimuli_parsers(sub: Sub) -> None:
    validate = sub.add_parser("validate", help="check stimulus files; one line per problem")
    validate.add_argument("paths", nargs="+", help="stimulus files or folders")
    _segmentation_option(validate)
    validate.set_defaults(func=_validate)
    new = sub.add_parser("new", help="scaffold a stimulus set (manifest + items) from the template")
    new.add_argument("name", help="the set's name (a letter, then letters, digits, _ or -): writes NAME.yaml and "
                                  "NAME.csv")
    new.add_argument("--dir", default=".", help="folder to write into (default: current folder)")
    new.set_defaults(func=_new)
    sub.add_parser("batteries", help="list the batteries with their set and item counts").set_defaults(
        func=_batteries)


def _tool_parsers(sub: Sub) -> None:
    sub.add_parser("models", help="list the embedded offline models").set_defaults(func=_models)
    cache = sub.add_parser("cache", help="list or clear the score cache (and converted models)")
    cache.add_argument("action", choices=["ls", "clear"], help="ls: list the entries; clear: delete them")
    cache.add_argument("--model", help="only entries whose model id contains this")
    cache.add_argument("--models", action="store_true", help="clear: also delete the converted models")
    cache.set_defaults(func=_cache)


def _sae_common(parser: argparse.ArgumentParser) -> None:
    for add in (_model_options, _scoring_options, _stimulus_options, _run_options):
        add(parser)


def _sae_train_parser(sae: Sub) -> None:
    train = sae.add_parser("train", help="harvest token activations at a site and train an SAE (SAELens layout)")
    _sae_common(train)
    group = train.add_argument_group("SAE")
    group.add_argument("--site", required=True, help="the site the SAE reads, e.g. resid.15")
    group.add_argument("--corpus", nargs="+", choices=["naturalstories", "ucl"],
                       help="naturalistic text added to the stimuli (from PSYLING_DATA or ../shared/data)")
    group.add_argument("--activations", help="train on an earlier harvest (an activations folder) instead")
    group.add_argument("--architecture", default="topk", choices=["topk", "batchtopk", "relu"],
                       help="TopK, BatchTopK or ReLU (L1-penalised) SAE (default topk)")
    group.add_argument("--k", type=int, default=32, help="active latents per token (TopK, BatchTopK; default 32)")
    group.add_argument("--latents", type=int, help="dictionary size (default 8 x the site's width)")
    group.add_argument("--tokens", type=int, help="training tokens (default: one pass over the harvest)")
    group.add_argument("--train-batch", type=int, default=4096, help="tokens per training step (default 4096)")
    group.add_argument("--lr", type=float, help="learning rate (default 2e-4 / sqrt(latents / 2^14))")
    group.add_argument("--l1-coeff", type=float, help="L1 penalty of a ReLU SAE (default 5 / sqrt(d_in))")
    group.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batches (default 0)")
    group.add_argument("--max-harvest", type=int, help="stop harvesting after this many tokens")
    group.add_argument("--activation-dtype", default="float32", choices=list(ACTIVATION_DTYPES),
                       help="how harvested activations are stored (default float32)")
    _output_options(train)
    train.set_defaults(func=_sae_train)


def _sae_folder_parser(sae: Sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """An SAE command on an SAE folder: the folder, then model, scoring, stimulus and run options."""
    parser = sae.add_parser(name, help=help_text)
    parser.add_argument("sae", type=Path, help="the SAE folder (SAELens or sparsify layout)")
    _sae_common(parser)
    return parser


def _sae_eval_parser(sae: Sub) -> None:
    ev = _sae_folder_parser(sae, "eval", "an SAE's L0, FVU, dead latents, CE / KL recovered and effect preservation")
    ev.add_argument("--no-effects", action="store_true", help="skip effect preservation (reconstruction only)")
    _output_options(ev)
    ev.set_defaults(func=_sae_eval)


def _sae_features_parser(sae: Sub) -> None:
    ft = _sae_folder_parser(sae, "features", "latents that carry each set's contrast, their contexts and ablation")
    ft.add_argument("--region", default="critical", choices=["critical", "before"],
                    help="compare the latents at the critical region (default) or at the region before it, whose "
                         "last token predicts the critical word (where ablation can change M)")
    ft.add_argument("--per-factor", type=int, default=3, help="top latents per factor to report and ablate")
    ft.add_argument("--contexts", type=int, default=10, help="top-activating contexts per latent (default 10)")
    ft.add_argument("--no-training-text", action="store_true",
                    help="skip the top contexts in the SAE's training text (a pass over its harvest)")
    _output_options(ft)
    ft.set_defaults(func=_sae_features)


def _sae_parser(sub: Sub) -> None:
    parser = sub.add_parser("sae", help="sparse autoencoders: train, eval, features")
    sae = parser.add_subparsers(dest="sae_command", required=True, metavar="COMMAND", help="the SAE command")
    for add in (_sae_train_parser, _sae_eval_parser, _sae_features_parser):
        add(sae)


def _sweep_parser(sub: Sub) -> None:
    from .sweep.commands import add_sweep_parser

    add_sweep_parser(sub)


COMMANDS: tuple[Callable[[Sub], None], ...] = (
    _run_parser, _lens_parser, _check_parser, _evaluate_parser, _analyze_parser, _compare_parser, _report_parser,
    _probe_parser, _encode_parser, _patch_parser, _mediate_parser, _ablate_parser, _steer_parser, _sae_parser,
    _sweep_parser, _reproduce_parser, _stimuli_parsers, _tool_parsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyling", description="Artificial psycholinguistics test suite.")
    parser.add_argument("--version", action="version", version=f"psyling {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="psyling COMMAND -h for its options")
    for add in COMMANDS:
        add(sub)
    return parser


@contextlib.contextmanager
def _library_progress(shown: bool):
    """With ``shown`` False (``--quiet``), no progress bars from the libraries either (transformers' weight
    loading, GGUF conversion), not only psyling's own; restored afterwards."""
    if shown:
        yield
        return
    from transformers.utils import logging as hf_logging

    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    hf_logging.disable_progress_bar()
    try:
        with quiet():
            yield
    finally:
        hf_logging.enable_progress_bar()
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="psyling: %(message)s", level=logging.WARNING)
    try:
        with _library_progress(not getattr(args, "quiet", False)):
            return args.func(args)
    except PsylingError as exc:
        print(f"psyling: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("psyling: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
