"""Readers for psyling manifests, SyntaxGym JSON and BLiMP JSONL on the real published files."""
import json
from pathlib import Path

from psyling.stimuli import load_set, load_stimuli, stimuli_root, to_syntaxgym
from psyling.stimuli import battery_files


def test_all_syntaxgym_2020_suites_load_and_predictions_parse(data):
    files = sorted((data / "syntaxgym_hu2020" / "test_suites" / "json").glob("*.json"))
    assert len(files) == 34
    sets = [load_set(f) for f in files]
    assert sum(len(s.items) for s in sets) == 842
    assert all(s.predictions for s in sets)
    mvrr = next(s for s in sets if s.name == "mvrr")
    raw = json.loads((data / "syntaxgym_hu2020" / "test_suites" / "json" / "mvrr.json").read_text())
    assert mvrr.regions == tuple(raw["region_meta"][str(i)] for i in range(1, 7)) and len(mvrr.conditions) == 4
    first = raw["items"][0]["conditions"][0]
    assert mvrr.items[0].conditions[first["condition_name"]].text == \
        " ".join(" ".join(r["content"].split()) for r in first["regions"] if r["content"].strip())


def test_syntaxgym_round_trip_keeps_regions_conditions_predictions(data, tmp_path):
    for original in sorted((data / "syntaxgym_hu2020" / "test_suites" / "json").glob("*.json")):
        suite = json.loads(original.read_text())
        written = tmp_path / original.name
        written.write_text(json.dumps(to_syntaxgym(load_set(original))))
        again = json.loads(written.read_text())
        assert again["region_meta"] == suite["region_meta"]
        assert [p["formula"] for p in again["predictions"]] == [p["formula"] for p in suite["predictions"]]
        assert again["meta"] == suite["meta"]
        for a, b in zip(again["items"], suite["items"]):
            assert a["item_number"] == b["item_number"]
            assert [c["condition_name"] for c in a["conditions"]] == [c["condition_name"] for c in b["conditions"]]
            for ca, cb in zip(a["conditions"], b["conditions"]):  # content is whitespace-normalised on import
                assert [(r["region_number"], r["content"]) for r in ca["regions"]] == \
                       [(r["region_number"], " ".join(r["content"].split())) for r in cb["regions"]]


def test_all_blimp_paradigms_load(data):
    loaded = load_stimuli([data / "blimp" / "data"])
    assert loaded.errors == []
    assert len(loaded.sets) == 67
    assert sum(len(s.items) for s in loaded.sets) == 67_000
    island = next(s for s in loaded.sets if s.name == "adjunct_island")
    assert island.conditions == ("good", "bad") and island.regions == ("sentence",)
    assert [p.formula for p in island.predictions] == ["(*;%good%) < (*;%bad%)"]
    assert island.phenomenon == "island_effects" and island.metadata["field"] == "syntax"
    assert island.items[0].metadata["pairID"] == "0"


def test_our_set_names_differ_from_every_external_battery(data):
    """A run over core plus an external battery keeps every set: set names are unique across them."""
    ours = {s.name for s in load_stimuli(battery_files("core")).sets}
    for battery in ("blimp", "syntaxgym2020", "marvin-linzen", "ettinger2020", "climp"):
        theirs = load_stimuli(battery_files(battery))
        assert theirs.errors == [] and theirs.sets, battery
        assert ours.isdisjoint(s.name for s in theirs.sets), battery


def test_core_battery_is_valid_and_has_human_findings():
    files = battery_files("core")
    loaded = load_stimuli(files)
    assert loaded.errors == []
    assert len(loaded.sets) >= 24 and len({s.phenomenon for s in loaded.sets}) >= 12  # issue 3's floor
    for stim in loaded.sets:
        assert len(stim.items) >= 24 and stim.citation and stim.human is not None
        assert stim.human.region in stim.regions + ("*",)
    assert Path(stim.source).resolve().is_relative_to(stimuli_root().resolve())


def test_syntaxgym_detokenize_attaches_periods_and_commas(data):
    from psyling.stimuli import load_syntaxgym

    path = data / "syntaxgym_hu2020" / "test_suites" / "json"
    plain, detok = load_syntaxgym(path / "npz_ambig.json"), load_syntaxgym(path / "npz_ambig.json", detokenize=True)
    before = plain.items[0].conditions["ambig_comma"]
    after = detok.items[0].conditions["ambig_comma"]
    assert " ," in before.text and " ," not in after.text and " ." not in after.text
    assert after.text == before.text.replace(" ,", ",").replace(" .", ".")
    comma = next(i for i, r in enumerate(after.regions) if r == ",")
    assert comma in after.attached
    assert detok.metadata["detokenized_regions"] > 0 and plain.metadata["detokenized_regions"] is None
    sub = load_syntaxgym(path / "subordination.json", detokenize=True)
    assert all(" ." not in c.text and " ," not in c.text for i in sub.items for c in i.conditions.values())
