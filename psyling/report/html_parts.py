"""The pieces every view of the HTML report is made of: escaped text, JSON inside <script>, sortable tables with
CSV downloads, and plotly figure placeholders (drawn on load by ``psyling.report.html.DRAW_JS``)."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
PLOT_CONFIG = {"displaylogo": False, "showLink": False, "showSendToCloud": False, "showEditInChartStudio": False,
               "responsive": True}
def text(value: Any) -> str:
    """Any value as HTML text: escaped, and with ``://`` broken so no text reads as a web address."""
    return html.escape(str(value)).replace("://", "&#58;//")


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no ``<``, ``>``, ``&`` or ``/`` unescaped), keys sorted."""
    out = json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("/", "\\/")


def finite(values: Sequence[float]) -> list[Any]:
    """Floats for JSON: NaN and infinities as null."""
    return [float(v) if v is not None and math.isfinite(v) else None for v in values]


def table_cell(value: Any) -> str:
    """One table cell: numbers right-aligned to 3 decimals (the full value kept for sorting)."""
    if isinstance(value, (float, np.floating)):
        shown = "" if not math.isfinite(value) else f"{value:.3f}"
        return f'<td class="num" data-v="{value!r}">{shown}</td>'
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{text('' if value is None else value)}</td>"


def csv_link(table: pd.DataFrame, name: str) -> str:
    """A link that downloads ``table`` as NAME.csv from a data URI."""
    data = base64.b64encode(table.to_csv(index=False).encode("utf-8")).decode("ascii")
    return f'<a class="csv" download="{text(name)}.csv" href="data:text/csv;base64,{data}">download CSV</a>'


def html_table(table: pd.DataFrame, name: str, table_id: str = "") -> str:
    """``table`` as a sortable HTML table (headers clickable) with its CSV download link."""
    head = "".join(f"<th>{text(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(table_cell(v) for v in row) + "</tr>" for row in table.itertuples(index=False))
    ident = f' id="{text(table_id)}"' if table_id else ""
    return (f'<table class="sortable"{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + csv_link(table, name))




UNESCAPED_KEYS = ("hovertemplate", "meta")  # a plotly template of our own; machine-read labels (never drawn)


def plotly_text(value: Any) -> Any:
    """Every string plotly will draw (names, titles, ticks, hover text) with ``& < >`` as entities: plotly reads a
    few HTML tags in them (<b>, <a href=...>), and a stimulus or set name must show as written."""
    if isinstance(value, str):
        return html.escape(value, quote=False)
    if isinstance(value, dict):
        return {k: v if k in UNESCAPED_KEYS else plotly_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plotly_text(v) for v in value]
    return value


def figure_div(fig_id: str, figure: dict[str, Any], **attrs: str) -> str:
    """A plotly figure as a ``div.plot`` (with ``data-*`` attributes) and its JSON in ``<script id=FIG_ID-json>``
    (its drawn strings escaped by ``plotly_text``)."""
    figure = plotly_text(figure)
    data = "".join(f' data-{k.replace("_", "-")}="{text(v)}"' for k, v in sorted(attrs.items()))
    return (f'<div class="plot" id="{text(fig_id)}"{data}></div>'
            f'<script type="application/json" id="{text(fig_id)}-json">{script_json(figure)}</script>')


def png_img(png: bytes, alt: str) -> str:
    """PNG bytes as an ``<img class="static-plot">`` with a data URI (the static report's charts)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="static-plot" alt="{text(alt)}" src="data:image/png;base64,{data}">'


def figure_img(fig: Any, alt: str) -> str:
    """A matplotlib figure as ``png_img`` (no Software tag, so the bytes repeat); the figure is closed."""
    from .plots import load_pyplot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    load_pyplot().close(fig)
    return png_img(buffer.getvalue(), alt)
