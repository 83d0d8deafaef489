"""Activation patching on tiny models: exactness of full patches, known zeros, invariance to the batch layout,
the metric against ordinary scoring, sub-layer sites against an independent full-forward intervention, errors.

The sets are written into tmp_path: invented sentences from the tiny tokenizer's CORPUS vocabulary in a 2x2
agreement design (number x agreement) with an opener region before the subject, so that the set's design gives
the pair clean = sg_match, corrupt = pl_match, good = sg_match, bad = sg_mismatch, critical = verb."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import psyling
from psyling.errors import PsylingError
from psyling.interp.circuit_metric import MetricReader, MetricValues, ReadLogits, context_metric, read_positions
from psyling.interp.pair_sequences import CONTINUATIONS, ItemSequences, item_sequences
from psyling.interp.patch_runs import Layout, context_inputs, run_context
from psyling.interp.patch_summary import summarise_patching
from psyling.interp.patching import (DIRECTIONS, PatchConfig, Patcher, copies_per_pass, patch_set, patch_sites,
                                     recorded_sites)
from psyling.interp.pairs import DesignError, PairSpec, pairs_for
from psyling.models.forward import ForwardRunner
from psyling.models.hooks import Intervention
from psyling.models.options import ScoringOptions
from psyling.models.scoring import CausalScorer
from psyling.stimuli.io import load_set

PREDICTION = "[(verb;%sg_mismatch%) > (verb;%sg_match%)] & [(verb;%pl_mismatch%) > (verb;%pl_match%)]"
FACTORS = "factors:\n  number: [sg, sg, pl, pl]\n  agreement: [match, mismatch, match, mismatch]\n"
MANIFEST = """schema_version: 1
name: {name}
phenomenon: test
citation: none (invented sentences)
items: {name}.csv
regions: [opener, subject, verb, continuation]
conditions: [sg_match, sg_mismatch, pl_match, pl_mismatch]
{factors}predictions:
  - "{prediction}"
"""


@dataclass(frozen=True)
class Frame:
    """One item: the opener, the singular and plural subjects, the singular and plural verbs, the rest."""
    opener: str
    sg: str
    pl: str
    verb_sg: str
    verb_pl: str
    rest: str

    def rows(self, item: int) -> list[str]:
        cells = {"sg_match": (self.sg, self.verb_sg), "sg_mismatch": (self.sg, self.verb_pl),
                 "pl_match": (self.pl, self.verb_pl), "pl_mismatch": (self.pl, self.verb_sg)}
        return [f"{item},{cond},{self.opener},{subject},{verb},{self.rest}" for cond, (subject, verb) in cells.items()]


# subjects of equal token counts in both numbers (the tiny tokenizer: "Ġthe Ġb aby" / "Ġthe Ġdog s" ...)
EQUAL = [Frame("I know", "the baby", "the dogs", "is", "are", "on the table."),
         Frame("No", "the woman", "the cats", "has", "have", "a key."),
         Frame("I know", "the castle", "the keys", "cried", "bark", "loudly."),
         Frame("No", "the baby", "the birds", "is", "are", "over the dog.")]
# subjects whose token counts differ ("Ġthe Ġdog" / "Ġthe Ġdog s")
UNEQUAL = [Frame("I know", "the dog", "the dogs", "is", "are", "on the table."),
           Frame("No", "the chef", "the cabinets", "has", "have", "a key.")]


def write_set(folder: Path, frames: list[Frame], name: str = "agr_tiny", factors: bool = True) -> Path:
    """A manifest and its item table in ``folder``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(MANIFEST.format(name=name, factors=FACTORS if factors else "",
                                                         prediction=PREDICTION))
    rows = [row for i, frame in enumerate(frames, 1) for row in frame.rows(i)]
    (folder / f"{name}.csv").write_text("item,condition,opener,subject,verb,continuation\n" + "\n".join(rows) + "\n")
    return folder / f"{name}.yaml"


def scorer_for(lm) -> CausalScorer:
    return CausalScorer(lm, ScoringOptions(), progress=False)


def reader_for(scorer: CausalScorer, stim) -> MetricReader:
    return MetricReader(scorer.statistics, scorer.markers, scorer.word_correction and stim.segmentation == "whitespace")


def manual_metric(lm, stim, seqs: ItemSequences, context: str,
                  interventions: list[list[Intervention]] = ((), ())) -> MetricValues:
    """M of one context, from a plain full forward of its two sequences (one padded row each, sequence s =
    continuation s) under ``interventions[s]``; the logits at the metric's read positions go through the
    circuit metric."""
    runner, scorer = ForwardRunner(lm), scorer_for(lm)
    logits = {}
    for s, cont in enumerate(CONTINUATIONS):
        key = (context, cont)
        forward = runner.run_sequences([seqs.encoded[key].sequence], interventions=list(interventions[s]))
        read = forward.sequence_logits(0)[read_positions(seqs, key)].clone()
        log_z, log_bow, _ = scorer.statistics.log_masses(read.clone())
        logits[cont] = ReadLogits(read, log_z, log_bow)
    return context_metric(logits, seqs, context, reader_for(scorer, stim))


def recorded(lm, seqs: ItemSequences, context: str, site: str) -> list[torch.Tensor]:
    """A site's activation in each continuation's sequence of one context ([tokens, d], context token first)."""
    runner = ForwardRunner(lm)
    return [runner.run_sequences([seqs.encoded[(context, cont)].sequence], record=[site]).at(site, 0)
            for cont in CONTINUATIONS]


@pytest.fixture(scope="module")
def equal_path(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("equal"), EQUAL)


@pytest.fixture(scope="module")
def mixed_path(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("mixed"), EQUAL[:2] + UNEQUAL + EQUAL[2:], name="agr_mixed")


@pytest.mark.parametrize("model", ["bpe_llama", "bpe_gpt2"])
def test_patching_every_position_restores_the_other_run(request, model, equal_path):
    lm = request.getfixturevalue(model)
    stim = load_set(equal_path)
    res = patch_set(lm, stim, PatchConfig(regions=("all",)), progress=False)
    assert set(res.alignment["mode"]) == {"identical", "same-length"}  # the premise: equal token counts
    rows = res.rows
    n_layers = lm.model.config.num_hidden_layers
    assert sorted(rows["layer"].unique()) == list(range(n_layers + 1))
    assert len(rows) == len(stim.items) * (n_layers + 1) * 2 and rows["computed"].all()
    assert (rows["m_clean"] - rows["m_corrupt"]).abs().min() > 0.1  # a contrast to restore
    np.testing.assert_allclose(rows["effect"], 1.0, rtol=0, atol=1e-6)
    denoise = rows["direction"] == "denoise"
    np.testing.assert_allclose(rows["m_patched"], np.where(denoise, rows["m_clean"], rows["m_corrupt"]),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows["logit_diff_patched"], np.where(denoise, rows["logit_diff_clean"],
                                                                    rows["logit_diff_corrupt"]), rtol=0, atol=1e-5)
    assert rows.loc[denoise, "kl"].abs().max() < 1e-6 and (rows.loc[~denoise, "kl"] > 1e-3).all()


@pytest.mark.parametrize("skip", [True, False])
def test_a_region_before_the_divergence_gives_exactly_zero(bpe_llama, equal_path, skip):
    stim = load_set(equal_path)
    res = patch_set(bpe_llama, stim, PatchConfig(regions=("opener", "subject"), skip_identical=skip), progress=False)
    opener, subject = (res.rows[res.rows["region"] == r] for r in ("opener", "subject"))
    assert len(opener) == len(stim.items) * 3 * 2
    assert (opener["effect"] == 0).all()
    assert (opener["computed"] == (not skip)).all()
    assert opener["note"].str.startswith("identical activations").all() == skip
    for direction, unpatched in (("denoise", "m_corrupt"), ("noise", "m_clean")):
        mine = opener[opener["direction"] == direction]
        assert (mine["m_patched"] == mine[unpatched]).all()  # exactly, computed or not
    assert subject["computed"].all() and (subject["effect"].abs() > 1e-3).any()  # the subject is not zero


def _run_pair(lm, stim, config: PatchConfig, context: str):
    scorer = scorer_for(lm)
    patcher = Patcher(lm, stim, config, scorer)
    sites = patch_sites(lm, config.sites, config.layers)
    pair = pairs_for(stim, config.pairs)[0]
    chunk = [item_sequences(stim, item, pair, scorer) for item in stim.items]
    copies = copies_per_pass(stim, chunk, config, context_inputs(chunk, context, config.layout).input_ids.numel())
    run = run_context(patcher.runner, patcher.reader, chunk, context, config.layout, recorded_sites(sites), copies)
    return patcher, sites, run, copies


def test_patching_a_run_into_itself_leaves_the_metric_unchanged(bpe_llama, equal_path):
    stim = load_set(equal_path)
    config = PatchConfig(sites=("resid", "attn", "head"), skip_identical=False)
    patcher, sites, run, copies = _run_pair(bpe_llama, stim, config, "clean")
    computed = 0
    for site in sites:
        for variant, values in patcher.site_values(site, run, run, copies):
            for j, status in enumerate(variant.status):
                if status == "computed":
                    computed += 1
                    assert values[j].m == run.values[j].m, (site, variant.region, j)
                    assert values[j].logit_diff == run.values[j].logit_diff
    assert computed == len(sites) * len(stim.items) * 4  # opener, subject, verb, all (not the continuation)


LAYOUTS = {"baseline": {}, "one item a batch": {"items_per_batch": 1}, "three a batch": {"items_per_batch": 3},
           "padded right": {"layout": Layout(tree=False)},
           "padded left": {"layout": Layout(tree=False, padding_side="left"), "items_per_batch": 3},
           "tiny max_tokens": {"max_tokens": 40}}


@pytest.mark.parametrize("model", ["bpe_llama", "bpe_gpt2"])
def test_patched_metric_does_not_depend_on_the_batch_layout(request, model, mixed_path):
    lm = request.getfixturevalue(model)
    stim = load_set(mixed_path)
    key = ["item", "site", "region", "direction"]
    tables = {}
    for name, settings in LAYOUTS.items():
        res = patch_set(lm, stim, PatchConfig(sites=("resid", "head"), **settings), progress=False)
        tables[name] = res.rows.sort_values(key).reset_index(drop=True)
        if name == "tiny max_tokens":
            assert res.counts["computed"] > 0
    base = tables.pop("baseline")
    assert base["m_patched"].notna().sum() > 100
    for name, table in tables.items():
        assert (table[key] == base[key]).all().all(), name
        np.testing.assert_allclose(table["m_patched"], base["m_patched"], rtol=0, atol=1e-4, err_msg=name)
        assert (table["computed"] == base["computed"]).all(), name


def test_tiny_max_tokens_runs_several_passes_per_site(bpe_llama, mixed_path, monkeypatch):
    """max_tokens below two copies of a chunk's batch: one copy a pass, so one pass per needed region."""
    stim = load_set(mixed_path)
    calls = []
    original = ForwardRunner.run_inputs

    def counting(self, inputs, **kwargs):
        calls.append((kwargs.get("start") is not None, inputs.input_ids.shape[0]))
        return original(self, inputs, **kwargs)

    monkeypatch.setattr(ForwardRunner, "run_inputs", counting)
    config = PatchConfig(sites=("resid",), layers=(1,), directions=("denoise",), items_per_batch=6, max_tokens=40)
    patch_set(bpe_llama, stim, config, progress=False)
    patched = [rows for started, rows in calls if started]
    unpatched = [rows for started, rows in calls if not started]
    assert len(unpatched) == 2 and len(patched) == 3  # subject, verb and all (the opener is known zero)
    assert set(patched) == set(unpatched) == {len(stim.items)}  # one tree row per item, one copy a pass


def test_clean_and_corrupt_metrics_are_the_scored_region_contrast(bpe_llama, equal_path):
    stim = load_set(equal_path)
    regions = psyling.run(bpe_llama, stimuli=[equal_path], progress=False).regions
    verb = regions[regions["region"] == "verb"].set_index(["item", "condition"])["surprisal"]
    res = patch_set(bpe_llama, stim, PatchConfig(layers=(1,), regions=("subject",), directions=("denoise",)),
                    progress=False)
    for _, row in res.rows.iterrows():
        item = str(row["item"])
        clean = verb[(item, "sg_mismatch")] - verb[(item, "sg_match")]  # sg subject: bad - good verb
        corrupt = verb[(item, "pl_match")] - verb[(item, "pl_mismatch")]  # pl subject + sg_mismatch's verb is pl_match
        assert abs(row["m_clean"] - clean) < 1e-4 and abs(row["m_corrupt"] - corrupt) < 1e-4
        assert abs(clean - corrupt) > 0.1


@pytest.mark.parametrize("model", ["bpe_llama", "bpe_gpt2"])
def test_sub_layer_sites_run_and_a_head_patch_is_a_plain_intervention(request, model, mixed_path):
    lm = request.getfixturevalue(model)
    stim = load_set(mixed_path)
    sites = ("attn", "mlp", "head", "neuron.2.7")
    res = patch_set(lm, stim, PatchConfig(sites=sites, regions=("subject", "all")), progress=False)
    rows = res.rows
    assert set(rows["kind"]) == {"attn", "mlp", "head", "neuron"}
    assert sorted(rows.loc[rows["kind"] == "head", "site"].unique()) == [f"head.{l}.{h}" for l in (1, 2)
                                                                        for h in range(4)]
    assert rows["m_patched"].notna().all() and (rows["effect"].abs() > 1e-3).any()
    width = lm.model.config.hidden_size // lm.model.config.num_attention_heads
    checked = 0
    for site, whole, cols in (("head.2.1", "head.2", slice(width, 2 * width)), ("neuron.2.7", "neuron.2", slice(7, 8))):
        for item in stim.items:
            checked += _check_manual(lm, stim, rows, item, site, whole, cols)
    assert checked == 2 * len(stim.items) * 4


def _check_manual(lm, stim, rows, item, site: str, whole: str, cols: slice) -> int:
    """A site's patched M against the same patch by an Intervention in a plain full forward (both directions,
    regions subject and all); the number of rows checked."""
    seqs = item_sequences(stim, item, pairs_for(stim, PairSpec())[0], scorer_for(lm))
    checked = 0
    for direction, (target, source) in DIRECTIONS.items():
        donor = recorded(lm, seqs, source, whole)
        for region in ("subject", "all"):
            interventions = []
            for s, cont in enumerate(CONTINUATIONS):
                chosen = seqs.positions(cont, region, "last", "last")
                at_source = [p[0 if source == "clean" else 1] for p in chosen]
                at_target = [p[0 if target == "clean" else 1] for p in chosen]
                interventions.append([Intervention(site, "set", donor[s][at_source, cols], sequence=0,
                                                   positions=at_target)])
            expected = manual_metric(lm, stim, seqs, target, interventions)
            (got,) = rows.loc[(rows["item"] == item.id) & (rows["site"] == site) & (rows["region"] == region)
                              & (rows["direction"] == direction), "m_patched"]
            assert abs(got - expected.m) < 1e-5, (item.id, site, direction, region, got, expected.m)
            checked += 1
    return checked


def test_a_verb_that_is_a_token_prefix_of_the_other_is_patched_per_sequence(bpe_llama, tmp_path):
    """'Ġmeow' (one verb) is a prefix of 'Ġmeow s' (the other): a tree row shares its position between the two
    continuations, while the verb's last token is a different position in each. Patching the verb's last token
    of one continuation must leave the other's sequence alone: tree rows as padded rows, both as a plain
    intervention."""
    frames = [Frame("I know", "the baby", "the cats", "meows", "meow", "on the table."),
              Frame("No", "the dog", "the dogs", "meow", "meows", "loudly.")]
    stim = load_set(write_set(tmp_path, frames, name="agr_prefix"))
    config = PatchConfig(regions=("verb",), layers=(1, 2))
    key = ["item", "site", "region", "direction"]
    tree, padded = (patch_set(bpe_llama, stim, replace(config, layout=layout), progress=False).rows.sort_values(key)
                    for layout in (Layout(), Layout(tree=False)))
    seqs = item_sequences(stim, stim.items[0], pairs_for(stim, PairSpec())[0], scorer_for(bpe_llama))
    good, bad = (seqs.encoded[("clean", c)].sequence for c in CONTINUATIONS)
    assert good[:len(bad)] == bad and len(good) == len(bad) + 1  # the premise: bad is a prefix of good
    for rows in (padded, tree):
        for item in stim.items:
            _check_manual_resid(bpe_llama, stim, rows, item, layer=2)
    np.testing.assert_allclose(tree["m_patched"], padded["m_patched"], rtol=0, atol=1e-4)


def _check_manual_resid(lm, stim, rows, item, layer: int) -> None:
    """resid.layer at the verb's last token, per continuation, against a plain intervention (both directions)."""
    seqs = item_sequences(stim, item, pairs_for(stim, PairSpec())[0], scorer_for(lm))
    for direction, (target, source) in DIRECTIONS.items():
        donor = recorded(lm, seqs, source, f"resid.{layer}")
        interventions = []
        for s, cont in enumerate(CONTINUATIONS):
            ((clean, corrupt),) = seqs.positions(cont, "verb", "last", "last")
            at_source, at_target = (clean, corrupt) if source == "clean" else (corrupt, clean)
            interventions.append([Intervention(f"resid.{layer}", "set", donor[s][[at_source]], sequence=0,
                                               positions=[at_target])])
        expected = manual_metric(lm, stim, seqs, target, interventions).m
        (got,) = rows.loc[(rows["item"] == item.id) & (rows["layer"] == layer) & (rows["direction"] == direction),
                          "m_patched"]
        assert abs(got - expected) < 1e-5, (item.id, direction, got, expected)


def test_items_below_the_threshold_are_excluded_and_counted(bpe_gpt2, equal_path):
    stim = load_set(equal_path)
    base = patch_set(bpe_gpt2, stim, PatchConfig(layers=(1,), regions=("subject",)), progress=False).rows
    gaps = (base.groupby("item")["m_clean"].first() - base.groupby("item")["m_corrupt"].first()).abs().sort_values()
    threshold = float(gaps.iloc[:2].mean())  # between the smallest gap and the next
    rows = patch_set(bpe_gpt2, stim, PatchConfig(layers=(1,), regions=("subject",), threshold=threshold),
                     progress=False).rows
    excluded = rows["item"] == gaps.index[0]
    assert rows.loc[excluded, "note"].str.startswith("excluded: |M_clean - M_corrupt|").all()
    assert rows.loc[excluded, "effect"].isna().all() and rows.loc[excluded, "m_patched"].notna().all()
    assert rows.loc[~excluded, "effect"].notna().all() and (rows.loc[~excluded, "note"] == "").all()
    summary = summarise_patching(rows, n_boot=50)
    assert (summary["n_excluded"] == 1).all() and (summary["n_items"] == len(stim.items) - 1).all()
    kept = rows[~excluded & (rows["direction"] == "denoise")]
    means = kept[["m_clean", "m_corrupt", "m_patched"]].mean()
    expected = (means["m_patched"] - means["m_corrupt"]) / (means["m_clean"] - means["m_corrupt"])
    assert summary.loc[summary["direction"] == "denoise", "effect"].item() == pytest.approx(expected, abs=1e-12)


def _one_line_error(lm, stim, config: PatchConfig, *expected: str) -> str:
    with pytest.raises(PsylingError) as info:
        patch_set(lm, stim, config, progress=False)
    message = str(info.value)
    assert "\n" not in message and all(part in message for part in expected), message
    return message


def test_an_unknown_region_is_a_one_line_error(bpe_llama, equal_path):
    _one_line_error(bpe_llama, load_set(equal_path), PatchConfig(regions=("subject", "object")), "no region 'object'",
                    "field=regions")


GIVEN = {"clean": "sg_match", "corrupt": "pl_match", "good": "sg_match", "bad": "sg_mismatch", "critical": "verb"}


def test_bad_designs_are_one_line_errors(bpe_llama, equal_path, tmp_path):
    stim = load_set(equal_path)
    _one_line_error(bpe_llama, stim, PatchConfig(pairs=PairSpec(**{**GIVEN, "corrupt": "pl_nope"})),
                    "no condition 'pl_nope'", "--corrupt", "field=conditions")
    _one_line_error(bpe_llama, stim, PatchConfig(pairs=PairSpec(**{**GIVEN, "critical": "opener"})),
                    "critical region 'opener' is the first region")
    _one_line_error(bpe_llama, stim, PatchConfig(pairs=PairSpec(**{**GIVEN, "critical": "object"})),
                    "critical region must be one region", "'object'")
    _one_line_error(bpe_llama, stim, PatchConfig(pairs=PairSpec(factor="tense")), "no factor 'tense'")
    _one_line_error(bpe_llama, stim, PatchConfig(layers=(7,)), "layer 7 does not exist")
    plain = load_set(write_set(tmp_path, EQUAL, name="no_factors", factors=False))
    message = _one_line_error(bpe_llama, plain, PatchConfig(), "field=factors", "--clean")
    assert str(plain.source) in message
    given = patch_set(bpe_llama, plain, PatchConfig(pairs=PairSpec(**GIVEN), regions=("subject",), layers=(1,)),
                      progress=False)  # the same set with the pair given is fine
    assert given.rows["m_patched"].notna().all() and len(given.rows) == len(EQUAL) * 2
    with pytest.raises(DesignError, match="choose from last, first, skip"):
        PatchConfig(unequal="middle")
    with pytest.raises(DesignError, match="choose from denoise, noise"):
        PatchConfig(directions=("denoise", "sideways"))
