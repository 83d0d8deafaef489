"""Batteries: declarative YAML files naming stimulus sets (ours, or published ones under a data root)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StimulusError
from .io import discover
from .manifest import read_manifest

DATA_PREFIX = "data:"


def stimuli_root() -> Path:
    """The folder holding psyling's curated stimuli and batteries (PSYLING_STIMULI overrides)."""
    env = os.environ.get("PSYLING_STIMULI")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "stimuli"


def data_root() -> Path:
    """Where published datasets are read from: PSYLING_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("PSYLING_DATA")
    return Path(env) if env else stimuli_root().parent.parent / "shared" / "data"


@dataclass
class Battery:
    """A named list of stimulus paths, with optional scoring settings (e.g. SyntaxGym circuits)."""
    name: str
    description: str
    source: Path
    entries: list[str]
    score: dict[str, Any] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return any(e.startswith(DATA_PREFIX) for e in self.entries)

    def files(self) -> list[Path]:
        """The stimulus files of the battery; published data is looked up under the data root."""
        out = []
        for entry in self.entries:
            if entry.startswith(DATA_PREFIX):
                root = data_root()
                path = root / entry[len(DATA_PREFIX):]
                if not path.exists():
                    raise StimulusError(f"battery {self.name!r} reads {path}, which does not exist "
                                        f"(set PSYLING_DATA to the folder of published datasets)",
                                        file=str(self.source), field="sets")
            else:
                path = (self.source.parent / entry).resolve()
            out.extend(discover(path))
        return out


def battery_names() -> list[str]:
    return sorted(p.stem for p in (stimuli_root() / "batteries").glob("*.yaml"))


def load_battery(name: str) -> Battery:
    """Read ``stimuli/batteries/NAME.yaml``."""
    path = stimuli_root() / "batteries" / f"{name}.yaml"
    if not path.is_file():
        raise StimulusError(f"unknown battery {name!r} (known: {', '.join(battery_names()) or 'none'})",
                            file=str(path), field="battery")
    manifest = read_manifest(path)
    entries = manifest.get("sets")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
        raise StimulusError("must be a non-empty list of paths", file=str(path), field="sets")
    score = manifest.get("score") or {}
    if not isinstance(score, dict):
        raise StimulusError("must be a mapping", file=str(path), field="score")
    return Battery(name, str(manifest.get("description", "")), path, entries, score)


def battery_files(name: str) -> list[Path]:
    """The stimulus files a battery lists."""
    return load_battery(name).files()
