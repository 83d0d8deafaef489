"""Whole published batteries scored by psyling: BLiMP and the SyntaxGym 2020 suites on the embedded smollm2-135m
(regression targets: the figures psyling measured on them), and GPT-2-large's published BLiMP accuracy (its
weights come from the Hugging Face hub)."""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import PsylingError
from ..stats import item_passes, sg_score
from ..stimuli import load_battery
from .registry import Reproduction, near

EMBEDDED = "smollm2-135m"
BLIMP_ACCURACY = "accuracy over the 67 paradigms"
SG_SCORE = "SG score (31 suites)"
# psyling's own measurements of smollm2-135m (default settings; SyntaxGym with surprisal_raw, as Hu et al.)
SMOLLM2_BLIMP = 47590 / 67000
SMOLLM2_SG = {SG_SCORE: 0.5219, "Agreement": 0.3684, "Licensing": 0.1737, "Garden-Path Effects": 0.8730,
              "Gross Syntactic State": 0.5000, "Center Embedding": 0.9286, "Long-Distance Dependencies": 0.7069}
SG_TOLERANCE = 0.002  # one item of a 19-item suite moves the SG score by 0.0017
CIRCUIT_TOLERANCE = 0.02  # and a 3-suite circuit by 0.018


def run_battery(model: str, battery: str, root: Path, **settings: Any):
    """``psyling.run`` of a battery whose published data lie under ``root``; reuses finished cached batches."""
    from .. import api

    files = load_battery(battery).files(root)
    result = api.run(model, stimuli=files, progress=sys.stderr.isatty(), resume=True, **settings)
    if result.errors:
        raise PsylingError(f"{battery} on {model}: {result.errors[0]}")
    return result


def blimp_accuracy(model: str, root: Path) -> dict[str, float]:
    """Mean accuracy over the 67 BLiMP paradigms (each 1,000 pairs, so also the share of all pairs)."""
    summary = run_battery(model, "blimp", root).summary
    return {BLIMP_ACCURACY: float(summary["accuracy"].mean())}


def syntaxgym_scores(model: str, root: Path) -> dict[str, float]:
    """SG score and circuit scores of the SyntaxGym 2020 suites, region surprisal as plain token sums."""
    result = run_battery(model, "syntaxgym2020", root, measure="surprisal_raw")
    config = load_battery("syntaxgym2020").score
    score, circuits = sg_score(item_passes(result.predictions), config["exclude"], config["circuits"])
    return {SG_SCORE: score, **circuits.set_index("circuit")["score"].to_dict()}


REPRODUCTIONS = (
    Reproduction(
        name="blimp-smollm2",
        citation=f"BLiMP (Warstadt et al. 2020), all 67,000 pairs on {EMBEDDED}: psyling's measurement "
                 "(47,590 pairs pass)",
        data="blimp", figures=(near(BLIMP_ACCURACY, SMOLLM2_BLIMP, 0.0005),),
        measure=partial(blimp_accuracy, EMBEDDED), minutes=70),
    Reproduction(
        name="syntaxgym2020-smollm2",
        citation=f"the 34 SyntaxGym suites of Hu et al. (2020) on {EMBEDDED}: psyling's measurement of the SG "
                 "score and circuits",
        data="syntaxgym_hu2020",
        figures=tuple(near(name, value, SG_TOLERANCE if name == SG_SCORE else CIRCUIT_TOLERANCE)
                      for name, value in SMOLLM2_SG.items()),
        measure=partial(syntaxgym_scores, EMBEDDED), minutes=1.5),
    Reproduction(
        name="blimp-gpt2",
        citation="Warstadt et al. (2020), BLiMP, TACL: GPT-2-large overall accuracy 83.0%, as in the authors' "
                 "released results (raw_results/summary/models_summary.jsonl), which their 2021 errata names as the "
                 "reference for the TACL version's Tables 3-4",
        data="blimp", figures=(near(BLIMP_ACCURACY, 0.830, 0.01),),
        measure=partial(blimp_accuracy, "gpt2-large"), minutes=420, hub_model="gpt2-large"),
)
