"""Importers against the real published files: counts and spot-checked fields."""
import pytest

from psyling.measures import align
from psyling.stimuli import load_sets, load_stimuli
from psyling.stimuli.io import discover


def test_marvin_linzen_22_test_cases_163124_pairs(data):
    sets = load_sets(data / "marvin_linzen2018" / "marvin_linzen_emnlp2018_pairs.tsv")
    assert len(sets) == 22
    assert sum(len(s.items) for s in sets) == 163_124
    npi = next(s for s in sets if s.name == "npi_across_anim")
    assert npi.conditions == ("grammatical", "ungrammatical", "ungrammatical_2") and len(npi.predictions) == 2
    first = npi.items[0]
    assert first.id == "past-0" and first.conditions["grammatical"].text.startswith("no authors that")
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
    assert good.text == "李波正在发现一个大学校园" and " " not in good.text
    assert clf.items[0].conditions["bad"].text == "李波正在发现一种大学校园"
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
    assert item.conditions["expected"].prefix.endswith("announced with glee.")
    assert item.conditions["within_category"].regions[1] == "monopoly" and item.metadata["constraint"] == "H"
    role, = load_sets(root / "ROLE-88" / "ROLE-88.tsv")
    assert len(role.items) == 44 and role.conditions == ("canonical", "reversed")
    pair = next(i for i in role.items if i.id == "61")
    assert pair.conditions["canonical"].regions == ("The librarian documented which celebrities the journalist "
                                                    "had", "interviewed")
    assert pair.conditions["reversed"].regions[1] == "interviewed"
    simp, = load_sets(root / "NEG-136" / "NEG-136-SIMP.tsv")
    nat, = load_sets(root / "NEG-136" / "NEG-136-NAT.tsv")
    assert len(simp.items) == 18 and len(nat.items) == 16
    assert 4 * (len(simp.items) + len(nat.items)) == 136
    trout = simp.items[0].conditions
    assert trout["aff_true"].text == "A trout is a fish" and trout["neg_false"].text == "A trout is not a fish"
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
    ("climp.csv", ",0,1,2,3\n0,a,b,猫睡觉,1\n1,a,b,猫睡,1\n", ["climp.csv", "item=0", "field=label"]),
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
