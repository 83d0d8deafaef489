"""Issue 14's validation sweep for the SyntaxGym (current and legacy) and manifest readers: each malformed file
gives `psyling validate` exit code 2 and exactly one error line naming the file, item (where there is one) and
field, never a traceback. Every case here passed validation, or named no field, before the readers checked
each field's type."""
import json
import subprocess
import sys

import pytest

from psyling.cli import main
from test_malformed import GOOD_YAML, assert_one_line_error, manifest, replace_yaml, sg_suite, write

HUMAN = "human:\n  measure: SPR\n  region: verb\n  direction: slower\n  source: A study\n"


def suite_with(mutate):
    """The good suite of test_malformed, changed in place by ``mutate``."""
    suite = sg_suite()
    mutate(suite)
    return json.dumps(suite)


def region(suite, k=0):
    return suite["items"][0]["conditions"][0]["regions"][k]


def legacy(**meta):
    """A legacy suite (formulas in meta.string_predictions, no top-level formulas)."""
    suite = sg_suite(predictions=[])
    suite["meta"] = {"name": "old", "metric": "sum", "string_predictions": ["(2;%bad%) > (2;%good%)"], **meta}
    return suite


CASES = {
    # name: (builder(tmp) -> path, fragments expected in the one-line error)
    "syntaxgym region name is a number": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["region_meta"].__setitem__("2", 2))),
        ["sg.json", "field=region_meta.2", "must be a string, got integer"]),
    "syntaxgym region name is null": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["region_meta"].__setitem__("1", None))),
        ["sg.json", "field=region_meta.1", "got null"]),
    "syntaxgym item number is null": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["items"][0].__setitem__("item_number", None))),
        ["sg.json", "field=items[1].item_number", "must be an integer, got null"]),
    "syntaxgym item number is a boolean": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["items"][0].__setitem__("item_number", True))),
        ["sg.json", "field=items[1].item_number", "got boolean"]),
    "syntaxgym item number has a fraction": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["items"][0].__setitem__("item_number", 1.5))),
        ["sg.json", "field=items[1].item_number", "got number"]),
    "syntaxgym region number is a boolean": (
        lambda t: write(t, "sg.json", suite_with(lambda s: region(s).__setitem__("region_number", True))),
        ["sg.json", "item=1", "condition=good", "field=regions[1].region_number", "got boolean"]),
    "syntaxgym region number twice": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["items"][0]["conditions"][0]["regions"].append(
            {"region_number": 2, "content": "naps."}))),
        ["sg.json", "item=1", "condition=good", "field=regions[3].region_number", "appears twice"]),
    "syntaxgym reference is an array": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["meta"].__setitem__("reference", ["A", "B"]))),
        ["sg.json", "field=meta.reference", "got array"]),
    "syntaxgym comment is a number": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["meta"].__setitem__("comment", 4))),
        ["sg.json", "field=meta.comment", "got integer"]),
    "syntaxgym tags are a string": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["meta"].__setitem__("tags", "agreement"))),
        ["sg.json", "field=meta.tags", "must be an array, got string"]),
    "syntaxgym prediction type is not formula": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["predictions"][0].__setitem__("type", "regex"))),
        ["sg.json", "field=predictions[1].type", "unsupported prediction type 'regex'"]),
    "syntaxgym conditions are an object": (
        lambda t: write(t, "sg.json", suite_with(lambda s: s["items"][0].__setitem__("conditions", {"good": []}))),
        ["sg.json", "item=1", "field=conditions", "must be an array, got object"]),
    "legacy string predictions are a string": (
        lambda t: write(t, "old.json", json.dumps(legacy(string_predictions="(2;%bad%) > (2;%good%)"))),
        ["old.json", "field=meta.string_predictions", "must be an array, got string"]),
    "legacy string prediction is a number": (
        lambda t: write(t, "old.json", json.dumps(legacy(string_predictions=[3]))),
        ["old.json", "field=meta.string_predictions", "entry 1 must be a string, got integer"]),
    "legacy unknown relation": (
        lambda t: write(t, "old.json", json.dumps(sg_suite(predictions=[
            {"relation": "bigger", "region_number": 2, "l_operand": "bad", "r_operand": "good"}]))),
        ["old.json", "field=predictions[1].relation", "unknown relation 'bigger'", "greaterthan"]),
    "legacy relation operand is a number": (
        lambda t: write(t, "old.json", json.dumps(sg_suite(predictions=[
            {"relation": "greaterthan", "region_number": 2, "l_operand": 1, "r_operand": "good"}]))),
        ["old.json", "field=predictions[1].l_operand", "must be a string, got integer"]),
    "legacy relation region number is a string": (
        lambda t: write(t, "old.json", json.dumps(sg_suite(predictions=[
            {"relation": "lessthan", "region_number": "two", "l_operand": "good", "r_operand": "bad"}]))),
        ["old.json", "field=predictions[1].region_number", "must be an integer, got string"]),
    "legacy metric list holds a number": (
        lambda t: write(t, "old.json", json.dumps(legacy(metric=["all", 2]))),
        ["old.json", "field=meta.metric", "entry 2 must be a string"]),
    "manifest prefix region without context_column": (
        lambda t: manifest(t, replace_yaml("[subject, verb, rest]", "[prefix, verb, rest]")),
        ["s.yaml", "field=regions", "reserved", "context_column"]),
    "manifest context column is a region": (
        lambda t: manifest(t, GOOD_YAML + "context_column: subject\n"),
        ["s.yaml", "field=context_column", "'subject' is a region"]),
    "manifest context column is missing from the items": (
        lambda t: manifest(t, GOOD_YAML + "context_column: prime\n"),
        ["s.csv", "field=context_column", "column 'prime'", "is missing"]),
    "manifest context column is a list": (
        lambda t: manifest(t, GOOD_YAML + "context_column: [prime]\n"),
        ["s.yaml", "field=context_column", "must be a string, got array"]),
    "manifest human region is a number": (
        lambda t: manifest(t, GOOD_YAML + HUMAN.replace("region: verb", "region: 2")),
        ["s.yaml", "field=human.region", "must be a string, got integer"]),
    "manifest human unit is a list": (
        lambda t: manifest(t, GOOD_YAML + HUMAN + "  unit: [ms]\n"),
        ["s.yaml", "field=human.unit", "got array"]),
    "manifest human size source is a number": (
        lambda t: manifest(t, GOOD_YAML + HUMAN + "  size_source: 2019\n"),
        ["s.yaml", "field=human.size_source", "got integer"]),
    "manifest factor level is null": (
        lambda t: manifest(t, GOOD_YAML + "factors:\n  agreement: [yes, null]\n"),
        ["s.yaml", "field=factors.agreement", "got null"]),
    "manifest name is null": (
        lambda t: manifest(t, replace_yaml("name: {name}", "name: null")),
        ["s.yaml", "field=name", "must be a string, got null"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_gym_file_gives_one_line_error_and_exit_2(case, tmp_path, capsys):
    assert_one_line_error(CASES[case], tmp_path, capsys)


def test_at_least_ten_new_cases():
    assert len(CASES) >= 10


def test_the_cli_prints_no_traceback_for_a_wrong_type(tmp_path):
    bad = write(tmp_path, "sg.json", suite_with(lambda s: s["region_meta"].__setitem__("1", {"name": "subj"})))
    proc = subprocess.run([sys.executable, "-m", "psyling.cli", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert "field=region_meta.1: must be a string, got object" in proc.stderr


def test_the_good_files_of_the_sweep_still_validate(tmp_path, capsys):
    manifest(tmp_path, GOOD_YAML + HUMAN + "  unit: ms\n  size_source: A table\n")
    write(tmp_path, "sg.json", json.dumps(sg_suite()))
    write(tmp_path, "old.json", json.dumps(legacy()))
    assert main(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 valid, 0 invalid" in out
    assert all(f"ok  {name}: " in out for name in ("s", "sg", "old"))
