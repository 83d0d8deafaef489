"""--quiet silences every progress bar, the libraries' included."""
import os
import subprocess
import sys

from test_circuits_cli import write_agreement_set


def test_quiet_silences_library_progress_bars(tmp_path, tiny_model_dir):
    """--quiet used to leave transformers' "Loading weights" bar on stderr."""
    stim = write_agreement_set(tmp_path)
    command = [sys.executable, "-m", "psyling.cli", "run", "--stimuli", str(stim), "--model", str(tiny_model_dir)]
    loud = subprocess.run(command + ["--out", str(tmp_path / "a")], capture_output=True, text=True)
    quiet = subprocess.run(command + ["--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True)
    assert loud.returncode == quiet.returncode == 0 and "Loading weights" in loud.stderr
    assert "Loading weights" not in quiet.stderr and "it/s" not in quiet.stderr
    assert "TQDM_DISABLE" not in os.environ
