"""SAE files: SAELens's layout written and read back bitwise, sparsify's read, site <-> hook names, and one-line
errors that name the file and the field or tensor."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from psyling.errors import PsylingError
from psyling.interp.sae import SAEConfig, SparseAutoencoder
from psyling.interp.sae_files import (hook_to_site, load_sae, save_sae, site_to_hook, site_to_sparsify,
                                      sparsify_to_site)

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")
# The cfg.json fields psyling writes, by where SAELens reads them:
SAELENS_5_FIELDS = {  # SAELens 5.x sae.SAEConfig (its to_dict / required dataclass fields)
    "architecture", "d_in", "d_sae", "dtype", "device", "model_name", "hook_name", "hook_layer", "hook_head_index",
    "activation_fn_str", "activation_fn_kwargs", "apply_b_dec_to_input", "finetuning_scaling_factor",
    "sae_lens_training_version", "prepend_bos", "dataset_path", "dataset_trust_remote_code", "context_size",
    "normalize_activations", "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice"}
SAELENS_6_FIELDS = {"reshape_activations", "metadata"}  # SAELens 6.x saes/sae.py SAEConfig, beside the above
SAELENS_6_TOPK_FIELDS = {"k", "rescale_acts_by_decoder_norm"}  # SAELens 6.x saes/topk_sae.py TopKSAEConfig
# SAELens 6.x loading/pretrained_sae_loaders.py LLM_METADATA_KEYS, the ones psyling knows
SAELENS_6_METADATA = {"model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos", "dataset_path",
                      "sae_lens_training_version", "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice"}
WEIGHTS = {"relu": {"W_enc", "W_dec", "b_enc", "b_dec"}, "topk": {"W_enc", "W_dec", "b_enc", "b_dec"},
           "jumprelu": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
           "batchtopk": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}}


def random_sae(architecture, dtype=torch.float32, site="resid.4", d_in=12, d_sae=40, seed=0):
    config = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture,
                       k=6 if architecture in ("topk", "batchtopk") else None, site=site, model="smollm2-135m",
                       metadata={"training": {"lr": 2e-4, "seed": seed, "sets": ["agreement", "npi"]},
                                 "n_tokens": 1234})
    sae = SparseAutoencoder.from_init(config, seed=seed, dtype=dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "b_dec", "threshold"):
            getattr(sae, name).copy_(torch.randn(getattr(sae, name).shape, generator=generator).to(dtype))
    return sae


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_then_load_is_bitwise(tmp_path, architecture, dtype):
    sae = random_sae(architecture, dtype)
    loaded = load_sae(save_sae(sae, tmp_path / "sae"))
    assert loaded.config == sae.config
    for name in ("W_enc", "W_dec", "b_enc", "b_dec") + (("threshold",) if "threshold" in WEIGHTS[architecture]
                                                        else ()):
        ours, theirs = getattr(sae, name), getattr(loaded, name)
        assert theirs.dtype == dtype and torch.equal(ours, theirs), name
    x = torch.randn(20, 12, dtype=dtype)
    assert torch.equal(sae(x), loaded(x))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_layout_is_saelens(tmp_path, architecture):
    folder = save_sae(random_sae(architecture), tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    assert set(tensors) == WEIGHTS[architecture]
    shapes = {"W_enc": (12, 40), "W_dec": (40, 12), "b_enc": (40,), "b_dec": (12,), "threshold": (40,)}
    assert all(tuple(t.shape) == shapes[name] and t.dtype == torch.float32 for name, t in tensors.items())
    cfg = json.loads((folder / "cfg.json").read_text())
    topk = architecture == "topk"
    assert set(cfg) == SAELENS_5_FIELDS | SAELENS_6_FIELDS | (SAELENS_6_TOPK_FIELDS if topk else set()) | {"psyling"}
    assert set(cfg["metadata"]) == SAELENS_6_METADATA
    expected_architecture = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
    assert cfg["architecture"] == expected_architecture[architecture]
    assert cfg["activation_fn_str"] == ("topk" if topk else "relu")
    assert cfg["activation_fn_kwargs"] == ({"k": 6} if topk else {})
    assert (cfg["hook_name"], cfg["hook_layer"], cfg["hook_head_index"]) == ("blocks.3.hook_resid_post", 3, None)
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post" and cfg["model_name"] == "smollm2-135m"
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["device"]) == (12, 40, "float32", "cpu")
    assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
    assert cfg["apply_b_dec_to_input"] is True and cfg["finetuning_scaling_factor"] is False
    assert "sae_lens_version" not in cfg and "sae_lens_version" not in cfg["metadata"]
    assert cfg["psyling"]["config"]["metadata"]["n_tokens"] == 1234 and cfg["psyling"]["config"]["k"] == (
        6 if architecture in ("topk", "batchtopk") else None)


def test_head_sites_write_hook_z(tmp_path):
    whole = json.loads((save_sae(random_sae("topk", site="head.2"), tmp_path / "a") / "cfg.json").read_text())
    assert (whole["hook_name"], whole["reshape_activations"], whole["hook_head_index"]) == (
        "blocks.1.attn.hook_z", "hook_z", None)
    one = json.loads((save_sae(random_sae("topk", site="head.2.3"), tmp_path / "b") / "cfg.json").read_text())
    assert (one["hook_name"], one["reshape_activations"], one["hook_head_index"]) == (
        "blocks.1.attn.hook_z", "none", 3)


def saelens_folder(tmp_path, cfg, tensors, name="saelens"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def weights(d_in=6, d_sae=10, seed=0, threshold=False):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if threshold:
        shapes["threshold"] = (d_sae,)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def test_files_from_saelens_6_and_older_load(tmp_path):
    tensors = weights()
    v6 = {"architecture": "topk", "d_in": 6, "d_sae": 10, "k": 3, "dtype": "float32", "device": "cpu",
          "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
          "rescale_acts_by_decoder_norm": False,
          "metadata": {"sae_lens_version": "6.18.0", "model_name": "gpt2", "hook_name": "blocks.5.hook_mlp_out"}}
    sae = load_sae(saelens_folder(tmp_path, v6, tensors, "v6"))
    assert (sae.config.architecture, sae.config.k, sae.config.site, sae.config.model) == ("topk", 3, "mlp.6", "gpt2")
    assert torch.equal(sae.W_enc, tensors["W_enc"]) and torch.equal(sae.b_dec, tensors["b_dec"])
    old = {"d_in": 6, "d_sae": 10, "dtype": "torch.float32", "hook_point": "blocks.2.hook_resid_pre",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}, "model_name": "gpt2-small"}
    sae = load_sae(saelens_folder(tmp_path, old, tensors, "v4"))  # no architecture: SAELens reads "standard"
    assert (sae.config.architecture, sae.config.k, sae.config.site) == ("topk", 4, "resid.2")
    relu = {"d_in": 6, "d_sae": 10, "hook_name": "blocks.0.hook_resid_pre", "normalize_activations": False}
    assert load_sae(saelens_folder(tmp_path, relu, tensors, "relu")).config.architecture == "relu"
    jump = {**v6, "architecture": "jumprelu"}
    sae = load_sae(saelens_folder(tmp_path, jump, weights(threshold=True), "jump"))
    assert sae.config.architecture == "jumprelu" and sae.config.site == "mlp.6"


def test_decoder_norm_rescaling_is_folded_in(tmp_path):
    tensors = weights(seed=4)
    cfg = {"architecture": "topk", "d_in": 6, "d_sae": 10, "k": 3, "rescale_acts_by_decoder_norm": True,
           "metadata": {"hook_name": "blocks.1.hook_resid_post"}}
    sae = load_sae(saelens_folder(tmp_path, cfg, tensors))
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(5))
    norms = tensors["W_dec"].norm(dim=1)
    pre = ((x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]) * norms  # SAELens TopKSAE.encode
    values, indices = pre.topk(3, dim=1)
    z = torch.zeros_like(pre).scatter(1, indices, values.relu())
    expected = (z / norms) @ tensors["W_dec"] + tensors["b_dec"]  # SAELens TopKSAE.decode
    torch.testing.assert_close(sae(x), expected, rtol=1e-5, atol=1e-5)


def sparsify_folder(tmp_path, name="layers.2", d_in=8, d_sae=32, k=3, drop=None, cfg_changes=None):
    generator = torch.Generator().manual_seed(7)
    tensors = {"encoder.weight": torch.randn(d_sae, d_in, generator=generator),
               "encoder.bias": torch.randn(d_sae, generator=generator) * 0.1,
               "W_dec": torch.randn(d_sae, d_in, generator=generator), "b_dec": torch.randn(d_in, generator=generator)}
    if drop:
        del tensors[drop]
    cfg = {"activation": "topk", "expansion_factor": d_sae // d_in, "normalize_decoder": True, "num_latents": 0,
           "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d_in,
           **(cfg_changes or {})}
    folder = tmp_path / name
    folder.mkdir()
    save_file(tensors, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, tensors


def test_a_sparsify_folder_loads_and_encodes_as_sparsify_does(tmp_path):
    folder, tensors = sparsify_folder(tmp_path)
    sae = load_sae(folder)
    assert (sae.config.site, sae.config.architecture, sae.config.k, sae.config.d_sae) == ("resid.3", "topk", 3, 32)
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(8))
    # sparsify: relu(linear(x - b_dec)), its top k, decoded through W_dec (rows) plus b_dec
    pre = torch.relu(torch.nn.functional.linear(x - tensors["b_dec"], tensors["encoder.weight"],
                                                tensors["encoder.bias"]))
    values, indices = pre.topk(3, dim=1)
    expected_z = torch.zeros_like(pre).scatter(1, indices, values)
    torch.testing.assert_close(sae.encode(x), expected_z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sae(x), expected_z @ tensors["W_dec"] + tensors["b_dec"], rtol=1e-6, atol=1e-6)
    twin = SparseAutoencoder(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=3, site="resid.3"))
    with torch.no_grad():
        twin.W_enc.copy_(tensors["encoder.weight"].T)
        twin.b_enc.copy_(tensors["encoder.bias"])
        twin.W_dec.copy_(tensors["W_dec"])
        twin.b_dec.copy_(tensors["b_dec"])
    assert torch.equal(sae(x), twin(x)) and torch.equal(sae.encode(x), twin.encode(x))


def test_sparsify_folders_need_a_hookpoint_name_or_a_site(tmp_path):
    folder, _ = sparsify_folder(tmp_path, name="my_sae", cfg_changes={"num_latents": 32, "expansion_factor": 99})
    with pytest.raises(PsylingError, match=r"my_sae.*pass site= to load_sae"):
        load_sae(folder)
    assert load_sae(folder, site="mlp.2").config.site == "mlp.2"
    attn, _ = sparsify_folder(tmp_path, name="layers.0.self_attn")
    assert load_sae(attn).config.site == "attn.1"


@pytest.mark.parametrize("site, hook", [("resid.0", "blocks.0.hook_resid_pre"), ("resid.1", "blocks.0.hook_resid_post"),
                                        ("resid.7", "blocks.6.hook_resid_post"), ("attn.3", "blocks.2.hook_attn_out"),
                                        ("mlp.1", "blocks.0.hook_mlp_out"), ("head.2", "blocks.1.attn.hook_z"),
                                        ("neuron.5", "blocks.4.mlp.hook_post")])
def test_sites_and_transformerlens_hooks(site, hook):
    assert site_to_hook(site) == hook and hook_to_site(hook) == site


def test_other_hook_spellings():
    assert hook_to_site("blocks.7.hook_resid_pre") == "resid.7"  # the input of block 8 is the output of block 7
    assert hook_to_site("blocks.1.attn.hook_z", head_index=5) == "head.2.5"
    assert site_to_hook("head.2.5") == "blocks.1.attn.hook_z"


@pytest.mark.parametrize("site, module", [("resid.0", "embed_tokens"), ("resid.3", "layers.2"),
                                          ("attn.1", "layers.0.self_attn"), ("mlp.12", "layers.11.mlp")])
def test_sites_and_sparsify_hookpoints(site, module):
    assert site_to_sparsify(site) == module and sparsify_to_site(module) == site


def test_gpt2_style_sparsify_hookpoints():
    assert [sparsify_to_site(n) for n in ("h.0", "h.3.attn", "h.3.mlp", "h.3.mlp.act")] == [
        "resid.1", "attn.4", "mlp.4", "neuron.4"]


@pytest.mark.parametrize("call, message", [
    (lambda: hook_to_site("blocks.1.hook_resid_mid"), "no psyling site"),
    (lambda: hook_to_site("blocks.1.hook_mlp_out", head_index=2), "attn.hook_z only"),
    (lambda: site_to_hook("attn.0"), "numbered from 1"),
    (lambda: site_to_hook("neuron.2.3"), "one MLP unit"),
    (lambda: site_to_hook("logits.1"), "not a site name"),
    (lambda: sparsify_to_site("layers.2.mlp.down_proj"), "no psyling site"),
    (lambda: site_to_sparsify("head.2"), "no sparsify hookpoint")])
def test_unknown_names_are_one_line_errors(call, message):
    with pytest.raises(PsylingError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def rewrite_weights(folder, change):
    file = folder / "sae_weights.safetensors"
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def test_damaged_saelens_folders_name_the_file_and_the_tensor(tmp_path):
    folder = save_sae(random_sae("jumprelu"), tmp_path / "sae")
    rewrite_weights(folder, lambda t: t.pop("threshold"))
    with pytest.raises(PsylingError, match=r"sae_weights\.safetensors: missing tensor 'threshold'"):
        load_sae(folder)
    folder = save_sae(random_sae("topk"), tmp_path / "sae2")
    rewrite_weights(folder, lambda t: t.update(W_dec=t["W_dec"].T.contiguous()))
    with pytest.raises(PsylingError, match=r"sae_weights\.safetensors: tensor 'W_dec' has shape \[12, 40\], "
                                           r"expected \[40, 12\]"):
        load_sae(folder)
    rewrite_weights(folder, lambda t: t.update(W_dec=t["W_dec"].T.contiguous(), extra=torch.zeros(3)))
    with pytest.raises(PsylingError, match="unexpected tensor 'extra'"):
        load_sae(folder)


def test_bad_configs_name_the_file_and_the_field(tmp_path):
    tensors = weights()
    cases = {"no_d_in": ({"d_sae": 10, "hook_name": "blocks.0.hook_resid_post"}, "field d_in"),
             "gated": ({"architecture": "gated", "d_in": 6, "d_sae": 10, "hook_name": "blocks.0.hook_resid_post"},
                       "field architecture: 'gated' is not supported"),
             "no_hook": ({"d_in": 6, "d_sae": 10}, "field hook_name"),
             "odd_hook": ({"d_in": 6, "d_sae": 10, "hook_name": "blocks.0.ln1.hook_normalized"},
                          "field hook_name: hook name 'blocks.0.ln1.hook_normalized' has no psyling site"),
             "dtype": ({"d_in": 6, "d_sae": 10, "hook_name": "blocks.0.hook_resid_post", "dtype": "int8"},
                       "field dtype"),
             "norm": ({"d_in": 6, "d_sae": 10, "hook_name": "blocks.0.hook_resid_post",
                       "normalize_activations": "expected_average_only_in"}, "field normalize_activations"),
             "k": ({"architecture": "topk", "d_in": 6, "d_sae": 10, "k": 11, "hook_name": "blocks.0.hook_mlp_out"},
                   r"k must be in 1\.\.10")}
    for name, (cfg, message) in cases.items():
        with pytest.raises(PsylingError, match=rf"{name}/cfg\.json: .*{message}") as caught:
            load_sae(saelens_folder(tmp_path, cfg, tensors, name))
        assert "\n" not in str(caught.value)


def test_damaged_sparsify_folders_and_missing_files(tmp_path):
    folder, _ = sparsify_folder(tmp_path, drop="encoder.bias")
    with pytest.raises(PsylingError, match=r"layers\.2/sae\.safetensors: missing tensor 'encoder\.bias'"):
        load_sae(folder)
    transcoder, _ = sparsify_folder(tmp_path, name="layers.4", cfg_changes={"transcode": True})
    with pytest.raises(PsylingError, match=r"cfg\.json: field transcode"):
        load_sae(transcoder)
    with pytest.raises(PsylingError, match="no cfg.json"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "cfg.json").write_text("{}")
    with pytest.raises(PsylingError, match="no weights file"):
        load_sae(tmp_path / "empty")
    (tmp_path / "empty" / "cfg.json").write_text(json.dumps({"d_in": 6, "d_sae": 10,
                                                              "hook_name": "blocks.0.hook_resid_post"}))
    (tmp_path / "empty" / "sae_weights.safetensors").write_text("not safetensors")
    with pytest.raises(PsylingError, match="not a readable safetensors file"):
        load_sae(tmp_path / "empty")


def test_metadata_that_is_not_json_is_refused(tmp_path):
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=4, d_sae=8, k=2, metadata={"when": object()}))
    with pytest.raises(PsylingError, match="field metadata: not JSON"):
        save_sae(sae, tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


def test_a_newer_psyling_format_is_refused(tmp_path):
    folder = save_sae(random_sae("topk"), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["psyling"]["format_version"] = 99
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(PsylingError, match=r"cfg\.json: field psyling\.format_version: 99"):
        load_sae(folder)


def test_the_site_can_be_overridden(tmp_path):
    folder = save_sae(random_sae("topk"), tmp_path / "sae")
    assert load_sae(folder, site="mlp.2").config.site == "mlp.2" and load_sae(folder).config.site == "resid.4"
    with pytest.raises(PsylingError, match=r"cfg\.json: not a site name: 'mlp'"):
        load_sae(folder, site="mlp")
