"""Render diagnose reports as a plain listing for people or as JSON for monitoring."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .result import CheckResult
from .run import HostReport, exit_code

LABELS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
WHERE = {
    "local": "fix (here)",
    "server": "fix (on the server)",
    "dns": "fix (at the DNS provider)",
    "": "fix",
}
SCHEMA_VERSION = 1


def _summary(report: HostReport) -> str:
    counts = report.counts()
    parts = [f"{counts['fail']} failed", f"{counts['warn']} warnings", f"{counts['ok']} ok"]
    if counts["skip"]:
        parts.append(f"{counts['skip']} skipped")
    return ", ".join(parts)


def _result_lines(result: CheckResult, width: int) -> list[str]:
    evidence = result.evidence
    if result.after:
        evidence += f" (follows from {', '.join(result.after)})"
    lines = [f"  {LABELS[result.status]:<4}  {result.name:<{width}}  {evidence}"]
    indent = " " * (width + 10)
    if result.status in ("fail", "warn"):
        if result.cause:
            lines.append(f"{indent}cause: {result.cause}")
        if result.fix:
            lines.append(f"{indent}{WHERE[result.where]}: {result.fix}")
    return lines


def render_text(reports: Sequence[HostReport], warn_fails: bool = False) -> str:
    """Return one block per host (every check, with cause and fix under each problem)."""
    width = max((len(r.name) for report in reports for r in report.results), default=10)
    blocks = []
    for report in reports:
        lines = [f"{report.name} ({report.address}): {_summary(report)}"]
        for result in report.results:
            lines.extend(_result_lines(result, width))
        blocks.append("\n".join(lines))
    failing = [report.name for report in reports if report.status == "fail"]
    warning = [report.name for report in reports if report.status == "warn"]
    if failing:
        verdict = f"problems on {', '.join(failing)}"
    elif warning:
        verdict = f"warnings on {', '.join(warning)}" + (" (counted as failures)" * warn_fails)
    else:
        verdict = "all checks passed"
    noun = "host" if len(reports) == 1 else "hosts"
    blocks.append(f"diagnose: {len(reports)} {noun}, {verdict}")
    return "\n\n".join(blocks)


def render_json(reports: Sequence[HostReport], warn_fails: bool = False) -> str:
    """Return the reports as one JSON document; `exit_code` is what the task exits with."""
    document = {
        "schema": SCHEMA_VERSION,
        "exit_code": exit_code(reports, warn_fails),
        "warn_fails": warn_fails,
        "hosts": [
            {
                "name": report.name,
                "address": report.address,
                "status": report.status,
                "counts": report.counts(),
                "elapsed_seconds": round(report.elapsed, 3),
                "checks": [result.to_json() for result in report.results],
            }
            for report in reports
        ],
    }
    return json.dumps(document, indent=2)
