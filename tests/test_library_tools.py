"""psyling new, validate's design checks, and the battery listing."""
import pytest

from psyling.cli import main
from psyling.stimuli import load_set
from psyling.stimuli.quality import quality_report

from test_malformed import GOOD_CSV, manifest


def test_new_scaffolds_a_valid_set_and_never_overwrites(tmp_path, capsys):
    assert main(["new", "my_set", "--dir", str(tmp_path)]) == 0
    stim = load_set(tmp_path / "my_set.yaml")
    assert stim.name == "my_set" and stim.human.region == "verb" and stim.metadata["manipulated"] == ["verb"]
    assert main(["validate", str(tmp_path)]) == 0
    assert main(["new", "my_set", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_design_check_flags_a_condition_that_differs_outside_the_manipulated_region(tmp_path):
    csv_text = GOOD_CSV.replace("1,mismatch,The cat,sleep,all day.", "1,mismatch,The cats,sleep,all day.") + \
        "3,match,The owl,hoots,at night.\n3,mismatch,The owl,hoot,at night.\n"
    path = manifest(tmp_path, csv_text=csv_text)
    report = quality_report(load_set(path))
    assert report.warnings == ["item 1: match and mismatch differ in subject, verb, most items in verb"]
    path.write_text(path.read_text() + "manipulated: [verb]\n")
    assert quality_report(load_set(path)).warnings == [
        "item 1: match and mismatch differ in subject, which the design does not manipulate"]


def test_duplicates_and_balance(tmp_path):
    csv_text = GOOD_CSV + "3,match,The cat,sleeps,all day.\n3,mismatch,The cat,sleeeeeeeeps,all day.\n"
    yaml_text = open(manifest(tmp_path, csv_text=csv_text)).read() + (
        "human:\n  measure: SPR\n  region: verb\n  direction: up\n  source: X\n")
    (tmp_path / "s.yaml").write_text(yaml_text)
    report = quality_report(load_set(tmp_path / "s.yaml"))
    assert "item 3 condition match: same sentence as item 1" in report.warnings
    balance = {row["condition"]: row for row in report.balance}
    assert balance["match"]["length"] == round((6 + 3 + 6) / 3, 2)  # sleeps, run, sleeps
    assert balance["match"]["zipf"] > balance["mismatch"]["zipf"]  # 'sleeeeeeeeps' is not a word


def test_batteries_lists_sets_and_items(capsys):
    assert main(["batteries"]) == 0
    out = capsys.readouterr().out
    core = next(line for line in out.splitlines() if line.startswith("core "))
    assert int(core.split()[1]) >= 24
    assert "syntaxgym2020" in out and "blimp" in out


def test_version_flag(capsys):
    import psyling

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"psyling {psyling.__version__}"
