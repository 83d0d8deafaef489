"""The forward passes of a patching experiment: a chunk of items' sequences in one context laid out as one
batch (a tree row per item, its two continuations sharing the context; or one padded row per sequence), the
unpatched pass that caches every site, and copies of that batch for patched variants that start from a cached
layer input (``ForwardRunner.run_inputs(start=...)``).

Sequence ``2 * j + s`` of a context batch is item j's sequence with continuation s (good, bad); in the k-th copy
of a tiled batch the flat position ``f`` of the base batch is ``k * rows * width + f``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.forward import ForwardPass, ForwardRunner, ModelInputs, batch_inputs
from ..models.hooks import Intervention
from ..models.packing import Batch, Row
from .circuit_metric import MetricReader, MetricValues, ReadLogits, context_metric, read_positions
from .pair_sequences import CONTINUATIONS, ItemSequences


@dataclass(frozen=True)
class Layout:
    """How a context's sequences are laid out: tree rows (shared context computed once) or padded rows."""
    tree: bool = True
    padding_side: str = "right"


def _item_rows(seqs: ItemSequences, context: str, tree: bool) -> list[Row]:
    """An item's two sequences in one context: one tree row whose nodes the continuations share only up to the
    end of the context (so that a continuation's token can be patched for that continuation alone, even where
    the other continuation begins with the same token), or one padded row each."""
    sequences = [seqs.encoded[(context, cont)].sequence for cont in CONTINUATIONS]
    if not tree:
        return [Row(list(s), list(range(len(s))), list(range(-1, len(s) - 1)), {0: list(range(len(s)))})
                for s in sequences]
    ends = [len(seqs.encoded[(context, cont)].context) + seqs.critical[(context, cont)].start for cont in CONTINUATIONS]
    shared = ends[0] if ends[0] == ends[1] and sequences[0][:ends[0]] == sequences[1][:ends[0]] else 0
    row = Row(list(sequences[0][:shared]), list(range(shared)), list(range(-1, shared - 1)), {})
    for s, sequence in enumerate(sequences):
        at = len(row.tokens)
        rest = sequence[shared:]
        row.tokens += rest
        row.positions += list(range(shared, len(sequence)))
        row.parents += [shared - 1 if k == 0 else at + k - 1 for k in range(len(rest))]
        row.paths[s] = list(range(shared)) + list(range(at, at + len(rest)))
    return [row]


def context_inputs(chunk: Sequence[ItemSequences], context: str, layout: Layout) -> ModelInputs:
    """One batch of the chunk's sequences in ``context``; ``columns[2 * j + s]`` is item j, continuation s."""
    rows = [row for seqs in chunk for row in _item_rows(seqs, context, layout.tree)]
    return batch_inputs(Batch(rows, layout.tree), layout.padding_side)


def tile(inputs: ModelInputs, copies: int) -> ModelInputs:
    """``copies`` copies of a batch, one after the other (the flat positions of copy k shifted by k * size)."""
    size = inputs.input_ids.numel()
    mask_repeat = (copies,) + (1,) * (inputs.attention_mask.dim() - 1)
    return ModelInputs(inputs.input_ids.repeat(copies, 1), inputs.attention_mask.repeat(*mask_repeat),
                       None if inputs.position_ids is None else inputs.position_ids.repeat(copies, 1),
                       [[c + k * size for c in cols] for k in range(copies) for cols in inputs.columns])


@dataclass
class ContextRun:
    """The unpatched pass of a chunk in one context: its inputs, the recorded sites and each item's metric."""
    context: str
    chunk: list[ItemSequences]
    inputs: ModelInputs
    forward: ForwardPass
    values: list[MetricValues]

    def flat(self, item: int, continuation: int, position: int) -> int:
        """The flat position of a sequence position of item ``item``'s sequence ``continuation``."""
        return self.inputs.columns[2 * item + continuation][position]

    def read(self, copy: int = 0) -> list[int]:
        """The flat positions the metric reads, item by item and continuation by continuation (in copy k)."""
        size = self.inputs.input_ids.numel()
        return [copy * size + self.flat(j, s, p) for j, seqs in enumerate(self.chunk)
                for s, cont in enumerate(CONTINUATIONS) for p in read_positions(seqs, (self.context, cont))]


def metrics_from_read(logits: torch.Tensor, chunk: Sequence[ItemSequences], context: str,
                      reader: MetricReader) -> list[MetricValues]:
    """Each item's metric from logits at the positions ``ContextRun.read`` lists (one copy), in that order."""
    values, at = [], 0
    log_z, log_bow, _ = reader.statistics.log_masses(logits.clone())
    for seqs in chunk:
        per_cont = {}
        for cont in CONTINUATIONS:
            n = len(read_positions(seqs, (context, cont)))
            per_cont[cont] = ReadLogits(logits[at:at + n], log_z[at:at + n], log_bow[at:at + n])
            at += n
        values.append(context_metric(per_cont, seqs, context, reader))
    return values


def run_context(runner: ForwardRunner, reader: MetricReader, chunk: list[ItemSequences], context: str,
                layout: Layout, record: Sequence[str], copies: int = 1,
                interventions: Sequence[Intervention] = ()) -> ContextRun:
    """The unpatched pass of a chunk in ``context`` (or one under ``interventions`` at every sequence, e.g. an
    ablation), recording ``record`` and reading the metric; run as ``copies`` identical copies (of which the
    first is kept), the shape of every patched pass of the chunk."""
    inputs = context_inputs(chunk, context, layout)
    run = ContextRun(context, chunk, inputs, None, [])  # type: ignore[arg-type]
    read = torch.tensor([f for k in range(copies) for f in run.read(k)], dtype=torch.long)
    forward = runner.run_inputs(tile(inputs, copies), record=record, read=read, interventions=interventions)
    size = inputs.input_ids.numel()
    forward.recorded = {site: value[:size] for site, value in forward.recorded.items()}
    forward.columns = inputs.columns
    run.forward = forward
    run.values = metrics_from_read(forward.logits[:len(run.read())], chunk, context, reader)
    forward.logits = None
    return run
