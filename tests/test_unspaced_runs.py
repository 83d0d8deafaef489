"""A set written without spaces, read by a generic reader, is detected as such, aligned by region (no word
correction across one whitespace "word" per sentence) and recorded so in the run's manifest."""
import numpy as np

import psyling

# alternating lines: good, bad (own sentences)
PAIRS = "猫在睡觉。\n猫在睡觉了吗呢。\n我喜欢读书。\n我喜欢读书书。\n"


def test_unspaced_pair_file_is_detected_and_recorded(bpe_llama, tmp_path):
    path = tmp_path / "zh_pairs.txt"
    path.write_text(PAIRS, encoding="utf-8")
    result = psyling.run(bpe_llama, [path], progress=False)
    entry = result.manifest["stimuli"]["sets"][0]
    assert result.errors == [] and entry["name"] == "zh_pairs"
    assert (entry["segmentation"], entry["segmentation_source"]) == ("none", "detected")
    assert entry["words"].startswith("no words") and entry["tokens_crossing_regions"] == 0
    assert "per set" in result.manifest["settings"]["words"]
    # no word correction: region surprisal is the plain sum of token surprisal, per sentence
    sums = result.tokens.groupby(["item", "condition"])["surprisal"].sum()
    np.testing.assert_allclose(result.regions.groupby(["item", "condition"])["surprisal"].sum(), sums, atol=1e-9)
    assert (result.regions["surprisal"] == result.regions["surprisal_raw"]).all()


def test_declared_whitespace_segmentation_is_honoured(bpe_llama, tmp_path):
    path = tmp_path / "zh_pairs.txt"
    path.write_text(PAIRS, encoding="utf-8")
    result = psyling.run(bpe_llama, [path], progress=False, segmentation="whitespace")
    entry = result.manifest["stimuli"]["sets"][0]
    assert (entry["segmentation"], entry["segmentation_source"]) == ("whitespace", "declared")
