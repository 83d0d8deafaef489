"""Patching heatmaps: which files come out, that they are PNG images, the grids behind them, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from psyling.errors import PsylingError
from psyling.report.circuit_plots import (value_grid, region_columns, circuit_heatmaps, layer_head_heatmap,
                                          layer_region_heatmap)

REGIONS = ["all", "subject", "verb"]  # 'all' first on purpose: the default order puts it last


def _row(set_name: str, site: str, layer: int, head: int, region: str, direction: str, effect: float) -> dict:
    return {"set": set_name, "site": site, "kind": site.split(".")[0], "layer": layer, "head": head,
            "region": region, "direction": direction, "effect": effect, "ci_low": effect - 0.1,
            "ci_high": effect + 0.1, "n_items": 12}


def _effect(*key: object) -> float:
    """A deterministic effect per cell in [-0.5, 1.5]."""
    return (sum(ord(c) for c in "".join(map(str, key))) % 21) / 10 - 0.5


def summary() -> pd.DataFrame:
    """Set 'agr/sg pl' with resid 0..2, attn and mlp 1..2, heads 0..3 of layers 1..2 and two single neurons, in
    both directions; set 'npi' with resid only, denoising."""
    rows = []
    for direction in ("denoise", "noise"):
        for region in REGIONS:
            rows += [_row("agr/sg pl", f"resid.{layer}", layer, -1, region, direction,
                          _effect(layer, region, direction)) for layer in range(3)]
            rows += [_row("agr/sg pl", f"{kind}.{layer}", layer, -1, region, direction, _effect(kind, layer, region))
                     for kind in ("attn", "mlp") for layer in (1, 2)]
            rows += [_row("agr/sg pl", f"head.{layer}.{head}", layer, head, region, direction,
                          _effect(layer, head, region)) for layer in (1, 2) for head in range(4)]
            rows += [_row("agr/sg pl", f"neuron.1.{unit}", 1, -1, region, direction, 0.3) for unit in (7, 9)]
    rows += [_row("npi", f"resid.{layer}", layer, -1, region, "denoise", _effect(layer)) for layer in range(3)
             for region in REGIONS]
    return pd.DataFrame(rows)


def _is_png(path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_circuit_heatmaps_writes_one_png_per_grid(tmp_path):
    written = circuit_heatmaps(summary(), tmp_path / "plots")
    expected = {f"patching_agr_sg_pl_{kind}_{d}.png" for kind in ("resid", "attn", "mlp") for d in ("denoise", "noise")}
    expected |= {f"patching_agr_sg_pl_heads_{r}_{d}.png" for r in REGIONS for d in ("denoise", "noise")}
    expected |= {"patching_npi_resid_denoise.png"}
    assert sorted(p.name for p in written) == sorted(expected)  # no neuron grid, no layer x region grid of heads
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(expected)
    assert all(_is_png(path) for path in written)


def test_layer_region_heatmap_writes_a_png(tmp_path):
    path = layer_region_heatmap(summary(), tmp_path / "r.png", set_name="agr/sg pl", direction="noise", kind="mlp",
                                regions_order=["verb", "subject"], title="mlp")
    assert path == tmp_path / "r.png" and _is_png(path)
    assert Image.open(path).size[0] > 200


def test_a_large_layer_head_grid_is_drawn_without_numbers(tmp_path):
    rows = pd.DataFrame([_row("big", f"head.{layer}.{head}", layer, head, "all", "denoise",
                              math.nan if head == 3 else _effect(layer, head))
                         for layer in range(1, 49) for head in range(12)])
    path = layer_head_heatmap(rows, tmp_path / "h.png", set_name="big", direction="denoise", region="all")
    assert _is_png(path)


def test_regions_default_to_first_appearance_with_all_last():
    rows = summary()
    assert region_columns(rows, None) == ["subject", "verb", "all"]
    assert region_columns(rows, ["verb", "all"]) == ["verb", "all"]


def test_the_grid_puts_each_effect_in_its_cell():
    rows = pd.DataFrame([_row("s", "attn.1", 1, -1, "subject", "noise", 0.25),
                         _row("s", "attn.1", 1, -1, "all", "noise", math.nan),
                         _row("s", "attn.3", 3, -1, "all", "noise", -0.5)])
    grid, layers = value_grid(rows, "region", ["all", "subject"])
    assert layers == [1, 3]  # the layers present, lowest first (drawn at the bottom)
    np.testing.assert_array_equal(grid, [[math.nan, 0.25], [-0.5, math.nan]])


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(PsylingError, match=r"lacks column\(s\) region, effect"):
        circuit_heatmaps(summary().drop(columns=["effect", "region"]), tmp_path)


@pytest.mark.parametrize("selection, message", [
    ({"set_name": "nope", "direction": "denoise", "kind": "resid"}, "no rows for set='nope', direction='denoise'"),
    ({"set_name": "npi", "direction": "noise", "kind": "resid"}, "no rows for set='npi', direction='noise'"),
    ({"set_name": "npi", "direction": "denoise", "kind": "mlp"}, "kind='mlp'"),
    ({"set_name": "npi", "direction": "both", "kind": "resid"}, "unknown patching direction 'both'"),
    ({"set_name": "npi", "direction": "denoise", "kind": "resid", "regions_order": ["object"]},
     r"no rows for region\(s\) object"),
    ({"set_name": "agr/sg pl", "direction": "denoise", "kind": "head"}, "only single-unit rows"),
])
def test_empty_selections_are_named(tmp_path, selection, message):
    with pytest.raises(PsylingError, match=message):
        layer_region_heatmap(summary(), tmp_path / "x.png", **selection)
    assert not (tmp_path / "x.png").exists()


def test_head_selections_and_duplicate_cells_are_errors(tmp_path):
    with pytest.raises(PsylingError, match="no rows for set='npi', direction='denoise', kind='head', region='all'"):
        layer_head_heatmap(summary(), tmp_path / "h.png", set_name="npi", direction="denoise", region="all")
    doubled = pd.concat([summary(), summary().iloc[[0]].assign(site="resid.0b")])
    with pytest.raises(PsylingError, match="2 rows for layer 0 and region 'all' .sites resid.0, resid.0b"):
        layer_region_heatmap(doubled, tmp_path / "d.png", set_name="agr/sg pl", direction="denoise", kind="resid")


def test_names_that_sanitise_alike_are_refused(tmp_path):
    table = pd.concat([summary(), summary().assign(set=lambda t: t["set"].str.replace("/", "?"))])
    with pytest.raises(PsylingError, match="both be written to patching_agr_sg_pl_resid_denoise.png"):
        circuit_heatmaps(table, tmp_path)
    assert list(tmp_path.iterdir()) == []
