"""Find and load stimulus sets from paths and batteries, collecting per-file errors.

A file's kind comes from its suffix: ``.yaml``/``.yml`` manifests (psyling's format), SyntaxGym ``.json``,
pair ``.jsonl`` (BLiMP's layout, :mod:`.blimp`), ``.csv``/``.tsv``/``.tab`` tables recognised by their header
(:mod:`.tables`, :mod:`.pairs`) and ``.txt`` pair files (:mod:`.textpairs`). A data file may have a provenance
sidecar, ``<file>.psyling.yaml`` (:mod:`.provenance`)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from ..errors import StimulusError
from ..hashing import sha256_file
from .blimp import load_blimp
from .manifest import load_manifest_set, read_manifest
from .provenance import Sidecar, apply_provenance, data_path, is_sidecar, read_sidecar, sidecar_path
from .reading import ReaderOptions
from .schema import StimulusSet
from .syntaxgym import load_syntaxgym
from .tables import ACCEPTED_TABLES, read_header, sniff
from .textpairs import load_text_pairs

MANIFEST_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")
TEXT_SUFFIXES = (".txt",)
STIMULUS_SUFFIXES = (*MANIFEST_SUFFIXES, ".json", ".jsonl", *TABLE_SUFFIXES, *TEXT_SUFFIXES)
# a folder's documentation is not stimuli: .txt files whose name starts with one of these are not read
DOCUMENTATION = ("readme", "license", "licence", "notice", "changelog", "citation", "authors", "copying")
# tables published beside a recognised format that hold no stimuli, skipped by name
COMPANION_TABLES = {"CPRAG-explanations.tsv": "Ettinger (2020): the inference behind each CPRAG-102 item"}


def _manifests(files: list[Path]) -> tuple[set[Path], set[Path]]:
    """(the batteries, the items files that set manifests name) among ``files``; unreadable YAML counts as a
    set manifest (loading it reports the error)."""
    batteries, items = set(), set()
    for path in files:
        if path.suffix.lower() not in MANIFEST_SUFFIXES or is_sidecar(path):
            continue
        try:
            manifest = read_manifest(path)
        except StimulusError:
            continue
        if "sets" in manifest and "items" not in manifest:
            batteries.add(path)
        elif isinstance(manifest.get("items"), str):
            items.add((path.parent / manifest["items"]).resolve())
    return batteries, items


def _is_stimulus_file(path: Path, batteries: set[Path], items_files: set[Path]) -> bool:
    suffix = path.suffix.lower()
    if is_sidecar(path):
        return not data_path(path).exists()  # an orphan sidecar is reported when loaded
    if suffix in TABLE_SUFFIXES:
        return path.resolve() not in items_files and path.name not in COMPANION_TABLES
    if suffix in TEXT_SUFFIXES:
        return not path.name.lower().startswith(DOCUMENTATION)
    return suffix in STIMULUS_SUFFIXES and path not in batteries


def discover(path: Path) -> list[Path]:
    """Stimulus files under a path: set manifests (not batteries), SyntaxGym .json, pair .jsonl, every
    .csv/.tsv/.tab table except the items files that manifests name (and ``COMPANION_TABLES``), and .txt pair
    files (not ``DOCUMENTATION``); hidden files and sidecars are skipped. A table that is no accepted kind is
    returned too, so that loading it reports it: nothing under the folder is ignored silently."""
    if not path.exists():
        raise StimulusError("no such file or directory", file=str(path), field="path")
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    batteries, items_files = _manifests(files)
    found = [p for p in files if _is_stimulus_file(p, batteries, items_files)]
    if not found:
        raise StimulusError(f"no stimulus files ({', '.join(STIMULUS_SUFFIXES)}) found", file=str(path),
                            field="path")
    return found


def _layout_keys(sidecar: Sidecar, allowed: tuple[str, ...], kind: str) -> None:
    extra = [k for k in sidecar.layout_keys if k not in allowed]
    if extra:
        raise StimulusError(f"{extra[0]!r} does not apply to {kind}", file=sidecar.source, field=extra[0])


def _read_table(path: Path, options: ReaderOptions, sidecar: Sidecar) -> list[StimulusSet]:
    reader = sniff(path, sidecar)
    if reader is None:
        raise StimulusError(f"not a stimulus table: its header ({', '.join(read_header(path))}) is none of the "
                            f"accepted kinds; {ACCEPTED_TABLES}", file=str(path), field="header")
    _layout_keys(sidecar, ("columns",), "a table")
    return reader(path, options)


def _read(path: Path, options: ReaderOptions, sidecar: Sidecar) -> list[StimulusSet]:
    """The sets of a data file (not a manifest) by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        _layout_keys(sidecar, (), "a SyntaxGym suite")
        return [load_syntaxgym(path, options.detokenize, segmentation=options.segmentation)]
    if suffix == ".jsonl":
        _layout_keys(sidecar, ("columns",), "a JSONL file")
        return [load_blimp(path, options, sidecar)]
    if suffix in TEXT_SUFFIXES:
        return load_text_pairs(path, options, sidecar)
    if suffix in TABLE_SUFFIXES:
        return _read_table(path, options, sidecar)
    raise StimulusError(f"unknown stimulus file type {suffix!r} (use a .yaml manifest, SyntaxGym .json, pair "
                        f".jsonl, a .csv/.tsv/.tab table or a .txt pair file)", file=str(path), field="path")


def load_sets(path: Path, options: ReaderOptions = ReaderOptions()) -> list[StimulusSet]:
    """Load the sets of one stimulus file by its kind (see the module docstring), with its sidecar's
    provenance. The segmentation is ``options.segmentation`` when not "auto", else the sidecar's, else
    detected from the text."""
    if is_sidecar(path):
        raise StimulusError(f"a provenance sidecar is read with its data file {data_path(path).name}, which does "
                            f"not exist", file=str(path), field="path")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        if sidecar_path(path).exists():
            raise StimulusError("a manifest holds its own provenance; it takes no sidecar",
                                file=str(sidecar_path(path)), field="path")
        return [load_manifest_set(path, options.segmentation)]
    sidecar = read_sidecar(path)
    declared = options if options.segmentation != "auto" else replace(options, segmentation=sidecar.segmentation)
    return apply_provenance(_read(path, declared, sidecar), sidecar, path)


def load_set(path: Path, options: ReaderOptions = ReaderOptions()) -> StimulusSet:
    """Load a file that holds exactly one set."""
    sets = load_sets(path, options)
    if len(sets) != 1:
        raise StimulusError(f"the file holds {len(sets)} sets; use load_sets", file=str(path), field="path")
    return sets[0]


@dataclass
class LoadedStimuli:
    """Sets that loaded, and one error line per file that did not."""
    sets: list[StimulusSet] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file read

    def add(self, path: Path, sets: list[StimulusSet], names: dict[str, str]) -> None:
        """Record the sets read from ``path`` (a set whose name is taken is an error) and the files read."""
        self.files[str(path)] = sha256_file(path)
        for stim in sets:
            if stim.name in names:
                self.errors.append(str(StimulusError(f"set name {stim.name!r} is already used by "
                                                     f"{names[stim.name]}", file=str(path), field="name")))
                continue
            names[stim.name] = str(path)
            self.sets.append(stim)
            for key in ("items_file", "sidecar"):
                extra: Optional[str] = stim.metadata.get(key)
                if extra:
                    self.files[extra] = sha256_file(Path(extra))


def load_stimuli(paths: list[Path], options: ReaderOptions = ReaderOptions()) -> LoadedStimuli:
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
                out.add(path, load_sets(path, options), names)
            except StimulusError as exc:
                out.errors.append(str(exc))
            except OSError as exc:
                out.errors.append(str(StimulusError(exc.strerror or str(exc), file=str(path), field="path")))
    return out
