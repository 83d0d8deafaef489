"""Sweep files: models × revisions × stimulus sets × a grid of settings, parsed into cells with stable digests.

A cell is one (model revision, set, grid point): what one run scores. Its digest is built from the score cache's
ingredients (the model's identity without loading it, the set's name and file digest, the settings that change
numbers, psyling's version) plus the cell's labels (model alias, revision), so a result store can tell a finished
cell from one to run. The file format is documented in the README ("Sweeps")."""
from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from .. import __version__
from ..cache import cache_dir
from ..config import RunConfig
from ..errors import PsylingError, StimulusError
from ..hashing import sha256_file
from ..models.conventions import get_convention
from ..models.embedded import EMBEDDED
from ..models.loading import HUB_ID, WEIGHT_SUFFIXES
from ..models.options import ModelSpec
from ..stimuli import Battery, load_battery
from ..stimuli.fields import Where, array, json_type, mapping, string, string_list
from ..stimuli.io import load_stimuli
from ..stimuli.manifest import read_manifest
from ..stimuli.reading import ReaderOptions
from ..stimuli.schema import StimulusSet

SWEEP_KEYS = ("name", "models", "sets", "batteries", "grid")
MODEL_KEYS = ("name", "alias", "revisions", "checkpoints", "step_pattern")
PER_CELL = ("model", "scoring", "stimuli", "battery")  # the sweep sets these itself, cell by cell
UNKEYED = ("model", "stimuli", "battery", "cache", "resume")  # config entries that do not change a cell's numbers
LAST_INTEGER = r"(\d+)(?!.*\d)"
DIGEST_FILE = "sweep_digests.json"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
TRAINING_STATE = ("optimizer", "scheduler", "training_args", "rng_state")  # checkpoint files that are not the model


@dataclass(frozen=True)
class SweepModel:
    """One (model, revision) of the sweep."""
    alias: str             # the label in the store's partition (the entry's alias, else its name)
    spec: ModelSpec        # what to load (alias, absolute folder or .gguf path, or hub id with revision)
    revision: str          # the given revision, the checkpoint folder's name, or "main"
    step: Optional[int]    # training step parsed from the revision with the step pattern, None if unknown


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a model revision, one stimulus set and one point of the settings grid."""
    model: SweepModel
    set_name: str
    set_path: str          # absolute path of the file (or folder) that holds the set
    settings: dict         # RunConfig.build keyword settings (top-level settings and the grid point); {} = defaults
    settings_label: str    # the grid point: "default" or "k=v,k=v" (sorted keys)
    digest: str            # 20 hex characters of sha256 of the canonical JSON of key()
    ingredients: dict = field(default_factory=dict, repr=False, compare=False)  # key(), as computed at loading

    def config(self) -> RunConfig:
        """The cell's run settings (note: the set's file may hold other sets too; score only ``set_name``)."""
        return RunConfig.build(model=self.model.spec, stimuli=(self.set_path,), **self.settings)

    def key(self) -> dict:
        """The digest's ingredients: model identity and labels, set name and file digest, settings, version."""
        return self.ingredients

    def meta(self) -> dict:
        """Plain JSON that describes the cell (what the store records)."""
        return {"model": self.model.alias, "revision": self.model.revision, "step": self.model.step,
                "set": self.set_name, "settings": self.settings, "settings_label": self.settings_label,
                "digest": self.digest, "set_path": self.set_path}


@dataclass(frozen=True)
class BatteryScore:
    """A battery of the sweep whose file defines a score (``score:``, e.g. syntaxgym2020's SG score and
    circuits): the battery's name, that block, and the names of the sweep's sets that came from the battery."""
    battery: str
    config: dict
    sets: tuple[str, ...]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: its models (one per revision), its cells (sorted), its grid of settings and the
    scores its batteries define."""
    path: Path
    name: str
    models: tuple[SweepModel, ...]
    cells: tuple[Cell, ...]
    settings_grid: tuple[dict, ...]
    scores: tuple[BatteryScore, ...] = ()


class FileDigests:
    """sha256 of files, remembered by (path, size, mtime_ns) in the cache folder's ``sweep_digests.json``."""

    def __init__(self) -> None:
        self.path = cache_dir() / DIGEST_FILE
        try:
            known = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        self.known: dict[str, list] = known if isinstance(known, dict) else {}
        self.changed = False

    def file(self, path: Path) -> str:
        info = path.stat()
        key, stamp = str(path.resolve()), [info.st_size, info.st_mtime_ns]
        entry = self.known.get(key)
        if isinstance(entry, list) and entry[:2] == stamp:
            return entry[2]
        sha = sha256_file(path)
        self.known[key], self.changed = [*stamp, sha], True
        return sha

    def tree(self, path: Path) -> str:
        """A file's digest, or for a folder one digest over its files' relative names and digests (sorted)."""
        if not path.is_dir():
            return self.file(path)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _sha_text(json.dumps([[str(p.relative_to(path)), self.file(p)] for p in files]))

    def save(self) -> None:
        """Write the remembered digests atomically; a cache that cannot be written only means hashing again."""
        if not self.changed:
            return
        try:
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.known), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _model_files(folder: Path) -> list[Path]:
    """The files of a model folder that make its numbers: weights, config and tokenizer (not training state)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(TRAINING_STATE)
                  and (p.suffix in WEIGHT_SUFFIXES or p.name in TOKENIZER_FILES))


def model_identity(spec: ModelSpec, digests: FileDigests) -> dict[str, Any]:
    """What a model is, without loading it: the package of an embedded alias, the digest of a .gguf file, the
    digests of a folder's weight, config and tokenizer files, or a hub id with its revision."""
    if spec.name in EMBEDDED:
        return {"embedded": spec.name, "package": EMBEDDED[spec.name].pip}
    path = Path(spec.name)
    if path.is_file():
        return {"file": digests.file(path)}
    if path.is_dir():
        return {"folder": {p.name: digests.file(p) for p in _model_files(path)}}
    return {"hub": spec.name, "revision": spec.revision}


def set_digest(stim: StimulusSet, digests: FileDigests) -> str:
    """The digest of the files a set was read from: its source, and its items file and sidecar if any."""
    paths = [Path(stim.source)] + [Path(stim.metadata[k]) for k in ("items_file", "sidecar") if stim.metadata.get(k)]
    return _sha_text(json.dumps([digests.tree(p) for p in paths]))


def _step(label: str, pattern: str, explicit: bool, where: Where, where_field: str) -> Optional[int]:
    """The training step in a revision label (group 1 of the pattern, else its whole match)."""
    match = re.search(pattern, label)
    if match is None:
        if explicit:
            raise where.error(f"{pattern!r} does not match revision {label!r}", where_field)
        return None
    text = match.group(1) if match.groups() else match.group(0)
    if not text.isdigit():
        raise where.error(f"{pattern!r} matches {text!r} in {label!r}, not a whole number", where_field)
    return int(text)


def _pattern(entry: dict, where: Where, prefix: str) -> tuple[str, bool]:
    """The entry's step pattern (checked) and whether it was given."""
    if "step_pattern" not in entry:
        return LAST_INTEGER, False
    pattern = string(entry["step_pattern"], where, f"{prefix}.step_pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise where.error(f"not a regular expression: {exc}", f"{prefix}.step_pattern") from None
    return pattern, True


def _model_name(name: str, folder: Path, where: Where, prefix: str) -> str:
    """An embedded alias or hub id as given; a local folder or file as its absolute path (relative paths are
    relative to the sweep file's folder)."""
    if name in EMBEDDED:
        return name
    path = folder / Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or path.suffix == ".gguf" or HUB_ID.fullmatch(name) is None:
        raise where.error(f"no such model folder or file: {path}", f"{prefix}.name")
    return name


def _checkpoints(entry: dict, alias: str, folder: Path, where: Where, prefix: str) -> list[SweepModel]:
    """One model per folder or file the checkpoint glob matches (relative to the sweep file), sorted by step."""
    pattern = string(entry["checkpoints"], where, f"{prefix}.checkpoints")
    matches = sorted(Path(p).resolve() for p in glob.glob(str(folder / Path(pattern).expanduser())))
    if not matches:
        raise where.error(f"{pattern!r} matches no checkpoint (relative to {folder})", f"{prefix}.checkpoints")
    step_pattern, explicit = _pattern(entry, where, prefix)
    models = [SweepModel(alias, ModelSpec(str(p)), p.name, _step(p.name, step_pattern, explicit, where,
                                                                 f"{prefix}.step_pattern")) for p in matches]
    return sorted(models, key=_order)


def _model_entry(entry: Any, where: Where, prefix: str, folder: Path) -> list[SweepModel]:
    """The models of one entry of ``models``: its revisions, its checkpoints, or the model itself ("main")."""
    entry = {"name": entry} if isinstance(entry, str) else mapping(entry, where, prefix)
    unknown = sorted(set(entry) - set(MODEL_KEYS))
    if unknown:
        raise where.error(f"unknown key (known: {', '.join(MODEL_KEYS)})", f"{prefix}.{unknown[0]}")
    name = string(entry.get("name"), where, f"{prefix}.name")
    alias = string(entry["alias"], where, f"{prefix}.alias") if "alias" in entry else None
    if "checkpoints" in entry:
        if "revisions" in entry:
            raise where.error("give revisions or checkpoints, not both", f"{prefix}.revisions")
        return _checkpoints(entry, alias or name, folder, where, prefix)
    spec_name = _model_name(name, folder, where, prefix)
    alias = alias or (Path(name).name if spec_name != name else name)
    if "revisions" not in entry:
        return [SweepModel(alias, ModelSpec(spec_name), "main", None)]
    revisions = string_list(entry["revisions"], where, f"{prefix}.revisions")
    if not revisions:
        raise where.error("must list at least one revision", f"{prefix}.revisions")
    pattern, explicit = _pattern(entry, where, prefix)
    return [SweepModel(alias, ModelSpec(spec_name, revision=r), r,
                       _step(r, pattern, explicit, where, f"{prefix}.step_pattern")) for r in revisions]


def _order(model: SweepModel) -> tuple:
    """Models sort by alias, then step (unknown steps last), then revision."""
    return model.alias, model.step is None, model.step or 0, model.revision


def _models(value: Any, where: Where, folder: Path) -> tuple[SweepModel, ...]:
    entries = array(value, where, "models")
    if not entries:
        raise where.error("must list at least one model", "models")
    models = [m for k, entry in enumerate(entries, start=1) for m in _model_entry(entry, where, f"models[{k}]", folder)]
    seen: set[tuple[str, str]] = set()
    for model in models:
        if (model.alias, model.revision) in seen:
            raise where.error(f"model {model.alias!r} revision {model.revision!r} is listed twice "
                              f"(give one an alias)", "models")
        seen.add((model.alias, model.revision))
    return tuple(sorted(models, key=_order))


def _checked(settings: dict, where: Where, where_field: str) -> RunConfig:
    """The config the settings build (its scoring convention known), or a one-line error naming the field."""
    try:
        config = RunConfig.build(**settings)
        get_convention(config.scoring.convention)
        return config
    except (PsylingError, TypeError, ValueError) as exc:
        raise where.error(str(exc), where_field) from None


def _settings(data: dict, where: Where) -> dict:
    """The top-level run settings (every key that is not one of the sweep's own), each checked."""
    settings = {k: v for k, v in data.items() if k not in SWEEP_KEYS}
    for key, value in settings.items():
        if key in PER_CELL:
            raise where.error("is set per cell by the sweep (use models, sets or batteries)", key)
        _checked({key: value}, where, key)
    _checked(settings, where, "settings")
    return settings


def _grid(value: Any, where: Where, top: dict) -> tuple[dict, ...]:
    """The grid's points: the product of its lists (keys sorted); ({},) without a grid."""
    if value is None:
        return ({},)
    grid = mapping(value, where, "grid")
    for key, values in grid.items():
        key_field = f"grid.{key}"
        if key in PER_CELL or key in SWEEP_KEYS:
            raise where.error("cannot be a grid setting", key_field)
        if not isinstance(values, list) or not values:
            raise where.error(f"must be a non-empty list of values, got {json_type(values)}", key_field)
        if len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
            raise where.error("lists a value twice", key_field)
        for one in values:
            _checked({**top, key: one}, where, key_field)
    keys = sorted(grid)
    points = tuple(dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys)))
    for point in points:
        _checked({**top, **point}, where, "grid")
    return points


def settings_label(point: dict) -> str:
    """"default", or "k=v,k=v" with sorted keys (strings bare, other values as JSON)."""
    if not point:
        return "default"
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(point.items()))


def _battery_files(data: dict, where: Where) -> dict[str, tuple[Battery, list[Path]]]:
    """The batteries the sweep names, each with its stimulus files; an unknown battery or one whose published
    data is missing is a one-line error."""
    batteries = {}
    for name in string_list(data.get("batteries", []), where, "batteries"):
        try:
            battery = load_battery(name)
            batteries[name] = (battery, [Path(f).resolve() for f in battery.files()])
        except StimulusError as exc:
            raise where.error(exc.reason, "batteries") from None
    return batteries


def _stimulus_sets(data: dict, where: Where, folder: Path, options: ReaderOptions,
                   battery_paths: list[Path]) -> list[StimulusSet]:
    """The sets the sweep names (paths relative to its file) and its batteries' sets, loaded; any file that
    does not load is a one-line error."""
    paths = [(folder / Path(p).expanduser()).resolve() for p in string_list(data.get("sets", []), where, "sets")]
    paths += battery_paths
    if not paths:
        raise where.error("give stimulus sets (sets) or batteries", "sets")
    loaded = load_stimuli(paths, options)
    if loaded.errors:
        more = f" (and {len(loaded.errors) - 1} more)" if len(loaded.errors) > 1 else ""
        raise where.error(f"{loaded.errors[0]}{more}", "sets")
    return loaded.sets


def battery_scores(batteries: dict[str, tuple[Battery, list[Path]]],
                   sets: list[StimulusSet]) -> tuple[BatteryScore, ...]:
    """The scores the batteries define, each with the names of the loaded sets read from the battery's files."""
    scores = []
    for battery, files in batteries.values():
        if battery.score:
            chosen = set(files)
            names = tuple(s.name for s in sets if Path(s.source).resolve() in chosen)
            scores.append(BatteryScore(battery.name, battery.score, names))
    return tuple(scores)


def _model_key(model: SweepModel, identity: dict, config: RunConfig) -> dict:
    loading = {f.name: getattr(config.model, f.name) for f in fields(ModelSpec) if f.name != "name"}
    return {**loading, "alias": model.alias, "revision_label": model.revision, "identity": identity}


def _cell(model: SweepModel, identity: dict, stim: StimulusSet, sha: str, settings: dict, point: dict) -> Cell:
    merged = {**settings, **point}
    config = RunConfig.build(model=model.spec, **merged)
    scoring = {k: v for k, v in config.to_dict().items() if k not in UNKEYED}
    key = {"psyling": __version__, "model": _model_key(model, identity, config),
           "set": {"name": stim.name, "sha256": sha}, "settings": scoring}
    digest = _sha_text(json.dumps(key, sort_keys=True, separators=(",", ":"), default=str))[:20]
    return Cell(model, stim.name, str(Path(stim.source).resolve()), merged, settings_label(point), digest, key)


def _cells(models: tuple[SweepModel, ...], sets: list[StimulusSet], settings: dict, grid: tuple[dict, ...],
           digests: FileDigests) -> tuple[Cell, ...]:
    identities = {m: model_identity(m.spec, digests) for m in models}
    shas = {s.name: set_digest(s, digests) for s in sets}
    cells = [_cell(m, identities[m], s, shas[s.name], settings, p) for m in models for s in sets for p in grid]
    return tuple(sorted(cells, key=lambda c: (_order(c.model), c.set_name, c.settings_label)))


def load_sweep(path: Union[str, Path]) -> Sweep:
    """Parse and check a sweep file; every bad input is a one-line error naming the file and field."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise StimulusError("no such sweep file", file=str(path), field="path")
    data = read_manifest(path)
    where = Where(str(path))
    name = string(data.get("name", path.stem), where, "name")
    settings = _settings(data, where)
    grid = _grid(data.get("grid"), where, settings)
    models = _models(data.get("models"), where, path.parent)
    batteries = _battery_files(data, where)
    sets = _stimulus_sets(data, where, path.parent, _checked(settings, where, "settings").reader_options,
                          [f for _, files in batteries.values() for f in files])
    digests = FileDigests()
    cells = _cells(models, sets, settings, grid, digests)
    digests.save()
    return Sweep(path, name, models, cells, grid, battery_scores(batteries, sets))
