"""The SyntaxGym score on the item results released with Hu et al. (2020)."""
import pandas as pd
import pytest

from psyling.stats import item_passes, sg_score
from psyling.stimuli import load_battery


@pytest.mark.parametrize("model,published", [("gpt-2-pretrained_", 0.784), ("gpt-2-xl-pretrained_", 0.842)])
def test_sg_score_reproduces_hu_et_al_2020(data, model, published):
    battery = load_battery("syntaxgym2020")
    results = pd.read_csv(data / "syntaxgym_hu2020" / "data" / "raw" / "sg_results" / f"syntaxgym_results_{model}.csv")
    items = results.rename(columns={"suite": "set", "correct": "passed"})[["set", "item", "passed"]]
    score, circuits = sg_score(items, battery.score["exclude"], battery.score["circuits"])
    assert round(score, 3) == published
    assert circuits.n_suites.sum() == 31 and list(circuits.circuit)[0] == "Agreement"


def test_item_passes_requires_all_predictions():
    predictions = pd.DataFrame({"set": ["s"] * 4, "item": ["1", "1", "2", "2"], "passed": [True, False, True, True]})
    items = item_passes(predictions)
    assert list(items.passed) == [False, True]
    score, _ = sg_score(items)
    assert score == 0.5


def test_run_prints_the_battery_sg_score(data):
    from psyling.cli import _battery_score

    results = pd.read_csv(data / "syntaxgym_hu2020" / "data" / "raw" / "sg_results" /
                          "syntaxgym_results_gpt-2-pretrained_.csv")
    predictions = results.rename(columns={"suite": "set", "correct": "passed"})
    text = _battery_score("syntaxgym2020", predictions)
    assert "SG score of syntaxgym2020 (mean accuracy over 31 suites, excluding fgd-embed3" in text
    assert text.splitlines()[1].endswith(": 0.784") and "  Agreement " in text
    assert _battery_score("core", predictions) == ""
