"""``canary results`` as test cases: one per (cell, probe, metric), and as JUnit XML.

A case counts its rows (runs of that probe on that cell, for that metric) and its failures,
and keeps the latest failing row as evidence. It fails when its failure rate exceeds the
allowed rate (0 by default: any failure). JUnit XML has one ``<testsuite>`` per cell and one
``<testcase>`` per case (``classname`` the cell, ``name`` "probe: metric", ``time`` the mean
latency in seconds); a failing case carries a ``<failure>`` whose message gives the counts and
whose text gives the evidence: when, which probe version, the reason or score detail, and the
answer, cut to a readable length. Pure: rows in, cases and text out.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import regex

from canary.storage.exports import AVAILABILITY, ResultRow

SAMPLE_CHARS = 500  # of a failing answer in a JUnit failure: enough to see it, short enough to scan
DETAIL_CHARS = 800
# XML 1.0 allows neither control characters (but tab and newlines) nor lone surrogates; a
# corrupted answer may hold any of them, and one would make the whole report unparseable.
_NOT_XML = regex.compile(r"[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def xml_safe(text: str) -> str:
    return str(_NOT_XML.sub("\ufffd", text))


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Case:
    """One (cell, probe, metric): how many rows, how many failed, and the latest failure."""

    cell: str
    probe: str
    metric: str
    n: int = 0
    failures: int = 0
    latency_ms: float = 0.0
    first_failure: datetime | None = None
    sample: ResultRow | None = None  # the latest failing row
    versions: set[int] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, row: ResultRow) -> None:
        self.n += 1
        self.latency_ms += row.latency_ms
        self.versions.add(row.version)
        if not row.passed:
            self.failures += 1
            self.first_failure = self.first_failure or row.started_at
            self.sample = row
            if row.reason:
                self.reasons[row.reason] += 1

    @property
    def rate(self) -> float:
        return self.failures / self.n if self.n else 0.0

    def failed(self, max_failure_rate: float = 0.0) -> bool:
        return self.failures > 0 and self.rate > max_failure_rate

    def message(self) -> str:
        """The counts in one line: ``12/120 runs failed (10.0%)``."""
        return f"{self.failures}/{self.n} runs failed ({self.rate:.1%})"

    def evidence(self) -> str:
        """What a reader needs to see the failure: when, where, why and an example."""
        lines = [f"{self.cell} {self.probe} {self.metric}: {self.message()}"]
        versions = ", ".join(str(v) for v in sorted(self.versions))
        if self.sample is not None and self.first_failure is not None:
            lines.append(
                f"failing from {self.first_failure.isoformat()} to {self.sample.started_at.isoformat()}"
                f" (probe versions {versions})"
            )
            if self.reasons:
                lines.append("reasons: " + ", ".join(f"{r} {k}" for r, k in self.reasons.most_common()))
            lines.append(f"latest failing run {self.sample.run_id} at {self.sample.started_at.isoformat()}:")
            if self.sample.error:
                lines.append(f"  error: {cut(self.sample.error, DETAIL_CHARS)}")
            if self.sample.detail:
                detail = json.dumps(self.sample.detail, ensure_ascii=False, default=str)
                lines.append(f"  detail: {cut(detail, DETAIL_CHARS)}")
            if self.sample.output is not None:
                lines.append(f"  output: {cut(self.sample.output, SAMPLE_CHARS)!r}")
        return xml_safe("\n".join(lines))


def build_cases(rows: Iterable[ResultRow]) -> list[Case]:
    """Rows grouped into cases, sorted by cell, probe and metric (availability first)."""
    cases: dict[tuple[str, str, str], Case] = {}
    for row in rows:
        add_row(cases, row)
    return sorted_cases(cases)


def add_row(cases: dict[tuple[str, str, str], Case], row: ResultRow) -> None:
    """Count ``row`` in its case, creating the case on its first row."""
    key = (row.cell, row.probe, row.metric)
    case = cases.get(key)
    if case is None:
        case = cases[key] = Case(row.cell, row.probe, row.metric)
    case.add(row)


def sorted_cases(cases: dict[tuple[str, str, str], Case]) -> list[Case]:
    """By cell, probe and metric, each probe's availability first."""
    return sorted(cases.values(), key=lambda c: (c.cell, c.probe, c.metric != AVAILABILITY, c.metric))


def junit_xml(cases: list[Case], *, since: datetime, until: datetime, max_failure_rate: float = 0.0) -> str:
    """The cases as JUnit XML: a ``<testsuite>`` per cell, a ``<testcase>`` per case."""
    failing = sum(c.failed(max_failure_rate) for c in cases)
    root = ET.Element(
        "testsuites",
        name="canary results",
        tests=str(len(cases)),
        failures=str(failing),
        errors="0",
        timestamp=until.isoformat(),
    )
    by_cell: dict[str, list[Case]] = {}
    for case in cases:
        by_cell.setdefault(case.cell, []).append(case)
    for cell, own in by_cell.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=xml_safe(cell),
            tests=str(len(own)),
            failures=str(sum(c.failed(max_failure_rate) for c in own)),
            errors="0",
            skipped="0",
            timestamp=since.isoformat(),
        )
        properties = ET.SubElement(suite, "properties")
        for name, value in (("since", since.isoformat()), ("until", until.isoformat())):
            ET.SubElement(properties, "property", name=name, value=value)
        for case in own:
            mean_s = case.latency_ms / case.n / 1000.0 if case.n else 0.0
            testcase = ET.SubElement(
                suite, "testcase", classname=xml_safe(cell), name=xml_safe(f"{case.probe}: {case.metric}"),
                time=f"{mean_s:.3f}",
            )  # fmt: skip
            if case.failed(max_failure_rate):
                failure = ET.SubElement(
                    testcase, "failure", message=case.message(), type=xml_safe(case.metric)
                )
                failure.text = case.evidence()
            else:
                ET.SubElement(
                    testcase, "system-out"
                ).text = f"{case.message()}; allowed {max_failure_rate:.1%}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
