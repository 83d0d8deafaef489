"""The forward runner and its hooks: recording equals the model's own hidden states, a no-op replacement is
bitwise identical, replacing a residual stream transplants another input's computation, head and neuron
replacements equal a hand computation with the projection weights, gradient mode equals autograd through
inputs_embeds; on tiny Llama, GPT-2 and GPT-NeoX models (recording also on BERT)."""
from __future__ import annotations

import pytest
import torch

from psyling.errors import ModelError
from psyling.models import ForwardRunner, Intervention, architecture, parse_site
from psyling.models.packing import packed_plan
from tiny import byte_bpe_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, tiny_neox

SENTENCES = ["The keys to the cabinet are on the table.", "No student has ever visited the castle."]


@pytest.fixture(scope="module", params=["llama", "gpt2", "neox"])
def lm(request):
    tok = byte_bpe_tokenizer()
    return {"llama": tiny_llama, "gpt2": tiny_gpt2, "neox": tiny_neox}[request.param](tok)


def ids(lm, text: str) -> list[int]:
    return [lm.tokenizer.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def same_length_pair(lm) -> tuple[list[int], list[int]]:
    a, b = ids(lm, SENTENCES[0]), ids(lm, SENTENCES[1])
    n = min(len(a), len(b))
    return a[:n], b[:n]


def test_recorded_residual_stream_equals_the_models_hidden_states(lm):
    seq = ids(lm, SENTENCES[0])
    runner = ForwardRunner(lm)
    n = architecture(lm.model).n_layers
    forward = runner.run_sequences([seq], record=[f"resid.{k}" for k in range(n + 1)])
    with torch.no_grad():
        hidden = lm.model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
    for k in range(n):  # the model's last hidden state is after the final norm; resid.L is before it
        assert torch.equal(forward.at(f"resid.{k}", 0), hidden[k][0])
    with torch.no_grad():
        plain = lm.model(input_ids=torch.tensor([seq])).logits[0]
    assert torch.equal(forward.sequence_logits(0), plain)


@pytest.mark.parametrize("site", ["resid.0", "resid.1", "attn.2", "mlp.1", "head.1", "head.2.3", "neuron.1",
                                  "neuron.2.17"])
def test_a_no_op_replacement_is_bitwise_identical(lm, site):
    runner = ForwardRunner(lm)
    seqs = [ids(lm, s) for s in SENTENCES]
    plain = runner.run_sequences(seqs, record=[site])
    for iv in (Intervention(site, "scale", 1.0), Intervention(site, "add", 0.0),
               Intervention(site, "map", lambda x: x),
               Intervention(site, "set", plain.at(site, 1), sequence=1)):
        replaced = runner.run_sequences(seqs, interventions=[iv])
        assert torch.equal(replaced.logits, plain.logits), iv.op


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_replacing_the_residual_stream_reproduces_the_other_input(lm, layer):
    a, b = same_length_pair(lm)
    runner = ForwardRunner(lm)
    site = f"resid.{layer}"
    clean = runner.run_sequences([b], record=[site])
    patched = runner.run_sequences([a], interventions=[Intervention(site, "set", clean.at(site, 0))])
    want = torch.log_softmax(clean.logits.double(), -1)
    got = torch.log_softmax(patched.logits.double(), -1)
    assert float((got - want).abs().max()) <= 1e-6
    other = runner.run_sequences([a])
    assert float((torch.log_softmax(other.logits.double(), -1) - want).abs().max()) > 1e-2  # it did change


def _in_features_slice(module: torch.nn.Module, cols: slice) -> torch.Tensor:
    """The [in-slice, out] weight block of a Linear or GPT-2 Conv1D projection."""
    weight = module.weight
    return weight[cols, :] if type(module).__name__ == "Conv1D" else weight[:, cols].T


@pytest.mark.parametrize("kind,part", [("head", "attn_out"), ("neuron", "mlp_down")])
def test_zeroing_a_head_or_neuron_equals_the_hand_computation(lm, kind, part):
    arch = architecture(lm.model)
    index = 2 if kind == "head" else 5
    width = arch.head_dim if kind == "head" else 1
    cols = slice(index * width, (index + 1) * width)
    out_site = "attn.1" if kind == "head" else "mlp.1"
    runner = ForwardRunner(lm)
    seq = ids(lm, SENTENCES[0])
    plain = runner.run_sequences([seq], record=[f"{kind}.1", out_site])
    zeroed = runner.run_sequences([seq], record=[out_site], interventions=[Intervention(f"{kind}.1.{index}", "scale", 0.0)])
    # the sub-layer's output is linear in its projection's input: zeroing a slice removes slice @ weight block
    with torch.no_grad():
        removed = plain.at(f"{kind}.1", 0)[:, cols] @ _in_features_slice(arch.module(1, part), cols)
    expected = plain.at(out_site, 0) - removed
    assert torch.allclose(zeroed.at(out_site, 0), expected, atol=1e-5, rtol=0)
    assert float(removed.abs().max()) > 1e-3


def test_replacing_one_head_with_a_value_sets_only_its_slice(lm):
    arch = architecture(lm.model)
    runner = ForwardRunner(lm)
    seq = ids(lm, SENTENCES[1])
    value = torch.full((3, arch.head_dim), 0.25)
    forward = runner.run_sequences([seq], record=["head.2"],
                                   interventions=[Intervention("head.2.1", "set", value, positions=[1, 2, 3])])
    plain = runner.run_sequences([seq], record=["head.2"])
    got, before = forward.at("head.2", 0), plain.at("head.2", 0)
    head = slice(arch.head_dim, 2 * arch.head_dim)
    assert torch.equal(got[1:4, head], value)
    mask = torch.ones_like(got, dtype=torch.bool)
    mask[1:4, head] = False
    assert torch.equal(got[mask], before[mask])


def test_interventions_address_one_sequence_and_its_positions(lm):
    runner = ForwardRunner(lm)
    seqs = [ids(lm, s) for s in SENTENCES]
    plain = runner.run_sequences(seqs, record=["resid.1"])
    forward = runner.run_sequences(seqs, interventions=[Intervention("resid.1", "add", 1.0, sequence=1,
                                                                     positions=[4])])
    assert torch.equal(forward.sequence_logits(0), plain.sequence_logits(0))
    changed = (forward.sequence_logits(1) - plain.sequence_logits(1)).abs().amax(-1)
    assert float(changed[:4].max()) == 0.0 and float(changed[4]) > 0  # causal: positions before 4 untouched


def test_gradient_mode_equals_autograd_through_the_embeddings(lm):
    seq = ids(lm, SENTENCES[0])
    runner = ForwardRunner(lm)
    forward = runner.run_sequences([seq], record=["resid.0"], grad=True)
    target = torch.tensor(seq[1:])
    metric = torch.log_softmax(forward.sequence_logits(0)[:-1], -1)[torch.arange(len(target)), target].sum()
    grad = forward.gradients(metric, ["resid.0"])["resid.0"]
    # resid.0 is the token embeddings (plus GPT-2's position embeddings, which do not change the gradient)
    embeds = lm.model.get_input_embeddings()(torch.tensor([seq])).detach().requires_grad_(True)
    logits = lm.model(inputs_embeds=embeds).logits[0]
    reference = torch.log_softmax(logits[:-1], -1)[torch.arange(len(target)), target].sum()
    (want,) = torch.autograd.grad(reference, embeds)
    assert torch.allclose(grad.reshape(want.shape), want, atol=1e-6, rtol=1e-5)
    assert forward.logits.requires_grad and not runner.run_sequences([seq]).logits.requires_grad


def test_bert_sites_record_its_hidden_states():
    bert = tiny_bert()
    seq = bert.tokenizer("the key is on the table")["input_ids"]
    forward = ForwardRunner(bert).run_sequences([seq], record=["resid.0", "resid.1", "resid.2"])
    with torch.no_grad():
        hidden = bert.model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
    for k in range(3):
        assert torch.equal(forward.at(f"resid.{k}", 0), hidden[k][0])


def test_packed_positions_shared_by_sequences_cannot_be_replaced_for_one(bpe_llama):
    lm = bpe_llama
    seqs = [ids(lm, "The keys to the cabinet are here."), ids(lm, "The keys to the cabinet is here.")]
    batch = packed_plan(seqs, 256, 4096)[0]
    runner = ForwardRunner(lm)
    with pytest.raises(ModelError, match="packed row shares"):
        runner.run(batch, interventions=[Intervention("resid.1", "add", 1.0, sequence=0, positions=[1])])
    runner.run(batch, interventions=[Intervention("resid.1", "add", 1.0, sequence=0, positions=[-1])])


@pytest.mark.parametrize("name,message", [("resid.x", "not a site name"), ("attn.1.2", "not a site name"),
                                          ("head.9", "layer 9 does not exist"), ("head.1.4", "out of range"),
                                          ("neuron.1.128", "out of range"), ("attn.0", "layer 0 does not exist")])
def test_bad_sites_are_one_line_errors(bpe_llama, name, message):
    with pytest.raises(ModelError, match=message):
        ForwardRunner(bpe_llama).run_sequences([[1, 2, 3]], record=[name])


def test_site_names_parse_and_print():
    assert str(parse_site("head.2.5")) == "head.2.5" and parse_site("head.2.5").whole == "head.2"
    assert parse_site("resid.0").index is None


def test_a_scorer_applies_interventions_to_every_sequence_with_and_without_prefix_reuse(bpe_llama):
    from psyling.models import CausalScorer, ScoreRequest

    requests = [ScoreRequest((i,), s) for i, s in enumerate(SENTENCES + ["The keys to the cabinet is here."])]
    scorer = CausalScorer(bpe_llama, progress=False)
    plain = scorer.score(requests)
    same = scorer.with_interventions([Intervention("mlp.1", "scale", 1.0)]).score(requests)
    assert all(a.logprob.tobytes() == b.logprob.tobytes() for a, b in zip(plain, same))
    ablated = scorer.with_interventions([Intervention("mlp.2", "scale", 0.0)])
    packed, padded = ablated.score(requests), ablated.with_options(reuse_prefix=False, batch_size=1).score(requests)
    for p, q, r in zip(packed, padded, plain):
        assert abs(p.logprob - q.logprob).max() <= 1e-5 and abs(p.logprob - r.logprob).max() > 1e-3
    # equals the runner's own patched forward pass, read off by hand
    forward = ForwardRunner(bpe_llama).run_sequences([ids(bpe_llama, requests[0].text)],
                                                     interventions=[Intervention("mlp.2", "scale", 0.0)])
    logprobs = torch.log_softmax(forward.logits.double(), -1)
    target = ids(bpe_llama, requests[0].text)[1:]
    assert abs(logprobs[torch.arange(len(target)), target].numpy() - packed[0].logprob).max() <= 1e-5
    with pytest.raises(ModelError, match="every sequence"):
        scorer.with_interventions([Intervention("mlp.2", "scale", 0.0, sequence=0)])


def test_positional_interventions_are_never_applied_to_a_shared_packed_prefix(bpe_llama):
    from psyling.models import CausalScorer, ScoreRequest

    requests = [ScoreRequest((0,), "The keys"), ScoreRequest((1,), "The keys to the cabinet")]
    last = [Intervention("resid.1", "add", 0.5, positions=[-1])]
    seqs = [CausalScorer(bpe_llama).encode(r).sequence for r in requests]
    with pytest.raises(ModelError, match="packed row shares"):  # the short one's last token is the long one's prefix
        ForwardRunner(bpe_llama).run(packed_plan(seqs, 256, 4096)[0], interventions=last)
    scorer = CausalScorer(bpe_llama, progress=False).with_interventions(last)
    assert not scorer.reuse_prefix  # positional interventions run padded
    alone = scorer.with_options(batch_size=1).score(requests)
    for a, b in zip(scorer.score(requests), alone):
        assert abs(a.logprob - b.logprob).max() <= 1e-5


def test_a_value_of_the_wrong_shape_is_a_one_line_error(bpe_llama):
    seq = ids(bpe_llama, SENTENCES[0])
    with pytest.raises(ModelError, match=r"does not fit the \(3, 64\) activations"):
        ForwardRunner(bpe_llama).run_sequences([seq], interventions=[
            Intervention("resid.1", "set", torch.zeros(2, 64), positions=[1, 2, 3])])


def test_bert_hooks_only_its_residual_stream():
    bert = tiny_bert()
    with pytest.raises(ModelError, match="only its residual stream"):
        ForwardRunner(bert).run_sequences([[2, 5, 6, 3]], record=["mlp.1"])
