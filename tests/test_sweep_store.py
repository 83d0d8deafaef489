"""The sweep result store: partitioned parquet + per-cell manifests, atomic, resumable, readable by pandas/duckdb."""
import hashlib
import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from psyling.errors import PsylingError
from psyling.sweep.store import SweepStore

HUB_ID = "EleutherAI/pythia-70m"
SET_WITH_SPACE = "agreement set 1"


def meta(digest, model=HUB_ID, revision="step1000", set_name=SET_WITH_SPACE, step=1000, label="default"):
    return {"model": model, "revision": revision, "step": step, "set": set_name, "settings": {},
            "settings_label": label, "digest": digest, "set_path": f"/sets/{set_name}.yaml"}


def summary(set_name, accuracy, n_items=4):
    return pd.DataFrame({"set": [set_name], "phenomenon": ["agreement"], "n_items": [n_items],
                         "accuracy": [accuracy], "ci_low": [accuracy - 0.1], "ci_high": [accuracy + 0.1],
                         "n_unevaluable": [0]})


def predictions(n):
    return pd.DataFrame({"set": ["s"] * n, "item": np.arange(n), "passed": [True, False] * (n // 2)})


@pytest.fixture
def store(tmp_path):
    store = SweepStore(tmp_path / "store")
    store.write_cell(meta("aaaa1111"), {"summary": summary(SET_WITH_SPACE, 0.75), "predictions": predictions(4)},
                     {"worker": "w0", "load_id": "L1", "seconds": 1.5, "tokens": 120})
    store.write_cell(meta("bbbb2222", model="tiny", revision="checkpoint 5%", set_name="a=b/c", step=5),
                     {"summary": summary("a=b/c", 0.5), "predictions": predictions(6)},
                     {"worker": "w1", "load_id": "L2", "seconds": 2.0, "tokens": 80})
    return store


def sorted_rows(frame):
    columns = ["model", "revision", "set", "cell", "accuracy", "n_items"]
    out = frame[columns].astype({"model": str, "revision": str, "set": str, "cell": str})
    return out.sort_values("cell").reset_index(drop=True)


def test_partitions_are_percent_encoded_and_round_trip(store):
    folders = sorted(p.relative_to(store.root / "tables" / "summary").as_posix()
                     for p in (store.root / "tables" / "summary").rglob("*.parquet"))
    assert folders == ["model=EleutherAI%2Fpythia-70m/revision=step1000/set=agreement%20set%201/aaaa1111.parquet",
                       "model=tiny/revision=checkpoint%205%25/set=a%3Db%2Fc/bbbb2222.parquet"]
    table = store.read_table("summary").sort_values("cell").reset_index(drop=True)
    assert table["model"].tolist() == [HUB_ID, "tiny"]
    assert table["revision"].tolist() == ["step1000", "checkpoint 5%"]
    assert table["set"].tolist() == [SET_WITH_SPACE, "a=b/c"]
    assert all(isinstance(v, str) for v in table["model"])
    assert table["step"].tolist() == [1000, 5]
    assert table["settings"].tolist() == ["default", "default"]
    assert table["accuracy"].tolist() == [0.75, 0.5]


def test_pandas_and_duckdb_read_the_same_rows(store):
    ours = sorted_rows(store.read_table("summary"))
    by_pandas = sorted_rows(pd.read_parquet(store.root / "tables" / "summary"))
    glob = (store.root / "tables" / "summary").as_posix() + "/**/*.parquet"
    by_duckdb = sorted_rows(duckdb.sql(f"select * from read_parquet('{glob}', hive_partitioning=true)").df())
    pd.testing.assert_frame_equal(ours, by_pandas)
    pd.testing.assert_frame_equal(ours, by_duckdb)  # duckdb decodes the percent-encoded values too
    assert by_duckdb["set"].tolist() == [SET_WITH_SPACE, "a=b/c"]


def test_manifest_lists_files_with_sha256_and_rows(store):
    assert store.done("aaaa1111") and store.done("bbbb2222") and not store.done("cccc3333")
    assert store.done_digests() == {"aaaa1111", "bbbb2222"}
    body = json.loads((store.root / "cells" / "bbbb2222.json").read_text())
    assert body["meta"]["revision"] == "checkpoint 5%"
    assert body["record"] == {"worker": "w1", "load_id": "L2", "seconds": 2.0, "tokens": 80}
    by_table = {entry["table"]: entry for entry in body["files"]}
    assert {name: entry["rows"] for name, entry in by_table.items()} == {"summary": 1, "predictions": 6}
    for entry in body["files"]:
        path = store.root / entry["path"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert len(pd.read_parquet(path)) == entry["rows"]
    assert len(store.read_table("predictions")) == 10


def test_cells_has_one_row_per_manifest_with_the_record(store):
    cells = store.cells().sort_values("digest").reset_index(drop=True)
    assert cells["digest"].tolist() == ["aaaa1111", "bbbb2222"]
    assert cells["model"].tolist() == [HUB_ID, "tiny"]
    assert cells["load_id"].tolist() == ["L1", "L2"]
    assert cells["tokens"].tolist() == [120, 80]
    assert cells["rows"].tolist() == [5, 7]
    assert SweepStore(store.root / "elsewhere").cells().empty


def test_rewriting_a_cell_does_not_duplicate_rows(store):
    # a rerun after a crash between the table renames and the manifest: same digest, same final names
    (store.root / "cells" / "aaaa1111.json").unlink()
    store.write_cell(meta("aaaa1111"), {"summary": summary(SET_WITH_SPACE, 0.25)}, {"worker": "w2"})
    table = store.read_table("summary").sort_values("cell")
    assert table["accuracy"].tolist() == [0.25, 0.5]
    assert len(pd.read_parquet(store.root / "tables" / "summary")) == 2
    # the table the second attempt did not write is gone from the cell, on disk too
    assert len(pd.read_parquet(store.root / "tables" / "predictions")) == 6
    assert len(store.read_table("predictions")) == 6


def test_hidden_temp_files_are_ignored_and_cleaned(store):
    folder = next((store.root / "tables" / "summary").glob("model=tiny/*/*"))
    stray = folder / ".cccc3333.parquet.123-abc.tmp"
    stray.write_bytes(b"PAR1 half a file")
    assert len(pd.read_parquet(store.root / "tables" / "summary")) == 2
    assert len(store.read_table("summary")) == 2
    assert store.clean_orphans() == [stray]
    assert not stray.exists() and len(store.read_table("summary")) == 2


def test_files_without_a_manifest_are_excluded_and_cleaned(store):
    (store.root / "cells" / "bbbb2222.json").unlink()
    assert store.read_table("summary")["cell"].tolist() == ["aaaa1111"]
    assert len(pd.read_parquet(store.root / "tables" / "summary")) == 2  # visible until cleaned
    removed = store.clean_orphans()
    assert sorted(p.name for p in removed) == ["bbbb2222.parquet", "bbbb2222.parquet"]
    assert pd.read_parquet(store.root / "tables" / "summary")["cell"].tolist() == ["aaaa1111"]
    assert store.read_table("predictions")["cell"].tolist() == ["aaaa1111"] * 4
    assert not (store.root / "tables" / "summary" / "model=tiny").exists()  # empty partitions removed


def test_differing_and_all_nan_columns_read_back(tmp_path):
    store = SweepStore(tmp_path)
    only_here = predictions(2).assign(surprisal=[1.5, 2.5], note=[None, None])
    store.write_cell(meta("d1", set_name="one"), {"predictions": only_here}, {})
    store.write_cell(meta("d2", set_name="two", step=None), {"predictions": predictions(2).assign(
        surprisal=[np.nan, np.nan], note=["x", "y"], extra=[1, 2])}, {})
    table = store.read_table("predictions").sort_values(["cell", "item"]).reset_index(drop=True)
    assert table["set"].tolist() == ["one", "one", "two", "two"]
    assert table["surprisal"].tolist()[:2] == [1.5, 2.5] and table["surprisal"].isna().tolist()[2:] == [True] * 2
    assert table["note"].tolist()[2:] == ["x", "y"] and table["note"].isna().tolist()[:2] == [True] * 2
    assert table["extra"].isna().tolist() == [True, True, False, False]
    assert table["step"].isna().tolist() == [False, False, True, True]
    glob = (tmp_path / "tables" / "predictions").as_posix() + "/**/*.parquet"
    sql = f"select * from read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"
    assert sorted(duckdb.sql(sql).df()["extra"].dropna().tolist()) == [1, 2]


def test_failures_count_attempts_and_resolve(tmp_path):
    store = SweepStore(tmp_path)
    store.record_failure(meta("f1"), "CUDA out of memory\nat line 3", details="Traceback ...")
    store.record_failure(meta("f1"), "worker died")
    store.record_failure(meta("f2", set_name="other"), "bad item")
    lines = (tmp_path / "failures" / "f1.jsonl").read_text().splitlines()
    assert [json.loads(line)["attempt"] for line in lines] == [1, 2]
    assert json.loads(lines[0])["error"] == "CUDA out of memory | at line 3"
    store.write_cell(meta("f1"), {"summary": summary(SET_WITH_SPACE, 1.0)}, {})
    with open(tmp_path / "failures" / "f2.jsonl", "a") as fh:
        fh.write('{"digest": "f2", "err')  # a crash mid-append
    failures = store.failures().set_index("digest")
    assert failures.loc["f1", "attempts"] == 2 and failures.loc["f2", "attempts"] == 1
    assert failures["resolved"].to_dict() == {"f1": True, "f2": False}
    assert failures.loc["f1", "error"] == "worker died"
    assert failures.loc["f2", "set"] == "other"
    assert SweepStore(tmp_path / "none").failures().empty


def test_bad_roots_and_manifests_are_one_line_errors(tmp_path, store):
    file_root = tmp_path / "a-file"
    file_root.write_text("x")
    with pytest.raises(PsylingError, match="a-file: the sweep store must be a directory") as error:
        SweepStore(file_root)
    assert "\n" not in str(error.value)
    (store.root / "cells" / "aaaa1111.json").write_text("{not json")
    with pytest.raises(PsylingError, match=r"aaaa1111\.json: unreadable cell manifest") as error:
        store.read_table("summary")
    assert "\n" not in str(error.value)
    with pytest.raises(PsylingError, match="'revision' is missing"):
        store.write_cell({"model": "m", "set": "s", "digest": "d"}, {}, {})
    with pytest.raises(PsylingError, match="not a plain name"):
        store.done("../escape")
