"""Find and load stimulus sets from paths and batteries, collecting per-file errors."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StimulusError
from ..hashing import sha256_file
from .blimp import load_blimp
from .manifest import load_manifest_set, read_manifest
from .schema import StimulusSet
from .syntaxgym import load_syntaxgym

MANIFEST_SUFFIXES = (".yaml", ".yml")


def stimuli_root() -> Path:
    """The folder holding psyling's curated stimuli and batteries (PSYLING_STIMULI overrides)."""
    env = os.environ.get("PSYLING_STIMULI")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "stimuli"


def _is_battery(path: Path) -> bool:
    try:
        manifest = read_manifest(path)
    except StimulusError:
        return False
    return "sets" in manifest and "items" not in manifest


def discover(path: Path) -> list[Path]:
    """Stimulus files under a path: manifests (not batteries), SyntaxGym .json and BLiMP .jsonl."""
    if not path.exists():
        raise StimulusError("no such file or directory", file=str(path), field="path")
    if path.is_file():
        return [path]
    found = [p for p in sorted(path.rglob("*")) if p.is_file() and (
        p.suffix in (".json", ".jsonl") or (p.suffix in MANIFEST_SUFFIXES and not _is_battery(p)))]
    if not found:
        raise StimulusError("no stimulus files (.yaml manifests, .json, .jsonl) found", file=str(path), field="path")
    return found


def load_set(path: Path) -> StimulusSet:
    """Load one stimulus file by its kind: YAML manifest, SyntaxGym JSON or BLiMP JSONL."""
    suffix = path.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return load_manifest_set(path)
    if suffix == ".json":
        return load_syntaxgym(path)
    if suffix == ".jsonl":
        return load_blimp(path)
    raise StimulusError(f"unknown stimulus file type {suffix!r} (use .yaml, .json or .jsonl)", file=str(path),
                        field="path")


def battery_path(name: str) -> Path:
    """The declarative file of a named battery."""
    path = stimuli_root() / "batteries" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (stimuli_root() / "batteries").glob("*.yaml"))
        raise StimulusError(f"unknown battery {name!r} (known: {', '.join(known) or 'none'})",
                            file=str(path), field="battery")
    return path


def battery_files(name: str) -> list[Path]:
    """The stimulus files a battery lists (paths relative to the battery file)."""
    path = battery_path(name)
    entries = read_manifest(path).get("sets")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise StimulusError("must be a list of paths", file=str(path), field="sets")
    return [f for entry in entries for f in discover((path.parent / entry).resolve())]


@dataclass
class LoadedStimuli:
    """Sets that loaded, and one error line per file that did not."""
    sets: list[StimulusSet] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file read


def load_stimuli(paths: list[Path]) -> LoadedStimuli:
    """Load every stimulus file under the paths; a bad file is reported and the others still load."""
    out = LoadedStimuli()
    names: dict[str, str] = {}
    for root in paths:
        try:
            files = discover(Path(root))
        except StimulusError as exc:
            out.errors.append(str(exc))
            continue
        for path in files:
            try:
                stim = load_set(path)
            except StimulusError as exc:
                out.errors.append(str(exc))
                continue
            except OSError as exc:
                out.errors.append(str(StimulusError(exc.strerror or str(exc), file=str(path), field="path")))
                continue
            if stim.name in names:
                out.errors.append(str(StimulusError(f"set name {stim.name!r} is already used by {names[stim.name]}",
                                                    file=str(path), field="name")))
                continue
            names[stim.name] = str(path)
            out.sets.append(stim)
            out.files[str(path)] = sha256_file(path)
            items_file = stim.metadata.get("items_file")
            if items_file:
                out.files[items_file] = sha256_file(Path(items_file))
    return out
