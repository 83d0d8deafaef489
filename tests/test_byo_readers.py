"""Bring your own published set (issue 14, points 2, 3, 8): pair tables with the good/bad columns found by name,
text pair files, provenance from the file or its sidecar only, segmentation detected or declared, one item-id
rule, and folders whose every table is either read or reported. All sentences are written for these tests."""
import json

import pytest

from psyling.cli import main
from psyling.config import RunConfig
from psyling.errors import PsylingError
from psyling.stimuli.blimp import BLIMP_CITATION
from psyling.stimuli.io import discover, load_set, load_sets, load_stimuli
from psyling.stimuli.reading import ReaderOptions

EN = [("The dog barks at night.", "The dog bark at night."), ("Two cats were asleep.", "Two cats was asleep.")]
ZH = [("我昨天买了三本书。", "我昨天买了三个书。"), ("他把门关上了。", "他把门关上门了。")]
JA = [("私は本を読みました。", "私が本を読みましたを。"), ("猫が庭で寝ている。", "猫を庭で寝ている。")]


def write(folder, name, text):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(folder, name, rows):
    return write(folder, name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def texts(stim):
    return [(i.conditions["good"].text, i.conditions["bad"].text) for i in stim.items]


@pytest.mark.parametrize("name,content,ids", [
    ("id_first.csv", "ID,good,bad\n7,{0},{1}\n9,{2},{3}\n", ["7", "9"]),
    ("bad_first.csv", "bad,good\n{1},{0}\n{3},{2}\n", ["1", "2"]),
    ("spelled.csv", "note,Sentence_Good,SENTENCE-BAD,pairID\nx,{0},{1},a\ny,{2},{3},b\n", ["a", "b"]),
    ("gram.tsv", "item\tungrammatical\tgrammatical\n1\t{1}\t{0}\n2\t{3}\t{2}\n", ["1", "2"]),
    ("accept.tab", "acceptable\tunacceptable\n{0}\t{1}\n{2}\t{3}\n", ["1", "2"]),
])
def test_pair_tables_find_good_and_bad_columns_by_name(tmp_path, name, content, ids):
    path = write(tmp_path, name, content.format(*[s for pair in EN for s in pair]))
    stim = load_set(path)
    assert texts(stim) == EN and [i.id for i in stim.items] == ids
    assert stim.conditions == ("good", "bad") and [p.formula for p in stim.predictions] == ["(*;%good%) < (*;%bad%)"]
    assert discover(tmp_path) == [path]


def test_extra_columns_are_item_metadata_strings(tmp_path):
    path = write(tmp_path, "meta.csv", f"good,bad,number,distance\n{EN[0][0]},{EN[0][1]},sg,2\n"
                                       f"{EN[1][0]},{EN[1][1]},pl,0\n")
    assert [i.metadata for i in load_set(path).items] == [{"number": "sg", "distance": "2"},
                                                           {"number": "pl", "distance": "0"}]
    rows = [{"sentence_good": g, "sentence_bad": b, "flag": k == 0, "n": k, "tags": ["t"]} for k, (g, b) in
            enumerate(EN)]
    assert load_set(jsonl(tmp_path, "meta.jsonl", rows)).items[0].metadata == {"flag": "true", "n": "0",
                                                                              "tags": '["t"]'}


def test_item_ids_are_the_file_ids_else_positions_from_one_in_every_reader(tmp_path):
    """One rule: blank lines and headers are not counted; the first pair is item 1 (BLiMP, CSV, text, CLiMP)."""
    csv_path = write(tmp_path, "a.csv", f"good,bad\n\n{EN[0][0]},{EN[0][1]}\n{EN[1][0]},{EN[1][1]}\n")
    json_path = jsonl(tmp_path, "b.jsonl", [{"sentence_good": g, "sentence_bad": b} for g, b in EN])
    json_path.write_text("\n" + json_path.read_text())
    txt_path = write(tmp_path, "c.txt", "\n".join(f"{g}\n\n{b}" for g, b in EN) + "\n")
    climp = write(tmp_path, "d.csv", ",0,1,2,3\n" + "".join(f"{2 * k},p,q,{s},{label}\n" for k, pair in
                                                              enumerate(ZH) for s, label in zip(pair, "10")))
    for path in (csv_path, json_path, txt_path, climp):
        assert [i.id for i in load_set(path).items] == ["1", "2"], path.name
    with_ids = jsonl(tmp_path, "e.jsonl", [{"sentence_good": g, "sentence_bad": b, "pairID": str(k * 10)}
                                           for k, (g, b) in enumerate(EN)])
    assert [i.id for i in load_set(with_ids).items] == ["0", "10"]


def test_a_jsonl_with_blimp_keys_is_not_blimp_unless_it_is(tmp_path):
    own = jsonl(tmp_path, "mine.jsonl", [{"sentence_good": g, "sentence_bad": b, "phenomenon": "agreement"}
                                         for g, b in EN])
    stim = load_set(own)
    assert (stim.citation, stim.license, stim.language) == ("", "", "")
    assert stim.phenomenon == "agreement" and stim.metadata["format"] == "pairs-jsonl"
    blimp_keys = {"field": "syntax", "linguistics_term": "island_effects", "UID": "adjunct_island"}
    lookalike = jsonl(tmp_path, "look.jsonl", [{"sentence_good": g, "sentence_bad": b, "pairID": str(k),
                                                **blimp_keys} for k, (g, b) in enumerate(EN)])
    stim = load_set(lookalike)
    assert (stim.name, stim.citation, stim.license, stim.language) == ("adjunct_island", BLIMP_CITATION,
                                                                       "CC-BY-4.0", "en")
    assert stim.phenomenon == "island_effects" and stim.metadata["format"] == "blimp"
    chinese = jsonl(tmp_path, "zh.jsonl", [{"sentence_good": g, "sentence_bad": b, "pairID": str(k),
                                            **blimp_keys, "UID": "classifier_noun"} for k, (g, b) in enumerate(ZH)])
    stim = load_set(chinese)  # BLiMP's layout, another benchmark: its own name, no BLiMP provenance
    assert (stim.name, stim.citation, stim.language, stim.phenomenon) == ("classifier_noun", "", "", "island_effects")
    non_ascii = jsonl(tmp_path, "na.jsonl", [{"sentence_good": g, "sentence_bad": b, "pairID": str(k), **blimp_keys}
                                             for k, (g, b) in enumerate(JA)])
    assert load_set(non_ascii).citation == ""


def test_sets_without_a_phenomenon_are_not_pooled_together(tmp_path):
    write(tmp_path, "first.csv", f"good,bad\n{EN[0][0]},{EN[0][1]}\n")
    jsonl(tmp_path, "second.jsonl", [{"good": EN[1][0], "bad": EN[1][1]}])
    write(tmp_path, "third.txt", f"{EN[0][0]}@@@{EN[0][1]}\n")
    sets = load_stimuli([tmp_path]).sets
    assert [(s.name, s.phenomenon, s.metadata["phenomenon_source"]) for s in sets] == [
        ("first", "first", "set name"), ("second", "second", "set name"), ("third", "third", "set name")]
    mixed = jsonl(tmp_path, "mixed.jsonl", [{"good": g, "bad": b, "phenomenon": p} for (g, b), p in
                                                  zip(EN, ("agreement", "tense"))])
    stim = load_set(mixed)  # several values: per item, and the set's phenomenon is its name
    assert stim.phenomenon == "mixed" and [i.metadata["phenomenon"] for i in stim.items] == ["agreement", "tense"]


@pytest.mark.parametrize("content,layout", [
    ("{0}\n{1}\n\n{2}\n{3}\n", "alternating lines"),
    ("{0}@@@{1}\n{2}@@@{3}\n", "separator @@@"),
    ("{0}\t{1}\n\n{2}\t{3}\n", "separator tab"),
])
def test_text_pair_files(tmp_path, content, layout):
    path = write(tmp_path, "pairs.txt", content.format(*[s for pair in EN for s in pair]))
    stim = load_set(path)
    assert texts(stim) == EN and [i.id for i in stim.items] == ["1", "2"]
    assert stim.metadata["layout"] == layout and (stim.citation, stim.language) == ("", "")
    write(tmp_path, "pairs.txt.psyling.yaml", "order: bad_first\n")
    assert texts(load_set(path)) == [(b, g) for g, b in EN]


def test_a_tab_separated_text_file_with_a_header_is_a_pair_table(tmp_path):
    path = write(tmp_path, "suite.txt", "test case\tgrammatical\tungrammatical\n"
                                        + "".join(f"c{k}\t{g}\t{b}\n" for k, (g, b) in enumerate(EN)))
    stim = load_set(path)
    assert texts(stim) == EN and [i.metadata for i in stim.items] == [{"test case": "c0"}, {"test case": "c1"}]


def test_sidecar_gives_provenance_columns_and_segmentation(tmp_path):
    data = write(tmp_path, "satz.csv", "nr,ok,falsch\n" + "".join(f"n{k},{g},{b}\n" for k, (g, b) in enumerate(ZH)))
    sidecar = write(tmp_path, "satz.csv.psyling.yaml", "name: zh_classifiers\ncitation: Test Author (2031)\n"
                    "license: CC0-1.0\nlanguage: zh\nphenomenon: classifiers\nsegmentation: whitespace\n"
                    "columns: {good: ok, bad: falsch, id: nr}\n")
    loaded = load_stimuli([tmp_path])
    assert loaded.errors == [] and len(loaded.sets) == 1 and set(loaded.files) == {str(data), str(sidecar)}
    stim = loaded.sets[0]
    assert (stim.name, stim.citation, stim.license, stim.language, stim.phenomenon) == (
        "zh_classifiers", "Test Author (2031)", "CC0-1.0", "zh", "classifiers")
    assert [i.id for i in stim.items] == ["n0", "n1"] and texts(stim) == ZH
    assert (stim.segmentation, stim.metadata["segmentation_source"]) == ("whitespace", "declared")
    assert discover(tmp_path) == [data]  # the sidecar is no manifest
    none = load_set(data, ReaderOptions(segmentation="none"))  # the explicit option overrides the sidecar
    assert none.segmentation == "none" and none.items[0].conditions["good"].separator == ""


@pytest.mark.parametrize("name,make", [
    ("zh.csv", lambda t: write(t, "zh.csv", "good,bad\n" + "".join(f"{g},{b}\n" for g, b in ZH))),
    ("ja.jsonl", lambda t: jsonl(t, "ja.jsonl", [{"sentence_good": g, "sentence_bad": b} for g, b in JA])),
    ("ja.txt", lambda t: write(t, "ja.txt", "".join(f"{g}\n{b}\n" for g, b in JA))),
    ("zh.tsv", lambda t: write(t, "zh.tsv", "id\tgood\tbad\n" + "".join(f"{k}\t{g}\t{b}\n" for k, (g, b) in
                                                                       enumerate(ZH)))),
])
def test_unspaced_scripts_are_detected_and_declared_whitespace_is_honoured(tmp_path, name, make):
    path = make(tmp_path)
    stim = load_set(path)
    assert (stim.segmentation, stim.metadata["segmentation_source"]) == ("none", "detected")
    assert stim.items[0].conditions["good"].separator == ""
    declared = load_set(path, ReaderOptions(segmentation="whitespace"))
    assert (declared.segmentation, declared.metadata["segmentation_source"]) == ("whitespace", "declared")
    english = write(tmp_path, "en.csv", "good,bad\n" + "".join(f"{g},{b}\n" for g, b in EN))
    assert (load_set(english).segmentation, load_set(english).metadata["segmentation_source"]) == (
        "whitespace", "detected")


def test_unsegmented_text_is_kept_as_written(tmp_path):
    path = write(tmp_path, "mixed.txt", "  我用 iPhone 拍了照片。 \n我用 iPhone 拍了个照片。\n")
    stim = load_set(path)
    assert stim.segmentation == "none" and texts(stim) == [("我用 iPhone 拍了照片。", "我用 iPhone 拍了个照片。")]
    spaced = write(tmp_path, "spaced.txt", "The  dog   barks.\nThe dog  bark.\n")
    assert texts(load_set(spaced)) == [("The dog barks.", "The dog bark.")]


def test_published_readers_detect_or_take_the_declared_segmentation(tmp_path):
    ml = write(tmp_path, "ml.tsv", "test_case\tcondition\tidx\tgrammatical\tungrammatical\tungrammatical_2\n"
               f"agr\tsg\t0\t{EN[0][0]}\t{EN[0][1]}\t\n")
    neg = write(tmp_path, "NEG.tsv", "item\tcontext_aff\tcontext_neg\ttarget_aff\ttarget_neg\tlicensing\n"
                "1\tA robin is (a|an)\tA robin is not (a|an)\tbird\ttree\tY\n")
    for path in (ml, neg):
        stim, = load_sets(path)
        assert (stim.segmentation, stim.metadata["segmentation_source"]) == ("whitespace", "detected")
        none, = load_sets(path, ReaderOptions(segmentation="none"))
        assert (none.segmentation, none.metadata["segmentation_source"]) == ("none", "declared")
    assert load_sets(neg, ReaderOptions(segmentation="none"))[0].items[0].conditions["aff_true"].text == \
        "A robin is abird"  # declared "none": regions joined without a separator
    climp = write(tmp_path, "c.csv", ",0,1,2,3\n0,p,q,我 买了 书。,1\n1,p,q,我 买了 个书。,0\n")
    stim, = load_sets(climp)
    assert (stim.segmentation, stim.metadata["segmentation_source"], texts(stim)) == (
        "none", "detected", [("我买了书。", "我买了个书。")])


def test_folder_of_every_shape_validates_and_lists_its_files(tmp_path, capsys):
    write(tmp_path, "id_good_bad.csv", "ID,good,bad\n" + "".join(f"{k},{g},{b}\n" for k, (g, b) in enumerate(EN)))
    write(tmp_path, "bad_good.tsv", "bad\tgood\n" + "".join(f"{b}\t{g}\n" for g, b in EN))
    jsonl(tmp_path, "zh_pairs.jsonl", [{"sentence_good": g, "sentence_bad": b} for g, b in ZH])
    write(tmp_path, "alternating.txt", "".join(f"{g}\n{b}\n" for g, b in JA))
    write(tmp_path, "separated.txt", "".join(f"{g}@@@{b}\n" for g, b in EN))
    write(tmp_path, "separated.txt.psyling.yaml", "citation: Test (2031)\n")
    write(tmp_path, "README.txt", "These are my pairs.\n")
    write(tmp_path, ".scratch.csv", "not,a,stimulus,table\n")
    write(tmp_path, "s.yaml", "schema_version: 1\nname: own_manifest\nphenomenon: agreement\ncitation: T\n"
                              "items: s_items.csv\nregions: [sentence]\nconditions: [good, bad]\n"
                              "predictions: ['(*;%good%) < (*;%bad%)']\n")
    write(tmp_path, "s_items.csv", f"item,condition,sentence\n1,good,{EN[0][0]}\n1,bad,{EN[0][1]}\n")
    assert main(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("id_good_bad", "bad_good", "zh_pairs", "alternating", "separated", "own_manifest"):
        assert f"ok  {name}: " in out, (name, out)
    assert "6 valid, 0 invalid" in out


def test_folder_reports_a_table_it_cannot_read(tmp_path, capsys):
    write(tmp_path, "pairs.csv", f"good,bad\n{EN[0][0]},{EN[0][1]}\n")
    write(tmp_path, "results.csv", "model,accuracy\ngpt,0.8\n")
    assert main(["validate", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "results.csv" in err and "field=header" in err
    assert "(model, accuracy)" in err and "sentence_good" in err and "ungrammatical" in err and "recognised" not in err
    assert "1 valid, 1 invalid" in captured.out


def test_run_config_carries_the_segmentation(tmp_path):
    config = RunConfig(stimuli=("x",), segmentation="none")
    assert RunConfig.from_dict(config.to_dict()) == config and config.reader_options == ReaderOptions(False, "none")
    legacy = config.to_dict()
    del legacy["segmentation"]
    assert RunConfig.from_dict(legacy).segmentation == "auto"
    with pytest.raises(PsylingError, match="unknown segmentation 'spaces'"):
        RunConfig(segmentation="spaces")


def test_cli_segmentation_option_reaches_the_run_config(monkeypatch, capsys):
    import psyling.api

    seen = {}

    def fake_run(config, **kwargs):
        seen["config"] = config
        raise PsylingError("recorded")

    monkeypatch.setattr(psyling.api, "run", fake_run)
    assert main(["run", "--stimuli", "zh.csv", "--segmentation", "none", "--out", "o"]) == 2
    assert "recorded" in capsys.readouterr().err
    assert seen["config"].segmentation == "none" and seen["config"].reader_options.segmentation == "none"
