"""Load a causal or masked LM and its tokenizer from an alias, a local folder, a .gguf file or a Hugging Face id."""
from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cache import cache_dir
from ..errors import ModelError
from ..hashing import sha256_file
from .embedded import DEFAULT_MODEL, EMBEDDED

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass
class LanguageModel:
    """A model, its (fast) tokenizer and what the run manifest records about them."""
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int | None:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None) or getattr(cfg.get_text_config(), key, None)
            if value:
                return int(value)
        return None


def _weightssha256_file(folder: Path) -> str:
    """One digest over the weight files of a folder (name and content of each)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode() + sha256_file(path).encode())
    return digest.hexdigest()


def _convert_gguf(gguf: Path, sha: str) -> Path:
    """Convert a GGUF file once into a safetensors folder in the cache; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / f"{gguf.stem}-{sha[:12]}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger("psyling").warning("converting %s to safetensors in %s (once)", gguf.name, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelError(f"reading {gguf} needs the 'gguf' package: {exc}") from None
    model.hf_quantizer = None  # transformers refuses to save a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE_GGUF").write_text(f"{gguf}\nsha256 {sha}\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_model(spec: str) -> tuple[Path | str, dict[str, Any]]:
    """Turn an alias, .gguf path, folder or hub id into something from_pretrained reads, plus manifest info."""
    if spec in EMBEDDED:
        emb = EMBEDDED[spec]
        gguf = emb.gguf_path()
        sha = sha256_file(gguf)
        return _convert_gguf(gguf, sha), {"id": spec, "source": "embedded", "package": emb.pip,
                                          "gguf": gguf.name, "sha256": sha, "description": emb.description}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} not found")
        sha = sha256_file(path)
        return _convert_gguf(path.resolve(), sha), {"id": str(path), "source": "gguf", "gguf": path.name,
                                                    "sha256": sha}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        return path, {"id": str(path.resolve()), "source": "folder", "sha256": _weightssha256_file(path)}
    if path.exists():
        raise ModelError(f"{path} is neither a model folder nor a .gguf file")
    return spec, {"id": spec, "source": "hub"}


def load_model(spec: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, revision: str | None = None) -> LanguageModel:
    """Load a causal LM (fp32 on CPU by default) with a fast tokenizer; a model whose config names a
    ``...ForMaskedLM`` architecture (BERT, RoBERTa) loads as a masked LM. Errors are one-line ModelErrors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    location, info = resolve_model(spec)
    hf_logging.set_verbosity_error()
    kwargs = {"trust_remote_code": trust_remote_code, **({"revision": revision} if revision else {})}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        architectures = getattr(AutoConfig.from_pretrained(location, **kwargs), "architectures", None) or []
        masked = any(a.endswith("ForMaskedLM") for a in architectures)
        auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
        model = auto.from_pretrained(location, dtype=DTYPES[dtype], **kwargs)
    except (OSError, ValueError) as exc:
        hint = " (is it downloaded? this machine may have no access to the model hub)" \
            if info["source"] == "hub" else ""
        raise ModelError(f"cannot load model {spec!r}: {str(exc).splitlines()[0]}{hint}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {spec!r} has no fast tokenizer; psyling needs character offsets")
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"cannot move model to device {device!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    cfg = model.config.get_text_config()
    info.update({
        "class": type(model).__name__, "objective": "masked" if masked else "causal", "dtype": dtype,
        "device": str(device),
        "n_layers": getattr(cfg, "num_hidden_layers", None),
        "vocab_size": model.get_output_embeddings().weight.shape[0],
        "revision": revision or getattr(model.config, "_commit_hash", None),
        "trust_remote_code": trust_remote_code,
    })
    return LanguageModel(model, tokenizer, info)
