"""Malformed stimulus files: each gives one line naming file, item/condition and field, and exit code 2."""
import json
import subprocess
import sys

import pytest

from psyling.cli import main

GOOD_YAML = """schema_version: 1
name: {name}
phenomenon: agreement
citation: "Test (2024)"
items: {items}
regions: [subject, verb, rest]
conditions: [match, mismatch]
predictions:
  - "(verb;%mismatch%) > (verb;%match%)"
"""
GOOD_CSV = "item,condition,subject,verb,rest\n1,match,The cat,sleeps,all day.\n1,mismatch,The cat,sleep,all day.\n" \
           "2,match,The dogs,run,far.\n2,mismatch,The dogs,runs,far.\n"


def manifest(tmp, yaml_text=None, csv_text=GOOD_CSV, name="s", **fmt):
    (tmp / f"{name}.csv").write_text(csv_text)
    path = tmp / f"{name}.yaml"
    path.write_text((yaml_text or GOOD_YAML).format(name=name, items=f"{name}.csv", **fmt))
    return path


def replace_yaml(old, new):
    return GOOD_YAML.replace(old, new)


def sg_suite(**changes):
    suite = {"meta": {"name": "sg", "metric": "sum"}, "region_meta": {"1": "subj", "2": "verb"},
             "predictions": [{"type": "formula", "formula": "(2;%bad%) > (2;%good%)"}],
             "items": [{"item_number": 1, "conditions": [
                 {"condition_name": "good", "regions": [{"region_number": 1, "content": "The cat"},
                                                        {"region_number": 2, "content": "sleeps."}]},
                 {"condition_name": "bad", "regions": [{"region_number": 1, "content": "The cat"},
                                                       {"region_number": 2, "content": "sleep."}]}]}]}
    for key, value in changes.items():
        suite[key] = value
    return suite


def write(tmp, name, content):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


HUMAN = "human:\n  measure: SPR\n  direction: slower\n  source: A study\n  effect: \"{effect}\"\n"
CASES = {
    # name: (builder(tmp) -> path, fragments expected in the one-line error)
    "human effect is a comparison": (
        lambda t: manifest(t, GOOD_YAML + HUMAN.replace("{effect}", "(verb;%mismatch%) > (verb;%match%)")),
        ["s.yaml", "field=human.effect", "is a comparison"]),
    "human effect names an unknown condition": (
        lambda t: manifest(t, GOOD_YAML + HUMAN.replace("{effect}", "(verb;%bad%) - (verb;%match%)")),
        ["s.yaml", "field=human.effect", "unknown condition 'bad'"]),
    "factor with the wrong number of levels": (
        lambda t: manifest(t, GOOD_YAML + "factors:\n  agreement: [yes, no, no]\n"),
        ["s.yaml", "field=factors.agreement", "3 levels given for 2 conditions"]),
    "missing required field": (lambda t: manifest(t, replace_yaml("citation: \"Test (2024)\"\n", "")),
                               ["s.yaml", "field=citation", "required field is missing"]),
    "regions wrong type": (lambda t: manifest(t, replace_yaml("[subject, verb, rest]", "subject")),
                           ["s.yaml", "field=regions", "must be a list"]),
    "unsupported schema version": (lambda t: manifest(t, "schema_version: 9\n" + GOOD_YAML.split("\n", 1)[1]),
                                   ["field=schema_version", "unsupported schema_version 9"]),
    "yaml syntax": (lambda t: manifest(t, GOOD_YAML + "regions: [a, b\n"), ["s.yaml", "field=manifest", "YAML"]),
    "items file missing": (lambda t: manifest(t, replace_yaml("items: {items}", "items: nothere.csv")),
                           ["s.yaml", "field=items", "not found"]),
    "missing region column": (lambda t: manifest(t, csv_text=GOOD_CSV.replace(",rest", ",other")),
                              ["s.csv", "field=rest", "column 'rest' is missing"]),
    "unknown condition in items": (lambda t: manifest(t, csv_text=GOOD_CSV + "2,other,The dogs,run,far.\n"),
                                   ["s.csv", "item=2", "condition=other", "field=condition", "unknown condition"]),
    "item lacks a condition": (lambda t: manifest(t, csv_text=GOOD_CSV.rsplit("2,mismatch", 1)[0]),
                               ["s.csv", "item=2", "condition=mismatch", "missing"]),
    "duplicate item and condition": (lambda t: manifest(t, csv_text=GOOD_CSV + "2,match,The dogs,run,far.\n"),
                                     ["s.csv", "item=2", "condition=match", "duplicate row"]),
    "empty text": (lambda t: manifest(t, csv_text=GOOD_CSV.replace("1,match,The cat,sleeps,all day.",
                                                                   "1,match,,,")),
                   ["s.csv", "item=1", "condition=match", "all regions are empty"]),
    "extra whitespace": (lambda t: manifest(t, csv_text=GOOD_CSV.replace("The cat,sleeps", "The  cat,sleeps")),
                         ["s.csv", "item=1", "field=subject", "whitespace"]),
    "empty item id": (lambda t: manifest(t, csv_text=GOOD_CSV + ",match,The dogs,run,far.\n"),
                      ["s.csv", "field=item", "empty item id"]),
    "ragged row": (lambda t: manifest(t, csv_text=GOOD_CSV + "3,match,The dogs,run,far.,extra\n"),
                   ["s.csv", "item=3", "field=row", "more fields"]),
    "invalid utf-8 in items": (lambda t: manifest(t, csv_text=GOOD_CSV) and
                               write(t, "s.csv", GOOD_CSV.encode() + b"3,match,The caf\xe9,is,open.\n")
                               and t / "s.yaml",
                               ["s.csv", "field=encoding", "invalid UTF-8 at line 6"]),
    "unparseable formula": (lambda t: manifest(t, replace_yaml('"(verb;%mismatch%) > (verb;%match%)"',
                                                               '"(verb;%mismatch%) >> (verb;%match%)"')),
                            ["s.yaml", "field=predictions", "prediction 1"]),
    "formula unknown region": (lambda t: manifest(t, replace_yaml("(verb;%mismatch%) >", "(noun;%mismatch%) >")),
                               ["s.yaml", "field=predictions", "unknown region 'noun'"]),
    "formula unknown condition": (lambda t: manifest(t, replace_yaml("%mismatch%) >", "%wrong%) >")),
                                  ["s.yaml", "field=predictions", "unknown condition 'wrong'"]),
    "formula not a comparison": (lambda t: manifest(t, replace_yaml("(verb;%mismatch%) > (verb;%match%)",
                                                                    "(verb;%mismatch%) + (verb;%match%)")),
                                 ["field=predictions", "not a comparison"]),
    "human region unknown": (lambda t: manifest(t, GOOD_YAML + "human:\n  measure: SPR\n  region: noun\n"
                                                "  direction: up\n  source: X\n"),
                             ["field=human.region", "unknown region 'noun'"]),
    "human measure misspelled": (lambda t: manifest(t, GOOD_YAML + "human:\n  measure: N400\n  region: verb\n"
                                                    "  direction: up\n  source: X\n"),
                                 ["s.yaml", "field=human.measure", "unknown measure 'N400'", "ERP-N400"]),
    "human size wrong type": (lambda t: manifest(t, GOOD_YAML + "human:\n  measure: SPR\n  region: verb\n"
                                                 "  direction: up\n  source: X\n  size: big\n"),
                              ["field=human.size", "must be a number"]),
    "reserved region name": (lambda t: manifest(t, replace_yaml("[subject, verb, rest]", "[prefix, verb, rest]")),
                             ["field=regions", "reserved"]),
    "syntaxgym invalid json": (lambda t: write(t, "sg.json", "{\"meta\": "),
                               ["sg.json", "field=json", "not valid JSON"]),
    "syntaxgym region numbers": (lambda t: write(t, "sg.json", json.dumps(sg_suite(
        region_meta={"1": "subj", "3": "verb"}))), ["sg.json", "field=region_meta", "1..N"]),
    "syntaxgym duplicate item": (lambda t: write(t, "sg.json", json.dumps(sg_suite(
        items=sg_suite()["items"] * 2))), ["sg.json", "item=1", "duplicate item id"]),
    "syntaxgym content wrong type": (lambda t: write(t, "sg.json", json.dumps(sg_suite(items=[
        {"item_number": 1, "conditions": [{"condition_name": "good", "regions": [
            {"region_number": 1, "content": 5}, {"region_number": 2, "content": "x"}]}]}]))),
        ["sg.json", "item=1", "condition=good", "field=regions"]),
    "blimp missing sentence": (lambda t: write(t, "b.jsonl", json.dumps({"sentence_good": "A cat sleeps.",
                                                                         "pairID": "0"}) + "\n"),
                               ["b.jsonl", "item=0", "condition=bad", "field=sentence_bad"]),
    "blimp invalid line": (lambda t: write(t, "b.jsonl", "{not json}\n"), ["b.jsonl", "line 1", "field=json"]),
    "blimp duplicate pair": (lambda t: write(t, "b.jsonl", (json.dumps({"sentence_good": "A cat sleeps.",
                                                                       "sentence_bad": "A cat sleep.",
                                                                       "pairID": "0"}) + "\n") * 2),
                             ["b.jsonl", "item=0", "duplicate item id"]),
    "unknown file type": (lambda t: write(t, "notes.docx", "hello"), ["notes.docx", "unknown stimulus file type"]),
    "duplicate manifest key": (lambda t: manifest(t, GOOD_YAML + "predictions: []\n"),
                               ["s.yaml", "field=manifest", "duplicate key 'predictions'"]),
    "set name with a path": (lambda t: manifest(t, replace_yaml("name: {name}", 'name: "a/../../evil"')),
                             ["s.yaml", "field=name", "a/../../evil"]),
    "set name with markup": (lambda t: manifest(t, replace_yaml("name: {name}", 'name: "<b>x</b>"')),
                             ["s.yaml", "field=name", "<b>x</b>"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_gives_one_line_error_and_exit_2(case, tmp_path, capsys):
    assert_one_line_error(CASES[case], tmp_path, capsys)


def assert_one_line_error(case, tmp_path, capsys):
    """``psyling validate`` on the file a (build, fragments) case writes: exit 2, one error line holding every
    fragment, no traceback."""
    build, fragments = case
    path = build(tmp_path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("psyling: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_every_spelling_of_the_schema_loads(tmp_path):
    from psyling.stimuli import load_set
    from psyling.stimuli.schema import HUMAN_MEASURES

    for measure in HUMAN_MEASURES:
        path = manifest(tmp_path, GOOD_YAML + f"human:\n  measure: {measure}\n  direction: up\n  source: X\n")
        assert load_set(path).human.measure == measure


def test_cli_prints_no_traceback(tmp_path):
    bad = write(tmp_path, "b.jsonl", "{not json}\n")
    proc = subprocess.run([sys.executable, "-m", "psyling.cli", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr


def test_validate_reports_each_bad_file_and_keeps_the_good_ones(tmp_path, capsys):
    manifest(tmp_path, name="good")
    write(tmp_path, "bad.jsonl", "{not json}\n")
    assert main(["validate", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "ok  good: 2 items x 2 conditions" in captured.out
    assert "1 valid, 1 invalid" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "bad.jsonl" in captured.err
