"""Find and load stimulus sets from paths and batteries, collecting per-file errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StimulusError
from ..hashing import sha256_file
from .blimp import load_blimp
from .manifest import load_manifest_set, read_manifest
from .schema import StimulusSet
from .syntaxgym import load_syntaxgym
from .tables import sniff

MANIFEST_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


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
        p.suffix in (".json", ".jsonl") or (p.suffix in MANIFEST_SUFFIXES and not _is_battery(p))
        or (p.suffix.lower() in TABLE_SUFFIXES and sniff(p) is not None))]
    if not found:
        raise StimulusError("no stimulus files (.yaml manifests, .json, .jsonl) found", file=str(path), field="path")
    return found


def load_sets(path: Path, detokenize: bool = False) -> list[StimulusSet]:
    """Load the sets of one stimulus file by its kind: YAML manifest, SyntaxGym JSON, BLiMP JSONL, or a
    published table (Marvin & Linzen, minimal-pair CSV, Ettinger, CLiMP) recognised by its header.
    ``detokenize`` applies to SyntaxGym suites (see :func:`load_syntaxgym`)."""
    suffix = path.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return [load_manifest_set(path)]
    if suffix == ".json":
        return [load_syntaxgym(path, detokenize)]
    if suffix == ".jsonl":
        return [load_blimp(path)]
    importer = sniff(path) if suffix in TABLE_SUFFIXES else None
    if importer is not None:
        return importer(path)
    raise StimulusError(f"unknown stimulus file type {suffix!r} (use a .yaml manifest, SyntaxGym .json, BLiMP "
                        f".jsonl, or a published .csv/.tsv table)", file=str(path), field="path")


def load_set(path: Path) -> StimulusSet:
    """Load a file that holds exactly one set."""
    sets = load_sets(path)
    if len(sets) != 1:
        raise StimulusError(f"the file holds {len(sets)} sets; use load_sets", file=str(path), field="path")
    return sets[0]


@dataclass
class LoadedStimuli:
    """Sets that loaded, and one error line per file that did not."""
    sets: list[StimulusSet] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file read


def load_stimuli(paths: list[Path], detokenize: bool = False) -> LoadedStimuli:
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
                sets = load_sets(path, detokenize)
            except StimulusError as exc:
                out.errors.append(str(exc))
                continue
            except OSError as exc:
                out.errors.append(str(StimulusError(exc.strerror or str(exc), file=str(path), field="path")))
                continue
            out.files[str(path)] = sha256_file(path)
            for stim in sets:
                if stim.name in names:
                    out.errors.append(str(StimulusError(f"set name {stim.name!r} is already used by "
                                                        f"{names[stim.name]}", file=str(path), field="name")))
                    continue
                names[stim.name] = str(path)
                out.sets.append(stim)
                items_file = stim.metadata.get("items_file")
                if items_file:
                    out.files[items_file] = sha256_file(Path(items_file))
    return out
