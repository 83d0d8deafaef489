"""Patching across contexts whose manipulated region differs in token count: the alignment table, the positions
patched (checked against a plain full-forward intervention at exactly the listed positions), the GPT-2 flag for
cross-position patches, and items that cannot be patched (listed, never dropped)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from psyling.interp.pair_sequences import CONTINUATIONS, item_sequences
from psyling.interp.pairs import PairSpec, pairs_for
from psyling.interp.patching import PatchConfig, patch_set
from psyling.models.hooks import Intervention
from psyling.stimuli.io import load_set
from test_patching import EQUAL, Frame, manual_metric, recorded, scorer_for, write_set
from tiny import CORPUS

CROSS = "cross-position patch under absolute position embeddings"


def one_and_two_token_words(tokenizer) -> tuple[str, str]:
    """The first lowercase CORPUS word (4+ letters) that is one token after a space, and the first that is two."""
    words = sorted({w for line in CORPUS for w in re.findall(r"\b[a-z]{4,}\b", line)})
    by_count = {}
    for word in words:
        by_count.setdefault(len(tokenizer(" " + word)["input_ids"]), word)
    return by_count[1], by_count[2]


@pytest.fixture(scope="module")
def words(bpe_llama) -> tuple[str, str]:
    return one_and_two_token_words(bpe_llama.tokenizer)


@pytest.fixture(scope="module")
def stim(tmp_path_factory, words):
    """Item 1: subject 'the ONE' (clean) vs 'the TWO' (corrupt); items 2-3 have subjects of equal length."""
    one, two = words
    frames = [Frame("I know", f"the {one}", f"the {two}", "is", "are", "on the table.")] + EQUAL[:2]
    return load_set(write_set(tmp_path_factory.mktemp("unequal"), frames, name="agr_unequal"))


def _pairs(aligned: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in pair.split(":")) for pair in aligned.split()]


def _subject(alignment, continuation: str = "good"):
    (row,) = alignment[(alignment["item"] == "1") & (alignment["region"] == "subject")
                       & (alignment["continuation"] == continuation)].to_dict("records")
    return row


def _manual_resid(lm, stim, layer: int, chosen: dict[str, list[tuple[int, int]]], direction: str = "denoise") -> float:
    """M of item 1's target context (denoise: the corrupted one) with the source context's ``resid.layer``
    written at the chosen (clean, corrupt) position pairs of each continuation, by a plain full forward."""
    seqs = item_sequences(stim, stim.items[0], pairs_for(stim, PairSpec())[0], scorer_for(lm))
    target, source = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
    donor = recorded(lm, seqs, source, f"resid.{layer}")
    side = {"clean": 0, "corrupt": 1}
    interventions = [[Intervention(f"resid.{layer}", "set", donor[s][[p[side[source]] for p in chosen[cont]]],
                                   sequence=0, positions=[p[side[target]] for p in chosen[cont]])]
                     for s, cont in enumerate(CONTINUATIONS)]
    return manual_metric(lm, stim, seqs, target, interventions).m


def _row(res, region: str, layer: int = 1, direction: str = "denoise", item: str = "1") -> dict:
    rows = res.rows
    (row,) = rows[(rows["item"] == item) & (rows["region"] == region) & (rows["layer"] == layer)
                  & (rows["direction"] == direction)].to_dict("records")
    return row


def test_words_of_one_and_two_tokens(bpe_llama, words):
    one, two = words
    assert [len(bpe_llama.tokenizer(" " + w)["input_ids"]) for w in words] == [1, 2]
    assert one != two


def test_unequal_region_aligns_on_its_last_token(bpe_llama, stim, words):
    res = patch_set(bpe_llama, stim, PatchConfig(layers=(1,)), progress=False)
    for continuation in CONTINUATIONS:
        row = _subject(res.alignment, continuation)
        assert row["mode"] == "unequal" and (row["n_clean"], row["n_corrupt"]) == (2, 3)
        ((p, q),) = _pairs(row["aligned"])
        assert q == p + 1  # the one-token word against the second token of the two-token word
        assert row["note"] == "token counts differ: aligned on the last token"
        tokens = bpe_llama.tokenizer.convert_ids_to_tokens(bpe_llama.tokenizer(" " + words[1])["input_ids"])
        assert row["clean_tokens"].split()[-1] == "Ġ" + words[0] and row["corrupt_tokens"].split()[-1] == tokens[-1]
    others = res.alignment[res.alignment["item"] != "1"]
    assert "unequal" not in set(others["mode"])
    chosen = {c: _pairs(_subject(res.alignment, c)["aligned"]) for c in CONTINUATIONS}
    for direction, unpatched in (("denoise", "m_corrupt"), ("noise", "m_clean")):
        subject = _row(res, "subject", direction=direction)
        assert subject["computed"] and subject["note"] == ""
        assert abs(subject["m_patched"] - _manual_resid(bpe_llama, stim, 1, chosen, direction)) < 1e-5
        assert abs(subject["m_patched"] - subject[unpatched]) > 1e-3  # the patch changed something


def test_unequal_skip_leaves_the_region_unpatched(bpe_llama, stim):
    res = patch_set(bpe_llama, stim, PatchConfig(layers=(1,), token="all", unequal="skip"), progress=False)
    row = _subject(res.alignment)
    assert row["aligned"] == "" and row["note"] == "token counts differ: not aligned (--unequal skip)"
    for direction in ("denoise", "noise"):
        subject = _row(res, "subject", direction=direction)
        assert subject["note"].startswith("not aligned") and not subject["computed"]
        assert np.isnan(subject["m_patched"]) and np.isnan(subject["effect"])
    equal = res.rows[(res.rows["item"] != "1") & (res.rows["region"] == "subject")]
    assert equal["computed"].all() and equal["m_patched"].notna().all()  # equal-length items: the whole region


def test_unequal_first_aligns_the_first_token_and_all_patches_only_aligned_positions(bpe_llama, stim):
    res = patch_set(bpe_llama, stim, PatchConfig(layers=(1,), token="all", unequal="first"), progress=False)
    table = res.alignment[(res.alignment["item"] == "1")]
    chosen = {}
    for continuation in CONTINUATIONS:
        regions = table[table["continuation"] == continuation]
        row = _subject(res.alignment, continuation)
        assert row["note"] == "token counts differ: aligned on the first token"
        ((p, q),) = _pairs(row["aligned"])
        assert p == q  # both subjects start with the same token at the same position
        chosen[continuation] = [pair for aligned in regions["aligned"] for pair in _pairs(aligned)]
    subject = _row(res, "subject")
    assert subject["note"].startswith("identical activations") and subject["effect"] == 0
    everything = _row(res, "all")
    assert everything["computed"]
    assert abs(everything["m_patched"] - _manual_resid(bpe_llama, stim, 1, chosen)) < 1e-5
    last = _pairs(_subject(patch_set(bpe_llama, stim, PatchConfig(layers=(1,), regions=("subject",)),
                                     progress=False).alignment)["aligned"])
    more = {c: chosen[c] + last for c in CONTINUATIONS}  # the subject's last tokens too: a different patch
    assert abs(everything["m_patched"] - _manual_resid(bpe_llama, stim, 1, more)) > 1e-3


def test_cross_position_patches_are_flagged_under_absolute_positions(bpe_llama, bpe_gpt2, stim):
    flagged = patch_set(bpe_gpt2, stim, PatchConfig(layers=(1,)), progress=False).alignment
    cross = flagged["aligned"].map(lambda a: any(p != q for p, q in _pairs(a)))
    assert cross.sum() >= 4  # item 1: the subject and the verb, in both continuations
    assert flagged.loc[cross, "note"].str.contains(CROSS).all()
    assert not flagged.loc[~cross, "note"].str.contains(CROSS).any()
    verb = flagged[(flagged["item"] == "1") & (flagged["region"] == "verb")]
    assert (verb["mode"] == "identical").all() and verb["note"].eq(CROSS).all()
    rotary = patch_set(bpe_llama, stim, PatchConfig(layers=(1,)), progress=False).alignment
    assert not rotary["note"].str.contains(CROSS).any()


def test_items_that_cannot_be_patched_are_listed_with_the_reason(bpe_llama, tmp_path):
    frames = [EQUAL[0], Frame("No", "the dog", "the dogs", "is", "", "on the table."),  # no bad verb
              Frame("I know", "the cat", "the cat", "is", "are", "on the table."), EQUAL[1]]  # same contexts
    stim = load_set(write_set(tmp_path, frames, name="agr_problems"))
    config = PatchConfig(sites=("resid", "head.1.2"), layers=(0, 2))
    res = patch_set(bpe_llama, stim, config, progress=False)
    per_item = 3 * 5 * 2  # sites x (4 regions + all) x directions
    assert len(res.rows) == len(frames) * per_item
    assert res.rows.groupby("item").size().to_dict() == {str(i): per_item for i in range(1, 5)}
    reasons = {"2": "not patched: the critical region 'verb' is empty in the clean+bad sequence",
               "3": "not patched: the clean and corrupted contexts are identical"}
    for item, reason in reasons.items():
        rows = res.rows[res.rows["item"] == item]
        assert (rows["note"] == reason).all() and not rows["computed"].any() and rows["m_patched"].isna().all()
        (listed,) = res.alignment[res.alignment["item"] == item].to_dict("records")
        assert listed["mode"] == "unaligned" and listed["note"] == reason.removeprefix("not patched: ")
    fine = res.rows[res.rows["item"].isin(["1", "4"])]
    assert fine["m_patched"].notna().all() and fine["computed"].any()
