"""Load a causal or masked LM and its tokenizer from an alias, a local folder, a .gguf file or a Hugging Face id."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import struct
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cache import cache_dir
from ..errors import ModelError, first_line
from ..hashing import sha256_file
from .embedded import DEFAULT_MODEL, EMBEDDED

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # NAME or NAMESPACE/NAME
HUB_PROBE_SECONDS = 3.0
GGUF_MAGIC = b"GGUF"
GGUF_DAMAGE = (struct.error, EOFError, IndexError, KeyError, OverflowError)  # what a truncated GGUF raises


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


def _check_gguf(gguf: Path) -> None:
    """A one-line error unless the file is a complete GGUF file (its magic bytes, metadata and tensor table
    parse, and the tensor data is all there); reads the header only, through a memory map."""
    import gguf as gguf_format

    with gguf.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelError(f"{gguf} is not a valid GGUF file (it does not start with the GGUF magic bytes)")
    try:
        gguf_format.GGUFReader(gguf)
    except (ValueError, *GGUF_DAMAGE) as exc:
        raise ModelError(f"{gguf} is not a valid GGUF file (truncated or corrupt: {first_line(exc)})") from None


def _read_gguf(gguf: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model read from a (checked) GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelError(f"reading {gguf} needs the 'gguf' package: {exc}") from None
    except (ValueError, *GGUF_DAMAGE) as exc:
        raise ModelError(f"{gguf} is a GGUF file transformers cannot read: {first_line(exc)}") from None
    return tokenizer, model


def _conversion_folder(gguf: Path, sha: str) -> Path:
    """Where a GGUF file's safetensors conversion lives in the cache."""
    return cache_dir() / "models" / f"{gguf.stem}-{sha[:12]}"


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def converted_folder(spec: str) -> Path | None:
    """The safetensors folder an embedded alias or a .gguf file has already been converted into; None if it has
    not been yet, or for other models. Converts nothing (``sweep plan`` reads the tokenizer from it)."""
    gguf = EMBEDDED[spec].gguf_path() if spec in EMBEDDED else Path(spec).expanduser()
    if gguf.suffix != ".gguf" or not gguf.is_file():
        return None
    folder = _conversion_folder(gguf, sha256_file(gguf))
    return folder if _is_converted(folder) else None


def _convert_gguf(gguf: Path, sha: str) -> Path:
    """Convert a GGUF file once into a safetensors folder in the cache; return that folder."""
    target = _conversion_folder(gguf, sha)
    if _is_converted(target):
        return target
    _check_gguf(gguf)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger("psyling").warning("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer, model = _read_gguf(gguf)
    model.hf_quantizer = None  # transformers refuses to save a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE_GGUF").write_text(f"{gguf}\nsha256 {sha}\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _looks_like_path(spec: str) -> bool:
    """Whether a model name is meant as a local path rather than a hub id: it starts with '.', '/' or '~', or
    it is not of the hub's form NAME or NAMESPACE/NAME (e.g. it has two slashes)."""
    return spec.startswith((".", "/", "~", os.sep)) or HUB_ID.fullmatch(spec) is None


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
    if _looks_like_path(spec):
        raise ModelError(f"no such model folder or file: {spec}")
    return spec, {"id": spec, "source": "hub"}


def _hub_unreachable() -> str | None:
    """Why the model hub cannot be reached (HF_HUB_OFFLINE set, or no connection to its host or the HTTPS
    proxy within HUB_PROBE_SECONDS), or None when it can: one quick probe instead of the hub client's retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    address = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or constants.ENDPOINT)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except (OSError, UnicodeError) as exc:
        return f"no connection to {address.hostname}: {first_line(exc)}"
    return None


def _cached_snapshot(repo_id: str, revision: str | None) -> str | None:
    """The commit of the model's snapshot in the local Hugging Face cache, or None when it is not there."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(config).parent.name if isinstance(config, str) else None


def _load_error(spec: str, info: dict[str, Any], offline: str | None, revision: str | None,
                exc: BaseException) -> ModelError:
    """The one-line error for a model that did not load (a hub model: whether it is cached, why offline)."""
    if info["source"] == "hub" and offline and _cached_snapshot(spec, revision) is None:
        return ModelError(f"model {spec!r} is not in the local Hugging Face cache and the hub cannot be reached "
                          f"({offline}); download it where the hub is reachable, or give a local folder or .gguf "
                          f"file")
    hint = " (is it downloaded? this machine may have no access to the model hub)" if info["source"] == "hub" else ""
    return ModelError(f"cannot load model {spec!r}: {first_line(exc)}{hint}")


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
    offline = _hub_unreachable() if info["source"] == "hub" else None
    if offline:  # the local Hugging Face cache only
        kwargs["local_files_only"] = True
        info["hub_unreachable"] = offline
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        architectures = getattr(AutoConfig.from_pretrained(location, **kwargs), "architectures", None) or []
        masked = any(a.endswith("ForMaskedLM") for a in architectures)
        auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
        model = auto.from_pretrained(location, dtype=DTYPES[dtype], **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(spec, info, offline, revision, exc) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {spec!r} has no fast tokenizer; psyling needs character offsets")
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"cannot move model to device {device!r}: {first_line(exc)}") from None
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
    if offline and not info["revision"]:
        info["revision"] = _cached_snapshot(spec, revision)
    return LanguageModel(model, tokenizer, info)
