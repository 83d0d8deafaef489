"""Token, word and region surprisal on tiny random models, checked against independent computations."""
from pathlib import Path

import numpy as np
import pytest
import torch

from psyling.errors import AlignmentError, ModelError
from psyling.stimuli import Condition
from psyling.measures import align, word_surprisals
from psyling.measures.surprisal import LN2
from psyling.models import CausalScorer, ScoreRequest
from references import minicons_sums_bits, plain_token_bits, wordsprobability_bits

SENTENCES = Path(__file__).with_name("data").joinpath("sentences.txt").read_text().splitlines()[:20]


def words_bits(scorer, sentences, **kw):
    out = []
    for sc in scorer.with_options(**kw).score([ScoreRequest((i,), s) for i, s in enumerate(sentences)]):
        al = align(Condition("c", (sc.request.text,)), sc.offsets, ("sentence",), "test")
        out.append(word_surprisals(sc, al.token_word, len(al.words), scorer.markers, "test"))
    return out


@pytest.mark.parametrize("fixture,marker", [("bpe_llama", "Ġ"), ("sp_gpt2", "▁")])
def test_words_equal_wordsprobability_except_first_word(request, fixture, marker):
    lm = request.getfixturevalue(fixture)
    scorer = CausalScorer(lm, batch_size=7, progress=False)
    assert scorer.markers.marker == marker
    ours = words_bits(scorer, SENTENCES)
    ref = wordsprobability_bits(lm.model, lm.tokenizer, SENTENCES, marker)
    for (corrected, _), expected in zip(ours, ref):
        assert len(corrected) == len(expected)
        # the reference counts P(EOS) twice in the first word's denominator; all other words match exactly
        np.testing.assert_allclose(corrected[1:], expected[1:], atol=1e-4, rtol=0)
        assert abs(corrected[0] - expected[0]) < 0.05


@torch.no_grad()
def test_first_word_uses_complement_of_word_initial_tokens(bpe_llama):
    scorer = CausalScorer(bpe_llama, progress=False)
    sentence = "Dogs bark."
    sc = scorer.score([ScoreRequest((0,), sentence)])[0]
    ids = bpe_llama.tokenizer(sentence, add_special_tokens=False)["input_ids"]
    probs = torch.softmax(bpe_llama.model(torch.tensor([[scorer.context_token_id, *ids]])).logits[0].double(), -1)
    vocab = bpe_llama.tokenizer.convert_ids_to_tokens(list(range(probs.shape[1])))
    bow = torch.tensor([t.startswith("Ġ") for t in vocab])
    bow_eos = bow.clone()
    bow_eos[bpe_llama.tokenizer.eos_token_id] = True
    first_word_tokens = [i for i, (s, e) in enumerate(sc.offsets) if s < 4]
    n = len(first_word_tokens)
    p_tokens = np.prod([probs[i, ids[i]].item() for i in range(n)])
    expected = -np.log2(p_tokens * probs[n, bow_eos].sum().item() / probs[0, ~bow].sum().item())
    al = align(Condition("c", (sentence,)), sc.offsets, ("s",), "t")
    corrected, _ = word_surprisals(sc, al.token_word, len(al.words), scorer.markers, "t")
    assert corrected[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2", "space_llama"])
def test_raw_token_surprisal_equals_plain_loop_and_minicons(request, fixture):
    lm = request.getfixturevalue(fixture)
    scorer = CausalScorer(lm, batch_size=5, progress=False)
    scores = scorer.score([ScoreRequest((i,), s) for i, s in enumerate(SENTENCES)])
    for sc in scores:
        expected = plain_token_bits(lm.model, lm.tokenizer, sc.request.text, scorer.context_token_id)
        np.testing.assert_allclose(-sc.logprob / LN2, expected, atol=1e-4, rtol=0)
    if fixture != "space_llama":
        sums = np.array([-sc.logprob.sum() / LN2 for sc in scores])
        np.testing.assert_allclose(sums, minicons_sums_bits(lm.model, lm.tokenizer, SENTENCES), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2", "space_llama"])
def test_batch_size_and_padding_side_do_not_change_results(request, fixture):
    lm = request.getfixturevalue(fixture)
    scorer = CausalScorer(lm, progress=False)
    requests = [ScoreRequest((i,), s) for i, s in enumerate(SENTENCES)]
    base = scorer.with_options(batch_size=1).score(requests)
    for batch_size in (7, 64):
        for side in ("left", "right"):
            other = scorer.with_options(batch_size=batch_size, padding_side=side).score(requests)
            for a, b in zip(base, other):
                assert a.token_ids == b.token_ids
                assert np.max(np.abs(a.logprob - b.logprob)) / LN2 <= 1e-4
                assert np.max(np.abs(a.log_bow - b.log_bow)) / LN2 <= 1e-4


def test_word_surprisals_sum_over_a_sentence_telescopes(bpe_llama):
    """Corrected word surprisals add up to the raw sum plus the boundary terms at both ends."""
    scorer = CausalScorer(bpe_llama, progress=False)
    sc = scorer.score([ScoreRequest((0,), SENTENCES[2])])[0]
    al = align(Condition("c", (sc.request.text,)), sc.offsets, ("s",), "t")
    corrected, raw = word_surprisals(sc, al.token_word, len(al.words), scorer.markers, "t")
    expected = raw.sum() + (sc.log_nonbow_first - sc.log_bow[-1]) / LN2
    assert corrected.sum() == pytest.approx(expected, abs=1e-9)
    assert raw.sum() == pytest.approx(-sc.logprob.sum() / LN2)


def test_whitespace_token_tokenizer_is_corrected_via_offsets(space_llama):
    scorer = CausalScorer(space_llama, progress=False)
    assert scorer.markers.marker is None and scorer.markers.family == "whitespace tokens"
    (corrected, raw), = words_bits(scorer, ["The keys are here."])
    assert len(corrected) == 4 and not np.allclose(corrected, raw)
    space_id = space_llama.tokenizer.convert_tokens_to_ids(" ")
    assert bool(scorer.markers.bow[space_id])


def test_prefix_is_context_not_scored(bpe_llama):
    scorer = CausalScorer(bpe_llama, progress=False)
    with_prefix, alone = scorer.score([ScoreRequest((0,), "the cabinet is here.", prefix="I saw the key."),
                                       ScoreRequest((1,), "the cabinet is here.")])
    assert bpe_llama.tokenizer.convert_ids_to_tokens(with_prefix.token_ids[0]) == "Ġthe"
    assert with_prefix.offsets[0][0] == 0 and with_prefix.offsets[-1][1] == len("the cabinet is here.")
    assert not np.allclose(with_prefix.logprob[-3:], alone.logprob[-3:])


def test_context_token_default_and_override(bpe_llama):
    tok = bpe_llama.tokenizer
    assert CausalScorer(bpe_llama, progress=False).context_token_id == tok.bos_token_id
    assert CausalScorer(bpe_llama, context_token="eos", progress=False).context_token_id == tok.eos_token_id
    assert CausalScorer(bpe_llama, context_token="<pad>", progress=False).context_token_id == tok.pad_token_id
    assert CausalScorer(bpe_llama, context_token=5, progress=False).context_token_id == 5
    with pytest.raises(ModelError, match="not in the vocabulary"):
        CausalScorer(bpe_llama, context_token="<nonexistent>", progress=False)


def test_input_longer_than_context_is_a_clear_error(sp_gpt2):
    scorer = CausalScorer(sp_gpt2, progress=False)  # n_positions = 64
    with pytest.raises(ModelError, match=r"exceed the model's context of 64"):
        scorer.score([ScoreRequest(("set", "7", "a"), " ".join(["cabinet"] * 80))])


def test_token_across_two_whitespace_words_is_a_clear_error():
    # offsets of a tokenizer that merged "b c" into one token across a space (the word correction is undefined)
    with pytest.raises(AlignmentError, match=r"token 'b c' spans words 'b' and 'c'; word boundaries"):
        align(Condition("x", ("a b", "c")), [(0, 1), (2, 5)], ("r1", "r2"), "set=s item=1 condition=x")


def test_token_across_a_region_boundary_counts_where_it_ends():
    """Unspaced text: '一家' crosses pre|critical and counts in critical, '店好' crosses critical|post and counts
    in post; with spaces, 'abcd' over 'the abc' + attached 'd' counts in the attached region."""
    cond = Condition("x", ("一", "家店", "好"), separator="")
    al = align(cond, [(0, 2), (2, 4)], ("pre", "critical", "post"), "w", "none")
    assert al.token_region == [1, 2] and al.token_word == [1, 2] and al.crossing == (0, 1)
    spaced = Condition("y", ("the abc", "d"), attached=frozenset({1}))
    al = align(spaced, [(0, 3), (3, 8)], ("noun", "punct"), "w")
    assert al.token_region == [0, 1] and al.crossing == (1,) and al.token_word == [0, 1]


def test_words_spanning_attached_regions_split_at_their_tokens(bpe_llama):
    """A detokenized comma region: the word 'shot,' spans two regions; the comma token and the word-end term
    go to the comma region, the rest to the verb region, and the regions add up to the word."""
    from psyling.measures import token_contributions

    cond = Condition("c", ("As the man", "shot", ",", "the dog ran."), attached=frozenset({2}))
    assert cond.text == "As the man shot, the dog ran."
    scorer = CausalScorer(bpe_llama, progress=False)
    sc = scorer.score([ScoreRequest((0,), cond.text)])[0]
    al = align(cond, sc.offsets, ("a", "verb", "comma", "rest"), "t")
    assert al.words[3] == "shot," and al.word_region[3] == 1
    comma_tokens = [t for t, r in enumerate(al.token_region) if r == 2]
    assert [bpe_llama.tokenizer.convert_ids_to_tokens(sc.token_ids[t]) for t in comma_tokens] == [","]
    corrected, raw = token_contributions(sc, al.token_word, scorer.markers, "t")
    word, _ = word_surprisals(sc, al.token_word, len(al.words), scorer.markers, "t")
    by_region = np.bincount(al.token_region, weights=corrected, minlength=4)
    assert by_region[1] + by_region[2] == pytest.approx(word[3])
    assert by_region[2] == pytest.approx(raw[comma_tokens[0]] - sc.log_bow[comma_tokens[0] + 1] / LN2)
