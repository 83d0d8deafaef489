"""``psyling check MODEL``: does a model's surprisal depend on how it is batched? Batch size, padding side and
prefix reuse must not change it (|diff| <= 1e-4 bits in float32); a lower-precision dtype changes it, and the
check reports by how much."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from .api import gather_stimuli
from .models.scorer import set_requests
from .errors import PsylingError
from .models import LanguageModel, ScoreRequest, ScoringOptions, load_model, make_scorer
from .progress import run_progress

TOLERANCE_BITS = 1e-4
CHECK_COLUMNS = ["comparison", "n_sequences", "max_abs_diff_bits", "mean_abs_diff_bits", "tolerance_bits", "passed"]


def _diff(a: list, b: list) -> np.ndarray:
    return np.concatenate([np.abs(x.logprob - y.logprob) for x, y in zip(a, b)]) / math.log(2)


def _row(name: str, diffs: np.ndarray, n: int, tolerance: Optional[float]) -> dict:
    worst = float(np.nanmax(diffs))
    return {"comparison": name, "n_sequences": n, "max_abs_diff_bits": worst,
            "mean_abs_diff_bits": float(np.nanmean(diffs)), "tolerance_bits": tolerance,
            "passed": None if tolerance is None else worst <= tolerance}


def sample_requests(stimuli: Sequence[str] = (), battery: Optional[str] = "core",
                    n: int = 32) -> list[ScoreRequest]:
    """Up to ``n`` requests: the first items of each set, every condition, cycling over the sets."""
    loaded = gather_stimuli(stimuli, None if stimuli else battery)
    per_set = [set_requests(replace(s, items=s.items[:max(1, n // max(1, len(loaded.sets)))]))
               for s in loaded.sets]
    out: list[ScoreRequest] = []
    for k in range(max(len(r) for r in per_set)):
        out += [r[k] for r in per_set if k < len(r)]
    return out[:n]


def check_model(model: Union[str, LanguageModel], requests: list[ScoreRequest], *, batch_size: int = 16,
                dtypes: Sequence[str] = ("bfloat16",), device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Compare token log-probabilities between ways of computing them; one row per comparison. The reference
    is one sequence at a time, right padded (nothing to pad), no prefix reuse, in float32. ``progress``: one bar
    over the tokens of every scoring pass."""
    if not requests:
        raise PsylingError("no requests to check")
    if dtypes and isinstance(model, LanguageModel):
        raise PsylingError("the dtype comparison loads the model again: pass its name, not a loaded model")
    lm = model if isinstance(model, LanguageModel) else load_model(model, device=device)
    padded = make_scorer(lm, ScoringOptions(batch_size=batch_size, reuse_prefix=False), progress=progress)
    count = getattr(padded, "count_tokens", None)  # masked scorers show a bar per pass
    with run_progress("checking invariance", shown=bool(progress and count)) as display:
        if display.shown:
            display.plan("passes", count(requests) * (4 + len(dtypes)))
        alone = padded.with_options(batch_size=1).score(requests, desc="batch size 1")
        right = padded.score(requests, desc=f"batch size {batch_size}")
        n = len(requests)
        rows = [
            _row(f"batch size {batch_size} vs 1", _diff(right, alone), n, TOLERANCE_BITS),
            _row(f"left vs right padding (batch size {batch_size})",
                 _diff(padded.with_options(padding_side="left").score(requests, desc="left padding"), right), n,
                 TOLERANCE_BITS),
            _row("prefix reuse (packed rows) vs one at a time",
                 _diff(padded.with_options(reuse_prefix=True).score(requests, desc="prefix reuse"), alone), n,
                 TOLERANCE_BITS),
        ]
        for dtype in dtypes:
            other = make_scorer(load_model(model, dtype=dtype, device=device), ScoringOptions(batch_size=batch_size),
                                progress=progress)
            rows.append(_row(f"{dtype} vs float32 (informative: a lower precision changes the numbers)",
                             _diff(other.score(requests, desc=dtype), alone), n, None))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)
