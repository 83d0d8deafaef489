"""psyling report: one self-contained HTML page over runs (psyling/report/html.py)."""
import base64
import json
import math
import re

import pytest

from psyling.cli import main
from psyling.report.html import build_report
from report_cases import write_report_runs

FIGURE = re.compile(r'<script type="application/json" id="(profile-\d+)-json">(.*?)</script>', re.S)
EVERY_FIGURE = re.compile(r'<script type="application/json" id="([a-z-]+-\d+)-json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bpe_llama, bpe_gpt2):
    return write_report_runs(tmp_path_factory.mktemp("report"), bpe_llama, bpe_gpt2)


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = build_report(runs, tmp_path_factory.mktemp("page") / "report.html")
    return out.read_text(encoding="utf-8")


def figures(page):
    return {ident: json.loads(body) for ident, body in FIGURE.findall(page)}


def test_self_contained_and_deterministic(runs, page, tmp_path):
    assert "http://" not in page and "https://" not in page
    assert re.search("cdn", page, re.IGNORECASE) is None  # plotly's map-tile and topojson CDNs are blanked
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inlined
    again = build_report(runs, tmp_path / "again.html")
    assert again.read_text(encoding="utf-8") == page


def test_sections_present(page):
    for ident in ("overview", "leaderboard", "accuracy", "reproducibility", "set-0", "set-1", "set-2"):
        assert f'id="{ident}"' in page
    assert page.count('class="set"') == 3
    assert 'id="human-0"' in page and 'id="human-2"' not in page  # the analysed set with a human size only
    assert "no reliable effect" in page or "reliable" in page  # analyze's verdicts in the leaderboard


def test_traces_are_conditions_times_models_with_the_region_means(runs, page):
    import pandas as pd

    regions = {r.name: pd.read_parquet(r / "regions.parquet") for r in runs}
    models = {"tiny-llama": runs[0].name, "tiny-gpt2": runs[1].name}
    for ident, figure in figures(page).items():
        div = re.search(rf'<div class="plot" id="{ident}"[^>]*? data-set="([^"]+)"', page)
        set_name = div.group(1)
        conditions = regions[runs[0].name].query("set == @set_name")["condition"].unique()
        assert len(figure["data"]) == len(conditions) * 2
        for trace in figure["data"]:
            table = regions[models[trace["meta"]["model"]]]
            cells = table[(table["set"] == set_name) & (table["condition"] == trace["meta"]["condition"])]
            expected = cells.groupby("region_number")["surprisal"].mean().sort_index().to_numpy()
            assert trace["y"] == pytest.approx(expected, abs=1e-9)
    critical = figures(page)["profile-0"]["layout"]["annotations"][0]
    assert critical["text"] == "critical region" and critical["x"] == 3  # garden_path_npz: main_verb, 4th region


def test_stimulus_markup_is_escaped(page):
    assert "&lt;script&gt;window.__canary=1&lt;/script&gt;" in page
    assert "<script>window.__canary" not in page and "<b>bold</b>" not in page


def test_csv_download_links(page):
    links = re.findall(r'download="([^"]+)" href="data:text/csv;base64,([^"]+)"', page)
    names = [name for name, _ in links]
    assert "leaderboard.csv" in names and "accuracy.csv" in names
    accuracy = base64.b64decode(dict(links)["accuracy.csv"]).decode()
    assert accuracy.splitlines()[0] == ("set,model,n_items,accuracy,ci_low,ci_high,verdict,effect_present,"
                                        "human_direction,size_vs_human")
    assert len(accuracy.splitlines()) == 1 + 3 * 2


def test_static_has_pngs_and_no_plotly(runs, page, tmp_path):
    static = build_report(runs, tmp_path / "static.html", static=True).read_text(encoding="utf-8")
    kinds = re.findall(r'<div class="plot" id="([a-z]+)-\d+"', page)
    assert kinds.count("profile") == 3 and kinds.count("items") >= 1 and kinds.count("forest") >= 1
    alts = re.findall(r'<img class="static-plot" alt="[^"]*?(region profile|item-level surprisal|forest plot)"', static)
    assert (alts.count("region profile"), alts.count("item-level surprisal"), alts.count("forest plot")) == (
        kinds.count("profile"), kinds.count("items"), kinds.count("forest"))  # every interactive chart, as a PNG
    page = static
    assert "Plotly" not in page and "plotly" not in page.lower().replace("no plotly", "")
    assert "http://" not in page and "https://" not in page


def test_cli_report(runs, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


DRAWN = """Array.from(document.querySelectorAll('div.plot')).map(d => ({id: d.id, set: d.dataset.set,
    traces: (d.data || []).map(t => ({meta: t.meta, y: t.y})), drawn: d.querySelectorAll('.scatterlayer .trace').length}))"""
PLOTTED = "Array.from(document.querySelectorAll('div.plot')).every(d => d.data && d.querySelector('.main-svg'))"


def test_the_page_in_a_real_browser(runs, tmp_path):
    """Headless Chromium, every network request blocked: no console or page error, no request leaves the file,
    every chart is drawn with the traces of its embedded figure, the canary in a stimulus never runs, and the
    screenshot is not blank."""
    from browser import BROWSER_MISSING, is_blank, open_page

    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    path = build_report(runs, tmp_path / "report.html")
    embedded = {ident: json.loads(body) for ident, body in EVERY_FIGURE.findall(path.read_text(encoding="utf-8"))}
    with open_page(path, ready_js=PLOTTED) as page:
        assert page.console_errors == [] and page.page_errors == [] and page.external_urls == []
        drawn = page.evaluate(DRAWN)
        assert page.evaluate("window.__canary === undefined") is True
        assert page.evaluate("document.querySelector('#set-2 table').textContent.includes('<script>')") is True
        assert not is_blank(page.screenshot_png)
    assert [d["id"] for d in drawn] == list(embedded)  # every chart, in page order
    for chart in drawn:
        figure = embedded[chart["id"]]
        assert chart["drawn"] == len(figure["data"]) and len(chart["traces"]) == len(figure["data"])
        for trace, expected in zip(chart["traces"], figure["data"]):
            assert trace["meta"] == expected["meta"]
            assert trace["y"] == pytest.approx([math.nan if v is None else v for v in expected["y"]], nan_ok=True)


def test_drawn_plot_strings_are_escaped_but_machine_labels_kept():
    from psyling.report.html_parts import figure_div

    figure = {"data": [{"name": "<b>sg</b> & pl", "meta": {"condition": "<b>sg</b>"}, "hovertemplate": "%{x}<br>"}],
              "layout": {"title": {"text": "<a href=x>set</a>"}, "xaxis": {"ticktext": ["<i>verb</i>"]}}}
    body = json.loads(re.search(r'-json">(.*)</script>', figure_div("f-0", figure)).group(1))
    assert body["data"][0]["name"] == "&lt;b&gt;sg&lt;/b&gt; &amp; pl"
    assert body["data"][0]["meta"] == {"condition": "<b>sg</b>"} and body["data"][0]["hovertemplate"] == "%{x}<br>"
    assert body["layout"]["title"]["text"] == "&lt;a href=x&gt;set&lt;/a&gt;"
    assert body["layout"]["xaxis"]["ticktext"] == ["&lt;i&gt;verb&lt;/i&gt;"]
