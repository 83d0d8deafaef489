"""Train a tiny GPT-2 from scratch on the naturalistic corpora and save log-spaced checkpoints.

The checkpoints stand in for a published training trajectory (Pythia's ``stepN`` revisions) where the Hugging
Face hub cannot be reached: ``psyling sweep`` runs a battery over them and fits the step at which each
phenomenon emerges. The model is trained on the texts of Natural Stories (10 stories) and the UCL corpus (205
sentences) read from $PSYLING_DATA, with the tokenizer of the embedded ``smollm2-135m``, on the CPU, seeded.
A model trained for minutes on ~12k words learns little beyond word frequencies; see analyses/README.md.

    python analyses/train_checkpoints.py --out /tmp/traj/ckpt [--steps 1 3 10 30 100 300] [--seed 0]

writes OUT/checkpoint-STEP (model + tokenizer, save_pretrained) and a sweep file (analyses/sweep_trajectory.yaml
with its checkpoint glob pointed at OUT; default OUT/sweep.yaml)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from psyling.stimuli.corpora import load_natural_stories, load_ucl

TEMPLATE = Path(__file__).with_name("sweep_trajectory.yaml")
TEMPLATE_GLOB = "checkpoint-*"


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how: the model's size, the batches, the optimiser and the checkpoint steps."""
    out: Path
    steps: tuple[int, ...] = (1, 3, 10, 30, 100, 300)
    seed: int = 0
    layers: int = 2
    width: int = 128
    heads: int = 4
    context: int = 128
    batch: int = 8
    learning_rate: float = 2e-3
    warmup: int = 20
    threads: int = 2


def corpus_texts(data_root: Path) -> list[str]:
    """The texts of Natural Stories (one per story) and of the UCL corpus (one per sentence)."""
    texts = []
    for corpus in (load_natural_stories(data_root), load_ucl(data_root)):
        for item in corpus.stimuli.items:
            texts.extend(condition.text for condition in item.conditions.values())
    return texts


def token_blocks(texts: list[str], tokenizer, context: int) -> torch.Tensor:
    """All texts tokenized, each followed by the end-of-text token, concatenated and cut into rows of
    ``context`` tokens (the incomplete last row dropped)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    rows = len(ids) // context
    if rows == 0:
        raise SystemExit(f"the corpus has {len(ids)} tokens, fewer than one block of {context}")
    return torch.tensor(ids[:rows * context]).view(rows, context)


def new_model(config: TrainConfig, tokenizer):
    """A randomly initialised GPT-2 with the tokenizer's vocabulary (seeded by the caller)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=config.context, n_embd=config.width,
                      n_layer=config.layers, n_head=config.heads, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(gpt2)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to the peak rate, then constant (the checkpoints sample one run, not a schedule's end)."""
    return config.learning_rate * min(1.0, step / config.warmup)


@dataclass(frozen=True)
class Vocabulary:
    """The token ids the corpus uses, and each vocabulary id's position among them (-1 when unused)."""
    ids: torch.Tensor
    position: torch.Tensor

    @classmethod
    def of(cls, blocks: torch.Tensor) -> "Vocabulary":
        ids = torch.unique(blocks)
        position = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        position[ids] = torch.arange(len(ids))
        return cls(ids, position)


def corpus_softmax_loss(model, batch: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """Next-token cross-entropy with the softmax over the corpus's token types only (the tied output embedding
    restricted to their rows): the same gradient the full softmax gives those rows minus the push-down of
    tokens that never occur, at a fraction of the cost of 49k-way logits on a CPU."""
    hidden = model.transformer(input_ids=batch).last_hidden_state[:, :-1]
    logits = hidden @ model.transformer.wte.weight[vocabulary.ids].T
    targets = vocabulary.position[batch[:, 1:]]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def save_checkpoint(model, tokenizer, out: Path, step: int) -> Path:
    """``out/checkpoint-STEP`` with the model and the tokenizer, as save_pretrained writes them."""
    folder = out / f"checkpoint-{step}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train(config: TrainConfig, blocks: torch.Tensor, tokenizer) -> list[dict]:
    """Train for max(steps) optimiser steps on random batches of blocks; save and log at each checkpoint step.
    Returns one record per checkpoint: step, mean training loss since the previous one, elapsed seconds."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = new_model(config, tokenizer)
    vocabulary = Vocabulary.of(blocks)
    print(f"training softmax over the corpus's {len(vocabulary.ids)} token types of {len(tokenizer)}", flush=True)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    wanted, records, losses, start = set(config.steps), [], [], time.perf_counter()
    for step in range(1, max(config.steps) + 1):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config)
        batch = blocks[torch.randint(len(blocks), (config.batch,), generator=generator)]
        loss = corpus_softmax_loss(model, batch, vocabulary)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if step in wanted:
            save_checkpoint(model, tokenizer, config.out, step)
            record = {"step": step, "loss": sum(losses) / len(losses), "seconds": time.perf_counter() - start}
            print(f"step {step:5d}  train loss {record['loss']:.3f} nats/token  {record['seconds']:.1f} s",
                  flush=True)
            records.append(record)
            losses = []
    return records


def write_sweep(out: Path, sweep_file: Path) -> Path:
    """The sweep template with its checkpoint glob made relative to the sweep file's folder."""
    sweep_file = sweep_file.expanduser().resolve()
    relative = Path(os.path.relpath(out.resolve(), sweep_file.parent)) / TEMPLATE_GLOB
    text = TEMPLATE.read_text(encoding="utf-8")
    if f"checkpoints: {TEMPLATE_GLOB}" not in text:
        raise SystemExit(f"{TEMPLATE}: expected a line 'checkpoints: {TEMPLATE_GLOB}'")
    sweep_file.parent.mkdir(parents=True, exist_ok=True)
    sweep_file.write_text(text.replace(f"checkpoints: {TEMPLATE_GLOB}", f"checkpoints: {relative.as_posix()}"),
                          encoding="utf-8")
    return sweep_file


def parse_args(argv: list[str]) -> tuple[TrainConfig, Path]:
    """The training config and the sweep file to write, from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint-STEP (outside the repo)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(TrainConfig.steps),
                        help="optimiser steps at which to save (each >= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", type=Path, help="where to write the sweep file (default OUT/sweep.yaml)")
    args = parser.parse_args(argv)
    if min(args.steps) < 1:
        parser.error("--steps must all be >= 1")
    config = TrainConfig(out=args.out.expanduser().resolve(), steps=tuple(sorted(set(args.steps))), seed=args.seed)
    return config, args.sweep or config.out / "sweep.yaml"


def main(argv: list[str] | None = None) -> int:
    """Load the corpora and the tokenizer, train, save the checkpoints and the sweep file."""
    from psyling.models.loading import load_model
    config, sweep_file = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(config.threads)
    data_root = Path(os.environ.get("PSYLING_DATA", "/work/shared/data"))
    tokenizer = load_model("smollm2-135m").tokenizer
    blocks = token_blocks(corpus_texts(data_root), tokenizer, config.context)
    print(f"{blocks.numel()} training tokens in {len(blocks)} blocks of {config.context}; "
          f"{config.layers} layers, width {config.width}, batch {config.batch}, seed {config.seed}", flush=True)
    config.out.mkdir(parents=True, exist_ok=True)
    train(config, blocks, tokenizer)
    print(f"sweep file: {write_sweep(config.out, sweep_file)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
