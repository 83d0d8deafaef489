"""Every registered scorer keeps the scorer contract (psyling.models.contract.check_scorer) on tiny models of
each layout, with activation capture and the logit lens where the scorer supports them."""
from __future__ import annotations

import pytest

from psyling.models import SCORERS, CaptureSpec, ScoreRequest, make_scorer
from psyling.models.contract import check_scorer
from psyling.models.options import ScoringOptions
from tiny import byte_bpe_tokenizer, metaspace_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, tiny_neox

TEXTS = [("The keys to the cabinet are on the table.", ""), ("The keys to the cabinet is on the table.", ""),
         ("No student has ever visited the castle.", ""), ("the cabinet is here.", "I saw the key."),
         ("Dogs bark, cats meow: birds sing?", ""), ("the quick brown fox", "")]
REQUESTS = [ScoreRequest(("set", str(i), "c"), text, prefix) for i, (text, prefix) in enumerate(TEXTS)]
CAPTURE = ScoringOptions(capture=CaptureSpec(("resid", "mlp")), lens_layers=(1, 2))
CASES = {  # scorer kind -> (model builder, options)
    "causal-llama": ("causal", lambda: tiny_llama(byte_bpe_tokenizer()), CAPTURE),
    "causal-gpt2": ("causal", lambda: tiny_gpt2(metaspace_tokenizer()), ScoringOptions()),
    "causal-neox": ("causal", lambda: tiny_neox(byte_bpe_tokenizer()), CAPTURE),
    "causal-lm-eval": ("causal", lambda: tiny_llama(byte_bpe_tokenizer()), ScoringOptions(convention="lm-eval")),
    "masked-pll": ("masked", tiny_bert, ScoringOptions()),
    "masked-l2r": ("masked", tiny_bert, ScoringOptions(masked_variant="l2r")),
}


def test_every_registered_scorer_has_a_contract_case():
    assert {kind for kind, _, _ in CASES.values()} == set(SCORERS)


@pytest.mark.parametrize("case", list(CASES))
def test_scorer_keeps_the_contract(case):
    kind, build, options = CASES[case]
    lm = build()
    scorer = make_scorer(lm, options, progress=False)
    assert type(scorer) is SCORERS[kind]
    worst = check_scorer(scorer, REQUESTS)
    assert worst <= 1e-4


def test_the_contract_catches_a_scorer_that_breaks_it(bpe_llama):
    scorer = make_scorer(bpe_llama, progress=False)

    class Reversed(type(scorer)):
        def score(self, requests, **kwargs):
            result = super().score(requests, **kwargs)
            result.scores.reverse()
            return result

    broken = Reversed(bpe_llama, progress=False)
    with pytest.raises(AssertionError, match="order"):
        check_scorer(broken, REQUESTS)
