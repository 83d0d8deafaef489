"""Reproduction: the SyntaxGym (SG) score of Hu et al. (2020), recomputed from their released item results, with
every released model's six circuit scores (the figures checked are ``psyling reproduce hu2020-sg-score``).

    python3 analyses/hu2020_sg_score.py [--data-root PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from psyling.errors import PsylingError
from psyling.reproductions.hu2020 import format_table, sg_scores
from psyling.stimuli.batteries import data_root


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    try:
        table = sg_scores(args.data_root or data_root())
    except PsylingError as exc:
        print(f"hu2020_sg_score: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(table))
    return 0 if table["passed"].dropna().all() else 1


if __name__ == "__main__":
    sys.exit(main())
