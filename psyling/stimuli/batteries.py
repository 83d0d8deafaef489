"""Batteries: declarative YAML files naming stimulus sets (ours, or published ones under a data root)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import PsylingError, StimulusError
from .io import discover
from .manifest import read_manifest

DATA_PREFIX = "data:"
PACKAGE = Path(__file__).resolve().parents[1]
# where a wheel installs the repository's stimuli/ (pyproject.toml maps the package psyling.library onto it)
INSTALLED_STIMULI = PACKAGE / "library"


def checkout_root() -> Optional[Path]:
    """The repository checkout psyling is imported from (a source tree or an editable install), else None."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "stimuli" / "batteries").is_dir() else None


def stimuli_root() -> Path:
    """The folder of psyling's curated sets and batteries: PSYLING_STIMULI, else the copy a wheel installs
    inside the package, else the checkout's stimuli/."""
    env = os.environ.get("PSYLING_STIMULI")
    if env:
        return Path(env)
    return INSTALLED_STIMULI if INSTALLED_STIMULI.is_dir() else PACKAGE.parent / "stimuli"


def data_root() -> Path:
    """Where published datasets are read from: PSYLING_DATA, else ../shared/data beside the repository checkout.

    Without PSYLING_DATA outside a checkout (an installed wheel) there is no default: a one-line PsylingError."""
    env = os.environ.get("PSYLING_DATA")
    if env:
        return Path(env)
    checkout = checkout_root()
    if checkout is None:
        raise PsylingError("set PSYLING_DATA to the folder of published datasets (psyling is not run from a "
                           "repository checkout, so there is no ../shared/data to default to)")
    return checkout.parent / "shared" / "data"


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

    def files(self, data: Optional[Path] = None) -> list[Path]:
        """The stimulus files of the battery; published data is looked up under ``data`` (default: the data
        root, see :func:`data_root`)."""
        out = []
        for entry in self.entries:
            path = (self._published(entry[len(DATA_PREFIX):], data) if entry.startswith(DATA_PREFIX)
                    else (self.source.parent / entry).resolve())
            out.extend(discover(path))
        return out

    def _published(self, relative: str, data: Optional[Path]) -> Path:
        """``relative`` under the data root; a one-line error naming the battery when it is not there."""
        try:
            path = (data if data is not None else data_root()) / relative
        except PsylingError as exc:
            raise StimulusError(f"reads published data ({relative}): {exc}", file=str(self.source),
                                field="sets") from None
        if not path.exists():
            raise StimulusError(f"battery {self.name!r} reads {path}, which does not exist "
                                f"(set PSYLING_DATA to the folder of published datasets)",
                                file=str(self.source), field="sets")
        return path


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
