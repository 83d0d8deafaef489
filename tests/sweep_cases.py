"""Shared pieces of the sweep tests: a sweep file over two tiny models x two checkpoints x two core sets, and the
comparison of two stores (conftest.py turns the builders into session fixtures)."""
from pathlib import Path

import pandas as pd

from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import load_sweep
from psyling.sweep.store import SweepStore
from tiny import byte_bpe_tokenizer, tiny_gpt2, tiny_llama

REPO = Path(__file__).resolve().parents[1]
SETS = [REPO / "stimuli" / "sets" / "garden_path_npz.yaml", REPO / "stimuli" / "sets" / "agreement_simple.yaml"]
SWEEP_YAML = """name: tiny-sweep
models:
  - name: llama
    checkpoints: models/llama/checkpoint-*
  - name: gpt2
    checkpoints: models/gpt2/checkpoint-*
sets: [{sets}]
max_items: 3
"""
TABLES = ("summary", "items", "predictions", "regions")


def make_sweep_file(folder: Path) -> Path:
    """Two tiny models x two checkpoints (different seeds) x two core sets, three items each: 8 cells."""
    tokenizer = byte_bpe_tokenizer()
    for name, build in (("llama", tiny_llama), ("gpt2", tiny_gpt2)):
        for seed, step in ((0, 100), (1, 200)):
            lm = build(tokenizer, seed=seed)
            target = folder / "models" / name / f"checkpoint-{step}"
            lm.model.save_pretrained(target)
            lm.tokenizer.save_pretrained(target)
    path = folder / "sweep.yaml"
    path.write_text(SWEEP_YAML.format(sets=", ".join(str(s) for s in SETS)))
    return path


def sorted_table(store: SweepStore, name: str) -> pd.DataFrame:
    table = store.read_table(name)
    keys = [c for c in ("model", "revision", "set", "item", "condition", "region_number", "prediction")
            if c in table.columns]
    return table.sort_values(keys).reset_index(drop=True)


def assert_same_store(a: SweepStore, b: SweepStore) -> None:
    for name in TABLES:
        left, right = sorted_table(a, name), sorted_table(b, name)
        assert len(left) > 0
        pd.testing.assert_frame_equal(left, right[left.columns], check_dtype=False)
    assert a.done_digests() == b.done_digests()


def make_local_store(sweep_file: Path, root: Path) -> SweepStore:
    """The sweep run by the local executor: the store the other executors must reproduce."""
    store = SweepStore(root)
    outcome = execute(load_sweep(sweep_file).cells, store, ExecutorConfig("local", progress=False))
    assert len(outcome.executed) == 8 and not outcome.failed
    return store
