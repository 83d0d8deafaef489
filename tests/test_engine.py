"""The engine: prefix reuse (packed rows), token budgets, out-of-memory back-off, the score cache and resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import psyling
from psyling.cli import main
from psyling.errors import ModelError
from psyling.models import CaptureSpec, CausalScorer, ScoreRequest
from psyling.models.packing import packed_plan
from psyling.models.store import ScoreStore, list_entries
from psyling.stimuli import load_set

from tiny import forward_shapes

REQUESTS = [
    ScoreRequest(("p", 1, "good"), "The keys to the cabinet are on the table."),
    ScoreRequest(("p", 1, "bad"), "The keys to the cabinet is on the table."),
    ScoreRequest(("p", 2, "good"), "No student has ever visited the castle."),
    ScoreRequest(("p", 2, "bad"), "The student has ever visited the castle."),
    ScoreRequest(("p", 3, "dup"), "No student has ever visited the castle."),  # identical to another
    ScoreRequest(("p", 4, "short"), "The keys"),  # a prefix of others
    ScoreRequest(("p", 5, "primed"), "the cabinet is here.", prefix="I saw the key."),
    ScoreRequest(("p", 5, "primed2"), "the cabinets are here.", prefix="I saw the key."),
    ScoreRequest(("p", 6, "long"), "While the woman bathed the baby cried loudly, and the dogs barked."),
]


def _same(a, b, tol=1e-5):
    for x, y in zip(a, b):
        assert x.request == y.request
        assert x.token_ids == y.token_ids and x.offsets == y.offsets
        np.testing.assert_allclose(x.logprob, y.logprob, atol=tol, rtol=0)
        np.testing.assert_allclose(x.log_bow, y.log_bow, atol=tol, rtol=0)
        assert abs(x.log_nonbow_first - y.log_nonbow_first) < tol


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2"])
@pytest.mark.parametrize("max_tokens", [12, 40, None])
def test_prefix_reuse_equals_one_sequence_at_a_time(fixture, max_tokens, request):
    lm = request.getfixturevalue(fixture)
    scorer = CausalScorer(lm, progress=False, max_tokens=max_tokens)
    alone = scorer.with_options(batch_size=1, reuse_prefix=False).score(REQUESTS)
    packed = scorer.score(REQUESTS)
    _same(packed, alone)
    # what was computed: each distinct prefix (context token included) once, as an independent count
    seqs = [scorer.encode(r).sequence for r in REQUESTS]
    distinct = {tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)}
    assert alone.stats.n_sequence_tokens == packed.stats.n_sequence_tokens == sum(map(len, seqs))
    assert alone.stats.n_computed == sum(map(len, seqs))  # padded: every sequence in full
    if max_tokens is None:  # rows big enough that no subtree is split: every distinct prefix exactly once
        assert packed.stats.n_computed == len(distinct)
    assert packed.stats.n_computed < sum(map(len, seqs))


def test_padded_batches_respect_the_token_budget(bpe_llama):
    for reuse in (False, True):
        scorer = CausalScorer(bpe_llama, progress=False, max_tokens=30, batch_size=64, reuse_prefix=reuse)
        with forward_shapes(bpe_llama.model) as shapes:
            scorer.score(REQUESTS)
        longest = max(len(scorer.encode(r).sequence) for r in REQUESTS)
        assert all(rows * width <= 30 or rows == 1 for rows, width in shapes)
        assert max(width for _, width in shapes) >= longest
        assert len(shapes) > 1


def test_out_of_memory_halves_the_batch(bpe_llama):
    original = bpe_llama.model.forward

    def small_memory(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    scorer = CausalScorer(bpe_llama, progress=False, batch_size=8, reuse_prefix=False)
    reference = scorer.with_options(batch_size=1).score(REQUESTS)
    bpe_llama.model.forward = small_memory
    try:
        result = scorer.score(REQUESTS)
        assert result.stats.oom_splits >= 2
        _same(result, reference)
        bpe_llama.model.forward = lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory"))
        with pytest.raises(ModelError, match="single row"):
            scorer.score(REQUESTS[:1])
    finally:
        bpe_llama.model.forward = original


def test_capture_and_lens_are_the_same_with_prefix_reuse(bpe_llama):
    scorer = CausalScorer(bpe_llama, progress=False, capture=CaptureSpec(("resid", "mlp")), lens_layers=[1, 2])
    got: dict = {}

    def keep(batch):
        for s in batch:
            got.setdefault(s.request.key, []).append(s.activations)

    packed = scorer.score(REQUESTS, consumer=keep)
    alone = scorer.with_options(batch_size=1, reuse_prefix=False).score(REQUESTS, consumer=keep)
    _same(packed, alone)
    for key, (a, b) in got.items():
        assert set(a) == {"resid.0", "resid.1", "resid.2", "mlp.1", "mlp.2"}
        for site in a:
            np.testing.assert_allclose(a[site], b[site], atol=1e-5)
    for x, y in zip(packed, alone):
        for layer in (1, 2):
            np.testing.assert_allclose(x.lens[layer][0], y.lens[layer][0], atol=1e-5)


def test_trie_packing_places_every_sequence_on_its_own_tokens():
    rng = np.random.default_rng(0)
    seqs = [[0] + rng.integers(1, 4, rng.integers(1, 10)).tolist() for _ in range(200)]
    for capacity in (3, 8, 64):
        plan = packed_plan(seqs, capacity, 256)
        placed = {}
        for batch in plan:
            for row in batch.rows:
                mask = row.ancestor_mask(len(row))
                for i, path in row.paths.items():
                    placed[i] = [row.tokens[j] for j in path]
                    assert [row.positions[j] for j in path] == list(range(len(path)))
                    for depth, j in enumerate(path):  # attends to exactly its own prefix
                        assert set(np.flatnonzero(mask[j])) == set(path[:depth + 1])
        assert placed == dict(enumerate(seqs))


def _tiny_set():
    return load_set(Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml")


def test_resume_reuses_cached_batches_and_gives_identical_outputs(bpe_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PSYLING_SCORE_CACHE", str(tmp_path / "cache"))
    stim = _tiny_set()
    first = psyling.run(bpe_llama, [stim], out=tmp_path / "a", progress=False, max_tokens=64)
    written = first.manifest["settings"]["cache"]["batches_written"]
    assert written > 2 and first.manifest["settings"]["cache"]["batches_reused"] == 0
    again = psyling.run(bpe_llama, [stim], out=tmp_path / "b", progress=False, max_tokens=64, resume=True)
    assert again.manifest["settings"]["cache"]["batches_reused"] == written
    for name in ("tokens", "words", "regions", "predictions"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{name}.parquet"))
    # a damaged file is recomputed, not trusted
    folder = Path(first.manifest["settings"]["cache"]["folder"])
    victim = sorted(folder.glob("*.npz"))[0]
    victim.write_bytes(b"not an npz")
    third = psyling.run(bpe_llama, [stim], out=tmp_path / "c", progress=False, max_tokens=64, resume=True)
    assert third.manifest["settings"]["cache"]["batches_reused"] == written - 1
    pd.testing.assert_frame_equal(first.words, third.words)
    (entry,) = list_entries(tmp_path / "cache")
    assert entry["model"] == "tiny-llama" and entry["batches"] == written
    stray = tmp_path / "cache" / "stray"  # an entry whose info.json is unreadable is listed, not a traceback
    stray.mkdir()
    (stray / "info.json").write_text("{not json")
    assert [(e["entry"], e["model"], e["dtype"], e["convention"]) for e in list_entries(tmp_path / "cache")
            if e["entry"] == "stray"] == [("stray", "?", "?", "?")]
    assert [e["entry"] for e in list_entries(tmp_path / "cache", model="tiny")] == [entry["entry"]]
    capsys.readouterr()
    assert main(["cache", "ls", "--model", "tiny"]) == 0 and main(["cache", "ls"]) == 0
    listed = capsys.readouterr().out
    assert listed.count(entry["entry"]) == 2 and listed.count("stray") == 1
    assert main(["cache", "clear", "--model", "tiny-llama"]) == 0
    assert [e["entry"] for e in list_entries(tmp_path / "cache")] == ["stray"]


def test_truncated_or_empty_cache_entries_are_recomputed_and_counted(bpe_llama, tmp_path, monkeypatch):
    """A truncated zip (BadZipFile) or an empty file (EOFError) used to end --resume with a traceback."""
    monkeypatch.setenv("PSYLING_SCORE_CACHE", str(tmp_path / "cache"))
    stim = _tiny_set()
    first = psyling.run(bpe_llama, [stim], out=tmp_path / "a", progress=False, max_tokens=64)
    written = first.manifest["settings"]["cache"]["batches_written"]
    files = sorted(Path(first.manifest["settings"]["cache"]["folder"]).glob("*.npz"))
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated mid-zip
    files[1].write_bytes(b"")  # empty
    again = psyling.run(bpe_llama, [stim], out=tmp_path / "b", progress=False, max_tokens=64, resume=True)
    cache = again.manifest["settings"]["cache"]
    assert (cache["batches_corrupt"], cache["batches_reused"], cache["batches_written"]) == (2, written - 2, 2)
    pd.testing.assert_frame_equal(first.words, again.words)
    third = psyling.run(bpe_llama, [stim], out=tmp_path / "c", progress=False, max_tokens=64, resume=True)
    assert third.manifest["settings"]["cache"]["batches_reused"] == written  # rewritten whole


def test_unusable_cache_folder_is_not_fatal(bpe_llama, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PSYLING_SCORE_CACHE", str(blocker))
    result = psyling.run(bpe_llama, [_tiny_set()], out=tmp_path / "run", progress=False)
    assert result.manifest["settings"]["cache"] is None and len(result.words) > 0
    store = ScoreStore({"x": 1}, read=False, root=tmp_path / "ok")
    shutil.rmtree(store.folder)
    store.folder.write_text("")  # the folder is now a file: writing fails from now on
    store.put("d" * 64, [{"logprob": np.zeros(2), "log_bow": np.zeros(3), "log_nonbow": 0.0}])
    assert store.writable is False and store.writes == 0


def test_resumed_capture_run_rebuilds_the_same_activations(bpe_llama, tmp_path, monkeypatch):
    from psyling.interp import load_activations

    monkeypatch.setenv("PSYLING_SCORE_CACHE", str(tmp_path / "cache"))
    stim, spec = _tiny_set(), CaptureSpec(("resid",), (0, 2), "float16")
    first = psyling.run(bpe_llama, [stim], out=tmp_path / "a", progress=False, max_items=6, activations=spec)
    again = psyling.run(bpe_llama, [stim], out=tmp_path / "b", progress=False, max_items=6, activations=spec,
                        resume=True)
    assert again.manifest["settings"]["cache"]["batches_reused"] == first.manifest["settings"]["cache"][
        "batches_written"] > 0
    meta_a, feats_a = load_activations(tmp_path / "a")
    meta_b, feats_b = load_activations(tmp_path / "b")
    pd.testing.assert_frame_equal(meta_a, meta_b)
    for site in ("resid.0", "resid.2"):
        np.testing.assert_array_equal(feats_a[site], feats_b[site])


def test_store_keeps_activations_and_lens(tmp_path):
    store = ScoreStore({"k": 1}, read=True, root=tmp_path)
    outs = [{"logprob": np.array([-1.0, -2.0]), "log_bow": np.array([-0.1, -0.2, -0.3]), "log_nonbow": -0.5,
             "activations": {"resid.0": np.ones((2, 3), dtype=np.float16)},
             "lens": {1: (np.array([-1.5, -2.5]), np.array([-0.1, -0.2, -0.3]), -0.7)}}]
    store.put("abc", outs)
    (back,) = store.get("abc")
    assert back["log_nonbow"] == -0.5 and back["activations"]["resid.0"].dtype == np.float16
    np.testing.assert_array_equal(back["lens"][1][0], [-1.5, -2.5])
    assert back["lens"][1][2] == -0.7
    assert store.get("missing") is None


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import psyling
from tiny import byte_bpe_tokenizer, tiny_llama
lm = tiny_llama(byte_bpe_tokenizer())
forward = lm.model.forward
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[2]))
    return forward(*args, **kwargs)
lm.model.forward = slow
from psyling.stimuli import load_set
from pathlib import Path
stim = load_set(Path({stimulus!r}))
psyling.run(lm, [stim], out=sys.argv[1], progress=False, max_tokens=48, resume=True)
"""


def test_sigkill_mid_run_then_resume_gives_identical_outputs(tmp_path):
    script = tmp_path / "job.py"
    tests = str(Path(__file__).resolve().parent)
    stimulus = str(Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml")
    script.write_text(KILL_SCRIPT.format(tests=tests, stimulus=stimulus))
    env = {**os.environ, "PSYLING_SCORE_CACHE": str(tmp_path / "cache")}
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run([sys.executable, str(script), str(uninterrupted), "0"], check=True, env=env,
                   cwd=tmp_path, capture_output=True)
    n_batches = len(list((tmp_path / "cache").rglob("*.npz")))
    env["PSYLING_SCORE_CACHE"] = str(tmp_path / "cache2")
    job = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"), "0.2"], env=env, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((tmp_path / "cache2").rglob("*.npz"))) < 3 and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = len(list((tmp_path / "cache2").rglob("*.npz")))
    assert 3 <= done < n_batches, "the run was not killed mid-way"
    assert not (tmp_path / "killed" / "manifest.json").exists()
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "0"], check=True, env=env,
                   cwd=tmp_path, capture_output=True)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["settings"]["cache"]["batches_reused"] == done
    for name in ("tokens", "words", "regions", "predictions"):
        pd.testing.assert_frame_equal(pd.read_parquet(uninterrupted / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "killed" / f"{name}.parquet"))


def test_check_reports_batch_padding_prefix_and_dtype_invariance(bpe_llama, tmp_path, capsys):
    from psyling.check import check_model, sample_requests

    requests = sample_requests(battery="core", n=12)
    assert len(requests) == 12 and len({r.key[0] for r in requests}) == 12  # one per set first
    table = check_model(bpe_llama, requests, batch_size=5, dtypes=())
    assert list(table.comparison.str.split().str[0]) == ["batch", "left", "prefix"]
    assert table.passed.all() and (table.max_abs_diff_bits < 1e-4).all()
    assert (table.max_abs_diff_bits > 0).any()  # the comparisons really ran different computations
    folder = tmp_path / "tiny"
    bpe_llama.model.save_pretrained(folder)
    bpe_llama.tokenizer.save_pretrained(folder)
    assert main(["check", "--model", str(folder), "--n", "6", "--dtypes", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 vs float32" in out and "informative" in out and out.count(" ok") == 3
