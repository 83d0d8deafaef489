"""The SyntaxGym (SG) score of Hu, Gauthier, Qian, Wilcox & Levy (2020), "A systematic assessment of syntactic
generalization in neural language models" (ACL 2020), recomputed from the item-level results they released
(``syntaxgym_hu2020/data/raw/sg_results/syntaxgym_results_<model>.csv``).

The SG score is the mean suite accuracy over the paper's 31 suites (fgd-embed3, fgd-embed4 and nn-nv-rpl
excluded, as in the syntaxgym2020 battery); circuit scores average their suites. A file holding several
training seeds of a model gets the mean of the seeds' scores, and their range."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import PsylingError, first_line
from ..stats import sg_score
from ..stimuli import load_battery
from .registry import Reproduction, near

FOLDER = "syntaxgym_hu2020"
RESULTS = Path(FOLDER) / "data" / "raw" / "sg_results"
PREFIX = "syntaxgym_results_"
# Hu et al. (2020): SG scores of the off-the-shelf models, keyed by the released model names.
PUBLISHED = {"gpt-2-pretrained": ("GPT-2", 0.784), "gpt-2-xl-pretrained": ("GPT-2-XL", 0.842),
             "transformer-xl": ("Transformer-XL", 0.596), "jrnn": ("JRNN", 0.563), "grnn": ("GRNN", 0.551)}
TOLERANCE = 0.0005
SHORT = {"Agreement": "Agr", "Licensing": "Lic", "Garden-Path Effects": "GPE", "Gross Syntactic State": "GSS",
         "Center Embedding": "CE", "Long-Distance Dependencies": "LDD"}


def read_results(path: Path) -> pd.DataFrame:
    """A released results file as (model, set, item, passed); one-line error naming the file if malformed."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PsylingError(f"{path}: cannot read the results: {first_line(exc)}") from None
    missing = {"model", "suite", "item", "correct"} - set(table.columns)
    if missing:
        raise PsylingError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if table["correct"].dtype != bool:
        raise PsylingError(f"{path}: column correct must hold True/False")
    return table.rename(columns={"suite": "set", "correct": "passed"})[["model", "set", "item", "passed"]]


def sg_scores(root: Path) -> pd.DataFrame:
    """One row per released results file: model, n_seeds, sg_score (mean over seeds), seed_min, seed_max, a
    column per circuit, and published, tolerance and passed where the paper gives the score."""
    folder = Path(root) / RESULTS
    files = sorted(folder.glob(f"{PREFIX}*.csv"))
    if not files:
        raise PsylingError(f"{folder}: no {PREFIX}*.csv files (is the data root right?)")
    battery = load_battery("syntaxgym2020")
    exclude, circuits = battery.score["exclude"], battery.score["circuits"]
    rows = []
    for path in files:
        seeds = []
        for _, items in read_results(path).groupby("model", sort=True):
            score, circuit_table = sg_score(items, exclude, circuits)
            seeds.append({"sg_score": score, **circuit_table.set_index("circuit")["score"].to_dict()})
        per_seed = pd.DataFrame(seeds)
        model = path.stem[len(PREFIX):].rstrip("_")
        published = PUBLISHED[model][1] if model in PUBLISHED else float("nan")
        row = {"model": model, "n_seeds": len(per_seed), **per_seed.mean().to_dict(),
               "seed_min": per_seed["sg_score"].min(), "seed_max": per_seed["sg_score"].max(),
               "published": published, "tolerance": TOLERANCE if model in PUBLISHED else float("nan")}
        row["passed"] = abs(row["sg_score"] - published) <= TOLERANCE if model in PUBLISHED else None
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The terminal table: SG score, seed range, circuit scores, and the check against the paper."""
    circuits = [c for c in SHORT if c in table.columns]
    width = max(len("model"), *(len(m) for m in table["model"]))
    head = (f"{'model':<{width}}  seeds  {'SG':>6}  {'seed range':>13}  "
            + "  ".join(f"{SHORT[c]:>5}" for c in circuits) + f"  {'paper':>6}  {'tol':>6}  check")
    lines = [head, "-" * len(head)]
    for row in table.to_dict("records"):
        seed_range = f"{row['seed_min']:.3f}-{row['seed_max']:.3f}" if row["n_seeds"] > 1 else ""
        check = "" if row["passed"] is None else ("PASS" if row["passed"] else "FAIL")
        paper = "" if check == "" else f"{row['published']:.3f}"
        tol = "" if check == "" else f"{row['tolerance']:.4f}"
        lines.append(f"{row['model']:<{width}}  {row['n_seeds']:>5}  {row['sg_score']:>6.4f}  {seed_range:>13}  "
                     + "  ".join(f"{row[c]:>5.3f}" for c in circuits) + f"  {paper:>6}  {tol:>6}  {check}".rstrip())
    lines.append(f"circuits: {', '.join(f'{v} = {k}' for k, v in SHORT.items())}")
    return "\n".join(lines)


def measure(root: Path) -> dict[str, float]:
    """The SG score of each model the paper reports, from its released item results."""
    scores = sg_scores(root).set_index("model")["sg_score"]
    return {f"SG score, {label}": float(scores[model]) for model, (label, _) in PUBLISHED.items()}


REPRODUCTION = Reproduction(
    name="hu2020-sg-score",
    citation="Hu, Gauthier, Qian, Wilcox & Levy (2020), A systematic assessment of syntactic generalization in "
             "neural language models, ACL: SG scores from their released item results",
    data=FOLDER,
    figures=tuple(near(f"SG score, {label}", value, TOLERANCE) for label, value in PUBLISHED.values()),
    measure=measure, minutes=0.1)
