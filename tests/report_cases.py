"""The runs the report tests read: two tiny models (the first analysed) over two core sets and a set whose stimulus
text holds markup (a ``<script>`` canary and ``<b>``), 4 items each."""
from pathlib import Path

import psyling

REPO = Path(__file__).resolve().parents[1]
SETS = [REPO / "stimuli" / "sets" / "garden_path_npz.yaml", REPO / "stimuli" / "sets" / "agreement_simple.yaml"]
MARKUP_YAML = """schema_version: 1
name: markup_set
phenomenon: markup_check
license: CC-BY-4.0
citation: written for this test
items: markup_set.csv
regions: [start, verb, end]
conditions: [good, bad]
predictions:
  - "({region};%bad%) > ({region};%good%)"
"""
MARKUP_CSV = """item,condition,start,verb,end
1,good,The cat <script>window.__canary=1</script>,sleeps,on the mat.
1,bad,The cat <script>window.__canary=1</script>,sleep,on the mat.
2,good,The dog <b>bold</b>,barks,at night.
2,bad,The dog <b>bold</b>,bark,at night.
"""


def write_report_runs(folder: Path, first_lm, second_lm, region: str = "verb") -> list[Path]:
    """Score the sets with both models into FOLDER/llama and FOLDER/gpt2 and analyse the first; the markup set's
    prediction names its region as ``region`` (a name, or a region number)."""
    (folder / "markup_set.yaml").write_text(MARKUP_YAML.format(region=region))
    (folder / "markup_set.csv").write_text(MARKUP_CSV)
    stimuli = [*SETS, folder / "markup_set.yaml"]
    first, second = folder / "llama", folder / "gpt2"
    psyling.run(first_lm, stimuli, out=first, progress=False, max_items=4)
    psyling.run(second_lm, stimuli, out=second, progress=False, max_items=4)
    psyling.analyze(first, linking="none", plots=False, progress=False)
    return [first, second]
