"""Aggregate reports over the audit chain, with small counts suppressed (R15). Pure.

The threshold comes from the same policy data OPA loads (``policies/accord/jurisdictions``)
with the semantics of ``policies/accord/aggregate/aggregate.rego``: a jurisdiction's threshold
is its override of ``small_count_threshold`` or the default's, and a count ``n`` is suppressed
when ``n < threshold``. A report spans every jurisdiction, so it uses the largest threshold of
any known jurisdiction: no count is shown that any jurisdiction would hide. A suppressed count
is ``null``; a row whose every count is suppressed is left out (its presence alone would say
"at least one").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

Period = Literal["day", "week", "month"]


def threshold(policies: Path, jurisdiction: str | None = None) -> int:
    doc = json.loads((policies / "accord" / "jurisdictions" / "data.json").read_text())
    default = int(doc["default"]["small_count_threshold"])
    overrides: Mapping[str, Mapping[str, Any]] = doc.get("overrides", {})
    values = {j: int(o.get("small_count_threshold", default)) for j, o in overrides.items()}
    if jurisdiction is not None:
        # An unknown jurisdiction suppresses every count (aggregate.rego).
        return values.get(jurisdiction, 2**63)
    return max([default, *values.values()])


def shown(n: int, limit: int) -> int | None:
    return None if n < limit else n


class RuleRow(BaseModel):
    rule: str
    partner_type: str
    releases: int | None
    refusals: int | None


class RulesReport(BaseModel):
    threshold: int
    rows: list[RuleRow]


def rules_report(records: Iterable[Mapping[str, Any]], limit: int) -> RulesReport:
    """Per rule and partner type: decisions that released something where the rule is among
    the reasons and withheld nothing there (releases), and decisions where the rule withheld
    at least one field (refusals)."""
    releases: Counter[tuple[str, str]] = Counter()
    refusals: Counter[tuple[str, str]] = Counter()
    for r in records:
        ptype = str(r.get("partner_type") or "")
        withholding = {rule for w in r.get("withheld") or [] for rule in w.get("rules") or []}
        for rule in withholding:
            refusals[(rule, ptype)] += 1
        if r.get("released"):
            for rule in set(r.get("reasons") or []) - withholding:
                releases[(rule, ptype)] += 1
    rows = []
    for rule, ptype in sorted(set(releases) | set(refusals)):
        row = RuleRow(
            rule=rule,
            partner_type=ptype,
            releases=shown(releases[(rule, ptype)], limit),
            refusals=shown(refusals[(rule, ptype)], limit),
        )
        if row.releases is not None or row.refusals is not None:
            rows.append(row)
    return RulesReport(threshold=limit, rows=rows)


class ConsentRow(BaseModel):
    period: str
    grants: int | None
    amendments: int | None
    revocations: int | None


class ConsentReport(BaseModel):
    threshold: int
    period: Period
    rows: list[ConsentRow]


def period_of(at: datetime, period: Period) -> str:
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    return at.strftime("%Y-%m")


def consent_report(
    changes: Iterable[tuple[datetime, str]], period: Period, limit: int
) -> ConsentReport:
    """Consent grants, amendments and revocations per period, from (time, op) pairs."""
    counts: dict[str, Counter[str]] = {}
    for at, op in changes:
        counts.setdefault(period_of(at, period), Counter())[op] += 1
    rows = []
    for key in sorted(counts):
        c = counts[key]
        row = ConsentRow(
            period=key,
            grants=shown(c["grant"], limit),
            amendments=shown(c["amend"], limit),
            revocations=shown(c["revoke"], limit),
        )
        if row.grants is not None or row.amendments is not None or row.revocations is not None:
            rows.append(row)
    return ConsentReport(threshold=limit, period=period, rows=rows)
