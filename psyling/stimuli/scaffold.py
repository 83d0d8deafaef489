"""``psyling new NAME``: a new stimulus set from the documented template."""
from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from ..errors import StimulusError


def scaffold(name: str, folder: Path) -> list[Path]:
    """Write NAME.yaml and NAME.csv into ``folder`` from the template; never overwrite."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]*", name):
        raise StimulusError("a set name starts with a letter and has letters, digits, _ or - only", field="name")
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{name}.yaml", folder / f"{name}.csv"]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise StimulusError("already exists; not overwriting", file=existing[0], field="name")
    templates = files("psyling.stimuli") / "templates"
    targets[0].write_text((templates / "set.yaml").read_text(encoding="utf-8").replace("{name}", name),
                          encoding="utf-8")
    targets[1].write_text((templates / "set.csv").read_text(encoding="utf-8"), encoding="utf-8")
    return targets
