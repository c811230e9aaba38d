"""``accord bench scale``: the relay's throughput with 1 and with 3 instances in one group.

For each instance count, on the running stack, with topics, a group and a transactional id of
its own (the database ``accord_bench_scale``, the scenario of ``accord bench relay``): start
that many ``accord relay`` processes, wait until the group coordinator and every instance's
``accord_relay_assigned_partitions`` agree that they own every inbound partition between them
(so no rebalance falls inside the measurement), preload the events, and measure the group's
committed offsets from its first commit to its last. Prints events/s per count and the ratio
to the first; on one machine the instances share its cores, Kafka and OPA
(docs/relay.md#scale-out says what a cluster gives).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.devstack import postgres
from services.settings import Settings
from tools.bench.faults import taken_over
from tools.bench.harness import RelayProcess, scoped
from tools.bench.relay_bench import preload, rate_until
from tools.bench.scenario import Scenario, prepare_database, prepare_topics, run_tag

BENCH_DATABASE = "accord_bench_scale"
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    instances: tuple[int, ...] = (1, 3)
    events: int = 3000
    survivors: int = 200


async def measure(
    base: Settings, scenario: Scenario, n: int, p: Params, workdir: Path, echo: Echo
) -> float:
    # As in the fault suite: 2 s per OPA request held every batch for good on a loaded
    # machine (load 20 on 2 cores); a timeout only ever fires on a slow server.
    s = scenario.relay_settings(scoped(base, run_tag(f"scale{n}"), opa_timeout_s=10.0))
    await prepare_topics(s, scenario)
    relays = [RelayProcess(s, workdir / f"relay-{n}-{i}.log") for i in range(n)]
    for relay in relays:
        relay.start()
    try:
        await taken_over(s, relays, list(range(n)), echo, timeout_s=180)
        loading = asyncio.create_task(preload(s, [scenario.event(i) for i in range(p.events)]))
        eps = await rate_until(
            s, s.relay_group, p.events, timeout_s=600, echo=echo, what=f"{n} instance(s)"
        )
        await loading
    finally:
        for relay in relays:
            relay.stop()
    return eps


async def bench(p: Params, echo: Echo) -> dict[int, float]:
    stack = Settings()
    postgres.ensure_database(stack, BENCH_DATABASE)
    url = postgres.url(stack, BENCH_DATABASE)
    scenario = Scenario(survivors=p.survivors)
    await asyncio.to_thread(prepare_database, url, scenario)
    base = stack.model_copy(update={"database_url": url})
    echo(
        f"{p.events} events × {len(scenario.partner_ids)} partners per run, "
        f"{base.inbound_partitions} inbound partitions, one OPA server ({base.opa_base_url}), "
        f"{os.cpu_count()} cores"
    )
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="accord-bench-scale-") as tmp:
        for n in p.instances:
            rates[n] = await measure(base, scenario, n, p, Path(tmp), echo)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            echo(f"{n} instance(s): {rates[n]:8.0f} events/s in (load average {load})")
    first = p.instances[0]
    for n in p.instances[1:]:
        echo(f"{n} vs {first} instance(s): ×{rates[n] / rates[first]:.2f}")
    return rates


def run(p: Params, echo: Echo) -> dict[int, float]:
    return asyncio.run(bench(p, echo))
