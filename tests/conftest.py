import os
from pathlib import Path

import pytest

from tiny import byte_bpe_tokenizer, metaspace_tokenizer, space_token_tokenizer, tiny_gpt2, tiny_llama

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("PSYLING_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"published datasets not found at {root} (set PSYLING_DATA)")
    return root


@pytest.fixture(scope="session")
def bpe_llama():
    return tiny_llama(byte_bpe_tokenizer())


@pytest.fixture(scope="session")
def sp_gpt2():
    return tiny_gpt2(metaspace_tokenizer())


@pytest.fixture(scope="session")
def space_llama():
    return tiny_llama(space_token_tokenizer())
