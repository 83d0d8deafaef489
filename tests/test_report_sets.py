"""The per-set view of the HTML report (psyling/report/set_views.py): coloured design, item-level points, forest
plot of model and human effects, shortened long table cells, escaped stimulus text."""
import base64
import html
import json
import re

import pandas as pd
import pytest

from psyling.report.html import build_report
from psyling.report.report_data import read_report_runs
from psyling.report.set_views import SHORT_CELL, forest_traces, region_colours, set_section, short_table
from report_cases import write_report_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bpe_llama, bpe_gpt2):
    return write_report_runs(tmp_path_factory.mktemp("report_sets"), bpe_llama, bpe_gpt2, region="2")


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    return build_report(runs, tmp_path_factory.mktemp("page") / "report.html").read_text(encoding="utf-8")


def figure(page, ident):
    body = re.search(rf'<script type="application/json" id="{ident}-json">(.*?)</script>', page, re.S).group(1)
    return json.loads(body)


def section(page, index):
    start = page.index(f'id="set-{index}"')
    return page[start:page.index("</section>", start)]


def test_item_points_equal_the_regions_table(runs, page):
    regions = {r.name: pd.read_parquet(r / "regions.parquet") for r in runs}
    folders = {"tiny-llama": runs[0].name, "tiny-gpt2": runs[1].name}
    expected_region = {0: "main_verb", 1: "verb", 2: "verb"}  # the critical region; set 2: its prediction's (2;...)
    for index, region in expected_region.items():
        div = re.search(rf'<div class="plot" id="items-{index}" data-region="([^"]+)" data-set="([^"]+)"', page)
        assert div.group(1) == region
        set_name = div.group(2)
        traces = figure(page, f"items-{index}")["data"]
        conditions = regions[runs[0].name].query("set == @set_name")["condition"].unique()
        assert len(traces) == 2 * len(conditions)
        for trace in traces:
            assert trace["meta"]["kind"] == "items"
            table = regions[folders[trace["meta"]["model"]]]
            cells = table[(table["set"] == set_name) & (table["condition"] == trace["meta"]["condition"])
                          & (table["region"] == region)]
            assert trace["y"] == pytest.approx(cells["surprisal"].to_numpy(), abs=1e-9, rel=0)
            assert trace["hovertext"] == [str(i) for i in cells["item"]]
            assert len(set(trace["x"])) == len(cells)  # each item at its own jittered position


def test_forest_rows_equal_the_comparison_table(runs, page):
    comparison = pd.read_parquet(runs[0] / "analysis" / "comparison.parquet").set_index("set")
    panel = page[page.index('id="human-0"'):]
    assert 'id="forest-0"' in panel[:panel.index("</div>", panel.index("</script>"))]
    row = comparison.loc["garden_path_npz"]
    traces = {t["meta"]["kind"]: t for t in figure(page, "forest-0")["data"]}
    assert set(traces) == {"human", "bits"}  # linking none: no prediction in ms
    people, bits = traces["human"], traces["bits"]
    assert people["x"][0] == pytest.approx(row["human_size"], abs=1e-9)
    assert people["x"][0] - people["error_x"]["arrayminus"][0] == pytest.approx(row["human_ci_low"], abs=1e-9)
    assert people["x"][0] + people["error_x"]["array"][0] == pytest.approx(row["human_ci_high"], abs=1e-9)
    assert bits["x"][0] == pytest.approx(row["model_bits"], abs=1e-9) and bits["meta"]["model"] == "tiny-llama"
    assert bits["x"][0] + bits["error_x"]["array"][0] == pytest.approx(row["model_ci_high"], abs=1e-9)
    assert "effect in ms" in figure(page, "forest-0")["layout"]["title"]["text"]
    assert "No linking function was fitted for tiny-llama" in panel


def test_forest_shows_a_linked_prediction_in_the_human_unit():
    human = pd.DataFrame([{"model": "m", "model_bits": 1.5, "model_ci_low": 1.0, "model_ci_high": 2.0,
                           "predicted": 30.0, "predicted_ci_low": 20.0, "predicted_ci_high": 41.0, "unit": "µV",
                           "human_size": 3.0, "human_ci_low": 2.0, "human_ci_high": 4.5}])
    traces = {t["meta"]["kind"]: t for t in forest_traces(human)}
    predicted = traces["predicted"]
    assert predicted["x"] == [30.0] and predicted["xaxis"] == "x" and predicted["meta"]["unit"] == "µV"
    assert predicted["error_x"]["arrayminus"] == [10.0] and predicted["error_x"]["array"] == [11.0]
    assert traces["bits"]["xaxis"] == "x2" and traces["human"]["marker"]["color"] != predicted["marker"]["color"]


def test_design_regions_coloured_and_critical_marked(page):
    design = section(page, 0)
    design = design[design.index('<table class="design">'):design.index("</table>")]
    colours = region_colours(["subordinate", "sub_verb", "np", "main_verb", "end"])
    assert len(set(colours.values())) == 5
    for region, colour in colours.items():
        mark = ' class="critical"' if region == "main_verb" else ""
        assert f'<th{mark} style="background:{colour}">{region}' in design
        assert f'<span class="region-key" style="background:{colour}">{region}</span>' in section(page, 0)
    assert design.count('<td class="critical"') == 4  # one per condition
    assert "main_verb (critical)" in design
    assert 'class="critical"' not in section(page, 2)[:section(page, 2).index("</table>")]  # no critical region


def test_long_text_cells_shortened_with_the_full_text_as_title(page):
    long_text = "optimiser said: " + "x" * 200 + " <end>"
    table = short_table(pd.DataFrame({"term": ["verb"], "warnings": [long_text], "estimate": [0.5]}), "mixed_t")
    shown = re.search(r'<td title="([^"]*)">([^<]*)</td>', table)
    assert shown.group(1) == long_text.replace("<", "&lt;").replace(">", "&gt;")
    assert len(shown.group(2)) == SHORT_CELL and shown.group(2).endswith("…")
    csv = base64.b64decode(re.search(r'base64,([^"]+)"', table).group(1)).decode()
    assert long_text in csv and '<td class="num" data-v="0.5">0.500</td>' in table


def test_mixed_table_warnings_on_the_page_are_shortened(runs, page):
    mixed = pd.read_parquet(runs[0] / "analysis" / "mixed.parquet")
    warning = mixed.loc[mixed["set"] == "garden_path_npz", "warnings"].iloc[0]
    assert len(warning) > SHORT_CELL
    assert f'<td title="{html.escape(warning)}">{html.escape(warning[:SHORT_CELL - 1])}…</td>' in section(page, 0)


def test_script_in_a_stimulus_stays_escaped_in_the_design(page):
    markup = section(page, 2)
    design = markup[markup.index('<table class="design">'):markup.index("</table>")]
    assert "The cat &lt;script&gt;window.__canary=1&lt;/script&gt;" in design
    assert "<script>" not in markup and "<b>bold</b>" not in markup


def test_static_section_draws_every_chart_from_the_interactive_traces(runs, monkeypatch):
    from psyling.report import set_pngs
    from psyling.report.set_views import forest_traces, item_traces
    from psyling.report.report_data import human_comparison

    report_runs = read_report_runs(runs)
    shown = set_section(report_runs, "garden_path_npz", 0, static=True)
    assert shown.count('src="data:image/png;base64,') == 3 and 'class="plot"' not in shown
    for alt in ("region profile", "item-level surprisal", "forest plot"):
        assert f'alt="garden_path_npz {alt}"' in shown
    assert "hovering a point shows its item id" in shown and "the dotted line is zero" in shown
    drawn = []
    monkeypatch.setattr(set_pngs, "figure_img", lambda fig, alt: drawn.append(fig) or "")
    traces, conditions = item_traces(report_runs, "garden_path_npz", "main_verb")
    set_pngs.items_png(traces, conditions, "garden_path_npz", "main_verb")
    points = [c.get_offsets() for c in drawn[0].axes[0].collections]
    assert len(points) == len(traces)
    for xy, trace in zip(points, traces):
        assert xy[:, 0].tolist() == pytest.approx(trace["x"]) and xy[:, 1].tolist() == pytest.approx(trace["y"])
    human = human_comparison(report_runs, "garden_path_npz")
    forest = forest_traces(human)
    set_pngs.forest_png(forest, "garden_path_npz", str(human["unit"].iloc[0]))
    left, right = drawn[1].axes
    xs = [line.get_xdata()[0] for ax in (left, right) for line in ax.lines if line.get_marker() in ("o", "D")]
    expected = [t["x"][0] for t in forest if t["xaxis"] == "x"] + [t["x"][0] for t in forest if t["xaxis"] == "x2"]
    assert xs == pytest.approx(expected)


DRAWN = """Array.from(document.querySelectorAll('div.plot')).filter(d => !d.id.startsWith('profile-')).map(d => ({
    id: d.id, traces: (d.data || []).map(t => ({meta: t.meta, x: t.x, y: t.y})),
    drawn: d.querySelectorAll('.scatterlayer .trace').length}))"""
PLOTTED = "Array.from(document.querySelectorAll('div.plot')).every(d => d.data && d.querySelector('.main-svg'))"


def test_item_and_forest_charts_drawn_in_a_real_browser(page, tmp_path):
    """Headless Chromium, network blocked: every item-level and forest chart is drawn, without a console or page
    error, with the traces (meta and values) of its embedded figure."""
    from browser import BROWSER_MISSING, open_page

    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    with open_page(path, ready_js=PLOTTED) as opened:
        assert opened.console_errors == [] and opened.page_errors == [] and opened.external_urls == []
        drawn = opened.evaluate(DRAWN)
    assert [d["id"] for d in drawn] == ["items-0", "forest-0", "items-1", "forest-1", "items-2"]
    for chart in drawn:
        expected = figure(page, chart["id"])["data"]
        assert chart["drawn"] == len(expected)
        assert [t["meta"] for t in chart["traces"]] == [t["meta"] for t in expected]
        assert [t["y"] for t in chart["traces"]] == [t["y"] for t in expected]


def test_mixed_model_shows_the_fit_once_and_one_row_per_term(runs, page):
    mixed = pd.read_parquet(runs[0] / "analysis" / "mixed.parquet")
    rows = mixed[mixed["set"] == "garden_path_npz"]
    shown = section(page, 0)
    shown = shown[shown.index("<h3>Mixed model"):]
    fit, terms = re.findall(r"<table class=\"sortable\">(.*?)</table>", shown)[:2]
    assert "<td>random_effects</td>" in fit and "<td>converged</td>" in fit  # one value for the whole fit
    assert terms.count("<tr>") == 1 + len(rows)  # header + one row per term
    assert all(f"<td>{html.escape(t)}</td>" in terms for t in rows["term"])
    assert "<th>random_effects</th>" not in terms and "<th>estimate</th>" in terms
