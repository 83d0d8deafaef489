"""Batteries: declarative YAML files naming stimulus sets (ours, or published ones under a data root)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..cache import cache_dir
from ..errors import PsylingError, StimulusError
from .io import discover, load_stimuli
from .manifest import read_manifest

DATA_PREFIX = "data:"
COUNTS_FILE = "battery_counts.json"  # in the cache folder: what `psyling batteries` counted, and from which files
READERS = Path(__file__).resolve().parent  # the stimulus readers: a change to one invalidates the counts
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


@dataclass(frozen=True)
class BatteryCount:
    """What loading a battery gives: sets, items, and files that did not load."""
    n_sets: int
    n_items: int
    n_errors: int


def _stamps(paths: list[str]) -> dict[str, Optional[list[int]]]:
    """Size and modification time (ns) of each path (None for one that is gone): what a count was made from.
    A folder's stamp changes when a file (e.g. a sidecar) is added to it or removed."""
    stamps: dict[str, Optional[list[int]]] = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps[path] = None
            continue
        stamps[path] = [info.st_size, info.st_mtime_ns]
    return stamps


def _readers_stamp() -> dict[str, Any]:
    return {"version": __version__, "readers": _stamps(sorted(str(p) for p in READERS.glob("*.py")))}


def _read_counts() -> dict[str, Any]:
    """The remembered counts (empty when there are none or the file cannot be read)."""
    try:
        counts = json.loads((cache_dir() / COUNTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return counts if isinstance(counts, dict) and counts.get("readers") == _readers_stamp() else {}


def _write_counts(counts: dict[str, Any]) -> None:
    """Remember the counts (atomically); a cache folder that cannot be written only means counting again."""
    try:
        path = cache_dir() / COUNTS_FILE
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**counts, "readers": _readers_stamp()}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def battery_count(battery: Battery, data: Optional[Path] = None) -> BatteryCount:
    """The sets, items and files with errors of a battery, as loading it gives them, remembered in the cache
    folder with the size and modification time of every file the load read (and of psyling's stimulus
    readers): a battery is loaded again only when one of them changed. An unavailable battery (its published
    data missing) is a one-line error, as when loading it."""
    files = [str(f) for f in battery.files(data)]
    counts = _read_counts()
    entry = counts.get("batteries", {}).get(battery.name)
    if entry and entry.get("files") == files and _stamps(list(entry["stamps"])) == entry["stamps"]:
        return BatteryCount(**entry["count"])
    loaded = load_stimuli([Path(f) for f in files])
    count = BatteryCount(len(loaded.sets), sum(len(s.items) for s in loaded.sets), len(loaded.errors))
    read = sorted(set(files) | set(loaded.files) | {str(Path(f).parent) for f in files})
    counts.setdefault("batteries", {})[battery.name] = {"files": files, "stamps": _stamps(read),
                                                        "count": asdict(count)}
    _write_counts(counts)
    return count
