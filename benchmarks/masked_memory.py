"""Benchmark: peak memory of masked-LM (PLL) scoring of one long sentence, bounded batches vs one batch.

    python3 benchmarks/masked_memory.py [--layers 12] [--words 300] [--vocab 30000] [--max-tokens 4096]

Builds a RANDOM BERT-base-sized masked LM (BertConfig defaults: 768 dims, 12 heads, 3072 intermediate; depth from
--layers) with a WordPiece vocabulary made in memory from wordfreq's most frequent English words (no download),
and scores one sentence of --words words (some rare words split into several pieces) with MaskedScorer:
every token is scored in its own masked copy, so the work is copies x length token positions. Each setting runs
in a fresh subprocess and reports its peak resident set size (getrusage ru_maxrss):
- bounded: rows x length <= --max-tokens per forward pass;
- one batch: every masked copy of the sentence in a single forward pass.
Prints figures only; nothing here is a test. The acceptance target is a bounded peak under 2 GB.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(vocab_size: int):
    """BERT-style fast tokenizer: specials, characters and ##characters, then wordfreq's top lowercase words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from wordfreq import top_n_list

    chars = [chr(c) for c in range(33, 127)]
    pieces = SPECIALS + chars + [f"##{c}" for c in chars]
    words = [w for w in top_n_list("en", 2 * vocab_size) if w.isascii() and w.isalpha() and w not in pieces]
    vocab = {piece: i for i, piece in enumerate((pieces + words)[:vocab_size])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def sentence(n_words: int, vocab_size: int) -> str:
    """n words: mostly in-vocabulary words, one in twenty a rarer word (split into characters), full stops."""
    from wordfreq import top_n_list

    common = [w for w in top_n_list("en", vocab_size // 2) if w.isascii() and w.isalpha()]
    rare = [w for w in top_n_list("en", 4 * vocab_size)[2 * vocab_size:] if w.isascii() and w.isalpha()]
    rng = random.Random(0)
    words = [rng.choice(rare if i % 20 == 19 else common) for i in range(n_words)]
    return " ".join(w + ("." if i % 15 == 14 else "") for i, w in enumerate(words))


def child(layers: int, n_words: int, vocab_size: int, max_tokens: int | None) -> dict:
    """Build the model, score the sentence once, and return the figures (run in a fresh process)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from psyling.models import LanguageModel, ScoreRequest
    from psyling.models.masked import MaskedScorer

    tokenizer = wordpiece_tokenizer(vocab_size)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), num_hidden_layers=layers,
                                       pad_token_id=tokenizer.pad_token_id)).eval()
    lm = LanguageModel(model, tokenizer, {"id": "random-bert", "vocab_size": len(tokenizer)})
    text = sentence(n_words, vocab_size)
    width = len(tokenizer(text)["input_ids"])
    copies = width - 2
    budget = max_tokens or copies * width
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    scored = MaskedScorer(lm, max_tokens=budget, progress=False).score([ScoreRequest(("bench",), text)])[0]
    return {"rows_per_pass": max(1, budget // width), "copies": copies, "length": width,
            "seconds": time.perf_counter() - started, "sum_logprob": float(scored.logprob.sum()),
            "peak_rss_before_scoring_mb": before / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=30000)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--only", choices=["bounded", "one-batch"], help="run one setting only")
    parser.add_argument("--child", choices=["bounded", "one-batch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        max_tokens = args.max_tokens if args.child == "bounded" else None
        print(json.dumps(child(args.layers, args.words, args.vocab, max_tokens)))
        return
    base = [sys.executable, __file__, "--layers", str(args.layers), "--words", str(args.words),
            "--vocab", str(args.vocab), "--max-tokens", str(args.max_tokens)]
    for setting in [args.only] if args.only else ["bounded", "one-batch"]:
        out = subprocess.run(base + ["--child", setting], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        label = f"max_tokens={args.max_tokens}" if setting == "bounded" else "all copies in one batch"
        print(f"{label:<24} {r['copies']} copies x {r['length']} tokens, {r['rows_per_pass']} rows/pass: "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB (model built: {r['peak_rss_before_scoring_mb']:.0f} MB), "
              f"{r['seconds']:.1f} s, sum log P {r['sum_logprob']:.4f} nats "
              f"({args.layers} layers, {r['n_parameters'] / 1e6:.0f}M parameters)", flush=True)


if __name__ == "__main__":
    main()
