"""Benchmark: sentence-scoring throughput of psyling's Scorer against a plain transformers loop, minicons and
lm-evaluation-harness, on the same BLiMP sentences with one loaded model.

    python3 benchmarks/throughput.py [--model smollm2-135m] [--pairs 500] [--tools psyling,plain,minicons,lmeval]
        [--batch-size 64] [--device cpu] [--dtype float32] [--repeat 1] [--psyling-options key=value,...]
        [--json PATH]

Each tool scores all 2 x pairs sentences (good and bad of each pair) at the same batch size; the clock runs around
the scoring call only, after an untimed warm-up of that tool on a few sentences. Tokens are counted alike for all
tools: the sentence's own tokens, tokenizer(sentence, add_special_tokens=False), no context token. With --repeat N
the best of N runs is reported. The tools do not all compute the same number (lm-eval scores " " + sentence after
BOS; minicons leaves the first token unscored); only plain and psyling must agree, and the script prints by how
much they do. Sentences come from the data root (PSYLING_DATA or ../shared/data). Prints figures; not a test.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psyling.errors import PsylingError
from psyling.models import CausalScorer, LanguageModel, ScoreRequest, load_model
from psyling.stimuli import data_root

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the reference adapters

TOOLS = ("psyling", "plain", "minicons", "lmeval")
N_WARMUP = 8


def blimp_sentences(pairs: int, root: Path | None = None) -> list[str]:
    """2 x pairs BLiMP sentences (good, bad, good, ...): line j of every paradigm file in turn, for
    j < ceil(pairs / n_files), trimmed to ``pairs`` pairs, so every paradigm is represented."""
    folder = (root or data_root()) / "blimp" / "data"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise PsylingError(f"no BLiMP paradigm files (*.jsonl) in {folder}: set PSYLING_DATA to the data root")
    per_file = math.ceil(pairs / len(files))
    heads = [path.read_text().splitlines()[:per_file] for path in files]
    out: list[str] = []
    for j in range(per_file):
        for lines in heads:
            if j < len(lines) and len(out) < 2 * pairs:
                pair = json.loads(lines[j])
                out += [pair["sentence_good"], pair["sentence_bad"]]
    if len(out) < 2 * pairs:
        raise PsylingError(f"{folder} holds fewer than {pairs} pairs in its first {per_file} lines per file")
    return out


def run_psyling(lm: LanguageModel, sents: list[str], args: argparse.Namespace, **extra: Any) -> np.ndarray:
    """psyling's CausalScorer (extra: ScoringOptions fields from --psyling-options); raw sums of token log-probs (nats)."""
    scorer = CausalScorer(lm, batch_size=args.batch_size, progress=False, **extra)
    results = scorer.score([ScoreRequest((i,), s) for i, s in enumerate(sents)])
    return np.array([r.logprob.sum() for r in results], dtype=float)


@torch.no_grad()
def run_plain(lm: LanguageModel, sents: list[str], args: argparse.Namespace) -> np.ndarray:
    """A length-sorted transformers loop: [BOS, else EOS] + sentence tokens, right padding, attention mask,
    float32 log-softmax; sum of the sentence tokens' log-probs (nats)."""
    tok, model = lm.tokenizer, lm.model
    context = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    seqs = [[context, *ids] for ids in tok(sents, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    sums = np.zeros(len(seqs))
    for start in range(0, len(order), args.batch_size):
        batch = order[start:start + args.batch_size]
        width = max(len(seqs[i]) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        lsm = torch.log_softmax(logits.float(), dim=-1)
        target = lsm.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        sums[batch] = target.sum(1).double().cpu().numpy()
    return sums


def run_minicons(lm: LanguageModel, sents: list[str], args: argparse.Namespace) -> np.ndarray:
    from references import minicons_sequence_loglik
    return minicons_sequence_loglik(lm.model, lm.tokenizer, sents, batch_size=args.batch_size)


def run_lmeval(lm: LanguageModel, sents: list[str], args: argparse.Namespace) -> np.ndarray:
    from references import lmeval_blimp_loglik
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its warning about an in-memory model, every call
    return lmeval_blimp_loglik(lm.model, lm.tokenizer, sents, batch_size=args.batch_size)


def parse_options(text: str) -> dict[str, Any]:
    """'a=1,b=true,c=x' -> {'a': 1, 'b': True, 'c': 'x'}."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise PsylingError(f"--psyling-options: {item!r} is not key=value")
        low = value.strip().lower()
        options[key.strip()] = (True if low == "true" else False if low == "false"
                                else int(low) if low.lstrip("-").isdigit() else value.strip())
    return options


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "device": args.device, "dtype": args.dtype, "cpu": platform.processor() or platform.machine()}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    for package in ("lm_eval", "minicons"):
        try:
            info[package] = __import__(package).__version__
        except (ImportError, AttributeError):
            info[package] = None
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_tool(run: Callable[[], np.ndarray], device: str, repeat: int) -> tuple[list[float], np.ndarray, int]:
    """Seconds of each of ``repeat`` runs, the last run's values and (on CUDA) the peak memory in bytes."""
    seconds, values, peak = [], np.array([]), 0
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        values = run()
        sync(device)
        seconds.append(time.perf_counter() - start)
        if device.startswith("cuda"):
            peak = max(peak, torch.cuda.max_memory_allocated())
    return seconds, values, peak


def table(figures: dict[str, dict[str, Any]], cuda: bool) -> str:
    def relative(tool: str, ref: str) -> str:
        return f"{figures[ref]['seconds'] / figures[tool]['seconds']:.2f}x" if ref in figures else "-"
    head = f"{'tool':<10}{'seconds':>10}{'tokens/s':>12}{'vs lm-eval':>12}{'vs minicons':>13}"
    lines = [head + (f"{'peak GiB':>10}" if cuda else ""), "-" * (len(head) + (10 if cuda else 0))]
    for tool, fig in figures.items():
        line = (f"{tool:<10}{fig['seconds']:>10.3f}{fig['tokens_per_s']:>12.0f}"
                f"{relative(tool, 'lmeval'):>12}{relative(tool, 'minicons'):>13}")
        lines.append(line + (f"{fig['peak_bytes'] / 2**30:>10.2f}" if cuda else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per tool; the best is reported")
    parser.add_argument("--psyling-options", default="", help="extra ScoringOptions fields, e.g. a=1,b=true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    try:
        tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        unknown = sorted(set(tools) - set(TOOLS))
        if unknown or not tools:
            raise PsylingError(f"--tools: unknown {unknown or 'none given'} (choose from {', '.join(TOOLS)})")
        if min(args.pairs, args.repeat, args.batch_size) < 1:
            raise PsylingError("--pairs, --repeat and --batch-size must be at least 1")
        extra = parse_options(args.psyling_options)
        sents = blimp_sentences(args.pairs)
        lm = load_model(args.model, dtype=args.dtype, device=args.device)
    except PsylingError as exc:
        sys.exit(f"error: {exc}")
    runners: dict[str, Callable[[list[str]], np.ndarray]] = {
        "psyling": lambda s: run_psyling(lm, s, args, **extra), "plain": lambda s: run_plain(lm, s, args),
        "minicons": lambda s: run_minicons(lm, s, args), "lmeval": lambda s: run_lmeval(lm, s, args)}
    n_tokens = sum(len(ids) for ids in lm.tokenizer(sents, add_special_tokens=False)["input_ids"])
    info = machine_info(args)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"model {args.model} ({lm.info.get('class')}), {len(sents)} sentences ({args.pairs} BLiMP pairs), "
          f"{n_tokens} tokens, batch {args.batch_size}, best of {args.repeat}"
          + (f", psyling options {extra}" if extra else ""))
    with torch.no_grad():  # one untimed forward: allocator, kernels, threads
        lm.model(input_ids=torch.tensor([[lm.tokenizer.eos_token_id or 0] * 8], device=lm.device))
    figures: dict[str, dict[str, Any]] = {}
    values: dict[str, np.ndarray] = {}
    for tool in tools:
        runners[tool](sents[:N_WARMUP])  # untimed: imports, adapter set-up
        seconds, values[tool], peak = time_tool(lambda run=runners[tool]: run(sents), args.device, args.repeat)
        best = min(seconds)
        figures[tool] = {"seconds": best, "all_seconds": seconds, "tokens_per_s": n_tokens / best,
                         "peak_bytes": peak, "finite": bool(np.isfinite(values[tool]).all())}
    print(table(figures, args.device.startswith("cuda")))
    agreement = {}
    if "plain" in values and "psyling" in values:
        agreement["plain_vs_psyling_max_abs_nats"] = float(np.abs(values["plain"] - values["psyling"]).max())
        print(f"agreement plain vs psyling (raw sentence sums): max |diff| "
              f"{agreement['plain_vs_psyling_max_abs_nats']:.2e} nats over {len(sents)} sentences")
    for tool, fig in figures.items():
        if not fig["finite"]:
            print(f"warning: {tool} returned non-finite scores")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": info, "model": lm.info, "pairs": args.pairs, "n_sentences": len(sents), "n_tokens": n_tokens,
            "batch_size": args.batch_size, "repeat": args.repeat, "psyling_options": extra, "tools": figures,
            "agreement": agreement}, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
