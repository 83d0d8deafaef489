"""The report of real runs in a real browser: the core battery on both embedded models (3 items per set),
analysed, opened in headless Chromium with every network request blocked."""
import pandas as pd
import pytest

import psyling
from psyling.report.html import build_report

pytestmark = pytest.mark.slow
SECTIONS = "Array.from(document.querySelectorAll('section.set')).map(s => s.dataset.set)"
CHARTS = """Array.from(document.querySelectorAll('div.plot[id^="KIND-"]')).map(d => ({set: d.dataset.set,
    region: d.dataset.region, traces: d.data.map(t => ({meta: t.meta, y: t.y}))}))"""
HUMAN = "Array.from(document.querySelectorAll('section.set')).filter(s => s.querySelector('div.human'))" \
        ".map(s => s.dataset.set)"
PLOTTED = "Array.from(document.querySelectorAll('div.plot')).every(d => d.data && d.querySelector('.main-svg'))"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = []
    for alias in ("smollm2-135m", "gemma3-270m"):
        run_dir = tmp_path_factory.mktemp(alias) / "run"
        psyling.run(alias, battery="core", out=run_dir, progress=False, max_items=3)
        psyling.analyze(run_dir, linking="none", plots=False, progress=False)
        out.append(run_dir)
    return out


def test_report_of_two_models_in_a_real_browser(runs, tmp_path):
    from browser import BROWSER_MISSING, is_blank, open_page

    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    path = build_report(runs, tmp_path / "report.html")
    assert path.stat().st_size < 10 * 2**20
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "cdn" not in page.lower()
    regions = {alias: pd.read_parquet(r / "regions.parquet") for alias, r in zip(("smollm2-135m", "gemma3-270m"), runs)}
    comparison = pd.read_parquet(runs[0] / "analysis" / "comparison.parquet")
    with open_page(path, ready_js=PLOTTED) as page:
        assert page.console_errors == [] and page.page_errors == [] and page.external_urls == []
        assert page.evaluate("['overview', 'reproducibility'].every(id => document.getElementById(id))") is True
        sets, human = page.evaluate(SECTIONS), page.evaluate(HUMAN)
        charts, items = (page.evaluate(CHARTS.replace("KIND", kind)) for kind in ("profile", "items"))
        assert not is_blank(page.screenshot_png)
    assert sorted(sets) == sorted(regions["smollm2-135m"]["set"].unique())
    assert sorted(human) == sorted(comparison.loc[comparison["human_size"].notna(), "set"].unique())
    for chart in charts:
        table = regions["smollm2-135m"]
        conditions = table.loc[table["set"] == chart["set"], "condition"].unique()
        assert len(chart["traces"]) == 2 * len(conditions), chart["set"]
        for trace in chart["traces"]:
            cells = regions[trace["meta"]["model"]]
            cells = cells[(cells["set"] == chart["set"]) & (cells["condition"] == trace["meta"]["condition"])]
            measured = cells["surprisal"].where(cells["text"].str.strip() != "")  # a region without text: no value
            means = measured.groupby(cells["region_number"]).mean().sort_index()
            assert [v for v in trace["y"] if v is not None] == pytest.approx(means.dropna().tolist(), abs=1e-9)
    assert len(items) == len(charts)  # every core set has a critical region or a compared one
    for chart in items:
        for trace in chart["traces"]:
            cells = regions[trace["meta"]["model"]]
            cells = cells[(cells["set"] == chart["set"]) & (cells["condition"] == trace["meta"]["condition"])
                          & (cells["region"] == chart["region"])]
            measured = cells.loc[cells["text"].str.strip() != "", "surprisal"]
            plotted = [v for v in trace["y"] if v is not None]
            assert sorted(plotted) == pytest.approx(sorted(measured), abs=1e-9), chart["set"]
