"""Malformed pair tables, JSONL, text pair files and sidecars (issue 14): each is one line naming the file, the
item where there is one, and the field; `psyling validate` exits 2 without a traceback."""
import json
import subprocess
import sys

import pytest

from test_malformed import assert_one_line_error, write

ROW = {"sentence_good": "The bird sings.", "sentence_bad": "The bird sing."}
TWO = "good,bad\nThe bird sings.,The bird sing.\nBirds sing.,Birds sings.\n"


def lines(tmp, name, *rows):
    return write(tmp, name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def with_sidecar(tmp, sidecar, data="pairs.csv", content=TWO):
    write(tmp, f"{data}.psyling.yaml", sidecar)
    return write(tmp, data, content)


ML = "test_case\tcondition\tidx\tgrammatical\tungrammatical\tungrammatical_2\n" \
     "a\tsg\t0\tThe bird sings.\tThe bird sing.\t\nb\tsg\t0\tBirds sing.\tBirds sings.\t\n"
CASES = {
    # name: (builder(tmp) -> path, fragments expected in the one-line error)
    "csv empty good cell": (lambda t: write(t, "p.csv", TWO + ",Birds singed.\n"),
                            ["p.csv", "item=3", "condition=good", "field=good", "missing or empty"]),
    "csv row with too many fields": (lambda t: write(t, "p.csv", TWO + "A,B,C\n"),
                                     ["p.csv", "item=3", "field=row", "line 4 has 3 fields"]),
    "csv two good columns": (lambda t: write(t, "p.csv", "good,sentence_good,bad\na,b,c\n"),
                             ["p.csv", "field=header", "'good', 'sentence_good'", "columns.good"]),
    "csv good column without a bad one": (lambda t: write(t, "p.csv", "id,grammatical\n1,The bird sings.\n"),
                                          ["p.csv", "field=ungrammatical", "column 'ungrammatical' is missing"]),
    "csv empty id": (lambda t: write(t, "p.csv", "ID,good,bad\n1,A b.,A c.\n,B c.,B d.\n"),
                     ["p.csv", "item=2", "field=ID", "item id", "got empty"]),
    "jsonl sentence is a number": (lambda t: lines(t, "p.jsonl", {**ROW, "sentence_good": 3}),
                                   ["p.jsonl", "item=1", "condition=good", "field=sentence_good", "got integer"]),
    "jsonl sentence is null": (lambda t: lines(t, "p.jsonl", ROW, {**ROW, "sentence_bad": None}),
                               ["p.jsonl", "item=2", "condition=bad", "field=sentence_bad", "missing or empty"]),
    "jsonl sentence is a list": (lambda t: lines(t, "p.jsonl", {**ROW, "sentence_bad": ["The", "bird"]}),
                                 ["p.jsonl", "item=1", "field=sentence_bad", "got array"]),
    "jsonl line is an array": (lambda t: lines(t, "p.jsonl", ROW, "[1, 2]"),
                               ["p.jsonl", "item=2", "field=json", "line 2 is a JSON list, not an object"]),
    "jsonl id is a float": (lambda t: lines(t, "p.jsonl", {**ROW, "pairID": 1.5}),
                            ["p.jsonl", "item=1", "field=pairID", "got number"]),
    "jsonl phenomenon is a number": (lambda t: lines(t, "p.jsonl", {**ROW, "phenomenon": 7}),
                                     ["p.jsonl", "item=1", "field=phenomenon", "must be a string"]),
    "jsonl duplicate id": (lambda t: lines(t, "p.jsonl", {**ROW, "id": "4"}, {**ROW, "id": 4}),
                           ["p.jsonl", "item=4", "field=item", "duplicate item id"]),
    "jsonl without pair keys": (lambda t: lines(t, "p.jsonl", {"text": "The bird sings."}),
                                ["p.jsonl", "field=header", "keys: text", "sentence_good"]),
    "text odd number of lines": (lambda t: write(t, "p.txt", "The bird sings.\nThe bird sing.\n\nBirds sing.\n"),
                                 ["p.txt", "field=line", "3 non-blank lines", "line 4 has no partner"]),
    "text mixes separator and plain lines": (lambda t: write(t, "p.txt", "A b.@@@A c.\nB c.\n"),
                                             ["p.txt", "field=line", "line 2 has no '@@@'"]),
    "text two separators on a line": (lambda t: write(t, "p.txt", "A b.@@@A c.\nB c.@@@B d.@@@B e.\n"),
                                      ["p.txt", "item=2", "field=line", "2 '@@@' separators"]),
    "text empty bad side": (lambda t: write(t, "p.txt", "A b.@@@ \n"),
                            ["p.txt", "item=1", "condition=bad", "field=bad", "missing or empty"]),
    "text empty file": (lambda t: write(t, "p.txt", "\n \n"), ["p.txt", "field=items", "no pairs"]),
    "sidecar unknown key": (lambda t: with_sidecar(t, "citation: X\nlicence: CC0\n"),
                            ["pairs.csv.psyling.yaml", "field=licence", "unknown key 'licence'"]),
    "sidecar citation is a number": (lambda t: with_sidecar(t, "citation: 2024\n"),
                                     ["pairs.csv.psyling.yaml", "field=citation", "got integer"]),
    "sidecar unknown segmentation": (lambda t: with_sidecar(t, "segmentation: spaces\n"),
                                     ["pairs.csv.psyling.yaml", "field=segmentation", "'spaces'"]),
    "sidecar column not in the header": (lambda t: with_sidecar(t, "columns: {good: ok, bad: bad}\n"),
                                         ["pairs.csv.psyling.yaml", "field=columns.good", "'ok' is not in"]),
    "sidecar columns is a list": (lambda t: with_sidecar(t, "columns: [good, bad]\n"),
                                  ["pairs.csv.psyling.yaml", "field=columns", "got array"]),
    "sidecar order for a table": (lambda t: with_sidecar(t, "order: bad_first\n"),
                                  ["pairs.csv.psyling.yaml", "field=order", "does not apply to a table"]),
    "sidecar bad set name": (lambda t: with_sidecar(t, "name: a/b\n"),
                             ["pairs.csv.psyling.yaml", "field=name", "'a/b'"]),
    "sidecar name for a file of two sets": (lambda t: with_sidecar(t, "name: one\n", "ml.tsv", ML),
                                            ["ml.tsv.psyling.yaml", "field=name", "holds 2"]),
    "sidecar without its data file": (lambda t: write(t, "gone.csv.psyling.yaml", "citation: X\n"),
                                      ["gone.csv.psyling.yaml", "field=path", "gone.csv, which does not exist"]),
    "ettinger file without a column it reads": (lambda t: write(t, "CPRAG.tsv", "item\tcontext_s1\tcontext_s2\t"
                                                "expected\twithin_category\tbetween_category\n"
                                                "1\tShe ate.\tHe drank\ttea\tcoffee\tstone\n"),
                                                 ["CPRAG.tsv", "field=constraint", "'constraint' is missing"]),
    "climp odd number of rows": (lambda t: write(t, "c.csv", ",0,1,2,3\n0,p,q,我买了书。,1\n"),
                                 ["c.csv", "field=row", "1 rows"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_reader_input_gives_one_line_error_and_exit_2(case, tmp_path, capsys):
    assert_one_line_error(CASES[case], tmp_path, capsys)


def test_at_least_twelve_cases():
    assert len(CASES) >= 12


def test_a_folder_with_a_malformed_sidecar_prints_no_traceback(tmp_path):
    with_sidecar(tmp_path, "citation: [a, b]\n")
    write(tmp_path, "other.txt", "A b.\nA c.\n")
    proc = subprocess.run([sys.executable, "-m", "psyling.cli", "validate", str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "field=citation" in proc.stderr
    assert "1 valid, 1 invalid" in proc.stdout
