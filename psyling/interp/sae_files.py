"""SAE files: SAELens's folder layout (written and read) and EleutherAI sparsify's (read), from a local path only.

SAELens layout (``save_sae``): ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc`` [d_in, d_sae], ``W_dec``
[d_sae, d_in], ``b_enc`` [d_sae], ``b_dec`` [d_in] and, for JumpReLU, ``threshold`` [d_sae]. A BatchTopK SAE is
written as SAELens writes its BatchTopK SAEs for inference: a JumpReLU with the threshold. ``cfg.json`` holds the
fields SAELens 5.x reads at the top level (``SAEConfig.to_dict``: architecture, activation_fn_str and
activation_fn_kwargs, hook_name, hook_layer, context_size, ...), those SAELens 6.x adds (reshape_activations,
``k`` and rescale_acts_by_decoder_norm for TopK, the nested ``metadata``) and psyling's own config under the key
``psyling``, which SAELens ignores. No ``sae_lens_version`` is written, so SAELens 6 reads the file through its
conversion of older configs, which rebuilds its metadata from the top-level fields. context_size, prepend_bos and
dataset_path come from the SAE's metadata when it has them (else null, true and "").

``load_sae`` reads a folder in that layout (psyling's own files exactly; other SAELens files: standard/ReLU,
TopK, JumpReLU, and SAELens < 6 configs with hook_point / activation_fn_str), or in sparsify's layout
(``cfg.json`` with d_in, k, num_latents or expansion_factor; ``sae.safetensors`` with ``encoder.weight``
[num_latents, d_in], ``encoder.bias``, ``W_dec`` [num_latents, d_in], ``b_dec``), told apart by the weights file.

Site names (``psyling.models.hooks``) and other tools' hook names:
- TransformerLens (SAELens's ``hook_name``): resid.0 = blocks.0.hook_resid_pre, resid.L = blocks.{L-1}.hook_resid_post
  (blocks.{L}.hook_resid_pre is read as resid.L too), attn.L = blocks.{L-1}.hook_attn_out, mlp.L =
  blocks.{L-1}.hook_mlp_out, head.L = blocks.{L-1}.attn.hook_z (head.L.H: with hook_head_index H), neuron.L =
  blocks.{L-1}.mlp.hook_post;
- sparsify (module names inside the Hugging Face base model, whose outputs it reads; its folders are named so):
  resid.L = layers.{L-1}, attn.L = layers.{L-1}.self_attn, mlp.L = layers.{L-1}.mlp, resid.0 = embed_tokens (the
  token embeddings: resid.0 in models without learned positions); GPT-2's h.{L-1}, h.{L-1}.attn, h.{L-1}.mlp and
  h.{L-1}.mlp.act (neuron.L) are read too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from safetensors.torch import load_file, save_file

from ..errors import PsylingError
from ..models.hooks import parse_site
from .sae import SAEConfig, SparseAutoencoder

CFG_FILENAME = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
# psyling architecture -> (SAELens architecture, SAELens 5.x activation_fn_str)
_TO_SAELENS = {"relu": ("standard", "relu"), "topk": ("topk", "topk"), "jumprelu": ("jumprelu", "relu"),
               "batchtopk": ("jumprelu", "relu")}
_WITH_THRESHOLD = ("jumprelu", "batchtopk")
_TL_SUFFIX = {"attn": "hook_attn_out", "mlp": "hook_mlp_out", "head": "attn.hook_z", "neuron": "mlp.hook_post"}
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|attn\.hook_z|"
                      r"mlp\.hook_post)$")
_SPARSIFY_MODULE = re.compile(r"^(layers|h)\.(\d+)(?:\.(self_attn|attn|mlp|mlp\.act))?$")
_SPARSIFY_KIND = {None: "resid", "self_attn": "attn", "attn": "attn", "mlp": "mlp", "mlp.act": "neuron"}


class SAEFileError(PsylingError):
    """An SAE folder or file that cannot be read or written, named with the field or tensor at fault."""


def site_to_hook(site: str) -> str:
    """The TransformerLens hook name of a site (head.L.H: the hook of head.L; its head goes in hook_head_index)."""
    parsed = parse_site(site)
    if parsed.kind == "neuron" and parsed.index is not None:
        raise SAEFileError(f"site {site}: one MLP unit has no TransformerLens hook (use neuron.{parsed.layer})")
    if parsed.kind == "resid":
        return "blocks.0.hook_resid_pre" if parsed.layer == 0 else f"blocks.{parsed.layer - 1}.hook_resid_post"
    if parsed.layer < 1:
        raise SAEFileError(f"site {site}: blocks are numbered from 1")
    return f"blocks.{parsed.layer - 1}.{_TL_SUFFIX[parsed.kind]}"


def hook_to_site(hook_name: str, head_index: Optional[int] = None) -> str:
    """The psyling site of a TransformerLens hook name (and hook_head_index, for attn.hook_z only)."""
    match = _TL_HOOK.match(str(hook_name))
    if not match:
        raise SAEFileError(f"hook name {hook_name!r} has no psyling site (expected blocks.N.hook_resid_pre, "
                           f"hook_resid_post, hook_attn_out, hook_mlp_out, attn.hook_z or mlp.hook_post)")
    block, point = int(match.group(1)), match.group(2)
    if head_index is not None and point != "attn.hook_z":
        raise SAEFileError(f"hook name {hook_name!r}: hook_head_index {head_index} applies to attn.hook_z only")
    if point == "hook_resid_pre":
        return f"resid.{block}"
    kind = "resid" if point == "hook_resid_post" else next(k for k, v in _TL_SUFFIX.items() if v == point)
    return f"{kind}.{block + 1}" + ("" if head_index is None else f".{int(head_index)}")


def site_to_sparsify(site: str) -> str:
    """The sparsify hookpoint (Llama-style module name) of a site."""
    parsed = parse_site(site)
    if parsed.kind == "resid":
        return "embed_tokens" if parsed.layer == 0 else f"layers.{parsed.layer - 1}"
    if parsed.kind not in ("attn", "mlp") or parsed.layer < 1:
        raise SAEFileError(f"site {site}: no sparsify hookpoint (resid.L, attn.L and mlp.L have one, L >= 1)")
    return f"layers.{parsed.layer - 1}.{'self_attn' if parsed.kind == 'attn' else 'mlp'}"


def sparsify_to_site(hookpoint: str) -> str:
    """The psyling site of a sparsify hookpoint (module name in the base model, as its folders are named)."""
    if hookpoint == "embed_tokens":
        return "resid.0"
    match = _SPARSIFY_MODULE.match(str(hookpoint))
    if not match:
        raise SAEFileError(f"sparsify hookpoint {hookpoint!r} has no psyling site (expected layers.N, "
                           f"layers.N.self_attn, layers.N.mlp or embed_tokens)")
    return f"{_SPARSIFY_KIND[match.group(3)]}.{int(match.group(2)) + 1}"


def saelens_config(sae: SparseAutoencoder) -> dict[str, Any]:
    """The ``cfg.json`` contents for an SAE (see the module docstring)."""
    config, site = sae.config, parse_site(sae.config.site)
    architecture, activation = _TO_SAELENS[config.architecture]
    meta = config.metadata
    hook = {"model_name": config.model, "hook_name": site_to_hook(config.site),
            "hook_head_index": site.index if site.kind == "head" else None,
            "context_size": meta.get("context_size"), "prepend_bos": meta.get("prepend_bos", True),
            "dataset_path": meta.get("dataset_path", ""), "sae_lens_training_version": None,
            "neuronpedia_id": None, "model_from_pretrained_kwargs": {}, "seqpos_slice": [None]}
    topk = {"k": config.k, "rescale_acts_by_decoder_norm": False} if architecture == "topk" else {}
    return {"architecture": architecture, "d_in": config.d_in, "d_sae": config.d_sae,
            "dtype": str(sae.W_enc.dtype).removeprefix("torch."), "device": "cpu",
            "apply_b_dec_to_input": config.apply_b_dec_to_input, "normalize_activations": "none",
            "reshape_activations": "hook_z" if site.kind == "head" and site.index is None else "none",
            "activation_fn_str": activation, "activation_fn_kwargs": {"k": config.k} if topk else {},
            "finetuning_scaling_factor": False, "dataset_trust_remote_code": False,
            "hook_layer": max(site.layer - 1, 0), **hook, **topk, "metadata": hook,
            "psyling": {"format_version": FORMAT_VERSION, "config": config.to_dict()}}


def save_sae(sae: SparseAutoencoder, folder: Union[str, Path]) -> Path:
    """Write an SAE in SAELens's layout into ``folder`` (created if needed); return the folder."""
    folder = Path(folder)
    try:
        text = json.dumps(saelens_config(sae), indent=2)
    except (TypeError, ValueError) as err:
        raise SAEFileError(f"{folder / CFG_FILENAME}: field metadata: not JSON ({err})") from None
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if sae.config.architecture in _WITH_THRESHOLD
                                                    else [])
    tensors = {name: getattr(sae, name).detach().to("cpu").contiguous() for name in names}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / SAELENS_WEIGHTS))
    (folder / CFG_FILENAME).write_text(text + "\n", encoding="utf-8")
    return folder


def load_sae(path: Union[str, Path], site: Optional[str] = None) -> SparseAutoencoder:
    """An SAE from a local folder in SAELens's or sparsify's layout (module docstring); ``site`` overrides the
    site read from the files (needed when a hook name or folder name has no psyling site)."""
    folder = Path(path)
    cfg_file = folder / CFG_FILENAME
    if not cfg_file.is_file():
        raise SAEFileError(f"{folder}: no {CFG_FILENAME} (an SAE folder holds {CFG_FILENAME} and "
                           f"{SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify))")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SAEFileError(f"{cfg_file}: not readable JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise SAEFileError(f"{cfg_file}: expected a JSON object")
    if (folder / SAELENS_WEIGHTS).is_file():
        return _load_saelens(folder, cfg, site)
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return _load_sparsify(folder, cfg, site)
    raise SAEFileError(f"{folder}: no weights file ({SAELENS_WEIGHTS} for SAELens, {SPARSIFY_WEIGHTS} for sparsify)")


def _field(cfg: dict, name: str, cfg_file: Path, kind: type = int) -> Any:
    value = cfg.get(name)
    if value is None or not isinstance(value, kind) or isinstance(value, bool):
        raise SAEFileError(f"{cfg_file}: field {name}: missing or not {kind.__name__} (got {value!r})")
    return value


def _config(cfg_file: Path, **fields: Any) -> SAEConfig:
    try:
        return SAEConfig(**fields)
    except PsylingError as err:
        raise SAEFileError(f"{cfg_file}: {err}") from None
    except TypeError as err:
        raise SAEFileError(f"{cfg_file}: field psyling.config: {err}") from None


def _site(given: Optional[str], read: Callable[[], str], source: str, cfg_file: Path) -> str:
    """``given`` if set, else the site that ``read`` finds in the files."""
    if given is not None:
        return given
    try:
        return read()
    except SAEFileError as err:
        raise SAEFileError(f"{cfg_file}: {source}: {err} (pass site= to load_sae)") from None


def _saelens_config(cfg: dict, cfg_file: Path, site: Optional[str]) -> SAEConfig:
    """psyling's config from a SAELens cfg.json (5.x flat fields, 6.x metadata, older hook_point names)."""
    own = cfg.get("psyling")
    if isinstance(own, dict) and isinstance(own.get("config"), dict):
        if own.get("format_version") != FORMAT_VERSION:
            raise SAEFileError(f"{cfg_file}: field psyling.format_version: {own.get('format_version')!r} is not "
                               f"{FORMAT_VERSION} (written by another psyling version)")
        fields = dict(own["config"])
        return _config(cfg_file, **{**fields, "site": site or fields.get("site")})
    for name, allowed in (("normalize_activations", (None, False, "none")), ("finetuning_scaling_factor",
                                                                             (None, False))):
        if cfg.get(name) not in allowed:
            raise SAEFileError(f"{cfg_file}: field {name}: {cfg.get(name)!r} is not supported")
    architecture, k = _saelens_architecture(cfg, cfg_file)
    hook = _field({"hook_name": _first(cfg, "hook_name", "hook_point")}, "hook_name", cfg_file, str)
    head = _first(cfg, "hook_head_index", "hook_point_head_index")
    where = _site(site, lambda: hook_to_site(hook, head), "field hook_name", cfg_file)
    return _config(cfg_file, d_in=_field(cfg, "d_in", cfg_file), d_sae=_field(cfg, "d_sae", cfg_file),
                   architecture=architecture, k=k, site=where, model=_first(cfg, "model_name") or "",
                   apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), metadata={"saelens_cfg": cfg})


def _first(cfg: dict, *names: str) -> Any:
    """The first of ``names`` set in a SAELens config, at its top level (5.x) or in its metadata (6.x)."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    return next((source[name] for source in (cfg, meta) for name in names if source.get(name) is not None), None)


def _saelens_architecture(cfg: dict, cfg_file: Path) -> tuple[str, Optional[int]]:
    """(psyling architecture, k) of a SAELens config; a one-line error for architectures psyling lacks."""
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
    kwargs = cfg.get("activation_fn_kwargs") if isinstance(cfg.get("activation_fn_kwargs"), dict) else {}
    if architecture == "topk" or (architecture == "standard" and activation == "topk"):
        return "topk", _field({"k": cfg.get("k", kwargs.get("k"))}, "k", cfg_file)
    if architecture == "standard" and activation == "relu":
        return "relu", None
    if architecture == "jumprelu":
        return "jumprelu", None
    if architecture == "standard":
        raise SAEFileError(f"{cfg_file}: field activation_fn_str: {activation!r} is not supported (relu, topk)")
    raise SAEFileError(f"{cfg_file}: field architecture: {architecture!r} is not supported (standard, topk, jumprelu)")


def _read_tensors(file: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against the expected names and shapes."""
    try:
        tensors = load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise SAEFileError(f"{file}: not a readable safetensors file ({err})") from None
    scaling = tensors.pop("scaling_factor", None)  # older SAELens files; all ones means none
    if scaling is not None and not bool((scaling == 1).all()):
        raise SAEFileError(f"{file}: tensor scaling_factor: a finetuning scaling factor is not supported")
    for name, shape in expected.items():
        if name not in tensors:
            raise SAEFileError(f"{file}: missing tensor {name!r} (expected shape {list(shape)})")
        if tuple(tensors[name].shape) != shape:
            raise SAEFileError(f"{file}: tensor {name!r} has shape {list(tensors[name].shape)}, expected "
                               f"{list(shape)} (from {CFG_FILENAME})")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise SAEFileError(f"{file}: unexpected tensor {unexpected[0]!r} (expected {', '.join(expected)})")
    return tensors


def _dtype(cfg: dict, cfg_file: Path, tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype cfg.json names (SAELens casts the weights to it), else the weights' own."""
    name = cfg.get("dtype")
    if name is None:
        return next(iter(tensors.values())).dtype
    dtype = DTYPES.get(str(name).removeprefix("torch."))
    if dtype is None:
        raise SAEFileError(f"{cfg_file}: field dtype: {name!r} is not one of {', '.join(DTYPES)}")
    return dtype


def _build(config: SAEConfig, dtype: torch.dtype, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    sae = SparseAutoencoder(config, dtype)
    with torch.no_grad():
        for name, tensor in tensors.items():
            getattr(sae, name).copy_(tensor.to(dtype))
    return sae


def _load_saelens(folder: Path, cfg: dict, site: Optional[str]) -> SparseAutoencoder:
    cfg_file = folder / CFG_FILENAME
    config = _saelens_config(cfg, cfg_file, site)
    d_in, d_sae = config.d_in, config.d_sae
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if config.architecture in _WITH_THRESHOLD:
        expected["threshold"] = (d_sae,)
    tensors = _read_tensors(folder / SAELENS_WEIGHTS, expected)
    dtype = _dtype(cfg, cfg_file, tensors)
    if config.architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = tensors["W_dec"].norm(dim=1)  # fold SAELens's decoder-norm rescaling into the weights
        tensors.update(W_enc=tensors["W_enc"] * norms, b_enc=tensors["b_enc"] * norms,
                       W_dec=tensors["W_dec"] / norms[:, None])
    return _build(config, dtype, tensors)


def _load_sparsify(folder: Path, cfg: dict, site: Optional[str]) -> SparseAutoencoder:
    cfg_file = folder / CFG_FILENAME
    if cfg.get("activation", "topk") != "topk":
        raise SAEFileError(f"{cfg_file}: field activation: {cfg.get('activation')!r} is not supported (topk)")
    for flag in ("transcode", "skip_connection"):
        if cfg.get(flag):
            raise SAEFileError(f"{cfg_file}: field {flag}: a sparsify {flag} coder is not an SAE psyling loads")
    d_in = _field(cfg, "d_in", cfg_file)
    # sparsify's defaults: num_latents 0, meaning d_in x expansion_factor (32)
    factor = {"expansion_factor": cfg.get("expansion_factor", 32)}
    d_sae = cfg.get("num_latents") or d_in * _field(factor, "expansion_factor", cfg_file)
    where = _site(site, lambda: sparsify_to_site(folder.name), f"folder name {folder.name!r}", cfg_file)
    config = _config(cfg_file, d_in=d_in, d_sae=_field({"num_latents": d_sae}, "num_latents", cfg_file),
                     architecture="topk", k=_field(cfg, "k", cfg_file), site=where, metadata={"sparsify_cfg": cfg})
    tensors = _read_tensors(folder / SPARSIFY_WEIGHTS, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                                                        "W_dec": (d_sae, d_in), "b_dec": (d_in,)})
    weights = {"W_enc": tensors["encoder.weight"].T, "b_enc": tensors["encoder.bias"], "W_dec": tensors["W_dec"],
               "b_dec": tensors["b_dec"]}
    return _build(config, tensors["encoder.weight"].dtype, weights)
