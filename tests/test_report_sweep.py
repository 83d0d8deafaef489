"""psyling report on a sweep (psyling/report/sweep_view.py): a ``psyling sweep collect`` folder, or the store
holding one, gives a section with the battery scores, the leaderboard, one learning-curve chart per model whose
traces are the collected accuracies, and the emergence table; static PNGs; the page works in a real browser."""
import json
import re

import pandas as pd
import pytest

from psyling.cli import main
from psyling.errors import PsylingError
from psyling.report.html import build_report
from psyling.sweep.collect import CollectOptions, collect
from psyling.sweep.spec import BatteryScore
from test_sweep_collect import PASSING, FakeStore

FIGURE = re.compile(r'<script type="application/json" id="(sweep-\d+-curve-\d+)-json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """A store folder whose collect/ holds the fake sweep's tables (models a, b: 3 checkpoints; c: 2)."""
    root = tmp_path_factory.mktemp("sweep") / "store"
    scores = (BatteryScore("mini", {"exclude": ["s2"], "circuits": {"C": ["s1", "s2"]}}, ("s1", "s2")),)
    collect(FakeStore(root=root), root / "collect", CollectOptions(n_boot=20, seed=0, scores=scores, sweep="fake"))
    return root


@pytest.fixture(scope="module")
def page(store_root, tmp_path_factory):
    return build_report([store_root], tmp_path_factory.mktemp("page") / "sweep.html").read_text(encoding="utf-8")


def figures(page):
    return {ident: json.loads(body) for ident, body in FIGURE.findall(page)}


def test_sweep_section_alone(page):
    assert 'id="sweep-0"' in page and '<a href="#sweep-0">Sweep: fake</a>' in page
    assert 'id="overview"' not in page and 'id="reproducibility"' not in page  # no run: no run sections
    assert "psyling report: sweep fake" in page and "16 cells from the store" in page
    assert "http://" not in page and "https://" not in page


def test_battery_scores_and_leaderboard_tables(page, store_root):
    scores = pd.read_parquet(store_root / "collect" / "battery_scores.parquet")
    a_top = scores.query("model == 'a' and step == 10000 and score == 'SG score (excluding s2)'")["value"].iloc[0]
    assert a_top == 1.0
    row = re.search(r"<tr><td>mini</td><td>SG score \(excluding s2\)</td>(.*?)</tr>", page).group(1)
    values = [float(v) for v in re.findall(r'data-v="([^"]+)"', row)]
    expected = [PASSING[key]["s1"] / 4 for key in PASSING]  # the store's order: a, b, c by step
    assert values == pytest.approx(expected)
    assert "<th>a step10000</th>" in page and 'download="fake_leaderboard.csv"' in page


def test_one_curve_chart_per_model_with_the_collected_accuracies(page, store_root):
    curves = pd.read_parquet(store_root / "collect" / "learning_curves.parquet")
    emergence = pd.read_parquet(store_root / "collect" / "emergence.parquet")
    drawn = figures(page)
    assert len(drawn) == 3  # a, b and c (two steps are a curve, with no emergence fit)
    for figure, model in zip(drawn.values(), ["a", "b", "c"]):
        lines = [t for t in figure["data"] if t["mode"] == "lines+markers"]
        assert [t["name"] for t in lines] == ["agreement"]  # the phenomenon level, the sets named one
        expected = curves.query("model == @model and level == 'phenomenon'").sort_values("step")
        assert lines[0]["x"] == expected["step"].astype(float).tolist()
        assert lines[0]["y"] == pytest.approx(expected["accuracy"].tolist())
        fit = emergence.query("model == @model and level == 'phenomenon' and converged")
        marks = [t for t in figure["data"] if t["mode"] == "markers"]
        assert len(marks) == len(fit)
        if len(fit):
            assert marks[0]["x"] == [pytest.approx(fit["step"].iloc[0])]
    a_fit = emergence.query("model == 'a' and level == 'phenomenon'").iloc[0]
    assert a_fit["converged"] and a_fit["step"] == pytest.approx(1000, rel=0.15)
    assert figures(page)["sweep-0-curve-0"]["layout"]["xaxis"]["type"] == "log"


def test_static_sweep_has_pngs_of_the_same_traces(store_root, tmp_path, page, monkeypatch):
    from psyling.report import sweep_view

    static = build_report([store_root / "collect"], tmp_path / "static.html", static=True).read_text(encoding="utf-8")
    assert static.count('src="data:image/png;base64,') == 3 and "Plotly" not in static
    drawn = []
    monkeypatch.setattr(sweep_view, "figure_img", lambda fig, alt: drawn.append(fig) or "")
    figure = figures(page)["sweep-0-curve-0"]  # model a: a line and its emergence cross
    sweep_view.curve_png(figure, "a")
    lines = drawn[0].axes[0].lines
    plotted = [(list(line.get_xdata()), list(line.get_ydata())) for line in lines if line.get_marker() in ("o", "x")]
    assert plotted == [(pytest.approx(t["x"]), pytest.approx(t["y"])) for t in figure["data"]]


def test_a_sweep_and_runs_on_one_page(store_root, tmp_path, bpe_llama, bpe_gpt2):
    from report_cases import write_report_runs

    (tmp_path / "runs").mkdir()
    runs = write_report_runs(tmp_path / "runs", bpe_llama, bpe_gpt2)
    page = build_report([*runs, store_root], tmp_path / "both.html").read_text(encoding="utf-8")
    for ident in ("overview", "set-0", "sweep-0", "reproducibility"):
        assert f'id="{ident}"' in page
    assert page.index('id="set-2"') < page.index('id="sweep-0"') < page.index('id="reproducibility"')


def test_missing_table_is_one_line(store_root, tmp_path, capsys):
    broken = tmp_path / "collect"
    broken.mkdir()
    for path in (store_root / "collect").iterdir():
        if path.name != "emergence.parquet":
            (broken / path.name).write_bytes(path.read_bytes())
    missing = r"emergence\.parquet: the sweep's emergence table is missing; run psyling sweep collect again"
    with pytest.raises(PsylingError, match=missing):
        build_report([broken], tmp_path / "x.html")
    assert main(["report", str(broken), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "emergence.parquet" in err


def test_cli_report_of_a_store(store_root, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(store_root), "--out", str(out), "--static"]) == 0
    assert str(out) in capsys.readouterr().out and 'id="sweep-0"' in out.read_text(encoding="utf-8")


PLOTTED = "Array.from(document.querySelectorAll('div.plot')).every(d => d.data && d.querySelector('.main-svg'))"
DRAWN = "Array.from(document.querySelectorAll('div.plot')).map(d => d.querySelectorAll('.scatterlayer .trace').length)"


def test_the_sweep_page_in_a_real_browser(store_root, tmp_path):
    from browser import BROWSER_MISSING, is_blank, open_page

    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    path = build_report([store_root], tmp_path / "sweep.html")
    expected = [len(f["data"]) for f in figures(path.read_text(encoding="utf-8")).values()]
    with open_page(path, ready_js=PLOTTED) as page:
        assert page.console_errors == [] and page.page_errors == [] and page.external_urls == []
        assert page.evaluate(DRAWN) == expected and not is_blank(page.screenshot_png)
