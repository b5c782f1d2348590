"""Figure, markdown and HTML report of a benchmark folder, from results.csv and settings.json alone.

figure.png follows the paper's Fig. 3: Dice and HD95 against % labelled, mean ± std over seeds per
strategy, the full-label upper bound as a horizontal line.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

from coldseg.bench.results import FULL, atomic_write_text, fmt_ratio, read_results, read_settings
from coldseg.bench.stats import (BASELINE, METRICS, PairedDiff, Summary, headroom_differences, paired_differences,
                                  strategy_order, summarize)
from coldseg.io.atomic import atomic_write

FIGURE, REPORT_MD, REPORT_HTML = "figure.png", "report.md", "report.html"
_LABEL = {"dice": "Dice (higher is better)", "hd95": "HD95 in px (lower is better)"}
_HEADROOM = f"headroom: {FULL} − {BASELINE}"
_HEADROOM_NOTE = (f" The row '{_HEADROOM}' is the full-label runs against {BASELINE}: what a strategy would "
                  "gain if it reached full-label quality.")


def write_report(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Render figure.png, report.md and report.html in ``out_dir``; return their paths."""
    out = Path(out_dir)
    rows = read_results(out)
    if not rows:
        raise FileNotFoundError(f"{out / 'results.csv'} is missing or holds no runs; run `coldseg benchmark` first")
    record = read_settings(out) or {}
    summ, diffs = summarize(rows), paired_differences(rows) + headroom_differences(rows)
    plot_figure(summ, out / FIGURE, title=", ".join(sorted({r["dataset"] for r in rows})))
    atomic_write_text(out / REPORT_MD, render_markdown(rows, summ, diffs, record))
    atomic_write_text(out / REPORT_HTML, render_html(rows, summ, diffs, record))
    return {"figure": out / FIGURE, "markdown": out / REPORT_MD, "html": out / REPORT_HTML}


def plot_figure(summ: list[Summary], path: str | os.PathLike, *, title: str = "") -> None:
    """Two panels (Dice, HD95) vs % labelled: mean with ±std error bars per strategy; the upper bound as a
    dotted line with a grey ±std band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    strategies = sorted({s.strategy for s in summ} - {FULL}, key=strategy_order)
    # one legend under both panels, so long names (e.g. "ca-typical[beta=1;...]") never cover the data
    ncols = 2 if max((len(s) for s in strategies), default=0) > 40 else 5
    legend_rows = math.ceil((len(strategies) + 1) / ncols)
    fig = Figure(figsize=(11, 4.2 + 0.25 * legend_rows), layout="constrained")
    FigureCanvasAgg(fig)
    ratios = sorted({s.ratio for s in summ if s.strategy != FULL})
    span = (ratios[-1] - ratios[0]) if len(ratios) > 1 else 1.0
    dodge = 0.008 * span                     # error bars of strategies side by side, not on top
    for k, metric in enumerate(METRICS):
        ax = fig.add_subplot(1, 2, k + 1)
        for i, strat in enumerate(strategies):
            pts = sorted((s for s in summ if s.strategy == strat and s.metric == metric), key=lambda s: s.ratio)
            pts = [s for s in pts if math.isfinite(s.mean)]
            if not pts:
                continue
            x = [s.ratio + (i - (len(strategies) - 1) / 2) * dodge for s in pts]
            y = [s.mean for s in pts]
            sd = [s.std if math.isfinite(s.std) else 0.0 for s in pts]
            style = dict(color="black", ls="--") if strat == BASELINE else dict(color=f"C{(i - 1) % 10}")
            ax.errorbar(x, y, yerr=sd, marker="o", ms=4, capsize=3, lw=1.5, elinewidth=1, label=strat, **style)
        full = [s for s in summ if s.strategy == FULL and s.metric == metric and math.isfinite(s.mean)]
        if full:
            f = full[0]
            ax.axhline(f.mean, color="grey", ls=":", lw=1.5, label=f"all labels ({f.mean:.3f})")
            if math.isfinite(f.std):
                ax.axhspan(f.mean - f.std, f.mean + f.std, color="grey", alpha=0.12, lw=0)
        ax.set_xlabel("% of the pool labelled")
        ax.set_ylabel(_LABEL[metric])
        ax.grid(alpha=0.3)
        if k == 0:
            handles, labels = ax.get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120), suffix=".png")


def _num(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else "–"


def _cell(s: Summary | None, digits: int) -> str:
    if s is None or s.n == 0:
        return "–"
    txt = _num(s.mean, digits) + (f" ± {_num(s.std, digits)}" if math.isfinite(s.std) else "")
    return txt + (f" ({s.n}/{s.n_runs})" if s.n != s.n_runs else "")


def _diff_cell(d: PairedDiff | None, digits: int) -> str:
    if d is None or d.n == 0:
        return "–"
    sign = "+" if d.mean >= 0 else ""
    if math.isfinite(d.lo):
        return f"{sign}{d.mean:.{digits}f} [{d.lo:.{digits}f}, {d.hi:.{digits}f}] n={d.n}"
    return f"{sign}{d.mean:.{digits}f} (n={d.n})"


def tables(rows: list[dict[str, Any]], summ: list[Summary], diffs: list[PairedDiff]) -> list[dict[str, Any]]:
    """The report's tables as {title, note, header, body} (plain strings), shared by md and html."""
    strategies = sorted({s.strategy for s in summ}, key=strategy_order)
    ratios = sorted({s.ratio for s in summ if s.strategy != FULL})
    cell = {(s.strategy, s.ratio, s.metric): s for s in summ}
    n_lab = {r: next((s.n_labeled for s in summ if s.ratio == r), 0) for r in ratios}
    out = []
    for metric, digits in (("dice", 4), ("hd95", 2)):
        header = ["strategy"] + [f"{fmt_ratio(r)}% (n={n_lab[r]})" for r in ratios]
        body = []
        for st in strategies:
            if st == FULL:
                fulls = [s for s in summ if s.strategy == FULL and s.metric == metric]
                body.append([f"{FULL} (100%, n={fulls[0].n_labeled})", _cell(fulls[0], digits)]
                            + [""] * (len(ratios) - 1))
            else:
                body.append([st] + [_cell(cell.get((st, r, metric)), digits) for r in ratios])
        out.append({"title": f"{metric.upper() if metric == 'hd95' else 'Dice'}: mean ± std over seeds",
                    "note": _LABEL[metric] + "; (k/n) = k of n runs had a finite value.",
                    "header": header, "body": body})
    dcell = {(d.strategy, d.ratio, d.metric): d for d in diffs}
    dstrats = sorted({d.strategy for d in diffs}, key=strategy_order)
    dratios = sorted({d.ratio for d in diffs})
    for metric, digits in (("dice", 4), ("hd95", 2)):
        body = [[_HEADROOM if st == FULL else st] + [_diff_cell(dcell.get((st, r, metric)), digits) for r in dratios]
                for st in dstrats]
        better = "positive" if metric == "dice" else "negative"
        out.append({"title": f"{metric.upper() if metric == 'hd95' else 'Dice'}: paired difference to {BASELINE}",
                    "note": f"mean of (strategy − {BASELINE}) over matched seeds, [95% t-interval]; "
                            f"{better} is better. An interval that excludes 0 is a difference the seeds "
                            "resolve." + (_HEADROOM_NOTE if FULL in dstrats else ""),
                    "header": ["strategy"] + [f"{fmt_ratio(r)}%" for r in dratios], "body": body})
    return out


def _settings_lines(record: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    settings = record.get("settings", {})
    items = [(k, str(v)) for k, v in sorted(settings.items())]
    devices = sorted({r["device"] for r in rows})
    secs = sum(r["train_seconds"] for r in rows)
    items += [("runs", str(len(rows))), ("devices", ", ".join(devices)),
              ("training seconds (sum over runs)", f"{secs:.0f}")]
    commands = []
    for sess in record.get("sessions", []):
        facts = [f"started {sess['started']}"] if sess.get("started") else []
        if sess.get("wall_seconds") is not None:
            facts.append(f"wall time {sess['wall_seconds']:.0f} s")
        if sess.get("new_runs") is not None:
            facts.append(f"{sess['new_runs']} new run(s), {sess.get('skipped_runs', 0)} skipped")
        if sess.get("device"):
            facts.append(f"device {sess['device']}")
        commands.append(f"{sess.get('command', '?')}\n    # " + "; ".join(facts) if facts else sess.get("command", "?"))
    return items, commands


def render_markdown(rows, summ, diffs, record) -> str:
    items, commands = _settings_lines(record, rows)
    parts = [f"# Benchmark: {', '.join(sorted({r['dataset'] for r in rows}))}", "",
             f"![Dice and HD95 vs % labelled]({FIGURE})", ""]
    for t in tables(rows, summ, diffs):
        parts += [f"## {t['title']}", "", t["note"], "",
                  "| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
        parts += ["| " + " | ".join(r) + " |" for r in t["body"]]
        parts.append("")
    parts += ["## Settings", ""] + [f"- {k}: `{v}`" for k, v in items] + [""]
    if commands:
        parts += ["## Command(s)", "", "```"] + commands + ["```", ""]
    return "\n".join(parts)


def render_html(rows, summ, diffs, record) -> str:
    e = html.escape
    items, commands = _settings_lines(record, rows)
    title = f"Benchmark: {', '.join(sorted({r['dataset'] for r in rows}))}"
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "pre{background:#f4f4f4;padding:8px;overflow-x:auto}</style></head><body>",
             f"<h1>{e(title)}</h1>", f'<img src="{FIGURE}" alt="Dice and HD95 vs % labelled" style="max-width:100%">']
    for t in tables(rows, summ, diffs):
        parts += [f"<h2>{e(t['title'])}</h2>", f"<p>{e(t['note'])}</p>", "<table>",
                  "<tr>" + "".join(f"<th>{e(h)}</th>" for h in t["header"]) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t["body"]]
        parts.append("</table>")
    parts += ["<h2>Settings</h2>", "<ul>"] + [f"<li>{e(k)}: <code>{e(v)}</code></li>" for k, v in items] + ["</ul>"]
    if commands:
        parts += ["<h2>Command(s)</h2>", "<pre>" + e("\n".join(commands)) + "</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
