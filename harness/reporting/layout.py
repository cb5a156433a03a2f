"""A report laid out: blocks (headings, paragraphs, tables, images) rendered as Markdown and as one HTML page, and
tables shown the way a reader wants them (no index, integers as integers, FLOPs in M or G)."""

import html
import re
from urllib.parse import quote

import numpy as np
import pandas as pd

from harness.params import EXPANSION_KEYS, describe
from harness.reporting import tables


# Columns that describe rows rather than measure them: shown once above a table when every row shares the value.
DESCRIPTIVE = {
    "study",
    "stage",
    "dataset",
    "epochs",
    "state",
    "seeds",
    "trials",
    "count",
    "failed runs",
    "configuration",
    "baseline",
    *tables.CONFIG_COLUMNS,
}


COUNTS = {"seeds", "trials", "count", "failed runs"}

SHORT_NAMES = {
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "total_params": "params",
    "latency_ms": "latency ms",
    "train_seconds": "train s",
    "learning_rate": "lr",
    "batch_size": "batch",
    "baseline accuracy": "baseline acc",
    "accuracy": "test acc",
    "delta (points)": "delta (points)",
    "flops ratio": "FLOPs x",
    "total_params ratio": "params x",
    "latency_ms ratio": "latency x",
    "train_seconds ratio": "train time x",
    "latency_ms ratio low": "latency x low",
    "latency_ms ratio high": "latency x high",
    "train_seconds ratio low": "train time x low",
    "train_seconds ratio high": "train time x high",
    "mean flops": "mean FLOPs",
    "mean total_params": "mean params",
    "failure_reason": "reason",
    "count": "runs",
}


def plural(count, noun, number=True):
    """'1 seed', '5 seeds'; `number=False` gives the noun alone."""
    word = noun if count == 1 else noun + "s"
    return f"{count:g} {word}" if number else word


def display(table):
    """(table as shown, note): no index, integers as integers, FLOPs in M or G, 4 significant digits, a
    configuration in words rather than one column per expansion param, short headers, and descriptive columns
    that hold one value for every row moved into the note."""
    named = any(name is not None for name in table.index.names)  # group keys are columns; row numbers are dropped
    table = table.reset_index(drop=not named)
    table.columns = [str(c) for c in table.columns]
    expansion = [c for c in EXPANSION_KEYS if c in table]
    if "insertion" in table and expansion:
        described = [
            describe({k: tables.plain(v) for k, v in row.items() if pd.notna(v) and v != "-"})
            for row in table[["insertion", *expansion]].to_dict("records")
        ]
        table.insert(table.columns.get_loc("insertion"), "configuration", described)
        table = table.drop(columns=["insertion", *expansion])
    # A CI of a difference is in signed points; one of an accuracy in per cent, unsigned.
    for low, high, form in (("ci low", "ci high", "{:+.1f}"), ("ci_low", "ci_high", "{:.1%}")):
        if low in table and high in table:
            table.insert(
                table.columns.get_loc(low),
                "95% CI",
                [
                    f"{form.format(a)}\u00a0to\u00a0{form.format(b)}" if pd.notna(a) else "-"
                    for a, b in zip(table[low], table[high])
                ],
            )
            table = table.drop(columns=[low, high])
    shared = {}
    if len(table) > 1:
        for column in [c for c in table.columns if c in DESCRIPTIVE]:
            if table[column].nunique(dropna=False) == 1:
                shared[column] = _cell(column, table.pop(column).iloc[0])
    for column in table.columns:
        table[column] = [_cell(column, value) for value in table[column]]
    table = table.rename(columns=lambda c: SHORT_NAMES.get(c, c))
    # Counts read number first ("5 seeds"), the rest name first ("width 1").
    words = [
        f"{v} {SHORT_NAMES.get(k, k)}" if k in COUNTS else f"{SHORT_NAMES.get(k, k)} {v}" for k, v in shared.items()
    ]
    note = "Every row: " + ", ".join(words) + "." if shared else ""
    return table, note


# One format per quantity: accuracies in per cent, differences in signed points, cost ratios as "1.88x".
ACCURACIES = {tables.ACCURACY, "test_accuracy", "accuracy", "baseline accuracy", "mean", "std", "best"}


def _cell(column, value):
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        if column in ACCURACIES:
            return f"{value:.1%}"
        if column == "delta (points)":
            return f"{value:+.1f}"
        if " ratio" in column:
            return f"{value:.2f}x"
        if "params" in column:
            return f"{value:,.0f}"
        if "flops" in column.lower():
            return f"{value / 1e9:.3g} G" if value >= 1e9 else f"{value / 1e6:.3g} M"
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def markdown(blocks):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            parts.append(content)
        elif kind == "answer":
            parts.append(f"**{content}**")
        elif kind == "note":
            parts.append(f"*{content}*")
        elif kind == "table":
            table, note = display(content)
            parts += ([note] if note else []) + [table.to_markdown(index=False)]
        elif kind == "img":
            parts.append(f"![{content[1]}]({quote(content[0])})")
    return "\n\n".join(parts) + "\n"


def inline_html(text):
    """A paragraph's text as HTML: escaped, with its Markdown links and code spans made HTML, not shown raw."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{quote(m[2])}">{m[1]}</a>', text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def html_page(blocks, title):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{inline_html(content)}</p>")
        elif kind == "answer":
            parts.append(f"<p class='answer'>{inline_html(content)}</p>")
        elif kind == "note":
            parts.append(f"<p class='note'>{inline_html(content)}</p>")
        elif kind == "table":
            table, note = display(content)
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
            parts.append(f"<div class='scroll'>{table.to_html(border=0, classes='table', index=False)}</div>")
        elif kind == "img":
            parts.append(
                f'<figure><img src="{html.escape(quote(content[0]))}" alt="{html.escape(content[1])}">'
                f"<figcaption>{html.escape(content[1])}</figcaption></figure>"
            )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;line-height:1.45}"
        ".scroll{max-width:100%;overflow-x:auto}"
        "table{border-collapse:collapse;font-size:12px;margin:.3em 0}"
        "td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left}"
        "th{background:#f4f4f4}.note{color:#555;font-size:13px;margin-bottom:0}"
        ".answer{font-size:17px;font-weight:600}"
        "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:13px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
