"""Referral figures for compliance, with small counts suppressed (R15). Pure.

Per partner type and jurisdiction: referrals delivered, acknowledged, the median time to
acknowledge, and breaches of each deadline. A count below the threshold is ``null``, and so is
a median over fewer acknowledgements than the threshold (a median of two names two cases); a
row whose every count is suppressed is left out, as in the other reports
(``services/audit/reports.py``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import median

from pydantic import BaseModel

from services.audit.reports import shown


@dataclass(frozen=True)
class Delivered:
    """What the report needs of one delivered referral."""

    partner_type: str
    jurisdiction: str
    delivered_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class Breach:
    partner_type: str
    jurisdiction: str
    kind: str


class ReferralRow(BaseModel):
    partner_type: str
    jurisdiction: str
    delivered: int | None
    acknowledged: int | None
    median_hours_to_acknowledge: float | None
    acknowledge_breaches: int | None
    answer_breaches: int | None
    expiries: int | None


class ReferralReport(BaseModel):
    threshold: int
    rows: list[ReferralRow]


def referral_report(
    delivered: Iterable[Delivered], breaches: Iterable[Breach], limit: int
) -> ReferralReport:
    counts: Counter[tuple[str, str]] = Counter()
    waits: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    for d in delivered:
        key = (d.partner_type, d.jurisdiction)
        counts[key] += 1
        if d.acknowledged_at is not None:
            waits[key].append((d.acknowledged_at - d.delivered_at).total_seconds() / 3600)
    broken: Counter[tuple[str, str, str]] = Counter(
        (b.partner_type, b.jurisdiction, b.kind) for b in breaches
    )
    keys = sorted(set(counts) | {(t, j) for t, j, _ in broken})
    rows = []
    for t, j in keys:
        acked = len(waits[(t, j)])
        row = ReferralRow(
            partner_type=t,
            jurisdiction=j,
            delivered=shown(counts[(t, j)], limit),
            acknowledged=shown(acked, limit),
            median_hours_to_acknowledge=(
                round(median(waits[(t, j)]), 2) if acked >= limit and acked > 0 else None
            ),
            acknowledge_breaches=shown(broken[(t, j, "acknowledge")], limit),
            answer_breaches=shown(broken[(t, j, "answer")], limit),
            expiries=shown(broken[(t, j, "expire")], limit),
        )
        if any(
            v is not None
            for v in (
                row.delivered,
                row.acknowledged,
                row.acknowledge_breaches,
                row.answer_breaches,
                row.expiries,
            )
        ):
            rows.append(row)
    return ReferralReport(threshold=limit, rows=rows)
