"""Issue 14, points 7, 13 and 16 and the SyntaxGym / manifest readers: the legacy (pre-2020) SyntaxGym JSON,
the manifest's context column (``prefix``), empty compared regions, a zero denominator in the human effect, and
segmentation detected for manifests and SyntaxGym suites. All sentences are written for these tests."""
import json
import math

import pandas as pd
import pytest

from psyling.cli import main
from psyling.errors import StimulusError
from psyling.stats.human import compare_with_humans
from psyling.stimuli import load_set, load_syntaxgym, to_syntaxgym
from psyling.stimuli.manifest import load_manifest_set
from psyling.stimuli.quality import quality_report
from psyling.stimuli.schema import Condition, HumanFinding, Item, StimulusSet

REGION_META = {"1": "opener", "2": "subject", "3": "verb", "4": "rest"}
SENTENCES = {  # item -> condition -> regions
    1: {"that": ["I heard that", "the baker", "burned", "the bread."],
        "what": ["I heard what", "the baker", "burned", "the bread."]},
    2: {"that": ["She said that", "the pilot", "landed", "the plane."],
        "what": ["She said what", "the pilot", "landed", "the plane."]},
}


def _items():
    return [{"item_number": n, "conditions": [
        {"condition_name": c, "regions": [{"region_number": k, "content": t, "metric_value": {"sum": 1.5 * k}}
                                          for k, t in enumerate(texts, start=1)]}
        for c, texts in conds.items()]} for n, conds in SENTENCES.items()]


def _write(tmp_path, name, suite):
    path = tmp_path / name
    path.write_text(json.dumps(suite), encoding="utf-8")
    return path


# --- the legacy SyntaxGym JSON ------------------------------------------------------------------------------

def test_legacy_string_predictions_suite_loads_its_predictions_and_provenance(tmp_path):
    """The first syntactic-generalization suites: ``predictions: []``, formulas in meta.string_predictions,
    a model's ``metric_value`` in every region."""
    suite = {"meta": {"name": "fg_legacy", "metric": "sum", "comment": "wh-licensing of a gap",
                      "reference": "Writer, A. (2019). Gaps. A Journal.", "author": "A. Writer",
                      "string_predictions": ["(3;%what%) < (3;%that%)", "[(4;%what%) > (4;%that%)]"]},
             "region_meta": REGION_META, "predictions": [], "items": _items()}
    stim = load_syntaxgym(_write(tmp_path, "fg.json", suite))
    assert [p.formula for p in stim.predictions] == ["(3;%what%) < (3;%that%)", "[(4;%what%) > (4;%that%)]"]
    assert stim.regions == ("opener", "subject", "verb", "rest") and stim.conditions == ("that", "what")
    assert [i.id for i in stim.items] == ["1", "2"]
    assert stim.items[1].conditions["what"].text == "She said what the pilot landed the plane."
    assert (stim.name, stim.citation, stim.description) == ("fg_legacy", "Writer, A. (2019). Gaps. A Journal.",
                                                            "wh-licensing of a gap")
    assert stim.metadata["format"] == "syntaxgym-legacy"
    assert stim.metadata["syntaxgym_meta"]["author"] == "A. Writer"
    assert stim.metadata["syntaxgym_legacy"] == {"string_predictions": 2, "relations": 0}
    written = to_syntaxgym(stim)  # written back in the current shape
    assert "string_predictions" not in written["meta"]
    again = load_syntaxgym(_write(tmp_path, "again.json", written))
    assert again.metadata["format"] == "syntaxgym"
    assert [p.formula for p in again.predictions] == [p.formula for p in stim.predictions]


def test_legacy_relation_predictions_and_metric_all_are_converted(tmp_path):
    """syntaxgym-core's early suites: ``metric: "all"`` and predictions as relations between two conditions."""
    suite = {"meta": {"name": "rel_legacy", "metric": "all", "tags": ["filler-gap"]}, "region_meta": REGION_META,
             "predictions": [{"relation": "greaterthan", "region_number": 3, "l_operand": "that",
                              "r_operand": "what"},
                             {"relation": "lessthan", "region_number": 4, "l_operand": "what", "r_operand": "that"}],
             "items": _items()}
    stim = load_syntaxgym(_write(tmp_path, "rel.json", suite))
    assert [p.formula for p in stim.predictions] == ["(3;%that%) > (3;%what%)", "(4;%what%) < (4;%that%)"]
    assert stim.metric == "sum"
    assert stim.metadata["syntaxgym_legacy"] == {"string_predictions": 0, "relations": 2, "metric": "all"}


def test_legacy_suite_without_predictions_and_a_metric_list_loads(tmp_path):
    suite = {"meta": {"name": "bare_legacy", "metric": ["all"]}, "region_meta": REGION_META, "items": _items()}
    stim = load_syntaxgym(_write(tmp_path, "bare.json", suite))
    assert stim.predictions == [] and stim.metric == "sum" and len(stim.items) == 2
    current = {"meta": {"name": "no_predictions", "metric": "sum"}, "region_meta": REGION_META, "items": _items()}
    with pytest.raises(StimulusError, match="field=predictions: required field is missing"):
        load_syntaxgym(_write(tmp_path, "current.json", current))  # the current shape still requires them


# --- point 13: every field of a SyntaxGym suite is type-checked ----------------------------------------------

@pytest.mark.parametrize("mutate, field", [
    (lambda s: s["region_meta"].__setitem__("2", 7), "field=region_meta.2"),
    (lambda s: s["items"][0].__setitem__("item_number", [1]), "field=items[1].item_number"),
    (lambda s: s["items"][1]["conditions"][0]["regions"][2].__setitem__("region_number", True),
     "item=2 condition=that field=regions[3].region_number"),
    (lambda s: s["meta"].__setitem__("reference", {"title": "x"}), "field=meta.reference"),
])
def test_a_wrong_type_in_a_syntaxgym_field_is_an_error(tmp_path, mutate, field):
    suite = {"meta": {"name": "typed", "metric": "sum"}, "region_meta": dict(REGION_META),
             "predictions": [{"type": "formula", "formula": "(3;%what%) < (3;%that%)"}], "items": _items()}
    mutate(suite)
    with pytest.raises(StimulusError, match=r"must be an? [a-z]+, got [a-z]+") as info:
        load_syntaxgym(_write(tmp_path, "typed.json", suite))
    assert field in str(info.value)


# --- point 7: the manifest's context column ------------------------------------------------------------------

MANIFEST = """schema_version: 1
name: {name}
phenomenon: agreement
citation: "Test (2024)"
items: {name}.csv
regions: {regions}
conditions: [match, mismatch]
predictions:
  - "(verb;%mismatch%) > (verb;%match%)"
{extra}"""


def _manifest(tmp_path, csv_text, regions="[subject, verb, rest]", extra="", name="ctx"):
    (tmp_path / f"{name}.csv").write_text(csv_text, encoding="utf-8")
    path = tmp_path / f"{name}.yaml"
    path.write_text(MANIFEST.format(name=name, regions=regions, extra=extra), encoding="utf-8")
    return path


PREFIX_CSV = ("item,condition,prefix,subject,verb,rest\n"
              "1,match,It was late.,The lamp,glows,softly.\n1,mismatch,It was late.,The lamp,glow,softly.\n"
              "2,match,It rained.,The drums,beat,loudly.\n2,mismatch,It rained.,The drums,beats,loudly.\n")


def test_an_undeclared_prefix_column_is_an_error_naming_the_choice(tmp_path, capsys):
    path = _manifest(tmp_path, PREFIX_CSV)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ctx.csv" in err[0] and "field=prefix" in err[0]
    assert "declare context_column: prefix" in err[0] and "context_column: none" in err[0]


def test_declared_context_column_is_silent_and_prefix_can_be_a_scored_region(tmp_path, capsys):
    confirmed = _manifest(tmp_path, PREFIX_CSV, extra="context_column: prefix\n", name="confirmed")
    assert main(["validate", str(confirmed)]) == 0
    assert "unscored context" not in capsys.readouterr().out
    scored = load_set(_manifest(tmp_path, PREFIX_CSV, regions="[prefix, subject, verb, rest]",
                                extra="context_column: none\n", name="scored"))
    cond = scored.items[1].conditions["mismatch"]
    assert scored.regions[0] == "prefix" and cond.prefix == ""
    assert cond.text == "It rained. The drums beats loudly."
    assert scored.metadata["context_column"] is None


def test_a_context_column_of_any_name_may_be_manipulated(tmp_path):
    csv_text = PREFIX_CSV.replace("prefix,", "prime,").replace("2,mismatch,It rained.", "2,mismatch,It poured.")
    stim = load_set(_manifest(tmp_path, csv_text, extra="context_column: prime\nmanipulated: [verb]\n"))
    assert stim.items[1].conditions["mismatch"].prefix == "It poured."
    assert "prime" not in stim.items[0].metadata  # the context column is not item metadata
    assert quality_report(stim).warnings == ["item 2: match and mismatch differ in prime, which the design does "
                                             "not manipulate"]
    declared = load_set(_manifest(tmp_path, csv_text, extra="context_column: prime\nmanipulated: [verb, prime]\n",
                                  name="primed"))
    assert quality_report(declared).warnings == []


# --- point 16: an empty compared region; a zero denominator in the human effect ------------------------------

HOLES_CSV = ("item,condition,subject,verb,rest\n"
             "1,match,The cook,tastes,the soup.\n1,mismatch,The cook,,the soup.\n"
             "2,match,The cooks,taste,the soup.\n2,mismatch,The cooks,tastes,the soup.\n"
             "3,match,The nurse,smiles,warmly.\n3,mismatch,The nurse,,warmly.\n")


def test_validate_warns_about_an_empty_compared_region(tmp_path, capsys):
    path = _manifest(tmp_path, HOLES_CSV, name="holes")
    warnings = quality_report(load_set(path)).warnings
    assert warnings == ["set holes: region 'verb' is empty in condition 'mismatch' of items 1, 3 (2 of 3), where "
                        "prediction 1 compares it: an empty region counts as 0 bits"]
    assert main(["validate", str(path)]) == 0
    assert "check: set holes: region 'verb' is empty in condition 'mismatch' of items 1, 3" in capsys.readouterr().out


def test_an_empty_region_of_the_human_effect_is_named_too(tmp_path):
    human = ('human:\n  measure: SPR\n  region: rest\n  direction: slower\n  source: A study\n'
             '  effect: "(rest;%mismatch%) - (rest;%match%)"\n')
    csv_text = ("item,condition,subject,verb,rest\n"
                "1,match,The cook,tastes,the soup.\n1,mismatch,The cook,taste,the soup.\n"
                "2,match,The nurse,smiles,warmly.\n2,mismatch,The nurse,smile,\n")
    warnings = quality_report(load_set(_manifest(tmp_path, csv_text, extra=human, name="endless"))).warnings
    assert warnings[0] == ("set endless: region 'rest' is empty in condition 'mismatch' of item 2 (1 of 2), where "
                           "the human effect compares it: an empty region counts as 0 bits")
    assert not any("region 'verb' is empty" in w for w in warnings)  # the prediction's verb cells have text


def _ratio_set():
    items = [Item(str(i), {"a": Condition("a", ("The dog", "runs", "")), "b": Condition("b", ("The dog", "run", "x"))})
             for i in (1, 2, 3)]
    finding = HumanFinding("SPR", "verb", "b > a", "A study", effect="(verb;%b%) / (end;%a%)")
    return StimulusSet("ratio", ("subject", "verb", "end"), ("a", "b"), items, [], "ratio.yaml",
                       human=finding).validate()


def _regions(stim, end_a):
    rows = []
    for item, end in zip(("1", "2", "3"), end_a):
        for cond, values in (("a", (5.0, 3.0, end)), ("b", (5.0, 6.0, 2.0))):
            rows += [(stim.name, item, cond, k, r, v) for k, (r, v) in enumerate(zip(stim.regions, values), 1)]
    return pd.DataFrame(rows, columns=["set", "item", "condition", "region_number", "region", "surprisal"])


def test_a_zero_denominator_in_the_human_effect_is_the_reason_given():
    stim = _ratio_set()
    row = compare_with_humans([stim], _regions(stim, [0.0, 0.0, 0.0])).iloc[0]
    assert row["n_items"] == 0 and math.isnan(row["model_bits"])
    assert row["verdict"] == "no items could be evaluated: the human effect's denominator is 0 for items 1, 2, 3"
    partial = compare_with_humans([stim], _regions(stim, [0.0, 2.0, 3.0])).iloc[0]
    assert partial["n_items"] == 2 and partial["model_bits"] == pytest.approx((6.0 / 2.0 + 6.0 / 3.0) / 2)
    assert partial["verdict"].endswith("(left out: the human effect's denominator is 0 for items 1)")


# --- segmentation for manifests and SyntaxGym suites ---------------------------------------------------------

CHINESE_CSV = ("item,condition,subject,verb,rest\n"
               "1,match,我的朋友,喜欢,吃苹果。\n1,mismatch,我的朋友,喜欢了,吃苹果。\n"
               "2,match,那个孩子,看见,一只小鸟。\n2,mismatch,那个孩子,看见了,一只小鸟。\n")


def test_an_unspaced_manifest_is_detected_and_joined_without_spaces(tmp_path):
    path = _manifest(tmp_path, CHINESE_CSV, extra="language: zh\n", name="zh_three")
    stim = load_set(path)
    assert stim.segmentation == "none" and stim.metadata["segmentation_source"] == "detected"
    assert stim.items[0].conditions["match"].text == "我的朋友喜欢吃苹果。"
    assert stim.items[1].conditions["mismatch"].regions == ("那个孩子", "看见了", "一只小鸟。")
    forced = load_manifest_set(path, segmentation="whitespace")  # a reader option declares it
    assert forced.segmentation == "whitespace" and forced.metadata["segmentation_source"] == "declared"
    assert forced.items[0].conditions["match"].text == "我的朋友 喜欢 吃苹果。"


def test_a_declared_segmentation_and_english_text_stay_as_they_were(tmp_path):
    english = load_set(_manifest(tmp_path, HOLES_CSV.replace(",,", ",eats,"), name="en"))
    assert english.segmentation == "whitespace" and english.metadata["segmentation_source"] == "detected"
    assert english.items[0].conditions["match"].text == "The cook tastes the soup."
    declared = load_set(_manifest(tmp_path, CHINESE_CSV, extra="segmentation: none\n", name="zh_declared"))
    assert declared.segmentation == "none" and declared.metadata["segmentation_source"] == "declared"


def test_an_unspaced_syntaxgym_suite_is_detected(tmp_path):
    suite = {"meta": {"name": "zh_gym", "metric": "sum", "language": "zh"},
             "region_meta": {"1": "subject", "2": "verb", "3": "rest"},
             "predictions": [{"type": "formula", "formula": "(2;%b%) > (2;%a%)"}],
             "items": [{"item_number": 1, "conditions": [
                 {"condition_name": c, "regions": [{"region_number": k, "content": t}
                                                   for k, t in enumerate(texts, start=1)]}
                 for c, texts in (("a", ["我的朋友", "喜欢", "吃苹果。"]), ("b", ["我的朋友", "喜欢了", "吃苹果。"]))]}]}
    stim = load_syntaxgym(_write(tmp_path, "zh.json", suite))
    assert (stim.segmentation, stim.metadata["segmentation_source"], stim.language) == ("none", "detected", "zh")
    assert stim.items[0].conditions["b"].text == "我的朋友喜欢了吃苹果。"
    del suite["meta"]["language"]
    assert load_syntaxgym(_write(tmp_path, "zh.json", suite)).language == ""  # unknown, not English
    spaced = load_syntaxgym(_write(tmp_path, "zh.json", suite), segmentation="whitespace")
    assert spaced.items[0].conditions["b"].text == "我的朋友 喜欢了 吃苹果。"
