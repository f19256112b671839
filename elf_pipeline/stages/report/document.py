"""The report as a document: headings, paragraphs, bullets and tables, rendered to Markdown
(summary.md) or HTML (summary.html, for ``snakemake --report``)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from elf_pipeline.stages.report.numbers import MISSING


@dataclass
class Table:
    title: str
    frame: pd.DataFrame  # cells already formatted as strings
    note: str = ""
    level: int = 3
    align: tuple[str, ...] | None = None  # Markdown alignment per column (default: all left)

    def markdown(self) -> str:
        return tabulate(self.frame.fillna(MISSING), headers="keys", tablefmt="github", showindex=False,
                        disable_numparse=True, colalign=self.align)

    def html(self) -> str:
        return self.frame.fillna(MISSING).to_html(index=False, escape=True, border=0, classes="results")


@dataclass
class Document:
    """Headings, paragraphs and tables, rendered to Markdown (summary.md) or HTML (summary.html)."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        if text:
            self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", items))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                lines += [f"{'#' * level} {text}", ""]
            elif kind == "paragraph":
                lines += [value, ""]
            elif kind == "bullets":
                lines += [f"- {item}" for item in value] + [""]
            else:
                lines += [f"{'#' * value.level} {value.title}", "", value.markdown(), ""]
                if value.note:
                    lines += [value.note, ""]
        return "\n".join(lines)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                body.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "paragraph":
                body.append(f"<p>{_inline_html(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in value) + "</ul>")
            else:
                body.append(f"<h{value.level}>{html.escape(value.title)}</h{value.level}>")
                body.append(value.html())
                if value.note:
                    body.append(f"<p class='note'>{_inline_html(value.note)}</p>")
        style = ("body{font-family:sans-serif;margin:1.5em;max-width:80em}table.results{border-collapse:collapse;"
                 "margin:.5em 0}table.results td,table.results th{padding:.2em .6em;border-bottom:1px solid #ccc;"
                 "text-align:right;white-space:nowrap}table.results td:first-child,table.results th:first-child"
                 "{text-align:left}p.note{color:#555;font-size:.9em}code{background:#f3f3f3}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline_html(text: str) -> str:
    """Escape, then turn Markdown ``code`` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))

