"""Package data: the batteries and curated sets ship inside the wheel, found through one stimuli_root(); the data
root defaults beside a repository checkout and is a one-line error without one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from psyling.errors import PsylingError, StimulusError
from psyling.stimuli import batteries
from psyling.stimuli.batteries import battery_names, data_root, load_battery, stimuli_root

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "psyling", "stimuli")


def test_pyproject_lists_every_package_and_maps_the_stimuli():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "psyling").rglob("__init__.py")}
    assert sorted(setuptools["packages"]) == sorted(packages | {"psyling.library"})
    assert setuptools["package-dir"] == {"psyling.library": "stimuli"}


def test_stimuli_root_is_the_checkout_folder_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("PSYLING_STIMULI", raising=False)
    assert stimuli_root().resolve() == REPO / "stimuli" and batteries.checkout_root() == REPO
    assert load_battery("core").source == REPO / "stimuli" / "batteries" / "core.yaml"
    monkeypatch.setenv("PSYLING_STIMULI", str(tmp_path))
    assert stimuli_root() == tmp_path and battery_names() == []


def test_data_root_beside_the_checkout_else_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.delenv("PSYLING_DATA", raising=False)
    assert data_root() == REPO.parent / "shared" / "data"
    monkeypatch.setattr(batteries, "checkout_root", lambda: None)  # as in a wheel installed into site-packages
    with pytest.raises(PsylingError, match=r"^set PSYLING_DATA to the folder of published datasets"):
        data_root()
    with pytest.raises(StimulusError) as error:
        load_battery("blimp").files()
    assert str(error.value).startswith(f"{REPO / 'stimuli' / 'batteries' / 'blimp.yaml'}: field=sets: reads "
                                       "published data (blimp/data): set PSYLING_DATA")
    assert "\n" not in str(error.value)
    assert len(load_battery("core").files()) == 27  # our own sets need no data root
    monkeypatch.setenv("PSYLING_DATA", str(tmp_path))
    with pytest.raises(StimulusError, match=r"reads .*blimp/data, which does not exist"):
        load_battery("blimp").files()


def _user_env() -> dict[str, str]:
    """The environment of a user outside the checkout: no data root, stimuli or path overrides."""
    return {k: v for k, v in os.environ.items() if k not in ("PSYLING_DATA", "PSYLING_STIMULI", "PYTHONPATH")}


def _call(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_user_env(), capture_output=True, text=True)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv (seeing this environment's torch and transformers) with the wheel built from a copy of the
    checkout installed without -e."""
    root = tmp_path_factory.mktemp("wheel")
    (root / "src").mkdir()
    for name in SOURCES:  # built from a copy: pip builds in the source tree
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, root / "src" / name)
    built = _call([sys.executable, "-m", "pip", "wheel", root / "src", "-w", root / "dist", "--no-deps", "-q"], root)
    assert built.returncode == 0, built.stderr
    assert _call([sys.executable, "-m", "venv", "--system-site-packages", root / "venv"], root).returncode == 0
    wheel = next((root / "dist").glob("psyling-*.whl"))
    installed = _call([root / "venv" / "bin" / "pip", "install", "--no-deps", "-q", wheel], root)
    assert installed.returncode == 0, installed.stderr
    return root / "venv"


@pytest.mark.slow
def test_wheel_ships_every_battery_and_set(venv):
    where = _call([venv / "bin" / "python", "-c", "import psyling.stimuli as s; print(s.stimuli_root())"],
                  venv.parent)
    library = Path(where.stdout.strip())
    assert library.is_relative_to(venv) and library.name == "library"  # not the checkout's editable install
    shipped = {p.relative_to(library): p.read_bytes() for p in library.rglob("*") if p.is_file()}
    source = {p.relative_to(REPO / "stimuli"): p.read_bytes() for p in (REPO / "stimuli").rglob("*") if p.is_file()}
    assert shipped == source
    listed = _call([venv / "bin" / "psyling", "batteries"], venv.parent)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert sorted(rows) == battery_names()
    assert rows["core"].split()[1:3] == ["27", "648"]
    assert "unavailable" in rows["blimp"] and "set PSYLING_DATA" in rows["blimp"]


@pytest.mark.slow
def test_wheel_runs_the_core_battery_and_names_missing_data(venv, tmp_path):
    done = _call([venv / "bin" / "psyling", "run", "--battery", "core", "--max-items", "2", "--out", tmp_path / "x",
                  "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "x" / "summary.csv")
    assert len(summary) == 27 and summary["n_items"].eq(2).all()
    missing = _call([venv / "bin" / "psyling", "run", "--battery", "blimp", "--out", tmp_path / "y"], tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("psyling: error: ") and "set PSYLING_DATA" in missing.stderr
