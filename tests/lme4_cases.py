"""The models issue 15's acceptance compares with lme4: each set's ``condition_effects`` model of a finished run.

:func:`core_condition_frames` rebuilds, with psyling's own design code (``psyling.stats.mixed``'s ``_design``,
``_region_table`` and ``_identifiable_slopes``) and the rows ``psyling.analysis.analyze`` passes it, the frame
``condition_effects`` fits for every set of a run (columns y, item, condition, c0..cK) and the same model in lme4
notation: ``y ~ 1 + c0 + ... + (1 + <identifiable slopes> | item)``, fitted by ML as ``condition_effects`` does.
``frame.attrs["labels"]`` maps each c<j> to psyling's coefficient name. Usage::

    cases = core_condition_frames("runs/core")
    references = r_oracle.lmer_many([(frame, formula) for frame, formula in cases.values()], reml=False)
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import pandas as pd

from psyling.analysis import _critical_table, _without_items, analysis_region, empty_compared_cells
from psyling.errors import PsylingError
from psyling.runs import read_run, run_sets
from psyling.stats.mixed import _design, _identifiable_slopes, _region_table
from psyling.stimuli import StimulusSet


def condition_frame(stim: StimulusSet, regions: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The frame and lme4 formula of ``condition_effects`` on ``stim``'s analysis region (as ``mixed_tables``
    calls it); a PsylingError where ``condition_effects`` would raise one."""
    region = analysis_region(stim)[0]
    conditions = list(stim.conditions)
    table, _ = _region_table(_critical_table(stim, regions, region), region, conditions, "surprisal")
    if table["item"].nunique() < 2:
        raise PsylingError(f"set {stim.name}: fewer than 2 items with a value")
    columns, _ = _design({k: list(v) for k, v in stim.factors.items()} or None, conditions)
    frame = pd.DataFrame({"y": table["surprisal"].astype(float), "item": table["item"].astype(str),
                          "condition": table["condition"]})
    for j, column in enumerate(columns):
        frame[f"c{j}"] = frame["condition"].map(column.values)
    chosen, _ = _identifiable_slopes(frame, columns)
    fixed = " + ".join(f"c{j}" for j in range(len(columns)))
    slopes = "".join(f" + c{j}" for j in chosen)
    frame.attrs["labels"] = {f"c{j}": column.label for j, column in enumerate(columns)}
    return frame, f"y ~ 1 + {fixed} + (1{slopes} | item)"


def core_condition_frames(run_dir: Union[str, Path]) -> dict[str, tuple[pd.DataFrame, str]]:
    """Set name -> (frame, lme4 formula) for every set of the run whose mixed model ``analyze`` fits, on the rows
    ``analyze`` keeps (items with an empty compared region left out)."""
    manifest, tables = read_run(run_dir)
    sets, _ = run_sets(manifest, (), Path(run_dir))
    regions = tables["regions"]
    kept = _without_items(regions, empty_compared_cells(sets, regions))
    cases = {}
    for stim in sets:
        try:
            cases[stim.name] = condition_frame(stim, kept)
        except PsylingError:
            continue  # analyze notes the set as not fitted: there is no psyling model to compare
    return cases
