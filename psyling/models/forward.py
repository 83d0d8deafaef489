"""The forward runner: the one place that builds a model's inputs, runs its forward pass under hooks and maps
each sequence back to its rows and columns. Scoring, masked scoring, the logit lens, patching and SAE splicing
are its clients.

A batch comes from ``psyling.models.packing``: padded rows (one sequence per row, right or left padding) or
packed rows (a prefix trie with a tree attention mask, position ids = depth). Outputs are flat: position
``r * width + c`` is column c of row r, and ``ForwardPass.columns[i]`` lists the flat positions of the i-th
sequence of the batch (``Batch.order``), context token included. ``Intervention``s address a sequence of the
batch and its token positions; the runner turns them into flat positions."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import ModelError
from .architecture import architecture, get_path
from .hooks import Hooks, Intervention, Placed, parse_site
from .loading import LanguageModel
from .packing import Batch, padded_plan


@dataclass
class ModelInputs:
    """Tensors for one forward pass ([rows, width]; ``attention_mask`` [rows, 1, width, width] for tree
    batches), and the flat positions of each sequence."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: Optional[torch.Tensor]
    columns: list[list[int]]


@dataclass
class ForwardPass:
    """What a forward pass gives back: flat logits [rows * width, vocab] (None when not kept), each sequence's
    flat positions, and the recorded sites, flat [rows * width, d]."""
    logits: Optional[torch.Tensor]
    columns: list[list[int]]
    recorded: dict[str, torch.Tensor] = field(default_factory=dict)
    graph_nodes: dict[str, torch.Tensor] = field(default_factory=dict)  # gradient mode: the tensors as computed

    def at(self, site: str, sequence: int) -> torch.Tensor:
        """The recorded activation of one sequence at a site: [its tokens, d], context token first."""
        index = torch.tensor(self.columns[sequence], device=self.recorded[site].device)
        return self.recorded[site][index]

    def gradients(self, metric: torch.Tensor, sites: Sequence[str]) -> dict[str, torch.Tensor]:
        """d metric / d activation at recorded sites (gradient mode), flat [rows * width, d] like ``recorded``."""
        missing = [s for s in sites if s not in self.graph_nodes]
        if missing:
            raise ModelError(f"no gradient for {missing[0]}: record it in gradient mode (grad=True)")
        nodes = [self.graph_nodes[s] for s in sites]
        grads = torch.autograd.grad(metric, nodes, allow_unused=True)  # unused: the metric does not depend on it
        return {site: (torch.zeros_like(node) if g is None else g).reshape(-1, node.shape[-1])
                for site, node, g in zip(sites, nodes, grads)}

    def sequence_logits(self, sequence: int) -> torch.Tensor:
        """The logits at one sequence's positions: [its tokens, vocab]."""
        return self.logits[torch.tensor(self.columns[sequence], device=self.logits.device)]


def batch_inputs(batch: Batch, padding_side: str = "right") -> ModelInputs:
    """Input ids, attention mask, position ids and sequence columns of a planned batch (tree batches ignore
    the padding side: their rows start at column 0)."""
    width, n_rows = batch.width, len(batch.rows)
    input_ids = torch.zeros((n_rows, width), dtype=torch.long)
    positions = torch.zeros((n_rows, width), dtype=torch.long)
    starts = []
    for r, row in enumerate(batch.rows):
        start = width - len(row) if padding_side == "left" and not batch.tree else 0
        starts.append(start)
        input_ids[r, start:start + len(row)] = torch.tensor(row.tokens)
        positions[r, start:start + len(row)] = torch.tensor(row.positions)
    if batch.tree:
        mask = torch.from_numpy(np.stack([row.ancestor_mask(width) for row in batch.rows]))[:, None]
    else:
        mask = torch.zeros((n_rows, width), dtype=torch.long)
        for r, row in enumerate(batch.rows):
            mask[r, starts[r]:starts[r] + len(row)] = 1
    columns = [[r * width + starts[r] + j for j in row.paths[i]] for r, row in enumerate(batch.rows)
               for i in sorted(row.paths)]
    return ModelInputs(input_ids, mask, positions, columns)


def place(interventions: Sequence[Union[Intervention, Placed]], inputs: ModelInputs) -> list[Placed]:
    """Flat positions of each intervention (one already ``Placed`` is kept as it is). A position that a packed
    row shares between sequences changes only if the intervention selects it in every one of them (else: run
    such sequences padded)."""
    owners: dict[int, set[int]] = {}
    for s, columns in enumerate(inputs.columns):
        for c in columns:
            owners.setdefault(c, set()).add(s)
    return [iv if isinstance(iv, Placed) else
            Placed(iv, torch.tensor(_flat_positions(iv, inputs.columns, owners), dtype=torch.long))
            for iv in interventions]


def _flat_positions(iv: Intervention, columns_of: list[list[int]], owners: dict[int, set[int]]) -> list[int]:
    """The flat positions an intervention selects, checked against sequences and shared packed positions."""
    sequences = range(len(columns_of)) if iv.sequence is None else [iv.sequence]
    chosen_by: dict[int, set[int]] = {}  # flat position -> the sequences that select it, in selection order
    for s in sequences:
        if not 0 <= s < len(columns_of):
            raise ModelError(f"intervention at {iv.site}: sequence {s} is not in the batch "
                             f"({len(columns_of)} sequences)")
        columns = columns_of[s]
        chosen = (range(len(columns)) if iv.positions is None else
                  range(len(columns))[iv.positions] if isinstance(iv.positions, slice) else iv.positions)
        bad = [p for p in chosen if not -len(columns) <= p < len(columns)]
        if bad:
            raise ModelError(f"intervention at {iv.site}: position {bad[0]} is outside sequence {s} "
                             f"({len(columns)} tokens)")
        for p in chosen:
            chosen_by.setdefault(columns[p], set()).add(s)
    if any(chosen_by[c] != owners[c] for c in chosen_by):
        raise ModelError(f"intervention at {iv.site}: it changes a position that a packed row shares with a "
                         "sequence it does not select; run these sequences without prefix reuse")
    return list(chosen_by)


def limit_heap_fragmentation() -> bool:
    """Serve allocations of 1 MiB and more with mmap (glibc ``M_MMAP_THRESHOLD``), so that the variable-size
    batch tensors of a recording run go back to the system when freed. glibc's default threshold adapts
    upwards and then keeps them on the heap, where fragmentation grew the peak memory of a capture run 1.35x
    for 10x the stimuli (1.10x with this, for 1.10x the plain scoring time; a 64 KiB threshold cost 1.18x).
    A no-op (False) where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, 1024 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class ForwardRunner:
    """Runs one model's forward pass: inference mode (no autograd) by default, gradient mode (``grad``) for
    attribution methods, which then read gradients off the recorded sites."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm

    def run(self, batch: Batch, *, padding_side: str = "right", record: Sequence[str] = (),
            interventions: Sequence[Intervention] = (), grad: bool = False) -> ForwardPass:
        """One planned batch through the model; ``record`` sites are returned flat, ``interventions`` applied."""
        return self.run_inputs(batch_inputs(batch, padding_side), record=record, interventions=interventions,
                               grad=grad)

    def run_sequences(self, sequences: Sequence[Sequence[int]], **kwargs: Any) -> ForwardPass:
        """Token sequences as one right-padded batch; sequence i (of interventions and ``columns``) is the i-th
        given."""
        if not sequences:
            raise ModelError("run_sequences needs at least one sequence")
        (batch,) = padded_plan([list(s) for s in sequences], max_tokens=2**62, max_rows=None)
        inputs = batch_inputs(batch)
        where = {i: k for k, i in enumerate(batch.order)}
        inputs.columns = [inputs.columns[where[i]] for i in range(len(sequences))]
        return self.run_inputs(inputs, **kwargs)

    def run_inputs(self, inputs: ModelInputs, *, record: Sequence[str] = (),
                   interventions: Sequence[Union[Intervention, Placed]] = (), grad: bool = False,
                   read: Optional[torch.Tensor] = None,
                   start: Optional[tuple[int, torch.Tensor]] = None, stop: Optional[int] = None) -> ForwardPass:
        """Built inputs through the model. ``read`` (flat positions) applies the output layer to those
        positions only: logits [len(read), vocab] instead of [rows * width, vocab]. ``start`` = (L, resid)
        runs blocks L+1.. on a given residual stream ``resid.L`` ([rows, width, d]), not the layers below
        (activation patching from a cached layer input); sites at or below L are then not recorded. ``stop`` = L
        runs blocks 1..L only and no output layer (activation harvesting): ``logits`` is None and sites above L
        are not recorded."""
        hooks = Hooks(self.lm.model, record, place(interventions, inputs), grad=grad) if record or interventions \
            else None
        _check_range(hooks, start, stop)
        device = self.lm.device
        context = torch.enable_grad() if grad else torch.no_grad()
        if stop is not None:
            read = torch.zeros(0, dtype=torch.long)
        with context, hooks or contextlib.nullcontext(), _read_only(self.lm.model, read), \
                _stopped(self.lm.model, stop), _started(self.lm.model, start) as embeds:
            kwargs = {"position_ids": inputs.position_ids.to(device)} if inputs.position_ids is not None else {}
            kwargs.update({"inputs_embeds": embeds} if embeds is not None else
                          {"input_ids": inputs.input_ids.to(device)})
            logits = self.lm.model(attention_mask=inputs.attention_mask.to(device), use_cache=False,
                                   **kwargs).logits
        flat = None if stop is not None else logits.reshape(-1, logits.shape[-1])
        if flat is not None and read is not None and logits.dim() == 3:  # an output layer that the read hook does not reach
            flat = flat[read.to(flat.device)]
        raw = hooks.recorded if hooks else {}
        recorded = {site: value.reshape(-1, value.shape[-1]) for site, value in raw.items()}
        return ForwardPass(flat, inputs.columns, recorded, dict(raw) if grad else {})


SKIPPABLE = ("llama-like", "gpt-neox")  # families whose forward takes a residual stream as inputs_embeds as is


def _below(site: str, layer: int) -> bool:
    """Whether a site is computed at or below the residual stream ``resid.layer`` (not run from ``layer``)."""
    return parse_site(site).layer <= layer


def _check_range(hooks: Optional[Hooks], start: Optional[tuple[int, torch.Tensor]], stop: Optional[int]) -> None:
    """A one-line error for a recorded or intervened site that a started or stopped pass does not compute."""
    sites = hooks.record + [p.intervention.site for p in hooks.interventions] if hooks else []
    low = [site for site in sites if start is not None and _below(site, start[0])]
    if low:
        raise ModelError(f"site {low[0]} lies below the start layer {start[0]}: it is not computed")
    high = [site for site in sites if stop is not None and not _below(site, stop)]
    if high:
        raise ModelError(f"site {high[0]} lies above the stop layer {stop}: it is not computed")
    if stop is not None and start is not None and stop <= start[0]:
        raise ModelError(f"stop layer {stop} is not above the start layer {start[0]}")


@contextlib.contextmanager
def _cut_blocks(model: Any, keep: slice):
    """The model's block list reduced to ``keep`` for the duration of the context."""
    parent_path, _, name = architecture(model).layout.blocks.rpartition(".")
    parent = get_path(model, parent_path)
    blocks = getattr(parent, name)
    setattr(parent, name, torch.nn.ModuleList(list(blocks)[keep]))
    try:
        yield
    finally:
        setattr(parent, name, blocks)


@contextlib.contextmanager
def _stopped(model: Any, stop: Optional[int]):
    """Run only blocks 1..``stop`` (None: all)."""
    if stop is None:
        yield
        return
    if stop < 1:
        raise ModelError(f"stop layer {stop}: at least one block must run")
    with _cut_blocks(model, slice(None, stop)):
        yield


@contextlib.contextmanager
def _started(model: Any, start: Optional[tuple[int, torch.Tensor]]):
    """Run only the blocks above ``start[0]`` on the residual stream ``start[1]``: the block list is cut for the
    pass and the stream goes in as ``inputs_embeds`` (llama-like and GPT-NeoX models, whose embeddings are
    the whole residual input); other families (GPT-2 adds position embeddings to ``inputs_embeds``) run every
    block with ``resid.L`` replaced, which gives the same numbers. Yields the inputs_embeds (None: none)."""
    if start is None:
        yield None
        return
    layer, resid = start
    arch = architecture(model)
    if arch.family not in SKIPPABLE:
        placed = Placed(Intervention(f"resid.{layer}", "map", lambda x: resid.reshape(-1, resid.shape[-1])
                                     .to(x.device, x.dtype)), torch.arange(resid.shape[0] * resid.shape[1]))
        with Hooks(model, (), [placed]):
            yield None
        return
    embeds = resid.to(next(model.parameters()).device)
    with _cut_blocks(model, slice(layer, None)):
        yield embeds


@contextlib.contextmanager
def _read_only(model: Any, read: Optional[torch.Tensor]):
    """Feed the output layer only the flat positions ``read`` (None: all positions)."""
    head = model.get_output_embeddings()
    if read is None or head is None:
        yield
        return

    def hook(module: torch.nn.Module, args: tuple) -> Optional[tuple]:
        hidden = args[0]
        if hidden.dim() != 3:
            return None
        return (hidden.reshape(-1, hidden.shape[-1])[read.to(hidden.device)], *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
