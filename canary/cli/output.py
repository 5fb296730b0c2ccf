"""Tables where people and CI read them: a terminal, a pipe, a CI log.

On a terminal rich fits a table to the window. Anywhere else it would assume 80 columns and cut
names to ``answer…`` or wrap every cell over three lines, so there a table is printed at its
natural width instead (:func:`console_for_output`): every metric name and note whole.
``--format plain`` prints tab-separated lines (a header, then one line per row; markup removed)
for ``grep`` and ``awk``, and ``--format json`` the command's data as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

OutputFormat = Literal["table", "plain", "json"]
FORMATS: tuple[OutputFormat, ...] = ("table", "plain", "json")
F = TypeVar("F", bound=Callable[..., Any])


def format_option(what: str = "the table") -> Callable[[F], F]:
    """``--format table|plain|json`` for a command that prints ``what``."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help=f"How to print {what}: a table (full width when not a terminal), "
        "plain tab-separated lines, or JSON.",
    )


UNBOUNDED_WIDTH = 100_000
"""The console width off a terminal: a table takes its natural width and no line wraps."""


def console_for_output(stderr: bool = False) -> Console:
    """A console for a command's output: fitted to a terminal, or unbounded anywhere else.

    rich assumes 80 columns when stdout is not a terminal (a CI log, a pipe) and squeezes tables
    to fit; at an unbounded width a table is exactly as wide as its cells, so nothing is cut.
    """
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=UNBOUNDED_WIDTH)


def plain_lines(table: Table) -> list[str]:
    """The table as tab-separated lines, header first: markup removed, tabs and newlines as spaces."""

    def text(value: Any) -> str:
        plain = value.plain if isinstance(value, Text) else Text.from_markup(str(value)).plain
        return plain.replace("\t", " ").replace("\n", " ")

    header = [text(c.header) for c in table.columns]
    rows = zip(*(list(c.cells) for c in table.columns), strict=True)
    return ["\t".join(line) for line in (header, *([text(v) for v in row] for row in rows))]


def emit(output_format: OutputFormat, table: Table, data: Any, console: Console | None = None) -> None:
    """Print ``table`` (on :func:`console_for_output` by default), its rows as plain lines, or
    ``data`` as JSON."""
    if output_format == "json":
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    elif output_format == "plain":
        for line in plain_lines(table):
            click.echo(line)
    else:
        (console or console_for_output()).print(table)
