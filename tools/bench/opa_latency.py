"""Decision latency through the real OPA server, as the relay asks it.

Inputs are built by the relay's own ``build_input`` from a deterministic mix of events (every
event type, the internal-only one included; adults, minors and unknown ages; two jurisdictions)
and recipients (several partner types and purposes), with consents that permit, deny, name a
partner type, are revoked or were recorded by a (possibly suspect) guardian, and now and then a
declaration or a court order. Each request goes through ``OpaPolicy.decide`` (rule
``accord/decision/batch``), the relay's only call: a single decision is a batch of one.

    accord bench opa --decisions 500 --batches 50
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services import policy_data
from services.broker.pipeline.decide import OpaPolicy, build_input, parse_decision
from services.broker.pipeline.model import JSON, Agreement, InboundEvent, Recipient, SurvivorFacts
from services.settings import Settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
AGENCIES = (("harbor-outreach", "state-a"), ("valley-school", "state-b"))
ORDINARY = ["identity", "contact", "demographics", "service_need", "case_status", "location"]
# partner id, type, purpose, categories its agreement covers
PARTNERS: tuple[tuple[str, str, str, list[str]], ...] = (
    ("lighthouse-shelter", "shelter", "service_referral", ORDINARY),
    ("hope-victim-services", "victim_services", "safety_planning", [*ORDINARY, "victimization"]),
    ("northside-clinic", "health", "care_coordination", [*ORDINARY, "health", "hiv_sti"]),
    ("metro-police", "law_enforcement", "investigation", [*ORDINARY, "victimization"]),
    ("county-cps", "child_welfare", "mandated_report", [*ORDINARY, "victimization"]),
    ("city-ems", "emergency_services", "emergency_response", ORDINARY),
    ("valley-housing", "housing", "service_referral", [*ORDINARY, "criminal_history"]),
    ("legal-aid-west", "legal_aid", "court_proceeding", [*ORDINARY, "immigration", "court"]),
)


@dataclass(frozen=True)
class Summary:
    """Latency of ``requests`` requests of ``size`` decisions each, in seconds."""

    requests: int
    size: int
    total_s: float
    p50_s: float
    p95_s: float
    p99_s: float

    @property
    def decisions_per_s(self) -> float:
        return self.requests * self.size / self.total_s

    @property
    def per_decision_s(self) -> float:
        """Amortised: the median request's time shared by its decisions."""
        return self.p50_s / self.size


def summarise(samples: Sequence[float], *, size: int) -> Summary:
    """Percentiles (inclusive method) and throughput of request latencies."""
    if len(samples) < 2:
        raise ValueError("need at least two samples")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Summary(len(samples), size, sum(samples), cuts[49], cuts[94], cuts[98])


def _consents(rng: random.Random, partner_type: str) -> list[JSON]:
    def provision(kind: str, types: list[str], categories: list[str]) -> JSON:
        return {
            "type": kind,
            "recipients": {"partners": [], "partner_types": types},
            "purposes": ["*"],
            "categories": categories,
            "period": {"start": "2026-01-01T00:00:00Z", "end": None},
        }

    def consent(n: int, status: str, role: str, provisions: list[JSON]) -> JSON:
        recorded = {"role": role, "suspect": role == "guardian" and rng.random() < 0.5}
        return {
            "id": f"c-{n}",
            "version": rng.randint(1, 4),
            "status": status,
            "recorded_by": recorded,
            "provisions": provisions,
        }

    services = ["shelter", "victim_services", "health", "legal_aid", "housing"]
    pool = [
        consent(1, "active", "self", [provision("permit", services, ["*"])]),
        consent(2, "active", "self", [provision("permit", ["health"], ["health", "hiv_sti"])]),
        consent(3, "active", "self", [provision("deny", ["*"], ["health"])]),
        consent(
            4, "active", "self", [provision("permit", [partner_type], ["identity", "contact"])]
        ),
        consent(5, "revoked", "self", [provision("permit", ["*"], ["*"])]),
        consent(6, "active", "guardian", [provision("permit", services, ["*"])]),
    ]
    return rng.sample(pool, rng.randint(0, 3))


def _recipient(partner: tuple[str, str, str, list[str]], jurisdiction: str) -> Recipient:
    partner_id, partner_type, purpose, categories = partner
    agreement = Agreement(
        f"mou-{partner_id}",
        (purpose,),
        tuple(categories),
        NOW - timedelta(days=300),
        NOW + timedelta(days=400),
    )
    return Recipient(
        partner_id,
        partner_type,
        purpose,
        jurisdiction,
        "active",
        True,
        False,
        NOW + timedelta(days=180),
        (agreement,),
    )


def build_items(n: int, settings: Settings, *, seed: int = 7) -> list[JSON]:
    """``n`` realistic, deterministic policy inputs (field names only, as the relay sends)."""
    rng = random.Random(seed)  # noqa: S311 - a benchmark mix, not a secret
    classification = policy_data.classification(settings.policies_dir)
    types = sorted(classification)
    items = []
    for i in range(n):
        event_type = rng.choice(types)
        agency, jurisdiction = rng.choice(AGENCIES)
        fields = list(classification[event_type]) + (["nickname"] if rng.random() < 0.2 else [])
        event = InboundEvent(
            f"evt-{i}",
            event_type,
            agency,
            f"sv-{rng.randrange(50)}",
            NOW - timedelta(minutes=1),
            dict.fromkeys(fields),
            rng.choice([34, 27, 19, 16, 15, None]),
        )
        partner = rng.choice(PARTNERS)
        declarations = (
            [
                {
                    "id": "d-1",
                    "kind": "imminent_danger",
                    "agency": agency,
                    "declared_at": "2026-11-24T06:00:00Z",
                    "ended_at": None,
                }
            ]
            if rng.random() < 0.1
            else []
        )
        court_orders = (
            [
                {
                    "id": "o-1",
                    "recipient": partner[0],
                    "fields": fields[:3],
                    "expires_at": "2027-01-01T00:00:00Z",
                }
            ]
            if rng.random() < 0.05
            else []
        )
        items.append(
            build_input(
                event,
                _recipient(partner, jurisdiction),
                jurisdiction=jurisdiction,
                facts=SurvivorFacts(
                    tuple(_consents(rng, partner[1])), tuple(declarations), tuple(court_orders)
                ),
                now=NOW,
            )
        )
    return items


async def _timed(policy: OpaPolicy, requests: Sequence[Sequence[JSON]]) -> list[float]:
    samples = []
    for items in requests:
        start = time.perf_counter()
        answers = await policy.decide(items)
        samples.append(time.perf_counter() - start)
        if None in answers:
            raise RuntimeError("OPA answered without a decision for some item")
    return samples


async def measure(
    settings: Settings, *, decisions: int, batches: int, batch_size: int, warmup: int
) -> tuple[Summary, Summary, Counter[str], int]:
    """Single-decision and batch summaries, the bases decided and the number of inputs."""
    items = build_items(max(decisions, batch_size), settings)
    timeout = max(settings.opa_timeout_s, 30.0)
    async with OpaPolicy(settings.opa_base_url, timeout_s=timeout) as policy:
        mix: Counter[str] = Counter()
        for item, raw in zip(items, await policy.decide(items), strict=True):
            decision = parse_decision(raw, event_fields=item["event"]["fields"])
            mix.update(decision.basis or ["nothing released"])
        await _timed(policy, [[items[i % len(items)]] for i in range(warmup)])
        await _timed(policy, [items[:batch_size]] * max(1, warmup // 10))
        single = await _timed(policy, [[item] for item in items[:decisions]])
        batch = [
            [items[(b * batch_size + k) % len(items)] for k in range(batch_size)]
            for b in range(batches)
        ]
        batched = await _timed(policy, batch)
    return summarise(single, size=1), summarise(batched, size=batch_size), mix, len(items)


def report(single: Summary, batched: Summary, mix: Counter[str], inputs: int) -> list[str]:
    def ms(s: float) -> str:
        return f"{s * 1000:8.2f}"

    head = f"{'':<22}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    lines = [head + f"{'ms/decision':>13}{'decisions/s':>13}"]
    for name, s in (("single decision", single), (f"batch of {batched.size}", batched)):
        lines.append(
            f"{name:<22}{s.requests:>9}{ms(s.p50_s):>9}{ms(s.p95_s):>9}{ms(s.p99_s):>9}"
            f"{ms(s.per_decision_s):>13}{s.decisions_per_s:>13.0f}"
        )
    bases = ", ".join(f"{k} {v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1]))
    lines.append(f"bases over {inputs} distinct inputs: {bases}")
    ratio = batched.decisions_per_s / single.decisions_per_s
    lines.append(f"batch speed-up: {ratio:.1f}x decisions/s (batches of {batched.size} vs single)")
    return lines


def run(
    settings: Settings, *, decisions: int, batches: int, batch_size: int, warmup: int
) -> list[str]:
    """Measure against the OPA of ``settings`` and return the printed report."""
    single, batched, mix, inputs = asyncio.run(
        measure(
            settings, decisions=decisions, batches=batches, batch_size=batch_size, warmup=warmup
        )
    )
    return report(single, batched, mix, inputs)
