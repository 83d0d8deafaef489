"""Token-level activations (pool "token") and the memory-mapped activation reader."""
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import psyling
from psyling.errors import PsylingError
from psyling.interp import ActivationReader, ActivationWriter, load_activations
from psyling.measures.alignment import align
from psyling.models import CaptureSpec, CausalScorer, ScoreRequest
from psyling.stimuli import load_set

REPO = Path(__file__).resolve().parents[1]
SET = REPO / "stimuli" / "sets" / "garden_path_npz.yaml"
SITES = ["resid.0", "resid.1"]
WIDTH = 8


def _alignment(n_tokens: int):
    """An alignment of ``n_tokens`` one-character tokens "a b c ..." (one word each, one region)."""
    from psyling.measures.alignment import Alignment
    words = [chr(97 + k % 26) for k in range(n_tokens)]
    spans = [(2 * k, 2 * k + 1) for k in range(n_tokens)]
    return Alignment(words, spans, list(range(n_tokens)), [0] * n_tokens, [0] * n_tokens)


def _store(folder: Path, n_requests: int = 30, pool: str = "token", shard_bytes: int = 1500, width: int = WIDTH):
    """A multi-shard store of random token rows; returns {site: the rows written, in order} and the token texts."""
    rng = np.random.default_rng(0)
    writer = ActivationWriter(folder, SITES, pool=pool, shard_bytes=shard_bytes)
    written = {site: [] for site in SITES}
    texts = []
    for k in range(n_requests):
        n = int(rng.integers(1, 7))
        acts = {site: rng.normal(size=(n, width)).astype(np.float32) for site in SITES}
        token_texts = [f"t{k}.{t}" for t in range(n)]
        writer.add(("s", str(k), "c"), acts, _alignment(n), ["region"], token_texts)
        for site in SITES:
            written[site].append(acts[site])
        texts += token_texts
    writer.close({"note": "test"})
    return {site: np.concatenate(rows) for site, rows in written.items()}, texts


def test_token_rows_keep_every_token_with_its_index_and_text(tmp_path):
    expected, texts = _store(tmp_path)
    reader = ActivationReader(tmp_path)
    meta = reader.meta
    assert list(meta.columns) == ["set", "item", "condition", "pool", "position", "text"]
    assert set(meta["pool"]) == {"token"} and list(meta["text"]) == texts
    first = meta[meta["item"] == "0"]
    assert list(first["position"]) == list(range(len(first)))
    assert reader.spec["pool"] == "token" and reader.spec["method"] is None and reader.spec["note"] == "test"
    for site in SITES:
        np.testing.assert_array_equal(reader.rows(site), expected[site])
    with pytest.raises(PsylingError, match="item=1 condition=c: token activations need the text of each token"):
        ActivationWriter(tmp_path / "x", SITES, pool="token").add(
            ("s", "1", "c"), {s: np.zeros((2, WIDTH), np.float32) for s in SITES}, _alignment(2), ["r"])


def test_reader_equals_the_concatenated_shards_for_ranges_numbers_and_masks(tmp_path):
    expected, _ = _store(tmp_path)
    reader = ActivationReader(tmp_path)
    shards = sorted((tmp_path / "resid.1").glob("shard-*.npy"))
    assert len(shards) >= 5  # a multi-shard store
    stacked = np.concatenate([np.load(f) for f in shards])
    np.testing.assert_array_equal(stacked, expected["resid.1"])
    n = len(reader)
    rng = np.random.default_rng(3)
    numbers = rng.permutation(n)[: n // 3]
    mask = rng.random(n) < 0.4
    np.testing.assert_array_equal(reader.rows("resid.1", slice(5, n - 7, 3)), stacked[5:n - 7:3])
    np.testing.assert_array_equal(reader.rows("resid.1", numbers), stacked[numbers])
    np.testing.assert_array_equal(reader.rows("resid.1", mask), stacked[mask])
    meta, features = load_activations(tmp_path, sites=["resid.1"])
    assert len(meta) == n and list(features) == ["resid.1"]
    np.testing.assert_array_equal(features["resid.1"], stacked)
    _, some = load_activations(tmp_path, sets=["none"])
    assert some["resid.0"].shape == (0, WIDTH)
    with pytest.raises(PsylingError, match="a mask of shape"):
        reader.rows("resid.1", mask[:-1])
    with pytest.raises(PsylingError, match=f"integers in 0..{n - 1}"):
        reader.rows("resid.1", [0, n])


def test_batches_stay_in_bounded_memory(tmp_path):
    expected, _ = _store(tmp_path, n_requests=6000, shard_bytes=2**17, width=64)
    total = expected["resid.1"].nbytes  # ~5.4 MB per site
    reader = ActivationReader(tmp_path)
    assert all(isinstance(m, np.memmap) for m in reader.shards("resid.1"))
    batch_bytes = 256 * 64 * 4
    tracemalloc.start()
    seen = 0
    for numbers, values in reader.iter_batches("resid.1", 256, shuffle=True, seed=1):
        seen += len(values)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == len(reader)
    # a few batch-sized buffers and the row order (8 bytes a row), never the site's rows
    assert peak < 4 * batch_bytes + 16 * len(reader) and peak < total / 8, (peak, total)


def test_shuffled_batches_cover_every_row_once_deterministically(tmp_path):
    expected, _ = _store(tmp_path)
    reader = ActivationReader(tmp_path)
    n = len(reader)

    def order(**kwargs):
        out = []
        for numbers, values in reader.iter_batches("resid.0", 7, **kwargs):
            assert len(values) <= 7
            np.testing.assert_array_equal(values, expected["resid.0"][numbers])
            out += numbers.tolist()
        return out

    plain = order()
    assert plain == list(range(n))
    shuffled = order(shuffle=True, seed=5)
    assert sorted(shuffled) == plain and shuffled != plain
    assert order(shuffle=True, seed=5) == shuffled and order(shuffle=True, seed=6) != shuffled
    mask = np.arange(n) % 3 == 0
    assert sorted(order(shuffle=True, seed=1, selection=mask)) == list(np.flatnonzero(mask))
    with pytest.raises(PsylingError, match="batch_rows must be at least 1"):
        next(reader.iter_batches("resid.0", 0))


def test_old_folders_with_a_unit_column_and_incomplete_ones(tmp_path):
    expected, _ = _store(tmp_path, pool="word")
    index = pd.read_parquet(tmp_path / "index.parquet")
    assert set(index["pool"]) == {"word"}
    index.rename(columns={"pool": "unit"}).to_parquet(tmp_path / "index.parquet", index=False)
    meta, features = load_activations(tmp_path)
    assert "unit" not in meta.columns and set(meta["pool"]) == {"word"}
    np.testing.assert_array_equal(features["resid.0"], expected["resid.0"])
    sorted((tmp_path / "resid.1").glob("shard-*.npy"))[-1].unlink()
    with pytest.raises(PsylingError, match="index rows \\(incomplete run\\?\\)"):
        ActivationReader(tmp_path).rows("resid.1")
    with pytest.raises(PsylingError, match="'resid.7' was not captured"):
        ActivationReader(tmp_path).rows("resid.7")


def test_token_rows_of_a_scored_set_are_the_model_states(tmp_path, bpe_llama):
    """The scoring consumer's path (align, then add with the token texts) against a plain forward."""
    stim = load_set(SET)
    items = stim.items[:3]
    writer = ActivationWriter(tmp_path, SITES, pool="token", method="last")
    scorer = CausalScorer(bpe_llama, progress=False, capture=CaptureSpec(layers=(0, 1)))
    requests = [ScoreRequest((stim.name, item.id, c), item.conditions[c].text, item.conditions[c].prefix)
                for item in items for c in stim.conditions]

    def consume(batch):
        for scored in batch:
            cond = next(i for i in items if i.id == scored.request.key[1]).conditions[scored.request.key[2]]
            alignment = align(cond, scored.offsets, stim.regions, "test", stim.segmentation)
            writer.add(scored.request.key, scored.activations, alignment, cond.regions,
                       [cond.text[s:e] for s, e in scored.offsets])

    scores = scorer.score(requests, consumer=consume)
    writer.close({})
    meta, features = load_activations(tmp_path)
    assert len(meta) == sum(len(s.token_ids) for s in scores)
    request = requests[1]
    mine = (meta["item"] == request.key[1]) & (meta["condition"] == request.key[2])
    enc = scorer.encode(request)
    assert list(meta.loc[mine, "position"]) == list(range(len(enc.ids)))
    assert "".join(meta.loc[mine, "text"]).replace(" ", "") == request.text.replace(" ", "")
    with torch.no_grad():
        hidden = bpe_llama.model(torch.tensor([enc.sequence]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(features["resid.1"][mine.to_numpy()], hidden[1][0, len(enc.context):].numpy(),
                               atol=1e-5, rtol=0)


def test_run_with_token_pooling(tmp_path, bpe_llama):
    result = psyling.run(bpe_llama, [SET], out=tmp_path, progress=False, max_items=2,
                         activations=CaptureSpec(layers=(1,)), pool="token")
    meta, features = load_activations(tmp_path)
    tokens = result.tokens
    assert len(meta) == len(tokens) == len(features["resid.1"]) and set(meta["pool"]) == {"token"}
    assert list(meta["position"]) == list(tokens["token_index"])
    stim = load_set(SET)
    conditions = {(item.id, c): item.conditions[c].text for item in stim.items for c in stim.conditions}
    spans = [conditions[(i, c)][s:e] for i, c, s, e in
             zip(tokens["item"], tokens["condition"], tokens["char_start"], tokens["char_end"])]
    assert list(meta["text"]) == spans
