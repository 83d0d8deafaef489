import os
import tempfile
from pathlib import Path

import pytest

from tiny import byte_bpe_tokenizer, metaspace_tokenizer, space_token_tokenizer, tiny_gpt2, tiny_llama

REPO = Path(__file__).resolve().parents[1]
# runs write their batch results to the score cache: keep the tests' out of the user's cache
os.environ.setdefault("PSYLING_SCORE_CACHE", tempfile.mkdtemp(prefix="psyling-test-scores-"))


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
def bpe_gpt2():
    return tiny_gpt2(byte_bpe_tokenizer())


@pytest.fixture(scope="session")
def sp_gpt2():
    return tiny_gpt2(metaspace_tokenizer())


@pytest.fixture(scope="session")
def space_llama():
    return tiny_llama(space_token_tokenizer())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bpe_llama):
    """``bpe_llama`` saved as a model folder, for the command line's ``--model``."""
    folder = tmp_path_factory.mktemp("model")
    bpe_llama.model.save_pretrained(folder)
    bpe_llama.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sweep_file(tmp_path_factory):
    """A sweep over two tiny models x two checkpoints x two core sets (tests/sweep_cases.py): 8 cells."""
    from sweep_cases import make_sweep_file

    return make_sweep_file(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def local_store(sweep_file, tmp_path_factory):
    """That sweep run by the local executor."""
    from sweep_cases import make_local_store

    return make_local_store(sweep_file, tmp_path_factory.mktemp("local") / "store")
