"""The nnsight patching oracle against the unpatched model and against plain PyTorch forward hooks."""
from __future__ import annotations

import pytest
import torch

from nnsight_reference import nnsight_resid_patch
from tiny import byte_bpe_tokenizer, tiny_llama

TARGET = "The keys to the cabinet are on the table."
SOURCE = "The key to the cabinets is on the table."


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(byte_bpe_tokenizer())


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text)["input_ids"]


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def _resid(output):
    """A block's residual output, whether the block returns a tensor or a tuple."""
    return output[0] if isinstance(output, tuple) else output


def _with_resid(output, resid: torch.Tensor):
    return (resid,) + tuple(output[1:]) if isinstance(output, tuple) else resid


def torch_resid_patch(model: torch.nn.Module, target_ids: list[int], source_ids: list[int], layer: int,
                      target_positions: list[int], source_positions: list[int]) -> torch.Tensor:
    """The same patch with plain hooks: a pre-hook on the first block for layer 0, else a forward hook on block
    ``layer`` (1-based) that records the source residual and writes it into the target run."""
    block = model.model.layers[max(layer - 1, 0)]
    saved: dict[str, torch.Tensor] = {}

    def record_input(module, args):
        saved["donor"] = args[0][:, source_positions].clone()

    def record_output(module, args, output):
        saved["donor"] = _resid(output)[:, source_positions].clone()

    def patch_input(module, args):
        hidden = args[0].clone()
        hidden[:, target_positions] = saved["donor"]
        return (hidden,) + tuple(args[1:])

    def patch_output(module, args, output):
        resid = _resid(output).clone()
        resid[:, target_positions] = saved["donor"]
        return _with_resid(output, resid)

    if layer == 0:
        register, recorder, patcher = block.register_forward_pre_hook, record_input, patch_input
    else:
        register, recorder, patcher = block.register_forward_hook, record_output, patch_output
    for hook, ids in ((recorder, source_ids), (patcher, target_ids)):
        handle = register(hook)
        try:
            logits = _logits(model, ids)
        finally:
            handle.remove()
    return logits


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_self_patch_at_every_position_is_the_unpatched_run(lm, layer):
    ids = _ids(lm, TARGET)
    everywhere = list(range(len(ids)))
    patched = nnsight_resid_patch(lm.model, lm.tokenizer, ids, ids, layer, everywhere, everywhere)
    assert patched.dtype == torch.float32 and patched.shape == (len(ids), lm.model.config.vocab_size)
    torch.testing.assert_close(patched, _logits(lm.model, ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_one_position_patch_matches_plain_forward_hooks(lm, layer):
    target, source = _ids(lm, TARGET), _ids(lm, SOURCE)
    position = next(k for k, (a, b) in enumerate(zip(target, source)) if a != b)  # where the sentences differ
    patched = nnsight_resid_patch(lm.model, lm.tokenizer, target, source, layer, [position], [position])
    expected = torch_resid_patch(lm.model, target, source, layer, [position], [position])
    torch.testing.assert_close(patched, expected, rtol=0, atol=1e-6)
    unpatched = _logits(lm.model, target)
    assert (patched[position] - unpatched[position]).abs().max() > 1e-2  # the patch did something
    torch.testing.assert_close(patched[:position], unpatched[:position], rtol=0, atol=1e-6)  # causal: earlier unchanged


def test_patch_across_positions_and_oracle_leaves_the_model_alone(lm):
    target, source = _ids(lm, TARGET), _ids(lm, SOURCE)
    forward, padding_side = lm.model.forward, lm.tokenizer.padding_side
    patched = nnsight_resid_patch(lm.model, lm.tokenizer, target, source, 1, [2, 5], [3, 1])
    torch.testing.assert_close(patched, torch_resid_patch(lm.model, target, source, 1, [2, 5], [3, 1]),
                               rtol=0, atol=1e-6)
    assert lm.model.forward == forward and lm.tokenizer.padding_side == padding_side
    with pytest.raises(ValueError, match="2 target positions but 1 source"):
        nnsight_resid_patch(lm.model, lm.tokenizer, target, source, 1, [2, 5], [3])
