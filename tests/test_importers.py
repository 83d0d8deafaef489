"""Importers against the real published files: counts, and fields spot-checked against the raw rows read here
(published sentences are never written into the repository)."""
import csv

import pytest

from psyling.measures import align
from psyling.stimuli import load_sets, load_stimuli
from psyling.stimuli.io import discover


def read_tsv(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_marvin_linzen_22_test_cases_163124_pairs(data):
    sets = load_sets(data / "marvin_linzen2018" / "marvin_linzen_emnlp2018_pairs.tsv")
    assert len(sets) == 22
    assert sum(len(s.items) for s in sets) == 163_124
    npi = next(s for s in sets if s.name == "npi_across_anim")
    assert npi.conditions == ("grammatical", "ungrammatical", "ungrammatical_2") and len(npi.predictions) == 2
    first = npi.items[0]
    with open(data / "marvin_linzen2018" / "marvin_linzen_emnlp2018_pairs.tsv", encoding="utf-8") as fh:
        raw = next(r for r in csv.DictReader(fh, delimiter="\t") if r["test_case"] == "npi_across_anim")
    assert first.id == f"{raw['condition']}-{raw['idx']}"
    assert [first.conditions[c].text for c in npi.conditions] == \
        [raw["grammatical"], raw["ungrammatical"], raw["ungrammatical_2"]]
    simple = next(s for s in sets if s.name == "simple_agrmt")
    assert simple.conditions == ("grammatical", "ungrammatical") and len(simple.items) == 140
    assert [p.formula for p in simple.predictions] == ["(*;%grammatical%) < (*;%ungrammatical%)"]


def test_climp_16_paradigms_16000_pairs_aligned_by_characters(data):
    loaded = load_stimuli([data / "climp_chinese" / "CLiMP_corpus"])
    assert loaded.errors == []
    assert len(loaded.sets) == 16 and sum(len(s.items) for s in loaded.sets) == 16_000
    clf = next(s for s in loaded.sets if s.name == "classifier")
    assert clf.language == "zh" and clf.segmentation == "none"
    good = clf.items[0].conditions["good"]
    with open(data / "climp_chinese" / "CLiMP_corpus" / "classifier_1000.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:3]
    assert [r[4] for r in rows] == ["1", "0"]
    assert good.text == rows[0][3] and " " not in good.text
    assert clf.items[0].conditions["bad"].text == rows[1][3]
    # a tokenizer's multi-character tokens map onto the region by character offsets
    al = align(good, [(0, 2), (2, 4), (4, 12)], clf.regions, "t", "none")
    assert al.words == [good.text] and al.token_word == [0, 0, 0]
    ba = next(s for s in loaded.sets if s.name == "ba_construction")  # the file without a header row
    assert len(ba.items) == 1000


def test_ettinger_cprag_role_neg(data):
    root = data / "ettinger2020_lm_diagnostics" / "datasets"
    cprag, = load_sets(root / "CPRAG-102" / "CPRAG-102.tsv")
    assert len(cprag.items) == 34 and cprag.conditions == ("expected", "within_category", "between_category")
    item = cprag.items[0]
    raw = read_tsv(root / "CPRAG-102" / "CPRAG-102.tsv")[0]
    assert item.conditions["expected"].prefix == raw["context_s1"]
    assert item.conditions["expected"].regions == (raw["context_s2"], raw["expected"])
    assert item.conditions["within_category"].regions[1] == raw["within_category"]
    assert item.metadata["constraint"] == raw["constraint"]
    role, = load_sets(root / "ROLE-88" / "ROLE-88.tsv")
    assert len(role.items) == 44 and role.conditions == ("canonical", "reversed")
    rows = {r["item"]: r for r in read_tsv(root / "ROLE-88" / "ROLE-88.tsv")}
    pair = next(i for i in role.items if i.id == "61")
    assert pair.conditions["canonical"].regions == (rows["61-a"]["context"].strip(), rows["61-a"]["target"])
    assert pair.conditions["reversed"].regions == (rows["61-b"]["context"].strip(), rows["61-b"]["target"])
    assert rows["61-a"]["target"] == rows["61-b"]["target"]
    simp, = load_sets(root / "NEG-136" / "NEG-136-SIMP.tsv")
    nat, = load_sets(root / "NEG-136" / "NEG-136-NAT.tsv")
    assert len(simp.items) == 18 and len(nat.items) == 16
    assert 4 * (len(simp.items) + len(nat.items)) == 136
    first, raw = simp.items[0].conditions, read_tsv(root / "NEG-136" / "NEG-136-SIMP.tsv")[0]
    article = "an" if raw["target_aff"][0] in "aeiou" else "a"
    assert first["aff_true"].text == f"{raw['context_aff'].replace('(a|an)', article)} {raw['target_aff']}"
    assert first["neg_false"].text == f"{raw['context_neg'].replace('(a|an)', article)} {raw['target_aff']}"
    assert "(a|an)" not in first["aff_false"].text
    assert nat.items[0].metadata["licensing"] == "Y"


def test_generic_pairs_csv(tmp_path):
    path = tmp_path / "my_pairs.csv"
    path.write_text("good,bad,note\nThe cat sleeps.,The cat sleep.,agr\nShe ran home.,She runned home.,morph\n")
    stim, = load_sets(path)
    assert stim.name == "my_pairs" and len(stim.items) == 2 and stim.items[1].metadata == {"note": "morph"}
    assert stim.items[0].conditions["bad"].text == "The cat sleep."
    assert discover(tmp_path) == [path]


@pytest.mark.parametrize("name,content,fragments", [
    ("ml.tsv", "test_case\tcondition\tidx\tgrammatical\tungrammatical\tungrammatical_2\ncase\tc\t0\ta b\n",
     ["ml.tsv", "field=row", "line 2 has 4 fields"]),
    ("ml2.tsv", "test_case\tcondition\tidx\tgrammatical\tungrammatical\tungrammatical_2\ncase\tc\t0\ta b\t\t\n",
     ["item=c-0", "condition=ungrammatical", "missing or empty"]),
    ("pairs.csv", "good,bad\nThe cat sleeps.,\n", ["pairs.csv", "item=1", "condition=bad", "field=bad"]),
    ("climp.csv", ",0,1,2,3\n0,a,b,猫睡觉,1\n1,a,b,猫睡,1\n", ["climp.csv", "item=1", "field=label"]),
    ("role.tsv", "item\tcontext\texpected\texp_cloze\ttarget\ttgt_cloze\ttgt_cloze(strict)\nx\tThe\ta\t0\tb\t0\t0\n",
     ["role.tsv", "item=x", "12-a / 12-b"]),
])
def test_malformed_tables_give_one_line_errors(tmp_path, capsys, name, content, fragments):
    from psyling.cli import main

    path = tmp_path / name
    path.write_text(content)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for fragment in fragments:
        assert fragment in err, (fragment, err)
