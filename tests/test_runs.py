"""The run directory (psyling.runs): complete or absent, exclusive, never mixing two runs, checked before scoring;
every output read back; runs listed."""
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import psyling
import psyling.api
import psyling.fileio as fileio
import psyling.runs as runs
from psyling.analysis import analyze
from psyling.cli import main
from psyling.errors import PsylingError
from psyling.models import CaptureSpec

from test_malformed import manifest as write_set

MINE = {runs.__file__, fileio.__file__}


def outputs(label: str) -> tuple[dict, dict[str, pd.DataFrame], pd.DataFrame]:
    """A small run's manifest, tables and summary, each marked with ``label``."""
    tables = {name: pd.DataFrame({"run": [label] * 3, "x": np.arange(3)}) for name in runs.TABLES}
    return {"run": label}, tables, pd.DataFrame({"run": [label]})


def write_old_run(out: Path) -> None:
    """A run with the sub-outputs a later run must not inherit."""
    runs.write_run(out, *outputs("old"), replace=True)
    for sub in (runs.ACTIVATIONS, runs.ANALYSIS, runs.INTERP):
        (out / sub).mkdir()
        (out / sub / "stale.txt").write_text("old")


def labels(out: Path) -> set[str]:
    """The labels found in every output of the run at ``out`` (one label: not a mix)."""
    found = {runs.read_manifest(out)["run"], runs.read_table(out, "summary")["run"].item()}
    return found | {label for name in runs.TABLES for label in runs.read_table(out, name)["run"]}


def write_killed_at(out: Path, label: str, kill_at: int) -> int:
    """Write a run into ``out`` (replacing) in a forked child that SIGKILLs itself at its ``kill_at``-th call made
    from psyling.runs or psyling.fileio; returns the number of such calls (``kill_at`` 0: never killed)."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        caller = frame if event == "c_call" else frame.f_back
        if event in ("call", "c_call") and caller is not None and caller.f_code.co_filename in MINE:
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    try:
        sys.setprofile(profile)
        runs.write_run(out, *outputs(label), replace=True)
        sys.setprofile(None)
    finally:
        os._exit(min(count, 255))


def test_sigkill_at_any_point_leaves_the_old_run_or_the_new_one(tmp_path):
    out = tmp_path / "run"
    write_old_run(out)
    n_calls = write_killed_at(out, "new", 0)  # every call a replacement makes from psyling.runs / psyling.fileio
    assert 100 < n_calls < 255 and labels(out) == {"new"}
    seen = []
    for kill_at in sorted({*range(1, n_calls, 4), *range(n_calls - 16, n_calls + 1)}):
        write_old_run(out)  # also clears what the previous killed writer left
        assert write_killed_at(out, "new", kill_at) == -signal.SIGKILL
        found = labels(out)
        assert found in ({"old"}, {"new"}), (kill_at, found)
        seen.append(found.pop())
        if seen[-1] == "new":  # nothing of the replaced run survives
            assert sorted(p.name for p in out.iterdir()) == sorted(
                [runs.MANIFEST, runs.SUMMARY, *(f"{t}.parquet" for t in runs.TABLES)])
        else:
            assert (out / runs.ANALYSIS / "stale.txt").read_text() == "old"
        for leftover in tmp_path.glob(".run.*.run"):  # a killed writer's hidden staging folder: refused as
            try:                                      # incomplete, or one whole run (not yet or just swapped)
                runs.check_run(leftover)
            except PsylingError as exc:
                assert "not a complete psyling run" in str(exc)
            else:
                assert labels(leftover) in ({"old"}, {"new"})
    assert "old" in seen and "new" in seen  # killed before and after the swap
    runs.write_run(out, *outputs("new"), replace=True)  # the next writer cleans up
    assert labels(out) == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]


def test_sigkill_during_a_first_write_leaves_no_run_or_the_whole_run(tmp_path):
    n_calls = write_killed_at(tmp_path / "probe" / "run", "new", 0)
    for kill_at in range(1, n_calls + 1, 6):
        parent = tmp_path / str(kill_at)
        parent.mkdir()
        out = parent / "run"
        assert write_killed_at(out, "new", kill_at) == -signal.SIGKILL
        assert runs.list_runs(parent) == ([out] if out.exists() else [])
        assert not out.exists() or labels(out) == {"new"}
        runs.write_run(out, *outputs("again"), replace=True)  # the next writer succeeds either way, and cleans up
        assert labels(out) == {"again"} and sorted(p.name for p in parent.iterdir()) == [".run.lock", "run"]


def test_a_second_writer_at_the_same_time_gets_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    holding, release = threading.Event(), threading.Event()
    result = {}

    def first():
        with runs.RunWriter(out) as writer:
            holding.set()
            release.wait(10)
            result["path"] = writer.commit(*outputs("first"))

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    with pytest.raises(PsylingError) as info:
        runs.write_run(out, *outputs("second"))
    message = str(info.value)
    assert "another psyling process is writing this run directory" in message and len(message.splitlines()) == 1
    release.set()
    thread.join(10)
    assert result["path"] == out and labels(out) == {"first"}


def test_a_second_process_gets_the_error_before_loading_its_model(tmp_path, monkeypatch, capsys):
    out, stim = tmp_path / "run", write_set(tmp_path)
    (holding_r, holding_w), (done_r, done_w) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the first writer: holds the run directory until the parent has tried
        try:
            with runs.RunWriter(out):
                os.write(holding_w, b"x")
                os.read(done_r, 1)
        finally:
            os._exit(0)
    assert os.read(holding_r, 1) == b"x"
    monkeypatch.setattr(psyling.api, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    try:
        code = main(["run", "--model", "any", "--stimuli", str(stim), "--out", str(out), "--quiet"])
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and "another psyling process is writing" in err
    assert not out.exists()  # the first writer was left without a commit


def test_a_non_empty_folder_is_replaced_only_when_asked(tmp_path):
    out = tmp_path / "run"
    write_old_run(out)
    with pytest.raises(PsylingError, match=r"run: not empty .* give --replace \(replace=True\)"):
        runs.write_run(out, *outputs("new"))
    assert labels(out) == {"old"}
    runs.write_run(out, *outputs("new"), replace=True)
    assert labels(out) == {"new"}
    assert not any((out / sub).exists() for sub in (runs.ACTIVATIONS, runs.ANALYSIS, runs.INTERP))
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(PsylingError, match="not a psyling run directory .* refusing to replace its contents"):
        runs.write_run(other, *outputs("new"), replace=True)
    assert (other / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert labels(runs.write_run(empty, *outputs("new"))) == {"new"}  # an empty folder needs no --replace


def test_a_rerun_through_the_api_leaves_no_stale_activations(bpe_llama, tmp_path):
    stim, out = write_set(tmp_path), tmp_path / "run"
    psyling.run(bpe_llama, [stim], out=out, progress=False, activations=CaptureSpec(layers=(1,)))
    assert runs.activations_folder(out).is_dir()
    with pytest.raises(PsylingError, match="not empty"):
        psyling.run(bpe_llama, [stim], out=out, progress=False)
    psyling.run(bpe_llama, [stim], out=out, progress=False, replace=True)
    assert not (out / runs.ACTIVATIONS).exists() and "activations" not in runs.read_manifest(out)


@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable", "full", "not empty"])
def test_a_bad_out_fails_before_the_model_is_loaded(case, tmp_path, monkeypatch, capsys):
    stim = write_set(tmp_path)
    out = {"a file": tmp_path / "s.csv", "under a file": tmp_path / "s.csv" / "run",
           "unwritable": Path("/proc/psyling-run"), "full": tmp_path / "run", "not empty": tmp_path}[case]
    if case == "full":
        monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: SimpleNamespace(free=3 * 2**20))
    monkeypatch.setattr(psyling.api, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["run", "--model", "any", "--stimuli", str(stim), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("psyling: error: ") and "Traceback" not in err
    expected = {"a file": "exists and is not a folder", "under a file": "cannot create the folder for --out",
                "unwritable": "psyling-run: cannot write the run directory", "full": "only 3 MB free on its filesystem",
                "not empty": "not empty"}[case]
    assert expected in err
    assert not list(tmp_path.glob(".*.run"))  # no staging folder left behind


def test_activations_stream_into_the_staging_folder(bpe_llama, tmp_path, monkeypatch):
    seen = []
    real = psyling.api.ActivationWriter

    def recording(folder, *args, **kwargs):
        seen.append((Path(folder), (tmp_path / "run").exists()))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(psyling.api, "ActivationWriter", recording)
    psyling.run(bpe_llama, [write_set(tmp_path)], out=tmp_path / "run", progress=False,
                activations=CaptureSpec(layers=(1,)))
    (folder, existed), = seen
    assert folder.parent.parent == tmp_path and folder.parent.name.startswith(".run.") and not existed
    assert runs.activations_folder(tmp_path / "run") == tmp_path / "run" / "activations"
    assert not folder.exists()


def test_every_output_reads_back(bpe_llama, tmp_path):
    out = tmp_path / "run"
    result = psyling.run(bpe_llama, [write_set(tmp_path)], out=out, progress=False, lens_layers="all",
                         activations=CaptureSpec(layers=(0, 2)))
    assert runs.read_manifest(out) == json.loads(json.dumps(result.manifest, default=str))
    for name, table in result.tables().items():
        assert runs.read_table(out, name).equals(table.reset_index(drop=True)), name
    assert set(result.tables()) == {*runs.TABLES, *runs.LENS_TABLES}
    assert runs.read_table(out, "summary")["accuracy"].tolist() == pytest.approx(result.summary["accuracy"].tolist())
    assert sorted(p.name for p in runs.activations_folder(out).iterdir()) == ["index.parquet", "resid.0", "resid.2",
                                                                               "spec.json"]
    with pytest.raises(PsylingError, match="not analysed yet"):
        runs.read_analysis(out)
    with pytest.raises(PsylingError, match=r"no comparison.parquet in this run \(run psyling analyze\)"):
        runs.read_table(out, "analysis/comparison")
    analysis = analyze(out, linking="none", plots=False, progress=False)
    assert runs.read_table(out, "analysis/comparison").equals(analysis.comparison)
    assert list(runs.read_table(out, "analysis/verdicts").columns) == ["set", "present", "direction", "verdict"]
    assert runs.read_analysis(out)["multiple_comparisons"].startswith("Benjamini")
    with pytest.raises(PsylingError, match="unknown run table 'wordz'"):
        runs.read_table(out, "wordz")


def test_analysis_is_replaced_whole_and_sub_outputs_are_atomic(tmp_path):
    out = tmp_path / "run"
    runs.write_run(out, *outputs("x"))
    with runs.sub_output(out, runs.ANALYSIS) as folder:
        (folder / "old_plot.png").write_text("1")
    with pytest.raises(RuntimeError):
        with runs.sub_output(out, runs.ANALYSIS) as folder:
            (folder / "new.csv").write_text("2")
            raise RuntimeError("failed half way")
    assert sorted(p.name for p in (out / runs.ANALYSIS).iterdir()) == ["old_plot.png"]  # untouched by the failure
    with runs.sub_output(out, runs.ANALYSIS) as folder:
        (folder / "new.csv").write_text("2")
    assert sorted(p.name for p in (out / runs.ANALYSIS).iterdir()) == ["new.csv"]  # nothing stale
    path = runs.write_sub_output(out, "interp/probe_number.parquet",
                                 lambda p: (p.suffix == ".parquet" or pytest.fail(p.name))
                                 and pd.DataFrame({"a": [1]}).to_parquet(p))
    assert path == out / "interp" / "probe_number.parquet" and pd.read_parquet(path)["a"].tolist() == [1]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(PsylingError, match="not a directory"):
        runs.write_sub_output(tmp_path / "nowhere", "interp/x.parquet", lambda p: None)


def test_outputs_of_a_run_replaced_meanwhile_are_refused(tmp_path):
    out = tmp_path / "run"
    runs.write_run(out, *outputs("x"))
    read = runs.read_manifest(out)  # e.g. analyze reads the run, then computes for minutes
    runs.write_run(out, *outputs("y"), replace=True)
    with pytest.raises(PsylingError, match="replaced while this was being computed"):
        with runs.sub_output(out, runs.ANALYSIS, expected=read):
            pass
    with pytest.raises(PsylingError, match="replaced while"):
        runs.write_sub_output(out, "interp/p.parquet", lambda p: None, expected=read)
    assert not (out / runs.ANALYSIS).exists() and not (out / "interp").exists()
    with runs.sub_output(out, runs.ANALYSIS, expected=runs.read_manifest(out)) as folder:
        (folder / "ok.csv").write_text("1")
    assert (out / runs.ANALYSIS / "ok.csv").is_file()


def test_list_runs_finds_complete_runs_only(tmp_path):
    for name in ("a", "nested/b"):
        runs.write_run(tmp_path / name, *outputs(name))
    (tmp_path / "nested" / "b" / runs.ACTIVATIONS).mkdir()
    (tmp_path / "nested" / "b" / runs.ACTIVATIONS / runs.MANIFEST).write_text("{}")  # inside a run: not a run
    (tmp_path / "notes").mkdir()
    with runs.RunWriter(tmp_path / "c") as writer:  # being written
        (writer.staging / runs.MANIFEST).write_text("{}")
        assert runs.list_runs(tmp_path) == [tmp_path / "a", tmp_path / "nested" / "b"]
        for table in runs.TABLES:
            runs.read_table(tmp_path / "a", table).to_parquet(writer.staging / f"{table}.parquet")
        for read in (runs.read_manifest, runs.read_run, lambda p: analyze(p, linking="none", plots=False)):
            with pytest.raises(PsylingError, match="being written or whose writer was interrupted"):
                read(writer.staging)


def test_atomic_writes_never_share_a_temporary_name(tmp_path):
    target, errors = tmp_path / "t.json", []

    def writer(value):
        try:
            for _ in range(50):
                fileio.write_json(target, {"v": value, "pad": [value] * 1000})
        except OSError as exc:  # a shared temporary name makes one writer's rename fail
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(target.read_text())["pad"] == [json.loads(target.read_text())["v"]] * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    with pytest.raises(ZeroDivisionError):
        fileio.atomic_write(target, lambda p: (p.write_text("half"), 1 / 0))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # the failed write left nothing
