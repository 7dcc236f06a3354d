"""Static HTML reports of leaderboards (``untied report``): fully offline pages.

One page per leaderboard (``<out>/<name>/index.html``, its plots beside it in ``plots/``) and an
index (``<out>/index.html``). A page opens with what a reader wants first: the verdicts (counts,
the sign test of the offsets, the inconclusive values) and the fidelity plot (ours against the
paper's value per cell); then, folded, the notes of the leaderboard (protocol, source, verdict
rule, settings); then every table of the terminal/Markdown view (ours beside the paper's
values), the plots, the environment of the runs (versions, threads, device, commit) and the
commands that reproduce them. No script, no external stylesheet, font or image: the pages open
from disk with no network.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

ENVIRONMENT = [("untied_version", "untied-bench"), ("git_commit", "commit"),
               ("torch_version", "torch"), ("python_version", "Python"),
               ("platform", "platform"), ("device", "device"), ("cuda_device", "CUDA device"),
               ("cpu_capability", "CPU kernels (float rounding)"), ("blas", "BLAS"),
               ("cuda_version", "CUDA"), ("cudnn_version", "cuDNN"),
               ("threads", "torch threads per run"), ("group_size", "runs per group"),
               ("stack_size", "runs per stacked computation (1: trained alone)")]

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em;
       color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { background: #f7f7f0; font-weight: 600; }
.reproduced { color: #0a6b2d; } .differs { color: #a4161a; } .inconclusive { color: #9a5b00; }
.note { color: #555; } details { margin: 1em 0; } summary { cursor: pointer; font-weight: 600; }
.verdict-lines li { margin: 0.3em 0; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f5f5f7; padding: 0.8em; overflow-x: auto; }
"""


def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def inline_code(text: str) -> str:
    """Escape ``text``, with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _numeric(text: str) -> bool:
    return text.lstrip("+-−").replace(".", "", 1).replace("e-", "", 1).isdigit()


def html_table(header: list[str], rows: list[list[str]], *, name: str,
               baseline_rows: list[bool] | None = None) -> str:
    """A table with class ``leaderboard`` and ``data-table`` = ``name``."""
    out = [f'<table class="leaderboard" data-table="{escape(name)}">', "<thead><tr>"]
    out += [f"<th>{escape(h)}</th>" for h in header] + ["</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        cls = ' class="baseline"' if baseline_rows and baseline_rows[i] else ""
        cells = []
        for h, cell in zip(header, row):
            kind = "num" if _numeric(cell) else (
                "verdict " + cell.split(" (")[0].replace(" ", "-") if h == "verdict" else "")
            cells.append(f'<td class="{escape(kind.strip())}">{escape(cell)}</td>'
                         if kind else f"<td>{escape(cell)}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def verdict_summary(agg: pl.DataFrame) -> str | None:
    """``R reproduced, D differ, I inconclusive of n paper values`` over the rows with a
    verdict, every metric (None without the column)."""
    if "verdict" not in agg.columns:
        return None
    verdicts = [v for v in agg["verdict"].to_list() if v not in (None, "", "not comparable")]
    if not verdicts:
        return "no comparable paper value"
    counts = Counter(verdicts)
    text = (f"{counts.get('reproduced', 0)} reproduced, {counts.get('differs', 0)} differ, "
            f"{counts.get('inconclusive', 0)} inconclusive of {len(verdicts)} paper values")
    return text + (f" ({counts['no result']} without result)" if counts.get("no result") else "")


def metric_tables(agg: pl.DataFrame, spec: Any, summaries: dict[str, pl.DataFrame]) -> list[str]:
    """The leaderboard's tables (one per metric, then the summaries), as in ``render``."""
    from bench_core.results.leaderboard import constant_axes, display_rows, summary_rows

    out = []
    fixed = constant_axes(agg) if not agg.is_empty() else {}
    if fixed:
        out.append("<p>Same in every cell: " + escape("; ".join(
            f"{k} = {v if isinstance(v, str) else json.dumps(v)}" for k, v in fixed.items()))
            + ".</p>")
    for metric in agg["metric"].unique(maintain_order=True).to_list():
        part = agg.filter(pl.col("metric") == metric)
        direction = getattr(spec, "direction_of", None)
        header, rows = display_rows(part, spec.columns, spec.relative,
                                    {c: direction(c) for c in spec.columns} if direction else None)
        out.append(f"<h3>{escape(metric)}</h3>")
        out.append(html_table(header, rows, name=metric,
                              baseline_rows=part["is_baseline"].to_list()))
    for metric, summary in summaries.items():
        if summary.is_empty():
            continue
        header, rows = summary_rows(summary, list(spec.summary_by))
        out.append(f"<h3>Summary of {escape(metric)}: relative gain over the baseline (%), "
                   f"averaged over the other grid axes</h3>")
        out.append(html_table(header, rows, name=f"summary:{metric}"))
    return out


def environment_rows(records: pl.DataFrame) -> list[list[str]]:
    """``[what, values (runs)]`` for each environment column of the records."""
    rows = []
    for col, label in ENVIRONMENT:
        if col not in records.columns:
            continue
        counts = Counter(str(v) for v in records[col].to_list() if v is not None)
        if counts:
            rows.append([label, "; ".join(f"{v} ({n} runs)" if len(counts) > 1 else v
                                          for v, n in sorted(counts.items(),
                                                             key=lambda kv: (-kv[1], kv[0])))])
    if "plugins_json" in records.columns:
        dists = sorted({d for text in records["plugins_json"].drop_nulls().to_list()
                        for d in json.loads(text).values()})
        if dists:
            rows.append(["plugin distributions", ", ".join(dists)])
    return rows


def reproduce_commands(plan: Any, records: pl.DataFrame) -> list[str]:
    """The commands that rerun a plan and rebuild its report."""
    ref = plan.spec_ref or plan.name
    prof = f" --profile {plan.profile}" if plan.profile != "default" else ""
    default_seeds = plan.spec.profiles[plan.profile].seeds if plan.profile in plan.spec.profiles \
        else None
    default_seeds = plan.spec.seeds if default_seeds is None else default_seeds
    n_seeds = default_seeds if isinstance(default_seeds, int) else len(default_seeds)
    seeds = f" --seeds {len(plan.seeds)}" if len(plan.seeds) != n_seeds else ""
    threads = set(records["threads"].drop_nulls().to_list()) if "threads" in records.columns \
        else set()
    thr = f" --threads {threads.pop()}" if len(threads) == 1 else ""
    recorded = set(records["git_commit"].drop_nulls().to_list()) \
        if "git_commit" in records.columns else set()
    commits = {c.removesuffix("+dirty") for c in recorded}
    dirty = "   # the runs had uncommitted changes" if any(c.endswith("+dirty") for c in recorded) \
        else ""
    lines = [f"git checkout {commits.pop()}{dirty}"] if len(commits) == 1 else []
    return lines + ["make env",
                    f"untied run {ref}{prof}{seeds}{thr}      # resumes: runs only what is missing",
                    f"untied report {ref}{prof}{seeds} --output report"]


def verdict_lines(plan: Any, agg: pl.DataFrame) -> dict[str, list[str]]:
    """The summary lines of each metric's verdicts (counts, sign test, inconclusive values,
    reversed orders), as the Markdown tables give them."""
    from bench_core.results.stability import chaos_lines
    from bench_core.results.verdicts import summary_lines

    spec = plan.spec
    lines = (summary_lines(agg, spec.tolerance.absolute, profile=plan.profile,
                           comparable=getattr(plan, "comparable", True))
             if spec.reference else {})
    for metric in agg["metric"].unique(maintain_order=True).to_list():
        lines.setdefault(metric, []).extend(chaos_lines(agg, metric))
    return {m: ls for m, ls in lines.items() if ls}


def _figure(plot: Any, plot_dir: str) -> str | None:
    png = next((f for f in plot.files if f.suffix == ".png"), None)
    svg = next((f for f in plot.files if f.suffix == ".svg"), None)
    if png is None:
        return None
    link = f' (<a href="{plot_dir}/{escape(svg.name)}">SVG</a>)' if svg else ""
    return (f'<figure><img src="{plot_dir}/{escape(png.name)}" alt="{escape(plot.caption)}">'
            f"<figcaption>{escape(plot.caption)}{link}</figcaption></figure>")


def leaderboard_page(plan: Any, agg: pl.DataFrame, summaries: dict[str, pl.DataFrame],
                     records: pl.DataFrame, plots: list[Any], notes: list[str],
                     commands: list[str], plot_dir: str = "plots") -> str:
    """A leaderboard's page. What a reader sees first: the verdicts (counts, sign test,
    inconclusive values) and the fidelity plot (ours against the paper's values); then the
    protocol, source and settings, folded; then the tables, the plots, the environment of the
    runs and the commands that reproduce them."""
    spec = plan.spec
    body = [f"<h1>{escape(spec.title)}</h1>",
            f'<p class="note">Leaderboard <code>{escape(plan.name)}</code>, profile '
            f'<code>{escape(plan.profile)}</code>. <a href="../index.html">All reports</a></p>']
    verdict = verdict_summary(agg)
    if verdict:
        body.append(f'<p class="verdict-summary"><strong>{escape(verdict)}</strong></p>')
    lines = verdict_lines(plan, agg)
    if lines:
        body.append('<ul class="verdict-lines">')
        for metric, items in lines.items():
            body += [f"<li>{inline_code(item.replace('**', ''))}</li>" for item in items]
        body.append("</ul>")
    fidelity = [p for p in plots if p.name.startswith("fidelity-")]
    body += [html for html in (_figure(p, plot_dir) for p in fidelity) if html]
    body.append("<details><summary>Protocol, source, verdict rule and run settings</summary>")
    if spec.description.strip():
        body.append(f"<p>{escape(spec.description.strip())}</p>")
    body += ["<ul>"] + [f"<li>{inline_code(n)}</li>" for n in notes] + ["</ul>", "</details>"]
    body += ["<h2>Tables</h2>", *metric_tables(agg, spec, summaries)]
    others = [p for p in plots if not p.name.startswith("fidelity-")]
    if others:
        body.append("<h2>Plots</h2>")
    body += [html for html in (_figure(p, plot_dir) for p in others) if html]
    body += ["<h2>Environment of the runs</h2>",
             html_table(["", "value"], environment_rows(records), name="environment"),
             "<h2>Reproduce</h2>",
             "<p>From a clone of untied-bench at the commit above, with its environment "
             "(<code>make env</code>):</p>",
             "<pre>" + escape("\n".join(commands)) + "</pre>"]
    return page(f"{spec.title} [{plan.profile}]", body)


def index_page(entries: list[dict[str, str]]) -> str:
    """The index: one row per leaderboard report (keys ``href``, ``title``, ``name``,
    ``profile``, ``runs``, ``verdict``)."""
    header = ["leaderboard", "name", "profile", "runs recorded", "verdict"]
    rows = []
    for e in entries:
        link = (f'<a href="{escape(e["href"])}">{escape(e["title"])}</a>' if e.get("href")
                else escape(e["title"]))
        rows.append("<tr>" + f"<td>{link}</td>" + "".join(
            f"<td>{escape(e.get(k) or '')}</td>" for k in ("name", "profile", "runs", "verdict"))
            + "</tr>")
    body = ["<h1>untied-bench leaderboard reports</h1>",
            '<table class="leaderboard" data-table="index"><thead><tr>' +
            "".join(f"<th>{h}</th>" for h in header) + "</tr></thead><tbody>",
            *rows, "</tbody></table>"]
    return page("untied-bench leaderboard reports", body)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
