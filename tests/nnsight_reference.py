"""An independent oracle for residual-stream activation patching, written with nnsight only (no psyling code).

Layers are 1-based decoder blocks: the residual after block L is the output of ``model.model.layers[L - 1]``
(the first element when a block returns a tuple); layer 0, the embeddings, is the input of
``model.model.layers[0]``. The model and tokenizer are deep-copied before nnsight wraps them, because wrapping
replaces module ``forward`` methods and sets the tokenizer's padding side; the caller's objects stay untouched.
Nothing is loaded from the hub: the pre-loaded model and its tokenizer are handed to nnsight."""
from __future__ import annotations

import copy

import nnsight
import torch


def _block_output(envoy, layer: int):
    """The nnsight proxy of the residual stream after block ``layer`` (a block may return a tuple)."""
    output = envoy.model.layers[layer - 1].output
    return output[0] if isinstance(output, tuple) else output


def nnsight_resid_patch(hf_model: torch.nn.Module, tokenizer, target_ids: list[int], source_ids: list[int],
                        layer: int, target_positions: list[int], source_positions: list[int]) -> torch.Tensor:
    """Float32 logits [len(target_ids), vocab] of ``target_ids`` run with the residual stream at ``layer``
    and ``target_positions`` replaced by that of ``source_ids`` at ``source_positions`` (one sequence each)."""
    if len(target_positions) != len(source_positions):
        raise ValueError(f"{len(target_positions)} target positions but {len(source_positions)} source positions")
    model = nnsight.TransformersModel(copy.deepcopy(hf_model), tokenizer=copy.deepcopy(tokenizer),
                                      task="text-generation")
    source, target = torch.tensor([source_ids]), torch.tensor([target_ids])
    with torch.no_grad():
        with model.trace(source):
            if layer == 0:
                donor = model.model.layers[0].input[:, source_positions].clone().save()
            else:
                donor = _block_output(model, layer)[:, source_positions].clone().save()
        with model.trace(target):
            if layer == 0:
                patched = model.model.layers[0].input.clone()
                patched[:, target_positions] = donor
                model.model.layers[0].input = patched
            else:
                _block_output(model, layer)[:, target_positions] = donor
            logits = model.lm_head.output.save()
    return logits[0].float()
