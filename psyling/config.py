"""``RunConfig``: every setting of a run that changes its numbers or outputs, as one frozen, hashable value.

It composes the model to load (``ModelSpec``), how to score (``ScoringOptions``) and the run's own settings
(stimuli, item limit, prediction statistic, activation pooling, score cache). The manifest stores
``config.to_dict()`` under ``"config"`` and ``RunConfig.from_manifest`` rebuilds an equal config, so any later
re-scoring (the linking corpus of ``psyling analyze``, sweeps) uses exactly the run's settings. Where the run
writes and whether progress is shown are not settings of the run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

from .errors import PsylingError
from .interp.activations import METHODS, POOLS
from .models.embedded import EMBEDDED
from .models.hooks import CaptureSpec
from .models.options import ModelSpec, ScoringOptions
# the region statistic bare prediction terms take (re-exported): surprisal (sum, the default), surprisal_raw, mean
# (per-token surprisal), slor (NEGATIVE SLOR, lower = more acceptable); definitions in psyling.stats.predictions
from .stimuli.formula import MEASURES
from .stimuli.reading import ReaderOptions

ALIASES = {"activations": "capture"}  # keyword names of psyling.run -> ScoringOptions fields


@dataclass(frozen=True)
class RunConfig:
    """A run's settings: ``model`` (what to load), ``scoring`` (how to score; capture and logit lens included),
    ``stimuli`` (files or folders) and ``battery``, ``max_items`` (first N items of each set), ``detokenize``
    (SyntaxGym 2020's free-standing " ." and " ,"), ``measure`` (the prediction statistic, ``MEASURES``), ``pool`` and
    ``pool_method`` (captured activations), ``cache`` (write the score cache), ``resume`` (reuse it) and
    ``segmentation`` of the stimulus files ("auto": detected unless a file declares it; "whitespace", "none")."""
    model: ModelSpec = field(default_factory=ModelSpec)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    stimuli: tuple[str, ...] = ()
    battery: Optional[str] = None
    max_items: Optional[int] = None
    detokenize: bool = False
    measure: str = "surprisal"
    pool: str = "word"
    pool_method: str = "mean"
    cache: bool = True
    resume: bool = False
    segmentation: str = "auto"

    def __post_init__(self) -> None:
        paths = [self.stimuli] if isinstance(self.stimuli, (str, Path)) else self.stimuli
        object.__setattr__(self, "stimuli", tuple(str(p) for p in paths))
        object.__setattr__(self, "model", _located(self.model))
        if self.measure not in MEASURES:
            raise PsylingError(f"unknown prediction measure {self.measure!r} (choose from {', '.join(MEASURES)})")
        if self.max_items is not None and (not isinstance(self.max_items, int) or self.max_items < 1):
            raise PsylingError(f"max_items must be a whole number of at least 1 (got {self.max_items!r})")
        if self.pool not in POOLS:
            raise PsylingError(f"unknown pooling unit {self.pool!r} (choose from {', '.join(POOLS)})")
        if self.pool_method not in METHODS:
            raise PsylingError(f"unknown pooling method {self.pool_method!r} (choose from {', '.join(METHODS)})")
        self.reader_options  # checks the segmentation against SEGMENTATION_CHOICES

    @property
    def reader_options(self) -> ReaderOptions:
        """How the run reads its stimulus files."""
        return ReaderOptions(self.detokenize, self.segmentation)

    @classmethod
    def build(cls, model: Union[str, ModelSpec] = ModelSpec().name, **settings: Any) -> "RunConfig":
        """A config from keyword settings, as ``psyling.run`` takes them: the fields of ``ModelSpec`` (revision,
        dtype, device, trust_remote_code), of ``ScoringOptions`` (``activations`` for ``capture``) and of
        ``RunConfig``; unknown names are a one-line error."""
        return cls().with_settings(model=model, **settings)

    def with_settings(self, **settings: Any) -> "RunConfig":
        """This config with some settings changed (names as in ``build``)."""
        groups: dict[str, dict[str, Any]] = {"model": {}, "scoring": {}, "run": {}}
        for key, value in settings.items():
            groups[_group(ALIASES.get(key, key), value)][ALIASES.get(key, key)] = value
        model = groups["run"].pop("model", self.model)
        model = replace(replace(self.model, name=model) if isinstance(model, str) else model, **groups["model"])
        scoring = replace(groups["run"].pop("scoring", self.scoring), **groups["scoring"])
        return replace(self, model=model, scoring=scoring, **groups["run"])

    def for_rescoring(self) -> "RunConfig":
        """The settings to score other stimuli (e.g. a linking corpus) as this run scored its own: the same
        model and scoring, no stimuli of its own, no activation capture or logit lens."""
        return replace(self, stimuli=(), battery=None, max_items=None, detokenize=False, segmentation="auto",
                       scoring=replace(self.scoring, capture=None, lens_layers=None))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists), as the manifest stores them under "config"."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """The config ``to_dict`` (or its JSON) describes; unknown keys are a one-line error."""
        _known(data, cls, "config")
        scoring = dict(data.get("scoring", {}))
        _known(scoring, ScoringOptions, "config.scoring")
        if scoring.get("capture") is not None:
            _known(scoring["capture"], CaptureSpec, "config.scoring.capture")
            scoring["capture"] = CaptureSpec(**scoring["capture"])
        if isinstance(scoring.get("lens_layers"), list):
            scoring["lens_layers"] = tuple(scoring["lens_layers"])
        _known(data.get("model", {}), ModelSpec, "config.model")
        rest = {k: v for k, v in data.items() if k not in ("model", "scoring")}
        return cls(model=ModelSpec(**data.get("model", {})), scoring=ScoringOptions(**scoring), **rest)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "RunConfig":
        """The config of the run a manifest describes (its "config"; for runs written before it was recorded,
        rebuilt from the model and settings entries)."""
        if "config" in manifest:
            return cls.from_dict(manifest["config"])
        return _from_legacy(manifest)


def _group(key: str, value: Any) -> str:
    """Which part of a RunConfig a keyword setting belongs to."""
    if key in ("model", "scoring") or key in {f.name for f in fields(RunConfig)}:
        return "run"
    if key in {f.name for f in fields(ModelSpec)} - {"name"}:
        return "model"
    if key in {f.name for f in fields(ScoringOptions)}:
        return "scoring"
    known = sorted({f.name for cls in (ModelSpec, ScoringOptions, RunConfig) for f in fields(cls)} - {"name"}
                   | set(ALIASES))
    raise PsylingError(f"unknown run setting {key!r} (known: {', '.join(known)})")


def _located(spec: ModelSpec) -> ModelSpec:
    """A model given as a local folder or file, named by its absolute path (so a manifest's config loads it from
    anywhere); aliases and hub ids stay as they are."""
    path = Path(spec.name).expanduser()
    if spec.name in EMBEDDED or not path.exists():
        return spec
    return replace(spec, name=str(path.resolve()))


def _known(data: Any, cls: type, where: str) -> None:
    if not isinstance(data, dict):
        raise PsylingError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise PsylingError(f"{where}: unknown setting {unknown[0]!r} (written by a newer psyling?)")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _from_legacy(manifest: dict[str, Any]) -> RunConfig:
    """A manifest written before the config was recorded: the settings it holds, defaults for the rest."""
    model, settings = manifest.get("model", {}), manifest.get("settings", {})
    stimuli = manifest.get("stimuli", {})
    spec = ModelSpec(model.get("id", ModelSpec().name), model.get("revision"), settings.get("dtype", "float32"),
                     settings.get("device", "cpu"), bool(model.get("trust_remote_code", False)))
    reuse = (settings.get("prefix_reuse") or {}).get("enabled")
    context = settings.get("context_token")  # {"id", "token"}, or a sentence (minicons: the tokenizer's own)
    scoring = ScoringOptions(context_token=context.get("id") if isinstance(context, dict) else None,
                             batch_size=settings.get("batch_size", 32), max_tokens=settings.get("max_tokens"),
                             padding_side=settings.get("padding_side", "right"), reuse_prefix=reuse,
                             convention=(settings.get("convention") or {}).get("name", "psyling"),
                             masked_variant=(settings.get("masked_lm") or {}).get("variant", "pll"))
    return RunConfig(spec, scoring, tuple(stimuli.get("paths", ())), stimuli.get("battery"), stimuli.get("max_items"),
                     bool(settings.get("syntaxgym_detokenize", False)), settings.get("prediction_measure", "surprisal"))
