"""Reproduction: the SAP benchmark (Huang et al.): GPT-2 surprisal effects, published human effects beside the
GPT-2-predicted ones, human effects recomputed from the trials, and trial-level regressions of reading times on
surprisal (the figures checked are ``psyling reproduce sap-benchmark``; see psyling/reproductions/sap.py).

    python3 analyses/sap_benchmark.py [--data-root PATH] [--participants N] [--rt RT_corrected|RT]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from psyling.errors import PsylingError
from psyling.reproductions.sap import human_vs_predicted, surprisal_effects, surprisal_regressions, trial_effects
from psyling.reproductions.sap_report import format_regressions, format_report
from psyling.stimuli.batteries import data_root
from psyling.stimuli.sap import SAP_FOLDER


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    parser.add_argument("--participants", type=int, default=None,
                        help="regressions: fit only the first N participant ids in sorted order (default: all "
                             "2000, a few seconds)")
    parser.add_argument("--rt", choices=["RT_corrected", "RT"], default="RT_corrected",
                        help="regressions: reading-time column (default: the authors' RT_corrected)")
    args = parser.parse_args(argv)
    try:
        root = (args.data_root or data_root()) / SAP_FOLDER
        surprisal, effects, trials = surprisal_effects(root), human_vs_predicted(root), trial_effects(root)
        print(format_report(surprisal, effects, trials), flush=True)
        start = time.perf_counter()
        regressions = surprisal_regressions(root, args.rt, args.participants)
    except PsylingError as exc:
        print(f"sap_benchmark: error: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_regressions(regressions, args.rt))
    print(f"regressions: {time.perf_counter() - start:.0f} s")
    passed = surprisal["passed"].all() and trials["within_cri"].all() and trials["close"].all()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
