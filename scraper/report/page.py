"""The report's figures (scraper.report.figures) as one self-contained HTML page.

Everything is inline (CSS, SVG); the page has no script and fetches nothing, and its Content-Security-Policy says
so to the browser too. Every text that comes from the corpus (kernel code, model and repository names, reasons,
counter names) is scraped or generated and hostile: it goes through `text()` (control and direction-changing
characters escaped as scraper.cli prints them, then HTML-escaped), so it can only ever be text. Each figure sits
in an element with a `data-figure` key, so that what the page shows can be checked against the files."""

from __future__ import annotations

from html import escape
from typing import Any, Iterable, Optional

from scraper.cli import escape_lines
from scraper.report.svg import histogram_svg
from scraper.validate.api import LEVELS

MARKER = "<!-- written by triton-data report -->"  # a report.html without it is someone else's file
POLICY = "default-src 'none'; style-src 'unsafe-inline'"  # no script, no fetch of any kind
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; } th, td { border: 1px solid #ddd; padding: .2em .6em; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; } .ran { color: #16703a; } .not-run { color: #777; } .incomplete { color: #a36b00; }
.unreadable { color: #b00020; } .notes { background: #fff4e5; border: 1px solid #f0c36d; padding: .5em 1em; }
.grid { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .5em; max-height: 24em; overflow: auto;
      white-space: pre-wrap; word-break: break-all; }
.sample { border-left: 3px solid #ccd; padding-left: 1em; margin: 1em 0 2em; }
svg.histogram rect { fill: #4a78b5; } svg.histogram text { font-size: 10px; text-anchor: middle; fill: #333; }
svg.histogram .axis { stroke: #555; } .muted { color: #777; }
"""


class Cell(str):
    """A table cell already rendered (a `<td>`): every other value given to `table` is escaped as text."""


def text(value: Any) -> str:
    """Any value as page text: None as a dash, control characters escaped, HTML-escaped (quotes too, so that the
    same function serves attributes)."""
    return "\u2014" if value is None else escape(escape_lines(str(value)), quote=True)


def number(value: Any) -> str:
    """A count with thousands separators; other numbers to 4 significant digits; anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def percent(value: Optional[float]) -> str:
    return "\u2014" if value is None else f"{100 * value:.1f}%"


def figure(key: str, value: Any, shown=number) -> Cell:
    """A table cell holding one figure, marked with its key."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return Cell(f'<td data-figure="{text(key)}"{" class=n" if numeric or shown is percent else ""}>{shown(value)}</td>')


def table(headers: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """A table of cells: a `Cell` as it is, any other value escaped as text."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell if isinstance(cell, Cell) else f"<td>{text(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{text(title)}</h2>{''.join(parts)}</section>"


def render(figures: dict) -> str:
    """report.html of the figures."""
    title = f"triton-data report: {figures['report']['corpus']}"
    body = [f"<h1>{text(title)}</h1>",
            f"<p class=muted>triton-data {text(figures['report']['version'])}; every figure below is read from the "
            "corpus's files (report.json holds the same figures).</p>",
            notes(figures["notes"]), stages(figures), sources(figures["sources"]), drops(figures["stages"]),
            pass_rates(figures), levels(figures), histograms(figures), samples(figures["datasets"]),
            counters(figures["stages"])]
    return ("<!DOCTYPE html>\n" + MARKER + "\n<html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f"<title>{text(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def notes(lines: list) -> str:
    if not lines:
        return ""
    items = "".join(f'<li data-figure="note">{text(line)}</li>' for line in lines)
    return ("<div class=notes><strong>Files that could not be read (their figures are left out):</strong>"
            f"<ul>{items}</ul></div>")


def state_cell(key: str, state: str) -> Cell:
    return Cell(f'<td data-figure="{text(key)}" class="state {text(state.replace(" ", "-"))}">{text(state)}</td>')


def stages(figures: dict) -> str:
    build = figures["build"]
    rows = [["build", "the build's plan (triton-data build)", state_cell("stage.build.state", build["state"]),
             build["file"]]]
    rows += [[key, entry["what"], state_cell(f"stage.{key}.state", entry["state"]), entry["file"]]
             for key, entry in figures["stages"].items()]
    parts = [table(["stage", "what", "state", "file"], rows)]
    if build.get("fields"):
        parts.append("<h3>build.json</h3>" + table(["field", "value"], [
            [name, figure(f"build.field.{name}", value, text)] for name, value in build["fields"].items()]))
    if build.get("stages"):
        parts.append("<h3>Stages in build.json</h3>" + table(["stage", "state"], [
            [name, figure(f"build.stage.{name}", state, text)] for name, state in build["stages"].items()]))
    return section("Stages", *parts)


def sources(table_: dict) -> str:
    columns = sorted({column for entry in table_.values() for column in entry}, key=SOURCE_COLUMNS.index)
    if not columns:
        return section("Kernels per source", "<p class=muted>no kernel manifest or dataset was read</p>")
    rows = [[source] + [figure(f"source.{source}.{column}", entry.get(column)) for column in columns]
            for source, entry in table_.items()]
    return section("Kernels per source", table(["source"] + [SOURCE_HEADERS[c] for c in columns], rows))


SOURCE_HEADERS = {"kernels": "stage 1 (kernels/kernels.jsonl)", "generated": "generator (generated/kernels.jsonl)",
                  "dataset_in": "dataset: taken in", "dataset_train": "dataset: train",
                  "dataset_validation": "dataset: validation", "dataset_rows": "rows in triton_functions.json"}
SOURCE_COLUMNS = list(SOURCE_HEADERS)


def drops(entries: dict) -> str:
    dropped = [[key, reason, figure(f"drop.{key}.{reason}", count)]
               for key, entry in entries.items() for reason, count in entry.get("drops", {}).items()]
    errors = [[key, phase, figure(f"error.{key}.{phase}", count)]
              for key, entry in entries.items() for phase, count in entry.get("errors", {}).items()]
    parts = [table(["stage", "reason", "dropped"], dropped) if dropped else "<p class=muted>no drops counted</p>"]
    if errors:
        parts.append("<h3>Errors by phase</h3>" + table(["stage", "phase", "errors"], errors))
    return section("Drops by reason", *parts)


def pass_rates(figures: dict) -> str:
    return section("Pass rates", accuracy(figures["suites"]), pair_check(figures["pairs"]),
                   validation(figures["kernels"]))


def accuracy(suites_: dict) -> str:
    if not suites_:
        return "<h3>Suite models against eager</h3><p class=muted>no suite was run</p>"
    verdicts = ("pass", "fail", "skipped", "not checked")
    rows = [[name, figure(f"suite.{name}.models", s["models"]),
             figure(f"suite.{name}.status", ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())), text),
             figure(f"suite.{name}.failed_by_phase",
                    ", ".join(f"{k} {v}" for k, v in sorted(s["failed_by_phase"].items())) or None, text)]
            + [figure(f"suite.{name}.accuracy.{v}", s["accuracy"][v]) for v in verdicts]
            + [figure(f"suite.{name}.accuracy_rate", s["accuracy_rate"], percent)] for name, s in suites_.items()]
    return ("<h3>Suite models against eager (accuracy)</h3>"
            + table(["suite", "models", "status", "failed at"] + list(verdicts) + ["pass rate"], rows)
            + failures(suites_))


def failures(suites_: dict) -> str:
    rows = [[name, figure(f"suite.{name}.failed.model", f["model"], text), f["status"], f["phase"], f["error"]]
            for name, s in suites_.items() for f in s["failures"]]
    left_out = sum(s["failures_left_out"] for s in suites_.values())
    if not rows:
        return ""
    more = f"<p class=muted>{number(left_out)} more not listed</p>" if left_out else ""
    return "<h3>Models that did not compile</h3>" + table(["suite", "model", "status", "phase", "error"], rows) + more


def pair_check(found: dict) -> str:
    parts = ["<h3>The pair check</h3>"]
    if "verdicts" in found:
        verdicts = found["verdicts"]
        parts.append("<p>Pairs of kernels/pairs.jsonl by their current verdict:</p>" + table(
            ["passed", "failed", "unchecked", "pass rate"],
            [[figure(f"pairs.verdict.{k}", verdicts[k]) for k in ("passed", "failed", "unchecked")]
             + [figure("pairs.pass_rate", found["pass_rate"], percent)]]))
    check = found.get("check")
    if isinstance(check, dict):
        keys = [k for k in ("pairs", "checked", "passed", "failed", "unchecked", "pass_rate", "seconds") if k in check]
        shown = {k: percent if k == "pass_rate" else number for k in keys}
        parts.append("<p>Its last run (kernels/pairs_check.json):</p>" + table(
            keys, [[figure(f"check.{k}", check[k], shown[k]) for k in keys]]))
        if isinstance(check.get("speedup"), dict):
            parts.append(table(["speedup " + k for k in check["speedup"]],
                               [[figure(f"check.speedup.{k}", v) for k, v in check["speedup"].items()]]))
    if len(parts) == 1:
        parts.append("<p class=muted>no pairs.jsonl and no pairs_check.json</p>")
    return "".join(parts)


def validation(manifests: dict) -> str:
    rows = []
    for folder, by_source in manifests.items():
        for source, tally in by_source.items():
            row = [folder, source, figure(f"validation.{folder}.{source}.records", tally["records"])]
            for level in LEVELS:
                checked, passed = tally[level]["checked"], tally[level]["passed"]
                key = f"validation.{folder}.{source}.{level}"
                row += [figure(f"{key}.checked", checked), figure(f"{key}.passed", passed),
                        figure(f"{key}.rate", passed / checked if checked else None, percent)]
            rows.append(row)
    headers = ["kernels.jsonl of", "source", "records"] + [f"{level} {what}" for level in LEVELS
                                                           for what in ("checked", "passed", "rate")]
    return "<h3>Verification (parses, imports, compiles)</h3>" + (
        table(headers, rows) if rows else "<p class=muted>no kernels.jsonl was read</p>")


def levels(figures: dict) -> str:
    found, parts = figures["pairs"], []
    if "by_level" in found:
        parts.append(counts_table("stage 1: kernels/pairs.jsonl", "pairs.level", found["by_level"]))
    if "problems_by_level" in found:
        parts.append(counts_table("stage 1: kernels/problems", "problems.level", found["problems_by_level"]))
    for task, entry in figures["datasets"].items():
        parts.append(counts_table(f"{entry['file']} by {entry['by']}", f"dataset.{task}.by", entry["by_value"]))
        parts.append(counts_table(f"{entry['file']} by split", f"dataset.{task}.split", entry["by_split"]))
    return section("Pairs by level, rows by split", f"<div class=grid>{''.join(parts)}</div>" if parts
                   else "<p class=muted>no pairs, problems or dataset were read</p>")


def counts_table(title: str, key: str, counts: dict) -> str:
    rows = [[name, figure(f"{key}.{name}", count)] for name, count in sorted(counts.items())]
    rows.append(["all", figure(f"{key}.all", sum(counts.values()))])
    return f"<div><h3>{text(title)}</h3>{table(['', 'count'], rows)}</div>"


def histograms(figures: dict) -> str:
    parts = []
    for task, entry in figures["datasets"].items():
        if entry["tokens"]:
            parts.append(f"<h3>Token lengths: {text(entry['file'])} ({number(entry['tokens']['values'])} rows)</h3>"
                         + histogram_svg(entry["tokens"], f"tokens.{task}", "tokens (n_tokens)"))
    speedup = figures["pairs"].get("speedup")
    if speedup:
        parts.append(f"<h3>Speedup over eager of the pairs that passed ({number(speedup['values'])})</h3>"
                     + histogram_svg(speedup, "speedup", "speedup (eager time / Triton time)"))
    return section("Histograms", *(parts or ["<p class=muted>no token lengths or speedups were read</p>"]))


def samples(found: dict) -> str:
    parts = []
    for task, entry in found.items():
        parts.append(f"<h3>{text(entry['file'])}: {len(entry['samples'])} of {number(entry['rows'])} rows</h3>")
        parts += [sample(task, row) for row in entry["samples"]]
    return section("Sample rows", *(parts or ["<p class=muted>no dataset was read</p>"]))


def sample(task: str, row: dict) -> str:
    """One row: its fields, then each of its text columns."""
    fields = table(["field", "value"], [[name, value] for name, value in row["fields"].items()])
    texts = "".join(text_column(column, shown) for column, shown in row["texts"].items())
    marks = f'data-sample="{text(task)}" data-id="{text(row["fields"].get("id"))}"'
    return f"<div class=sample {marks}>{fields}{texts}</div>"


def text_column(column: str, part: dict) -> str:
    """A text column as far as it is shown; a cut one says how many characters are left out."""
    left = part["chars"] - len(part["shown"])
    cut = (f', the first {number(len(part["shown"]))} shown: <span data-figure="sample.more">{left}</span> more'
           if left else "")
    return (f'<p>{text(column)} ({number(part["chars"])} characters{cut})</p>'
            f'<pre data-column="{text(column)}">{text(part["shown"])}</pre>')


def counters(entries: dict) -> str:
    parts = [f"<div><h3>{text(key)}</h3>" + table(["counter", "count"], [
        [name, figure(f"counter.{key}.{name}", value)] for name, value in entry["counts"].items()]) + "</div>"
        for key, entry in entries.items() if entry.get("counts")]
    return section("Every counter of every stage (stats.json)",
                   f"<div class=grid>{''.join(parts)}</div>" if parts else "<p class=muted>no stats.json was read</p>")
