"""RunConfig: one frozen, hashable value for a run's settings, stored in the manifest and rebuilt from it."""
import json
from dataclasses import FrozenInstanceError

import pytest

import psyling
from psyling.config import RunConfig
from psyling.errors import PsylingError
from psyling.models import CaptureSpec, ModelSpec, ScoringOptions

from test_malformed import manifest as write_set

EVERYTHING = RunConfig(
    model=ModelSpec("gemma3-270m", revision="v1.2", dtype="bfloat16", device="cuda:1", trust_remote_code=True),
    scoring=ScoringOptions(context_token=7, batch_size=5, max_tokens=99, padding_side="left", reuse_prefix=False,
                           convention="lm-eval", masked_variant="l2r",
                           capture=CaptureSpec(("resid", "mlp"), (0, 2), "float16"), lens_layers=(1, 2)),
    stimuli=("a.yaml", "suites/"), battery="core", max_items=3, detokenize=True, measure="surprisal_raw",
    pool="region", pool_method="last", cache=False, resume=True)


def test_every_setting_survives_the_manifest_round_trip():
    stored = json.loads(json.dumps({"config": EVERYTHING.to_dict()}))  # what manifest.json holds
    rebuilt = RunConfig.from_manifest(stored)
    assert rebuilt == EVERYTHING and hash(rebuilt) == hash(EVERYTHING)
    assert rebuilt.scoring.capture.layers == (0, 2) and rebuilt.scoring.lens_layers == (1, 2)
    assert stored["config"]["scoring"]["capture"] == {"kinds": ["resid", "mlp"], "layers": [0, 2],
                                                      "dtype": "float16"}
    named = RunConfig(scoring=ScoringOptions(context_token="bos", lens_layers="all"))
    assert RunConfig.from_dict(json.loads(json.dumps(named.to_dict()))) == named
    assert RunConfig.from_dict({}) == RunConfig()  # missing keys are the defaults


def test_config_is_frozen_and_hashable():
    with pytest.raises(FrozenInstanceError):
        EVERYTHING.max_items = 4
    assert len({EVERYTHING, RunConfig.from_dict(EVERYTHING.to_dict()), RunConfig()}) == 2


def test_keyword_settings_go_to_their_part():
    config = RunConfig.build("smollm2-135m", dtype="float16", revision="r", batch_size=3, convention="syntaxgym",
                             activations=CaptureSpec(layers=(1,)), lens_layers=[0, 1], max_items=2,
                             stimuli=["x.yaml"], measure="surprisal_raw")
    assert config.model == ModelSpec("smollm2-135m", "r", "float16")
    assert (config.scoring.batch_size, config.scoring.convention) == (3, "syntaxgym")
    assert config.scoring.capture == CaptureSpec(layers=(1,)) and config.scoring.lens_layers == (0, 1)
    assert (config.max_items, config.stimuli, config.measure) == (2, ("x.yaml",), "surprisal_raw")
    changed = config.with_settings(model="gemma3-270m", max_tokens=64)
    assert changed.model == ModelSpec("gemma3-270m", "r", "float16")  # the name changes, its loading settings stay
    assert changed.scoring.max_tokens == 64 and changed.scoring.batch_size == 3


@pytest.mark.parametrize("settings, message", [
    ({"measure": "entropy"}, "unknown prediction measure 'entropy' (choose from surprisal, surprisal_raw, mean, slor)"),
    ({"max_items": 0}, "max_items must be a whole number of at least 1 (got 0)"),
    ({"pool": "sentence"}, "unknown pooling unit 'sentence'"),
    ({"pool_method": "max"}, "unknown pooling method 'max'"),
    ({"batch_size": 0}, "batch size must be at least 1"),
    ({"bacth_size": 4}, "unknown run setting 'bacth_size' (known: "),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(PsylingError) as info:
        RunConfig.build(**settings)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_unknown_manifest_keys_are_errors():
    data = RunConfig().to_dict()
    data["scoring"]["beam"] = 4
    with pytest.raises(PsylingError, match=r"config.scoring: unknown setting 'beam'"):
        RunConfig.from_dict(data)


def test_a_local_model_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert RunConfig.build("my-model").model.name == str(tmp_path / "my-model")
    assert RunConfig.build("smollm2-135m").model.name == "smollm2-135m"
    assert RunConfig.build("org/hub-model").model.name == "org/hub-model"


def test_rescoring_keeps_model_and_scoring_but_not_stimuli_capture_or_lens():
    again = EVERYTHING.for_rescoring()
    assert again.model == EVERYTHING.model
    assert again.scoring == ScoringOptions(7, 5, 99, "left", False, "lm-eval", "l2r", None, None)
    assert (again.stimuli, again.battery, again.max_items, again.detokenize) == ((), None, None, False)
    assert (again.cache, again.resume, again.measure) == (False, True, "surprisal_raw")


def test_manifests_without_a_config_are_rebuilt_from_their_settings():
    legacy = {"model": {"id": "/models/x", "revision": "abc", "trust_remote_code": True},
              "settings": {"batch_size": 4, "max_tokens": 128, "padding_side": "left", "dtype": "float16",
                           "device": "cuda", "convention": {"name": "minicons"}, "prediction_measure": "surprisal_raw",
                           "context_token": {"id": 3, "token": "<eos>"}, "prefix_reuse": {"enabled": False},
                           "syntaxgym_detokenize": True},
              "stimuli": {"battery": None, "paths": ["s.yaml"], "max_items": 2}}
    config = RunConfig.from_manifest(legacy)
    assert config.model == ModelSpec("/models/x", "abc", "float16", "cuda", True)
    assert config.scoring == ScoringOptions(3, 4, 128, "left", False, "minicons")
    assert (config.stimuli, config.max_items, config.detokenize, config.measure) == (
        ("s.yaml",), 2, True, "surprisal_raw")


def test_a_run_records_its_config_and_a_config_reruns_it(bpe_llama, tmp_path):
    stim = write_set(tmp_path)
    first = psyling.run(bpe_llama, [stim], out=tmp_path / "a", progress=False, batch_size=3,
                        measure="surprisal_raw", max_items=1, convention="syntaxgym", max_tokens=40)
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["config"] == first.manifest["config"]
    config = RunConfig.from_manifest(on_disk)
    assert config.model == ModelSpec("tiny-llama", None, "float32", "cpu", False)
    assert (config.scoring.batch_size, config.scoring.convention, config.scoring.max_tokens) == (3, "syntaxgym", 40)
    assert (config.stimuli, config.max_items, config.measure) == ((str(stim),), 1, "surprisal_raw")
    again = psyling.run(config, progress=False, model=bpe_llama)  # the same settings, the same model
    assert again.manifest["config"] == first.manifest["config"]
    assert again.regions.equals(first.regions) and again.predictions.equals(first.predictions)
    assert first.manifest["settings"]["max_tokens"] == 40 and first.manifest["settings"]["batch_size"] == 3


def test_activations_may_be_given_as_site_kinds():
    config = RunConfig.build("smollm2-135m", activations="resid, mlp")
    assert config.scoring.capture == CaptureSpec(("resid", "mlp"))
    with pytest.raises(PsylingError, match="activations must be site kinds"):
        RunConfig.build("smollm2-135m", activations=3)


def test_a_minicons_manifest_without_a_config_is_rebuilt():
    manifest = {"model": {"id": "m"}, "settings": {"context_token": "the tokenizer's own special tokens (minicons)",
                                                  "convention": {"name": "minicons"}}}
    config = RunConfig.from_manifest(manifest)
    assert config.scoring.context_token is None and config.scoring.convention == "minicons"
