"""SAE plots: the PNG files, the points and bars behind them, and bad input (psyling.report.sae_plots)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from psyling.errors import PsylingError
from psyling.report.sae_plots import l0_fvu_figure, plot_l0_fvu, plot_top_latents, top_latents_figure

matplotlib.use("Agg")


def metrics() -> pd.DataFrame:
    return pd.DataFrame({"l0": [8.0, 16.0, 32.0, 64.0, 128.0], "fvu": [0.4, 0.3, 0.22, 0.15, 0.1],
                         "label": [f"k={k}" for k in (8, 16, 32, 64, 128)]})


def contrast_table() -> pd.DataFrame:
    """Set 'agr/simple' (two factors, 12 latents each) and set 'npi' (one factor, 3 latents)."""
    rng = np.random.default_rng(0)
    rows = []
    for set_name, factors, n_latents in (("agr/simple", [("agreement", "match", "mismatch"),
                                                         ("number", "sg", "pl")], 12),
                                         ("npi", [("licensor", "yes", "no")], 3)):
        for factor, level_a, level_b in factors:
            q = np.sort(rng.uniform(0, 0.2, n_latents))
            rows += [{"set": set_name, "factor": factor, "level_a": level_a, "level_b": level_b, "latent": 100 + j,
                      "d_z": float(rng.normal(0, 2)), "q_value": float(q[j])} for j in range(n_latents)]
    table = pd.DataFrame(rows)
    table.loc[3, "d_z"] = np.nan  # a latent whose differences have sd 0
    return table


def is_png(path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100


def test_l0_fvu_has_one_point_per_sae_on_a_log_axis(tmp_path):
    fig = l0_fvu_figure(metrics())
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), metrics()[["l0", "fvu"]].to_numpy())
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.texts] == list(metrics()["label"])
    plt.close(fig)
    path = plot_l0_fvu(metrics(), tmp_path / "l0_fvu.png")
    assert path.is_file() and is_png(path)


def test_top_latents_bars_per_factor_with_q_marked():
    table = contrast_table()
    fig = top_latents_figure(table, "agr/simple", n=10, alpha=0.05)
    assert len(fig.axes) == 2
    for ax, factor in zip(fig.axes, ("agreement", "number")):
        rows = table[(table["set"] == "agr/simple") & (table["factor"] == factor)]
        expected = rows.iloc[np.lexsort((-rows["d_z"].abs().fillna(-1), rows["q_value"]))[:10]]
        heights = [bar.get_height() for bar in ax.patches]
        assert len(heights) == 10
        np.testing.assert_allclose(heights, np.nan_to_num(expected["d_z"].to_numpy()))
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [f"{latent}\nq={q:.2g}" for latent, q in zip(expected["latent"], expected["q_value"])]
        assert sum(t.get_text() == "*" for t in ax.texts) == int((expected["q_value"] < 0.05).sum())
    few = top_latents_figure(table, "npi", n=10)
    assert len(few.axes) == 1 and len(few.axes[0].patches) == 3  # fewer latents than n
    plt.close(fig)
    plt.close(few)


def test_plot_top_latents_writes_one_png_per_set_without_spaces(tmp_path):
    paths = plot_top_latents(contrast_table(), tmp_path / "plots", n=5)
    assert [p.name for p in paths] == ["sae_top_latents_agr_simple.png", "sae_top_latents_npi.png"]
    assert all(p.is_file() and is_png(p) and " " not in p.name for p in paths)


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(PsylingError, match="lacks column"):
        plot_l0_fvu(metrics().drop(columns="fvu"), tmp_path / "x.png")
    with pytest.raises(PsylingError, match="l0 must be positive"):
        l0_fvu_figure(metrics().assign(l0=0.0))
    with pytest.raises(PsylingError, match="no rows for set 'other'"):
        top_latents_figure(contrast_table(), "other")
    clash = pd.concat([contrast_table(), contrast_table().assign(set="agr simple")])
    with pytest.raises(PsylingError, match="both be written to sae_top_latents_agr_simple.png"):
        plot_top_latents(clash, tmp_path)
