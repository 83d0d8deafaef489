"""Issue 14, the command line: model-loading messages (18), one run-wide progress display (19), a multi-suite
surprisal table for `evaluate` (6), help text on every option and a `batteries` listing that does not load every
dataset each time (20)."""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import time

import pandas as pd
import pytest

import psyling
from psyling.cli import build_parser, main
from psyling.progress import quiet, steps

from test_malformed import manifest

OTHER_CSV = "item,condition,subject,verb,rest\n1,match,A bird,sings,at dawn.\n1,mismatch,A bird,sing,at dawn.\n" \
            "2,match,Two frogs,jump,high.\n2,mismatch,Two frogs,jumps,high.\n3,match,The owl,hoots,softly.\n" \
            "3,mismatch,The owl,hoot,softly.\n"
BAR = re.compile(r"([^\r\n|]*?): +\d+%\|[^|]*\| (\d+)/(\d+) \[[^\]]*?tok/s")


def two_sets(folder):
    return [manifest(folder, name="a"), manifest(folder, csv_text=OTHER_CSV, name="b")]


def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psyling: error: "), err
    return err[0]


# ---- 20: help text --------------------------------------------------------------------------------------------

def _undocumented(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            yield from ([f"{path} (its commands)"] if not action.help else [])
            yield from (f"{path} {c.dest}" for c in action._choices_actions if not c.help)
            for name, sub in action.choices.items():
                yield from _undocumented(sub, f"{path} {name}")
        elif not (action.help or "").strip():
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_of_every_command_has_help_text():
    parser = build_parser()
    assert list(_undocumented(parser, "psyling")) == []
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "check", "probe", "evaluate", "batteries"} <= set(commands)  # the walk reached them


# ---- 18: model-loading messages -------------------------------------------------------------------------------

def _run_model(model, stim, tmp_path):
    return main(["run", "--model", str(model), "--stimuli", str(stim), "--out", str(tmp_path / "out"), "--quiet"])


def test_invalid_gguf_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    """They used to give a struct.error (or ValueError) traceback from the GGUF reader."""
    monkeypatch.setenv("PSYLING_CACHE", str(tmp_path / "cache"))
    stim = manifest(tmp_path)
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 40) + b"general.arch"  # cut in a key
    for name, content, reason in (("text.gguf", b"not a model at all", "does not start with the GGUF magic"),
                                  ("empty.gguf", b"", "does not start with the GGUF magic"),
                                  ("truncated.gguf", header, "truncated or corrupt")):
        (tmp_path / name).write_bytes(content)
        assert _run_model(tmp_path / name, stim, tmp_path) == 2
        line = one_line_error(capsys)
        assert f"{tmp_path / name} is not a valid GGUF file" in line and reason in line


def test_a_missing_local_path_is_named_as_such(tmp_path, capsys, monkeypatch):
    """It used to get the hub's "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"."""
    stim = manifest(tmp_path)
    monkeypatch.chdir(tmp_path)
    for spec in ("./models/foo", str(tmp_path / "nope"), "models/x/y", "~/surely-no-such-model-folder"):
        assert _run_model(spec, stim, tmp_path) == 2
        assert one_line_error(capsys) == f"psyling: error: no such model folder or file: {spec}"


def test_an_unreachable_hub_fails_fast_and_once(tmp_path, capsys, monkeypatch):
    """Without network (HF_HUB_OFFLINE unset) a hub id used to take 55 s and print 45 retry lines: now one probe
    of the hub's host, then the local cache only."""
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("socket.create_connection", no_network)
    assert _run_model("someone-fake/not-a-model", manifest(tmp_path), tmp_path) == 2
    line = one_line_error(capsys)
    assert "model 'someone-fake/not-a-model' is not in the local Hugging Face cache and the hub cannot be " \
           "reached (no connection to huggingface.co: Network is unreachable)" in line


def test_offline_hub_id_is_one_line_and_a_cached_model_still_loads(tmp_path, bpe_llama):
    """HF_HUB_OFFLINE=1: one line for an id that is not cached; one that is cached loads from the cache."""
    stim = manifest(tmp_path)
    snapshot = tmp_path / "hub" / "models--someone-fake--cached-tiny" / "snapshots" / "0123abcd"
    bpe_llama.model.save_pretrained(snapshot)
    bpe_llama.tokenizer.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "psyling.cli", "run", "--stimuli", str(stim), "--quiet", "--model"]
    started = time.perf_counter()
    missing = subprocess.run(command + ["someone-fake/not-a-model", "--out", str(tmp_path / "o1")],
                             capture_output=True, text=True, env=env)
    print(f"offline hub id failed in {time.perf_counter() - started:.1f} s")  # 55 s before (without the variable)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "psyling: error: model 'someone-fake/not-a-model' is not in the local Hugging Face cache and the hub cannot "
        "be reached (HF_HUB_OFFLINE is set); download it where the hub is reachable, or give a local folder or "
        ".gguf file"]
    cached = subprocess.run(command + ["someone-fake/cached-tiny", "--out", str(tmp_path / "o2")],
                            capture_output=True, text=True, env=env)
    assert cached.returncode == 0, cached.stderr
    model = json.loads((tmp_path / "o2" / "manifest.json").read_text())["model"]
    assert model["id"] == "someone-fake/cached-tiny" and model["revision"] == "0123abcd"
    assert model["hub_unreachable"] == "HF_HUB_OFFLINE is set"


# ---- 19: progress ---------------------------------------------------------------------------------------------

def _bars(err):
    """(description, n, total) of every refresh of a token bar on stderr."""
    return [(desc.strip(), int(n), int(total)) for desc, n, total in BAR.findall(err)]


def test_one_progress_display_for_the_whole_run(tmp_path, bpe_llama, capsys):
    """It used to be one bar per set, and none for a set of a single batch."""
    capsys.readouterr()
    result = psyling.run(bpe_llama, two_sets(tmp_path), max_tokens=48)
    bars = _bars(capsys.readouterr().err)
    scored = result.manifest["timings"]["tokens_scored"]
    assert scored == len(result.tokens) and scored > 0
    assert {desc for desc, _, _ in bars} == {"scoring 2 sets"}
    assert {total for _, _, total in bars} == {scored}
    assert bars[-1][1] == scored


def test_progress_is_off_with_progress_false_and_under_quiet(tmp_path, bpe_llama, capsys):
    capsys.readouterr()
    psyling.run(bpe_llama, two_sets(tmp_path), max_tokens=48, progress=False)
    with quiet():
        assert list(steps([1, 2, 3], "counting")) == [1, 2, 3]
    assert capsys.readouterr().err == ""


def test_check_shows_one_bar_over_every_pass(bpe_llama, capsys):
    """`psyling check` used to show nothing while it scored its five passes."""
    from psyling.check import check_model, sample_requests
    from psyling.models import ScoringOptions, make_scorer

    requests = sample_requests(battery="core", n=6)
    tokens = make_scorer(bpe_llama, ScoringOptions(), progress=False).count_tokens(requests)
    capsys.readouterr()
    check_model(bpe_llama, requests, batch_size=4, dtypes=())
    bars = _bars(capsys.readouterr().err)
    assert {desc for desc, _, _ in bars} == {"checking invariance"}
    assert bars[-1][1:] == (4 * tokens, 4 * tokens)


def test_probe_and_mixed_models_show_a_bar_over_their_loop(scored_sets, capsys):
    """`probe` and the mixed models of `analyze` used to show nothing while they worked."""
    import numpy as np
    from psyling.analysis import mixed_tables
    from psyling.interp.probes import probe_layers
    from psyling.stimuli import load_stimuli

    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"label": ["sg", "pl"] * 10, "item": np.repeat(np.arange(10), 2),
                         "text": ["a", "b"] * 10})
    features = {f"resid.{k}": rng.normal(size=(20, 3)) for k in range(3)}
    capsys.readouterr()
    probe_layers(features, meta, "label", folds=2, n_permutations=0)
    assert re.search(r"probing label: 100%\|[^|]*\| 3/3 ", capsys.readouterr().err)
    paths, run = scored_sets
    mixed_tables(load_stimuli(paths).sets, run.regions)
    assert re.search(r"mixed models: 100%\|[^|]*\| 2/2 ", capsys.readouterr().err)


# ---- 6: one multi-suite surprisal table -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored_sets(bpe_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("byo")
    paths = two_sets(folder)
    return paths, psyling.run(bpe_llama, paths, progress=False, measure="surprisal_raw")


def _lmzoo(tokens):
    """The run's tokens as one lm-zoo table of several suites (sentences numbered within each suite)."""
    table = tokens.copy()
    sentence = table["item"].astype(str) + "/" + table["condition"]
    table["sentence_id"] = sentence.groupby(table["set"]).transform(lambda s: pd.factorize(s)[0] + 1)
    table["token_id"] = table.token_index + 1
    return table.rename(columns={"set": "suite"})[["suite", "sentence_id", "token_id", "token", "surprisal"]]


def test_evaluate_splits_a_multi_suite_lmzoo_table_by_suite(scored_sets, tmp_path, capsys):
    """A released multi-suite file used to need splitting by hand ("the table has 10 sentences, set has 4")."""
    paths, run = scored_sets
    table = _lmzoo(run.tokens)
    orphan = table[table.suite == "a"].assign(suite="zz_unknown_suite")
    pd.concat([table, orphan]).to_csv(tmp_path / "all.tsv", sep="\t", index=False)
    assert main(["evaluate", "--surprisal", str(tmp_path / "all.tsv"), "--stimuli", *map(str, paths),
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "1 suite of" in err and "not evaluated (no set of that name was evaluated): zz_unknown_suite" in err
    regions = pd.read_parquet(tmp_path / "out" / "regions.parquet")
    merged = regions.merge(run.regions, on=["set", "item", "condition", "region"])
    assert len(merged) == len(run.regions) and set(merged.set) == {"a", "b"}
    assert merged.surprisal_x.to_numpy() == pytest.approx(merged.surprisal_raw_y.to_numpy(), abs=1e-9)


def test_a_set_without_rows_in_a_multi_suite_table_is_one_line(scored_sets, tmp_path, capsys):
    paths, run = scored_sets
    _lmzoo(run.tokens[run.tokens.set == "a"]).to_csv(tmp_path / "a_only.csv", index=False)
    words = run.words[run.words.set == "b"].rename(columns={"set": "suite"})
    words[["suite", "item", "condition", "word", "surprisal"]].to_csv(tmp_path / "b_words.csv", index=False)
    for table, missing, present in (("a_only.csv", "b", "a"), ("b_words.csv", "a", "b")):
        assert main(["evaluate", "--surprisal", str(tmp_path / table), "--stimuli", *map(str, paths)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"psyling: skipped: {paths[0 if missing == 'a' else 1]}: set={missing}: no rows in the "
                       f"surprisal table (its 'suite' column names {present})"]


# ---- 20: the battery listing ----------------------------------------------------------------------------------

def _listing(capsys):
    assert main(["batteries"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("mini "))
    return [int(v) for v in line.split()[1:3]]


def test_batteries_counts_are_remembered_until_a_file_changes(tmp_path, capsys, monkeypatch):
    """The listing used to load every battery's files (every external dataset) on each call."""
    import psyling.stimuli.batteries as batteries
    from psyling.stimuli import load_battery, load_stimuli

    sets = tmp_path / "stimuli" / "sets"
    sets.mkdir(parents=True)
    two_sets(sets)
    (tmp_path / "stimuli" / "batteries").mkdir()
    (tmp_path / "stimuli" / "batteries" / "mini.yaml").write_text(
        "description: two invented sets\nsets: [../sets/a.yaml, ../sets/b.yaml]\n")
    monkeypatch.setenv("PSYLING_STIMULI", str(tmp_path / "stimuli"))
    monkeypatch.setenv("PSYLING_CACHE", str(tmp_path / "cache"))
    full = load_stimuli(load_battery("mini").files())
    assert _listing(capsys) == [len(full.sets), sum(len(s.items) for s in full.sets)] == [2, 5]
    loads = []
    monkeypatch.setattr(batteries, "load_stimuli", lambda paths: loads.append(paths) or load_stimuli(paths))
    assert _listing(capsys) == [2, 5] and loads == []  # remembered: nothing loaded
    (sets / "b.csv").write_text(OTHER_CSV + "4,match,The bee,buzzes,loudly.\n4,mismatch,The bee,buzz,loudly.\n")
    assert _listing(capsys) == [2, 6] and len(loads) == 1  # an items file changed: loaded again
    monkeypatch.setenv("PSYLING_CACHE", str(sets / "a.csv"))  # a cache "folder" that cannot be made
    assert _listing(capsys) == [2, 6]
