"""The ``accord`` command: the local stack, the services, and the demo."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from services import devstack
from services.auth.principals import Role
from services.settings import Settings

# No pretty exceptions: rich's boxed tracebacks (with locals, which may hold secrets) would
# break the one-JSON-object-per-line logs; services/logs.py logs a crash as JSON instead.
app = typer.Typer(
    no_args_is_help=True,
    help="Accord: consent-governed case-event sharing.",
    pretty_exceptions_enable=False,
)
dev = typer.Typer(no_args_is_help=True, help="The local stack: Kafka, OPA and PostgreSQL.")
app.add_typer(dev, name="dev")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@dev.command("up")
def dev_up() -> None:
    """Install what is missing and start Kafka, OPA and PostgreSQL (idempotent)."""
    try:
        devstack.up(Settings(), echo=typer.echo)
    except devstack.StackError as exc:
        _fail(exc)


@dev.command("down")
def dev_down() -> None:
    """Stop the services that `accord dev up` started, and nothing else."""
    for line in devstack.down(Settings()):
        typer.echo(line)


@dev.command("status")
def dev_status() -> None:
    """Say what runs where; exit 1 if any service is unhealthy."""
    all_ok = True
    for svc in devstack.status(Settings()):
        state = "healthy" if svc.healthy else "DOWN"
        owner = f"pid {svc.pid}" if svc.pid else "not started by accord"
        typer.echo(f"{svc.name:<9} {state:<8} {svc.address:<28} {owner}")
        all_ok = all_ok and svc.healthy
    raise typer.Exit(0 if all_ok else 1)


db = typer.Typer(no_args_is_help=True, help="The database schema.")
app.add_typer(db, name="db")


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every Alembic migration to the configured database."""
    from services import migrations

    migrations.upgrade(Settings().sqlalchemy_url)
    typer.echo("database at head")


kafka_app = typer.Typer(no_args_is_help=True, help="Kafka principals and ACLs.")
app.add_typer(kafka_app, name="kafka")


@kafka_app.command("provision")
def kafka_provision() -> None:
    """As the super user: a SCRAM credential and least-privilege ACLs for the relay, the API,
    the audit sink and every registered agency and partner (new passwords are generated into
    the credentials file, never printed). Run after registering an agency or a partner."""
    import asyncio

    from sqlalchemy import select

    from services.db import make_engine, make_sessionmaker
    from services.kafka.provisioning import provision
    from services.registry import models

    s = Settings()
    try:
        with make_sessionmaker(make_engine(s.sqlalchemy_url))() as session:
            agencies = list(session.scalars(select(models.Agency.id)))
            partners = list(session.scalars(select(models.Partner.id)))
        for principal in asyncio.run(provision(s, agencies=agencies, partners=partners)):
            typer.echo(principal)
    except Exception as exc:
        _fail(exc)


def _principal_of(partner: str | None, agency: str | None) -> str:
    from services.kafka import client as kafka_client

    if (partner is None) == (agency is None):
        raise typer.BadParameter("give exactly one of --partner or --agency")
    return (
        kafka_client.partner(partner) if partner is not None else kafka_client.agency(agency or "")
    )


_PARTNER = typer.Option(None, "--partner", help="A partner id (principal partner.<id>).")
_AGENCY = typer.Option(None, "--agency", help="An agency id (principal agency.<id>).")


@kafka_app.command("revoke")
def kafka_revoke(partner: str | None = _PARTNER, agency: str | None = _AGENCY) -> None:
    """As the super user: cut a partner's or an agency's Kafka principal off at once. Its ACLs
    are deleted first (a client still connected is refused at its next request), then its
    SCRAM credential (no new connection), its quotas and its password in the credentials file.
    The registry is not changed: suspend the partner too, or the next `accord kafka provision`
    gives it a new credential."""
    import asyncio

    from services.kafka.provisioning import revoke

    principal = _principal_of(partner, agency)
    try:
        deleted = asyncio.run(revoke(Settings(), principal))
    except Exception as exc:
        _fail(exc)
    typer.echo(f"{principal}: {len(deleted)} ACLs and its credential deleted")


@kafka_app.command("rotate")
def kafka_rotate(partner: str | None = _PARTNER, agency: str | None = _AGENCY) -> None:
    """As the super user: a new SCRAM password for a partner's or an agency's principal,
    generated into the credentials file (never printed); the old one no longer authenticates
    new connections (to cut open connections too, revoke)."""
    import asyncio

    from services.kafka.provisioning import rotate

    principal = _principal_of(partner, agency)
    try:
        asyncio.run(rotate(Settings(), principal))
    except Exception as exc:
        _fail(exc)
    typer.echo(principal)


credentials = typer.Typer(
    no_args_is_help=True, help="API keys, with database access (the first admin key)."
)
app.add_typer(credentials, name="credentials")

_ROLE = typer.Option(..., "--role", help="The key's role.")
_ROLE_FILTER = typer.Option(None, "--role", help="Only keys of this role.")
_OUT = typer.Option(
    None, "--out", help="Write the key to this new file (mode 0600) instead of printing it."
)


@credentials.command("issue")
def credentials_issue(
    role: Role = _ROLE,
    subject: str = typer.Option(..., "--subject", help="Agency or partner id, or a staff id."),
    agency: str | None = typer.Option(
        None, "--agency", help="The agency an advocate or supervisor acts for."
    ),
    out: Path | None = _OUT,
) -> None:
    """Issue an API key; its secret is shown once (printed, or written to --out)."""
    from services.credentials import cli as auth_cli

    try:
        auth_cli.issue(
            Settings(), typer.echo, role=role, subject=subject, agency_id=agency, out=out
        )
    except auth_cli.CredentialError as exc:
        _fail(exc)


@credentials.command("list")
def credentials_list(
    subject: str | None = typer.Option(None, "--subject", help="Only this subject's keys."),
    role: Role | None = _ROLE_FILTER,
) -> None:
    """List keys (id, role, agency, when issued and revoked, subject); never a secret."""
    from services.credentials import cli as auth_cli

    auth_cli.list_credentials(Settings(), typer.echo, subject=subject, role=role)


@credentials.command("revoke")
def credentials_revoke(
    credential_id: str = typer.Argument(..., help="The <id> of acc_<id>_..."),
) -> None:
    """Revoke a key: it fails from its next request."""
    from services.credentials import cli as auth_cli

    try:
        auth_cli.revoke(Settings(), typer.echo, credential_id)
    except auth_cli.CredentialError as exc:
        _fail(exc)


@credentials.command("rotate")
def credentials_rotate(
    credential_id: str = typer.Argument(..., help="The <id> of acc_<id>_..."),
    out: Path | None = _OUT,
) -> None:
    """Replace a key: a new one for the same role and subject (shown once), the old one revoked."""
    from services.credentials import cli as auth_cli

    try:
        auth_cli.rotate(Settings(), typer.echo, credential_id, out=out)
    except auth_cli.CredentialError as exc:
        _fail(exc)


audit = typer.Typer(no_args_is_help=True, help="The tamper-evident audit chain.")
app.add_typer(audit, name="audit")


@audit.command("verify")
def audit_verify(
    witness_file: str | None = typer.Option(
        None,
        "--witness-file",
        help="Verify against this kept JSON-lines copy of the checkpoints, not the topic.",
    ),
) -> None:
    """Check the audit chain against its witnessed checkpoints; exit 1 if any range is broken."""
    from pathlib import Path

    from services.audit.cli import verify_command

    path = Path(witness_file) if witness_file else None
    raise typer.Exit(verify_command(Settings(), typer.echo, path))


@audit.command("checkpointer")
def audit_checkpointer() -> None:
    """Run the checkpointer: verify new entries, sign and witness the head (one at a time: a
    second one fences the first). The only process that reads the checkpoint signing key."""
    from services import logs
    from services.audit.cli import checkpointer_command

    logs.configure()
    checkpointer_command(Settings())


keys = typer.Typer(
    no_args_is_help=True,
    help="Data at rest: key-encryption keys and survivors' data keys; agencies' and "
    "partners' key pairs.",
)
app.add_typer(keys, name="keys")


@keys.command("agency-keypair")
def keys_agency_keypair(
    key_file: str = typer.Argument(..., help="A new file for the private signing key."),
) -> None:
    """An agency's Ed25519 key pair: the signing key into a new file (mode 0600); prints the
    public key to register as the agency's public_key."""
    from services.agency_client import new_signing_key_file

    try:
        typer.echo(new_signing_key_file(key_file))
    except OSError as exc:
        _fail(exc)


@keys.command("partner-keypair")
def keys_partner_keypair(
    key_file: str = typer.Argument(..., help="A new file for the private key."),
) -> None:
    """A partner's Curve25519 key pair: the private key into a new file (mode 0600); prints
    the public key to register as the partner's public_key."""
    from services.sdk import new_key_file

    try:
        typer.echo(new_key_file(key_file))
    except OSError as exc:
        _fail(exc)


@keys.command("status")
def keys_status() -> None:
    """Data keys per KEK; exit 1 while any is not under the active KEK."""
    from services.atrest.cli import status_command

    raise typer.Exit(status_command(Settings(), typer.echo))


@keys.command("new-kek")
def keys_new_kek(key_id: str = typer.Argument(..., help="The new KEK's id.")) -> None:
    """Print a new id:base64key entry for ACCORD_KEKS (shown once; store it as a secret)."""
    from services.atrest.cli import new_kek_entry

    try:
        typer.echo(new_kek_entry(key_id))
    except ValueError as exc:
        _fail(exc)


@keys.command("rewrap")
def keys_rewrap(
    batch: int = typer.Option(100, min=1, help="Data keys per transaction."),
    pause_s: float = typer.Option(0.05, min=0, help="Pause between batches."),
) -> None:
    """Re-wrap every data key under the active KEK, in small transactions, while services run."""
    from services.atrest.cli import rewrap_command

    rewrap_command(Settings(), typer.echo, batch=batch, pause_s=pause_s)


@keys.command("erase")
def keys_erase(
    survivor_id: str = typer.Argument(..., help="The survivor's pseudonym."),
    by: str = typer.Option(..., "--by", help="Who erases (recorded in the audit chain)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: this cannot be undone."),
) -> None:
    """Destroy a survivor's data keys: their evidence and justifications become unreadable."""
    from services.consent.erasure import erase_command

    if not yes:
        _fail(ValueError("erasure cannot be undone: pass --yes"))
    erase_command(Settings(), typer.echo, survivor_id, by=by)


bench = typer.Typer(no_args_is_help=True, help="Benchmarks against the running stack.")
app.add_typer(bench, name="bench")


@bench.command("opa")
def bench_opa(
    decisions: int = typer.Option(500, min=2, help="Single-decision requests to time."),
    batches: int = typer.Option(50, min=2, help="Batch requests to time."),
    batch_size: int = typer.Option(100, min=1, help="Decisions per batch request."),
    warmup: int = typer.Option(100, min=0, help="Untimed single requests first."),
) -> None:
    """Decision latency through the real OPA server: single decisions and batches."""
    from tools.bench.opa_latency import run

    s = Settings()
    if not devstack.opa.healthy(s):
        _fail(devstack.StackError(f"OPA is not answering at {s.opa_base_url}: accord dev up"))
    for line in run(s, decisions=decisions, batches=batches, batch_size=batch_size, warmup=warmup):
        typer.echo(line)


@bench.command("relay")
def bench_relay(
    events: int = typer.Option(3000, min=100, help="Events preloaded for the relay."),
    baseline_events: int = typer.Option(20000, min=100, help="Events for the pass-through."),
    perf_records: int = typer.Option(200_000, min=1000, help="Records for ProducerPerformance."),
    payload_bytes: int = typer.Option(1000, min=300, help="Size of an inbound event."),
    survivors: int = typer.Option(200, min=8, help="Distinct survivors the events are about."),
    latency_s: float = typer.Option(15.0, min=2, help="Seconds of load at half the maximum."),
    profile: str | None = typer.Option(
        None, help="Profile the relay with py-spy; write its raw samples to this file."
    ),
    engine: str = typer.Option(
        "opa", help="The relay's policy engine: opa (the server) or wasm (in process)."
    ),
    variants: bool = typer.Option(
        True, help="Also run the relay with reuse disabled and with every event's own survivor."
    ),
) -> None:
    """The relay against a raw Kafka pass-through and the broker's own limit; last line: ratio."""
    from pathlib import Path

    from tools.bench.relay_bench import Params, run

    if engine not in ("opa", "wasm"):
        _fail(ValueError(f"unknown policy engine {engine!r}: opa or wasm"))
    s = Settings()
    if not all(svc.healthy for svc in devstack.status(s)):
        _fail(devstack.StackError("the stack is not running: accord dev up"))
    params = Params(
        events=events,
        baseline_events=baseline_events,
        perf_records=perf_records,
        payload_bytes=payload_bytes,
        survivors=survivors,
        latency_s=latency_s,
        profile=Path(profile) if profile else None,
        engine="wasm" if engine == "wasm" else "opa",
        variants=variants,
    )
    run(params, typer.echo)


@bench.command("scale")
def bench_scale(
    instances: str = typer.Option("1,3", help="Relay instances per run (comma list)."),
    events: int = typer.Option(3000, min=100, help="Events preloaded per run."),
) -> None:
    """The relay's throughput with 1 and with 3 instances in one group; the ratio."""
    from tools.bench.scale_bench import Params, run

    try:
        counts = tuple(int(n) for n in instances.split(","))
    except ValueError as exc:
        raise typer.BadParameter(
            "a comma-separated list of numbers", param_hint="--instances"
        ) from exc
    if not counts or min(counts) < 1:
        raise typer.BadParameter("at least 1 instance per run", param_hint="--instances")
    s = Settings()
    if not all(svc.healthy for svc in devstack.status(s)):
        _fail(devstack.StackError("the stack is not running: accord dev up"))
    run(Params(instances=counts, events=events), typer.echo)


@bench.command("api")
def bench_api(
    partners: str = typer.Option("20,80", help="Partners subscribed, one run each (comma list)."),
    requests: int = typer.Option(150, min=10, help="Requests per operation, idle and loaded."),
    backlog: int = typer.Option(600, min=100, help="Inbound events kept waiting while loaded."),
) -> None:
    """p50/p99 of consent list, preview and publish, idle and while the relay runs flat out;
    the loaded/idle ratio and whether p99 ≤ 100 ms under load."""
    from tools.bench.api_bench import Params, run

    try:
        counts = tuple(int(n) for n in partners.split(","))
    except ValueError as exc:
        raise typer.BadParameter(
            "a comma-separated list of numbers", param_hint="--partners"
        ) from exc
    if not counts or min(counts) < 2:
        raise typer.BadParameter("at least 2 partners per run", param_hint="--partners")
    s = Settings()
    if not all(svc.healthy for svc in devstack.status(s)):
        _fail(devstack.StackError("the stack is not running: accord dev up"))
    run(Params(partners=counts, requests=requests, backlog=backlog), typer.echo)


def stopped_by_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, on the running loop: a worker finishes what it holds,
    then stops (the long-running commands' one way to stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@app.command("asyncapi")
def asyncapi(
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if docs/asyncapi.yaml is not up to date."
    ),
) -> None:
    """Write docs/asyncapi.yaml, the AsyncAPI 3 document of every topic, from the code."""
    from services import asyncapi as doc

    if check:
        if doc.stale():
            _fail(ValueError(f"{doc.DOC_PATH} is out of date: run accord asyncapi"))
        typer.echo(f"{doc.DOC_PATH} is up to date")
        return
    typer.echo(f"{doc.DOC_PATH} {'written' if doc.write() else 'unchanged'}")


@app.command("faults")
def faults(
    events: int = typer.Option(1500, min=100, help="Events streamed during each fault."),
    rate: float = typer.Option(100.0, min=1, help="Events per second offered."),
    outage_s: float = typer.Option(10.0, min=1, help="Seconds OPA and PostgreSQL stay down."),
    seed: int | None = typer.Option(None, help="Seed of the fault timing (default: random)."),
    keep: bool = typer.Option(False, "--keep/--no-keep", help="Keep the logs' temp directory."),
    budget_s: float = typer.Option(
        900.0, min=60, help="Seconds for the whole run; faults beyond it fail (not run)."
    ),
    only: str = typer.Option("", help="Run only the faults whose name contains this."),
) -> None:
    """Kill the relay, restart Kafka, stop OPA and PostgreSQL (private instances), then kill two
    of three relays and one of two OPA servers, each during a stream of events; print fault →
    sent / delivered / duplicated / lost / undecided; exit 1 unless the last columns are 0."""
    from tools.bench.faults import Params, run

    params = Params(
        events=events,
        rate=rate,
        outage_s=outage_s,
        seed=seed,
        keep=keep,
        budget_s=budget_s,
        only=only,
    )
    try:
        ok = run(params, typer.echo)
    except devstack.StackError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the private servers are stopped already
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(0 if ok else 1)


@app.command("demo")
def demo() -> None:
    """Start the stack, publish sample events from two agencies, show what each partner got."""
    from services.demo import run_demo

    try:
        run_demo(Settings())
    except devstack.StackError as exc:
        _fail(exc)


@app.command("relay")
def relay() -> None:
    """Run the relay worker until interrupted."""
    import asyncio

    from services import logs
    from services.runtime import running_relay

    logs.configure()

    async def forever() -> None:
        s = Settings()
        async with running_relay(s, health_port=s.relay_health_port) as task:
            await task

    asyncio.run(forever())


@app.command("sink")
def sink() -> None:
    """Run the sink worker until interrupted: decision records into the audit chain, dead
    letters into the rejections listing, each exactly once."""
    import asyncio

    from services import logs
    from services.observability.server import running_health
    from services.sink_worker import running_sinks  # not via runtime: no API to import

    logs.configure()
    s = Settings()

    async def forever() -> None:
        stop = stopped_by_signals()  # finish the batch in hand, then stop
        async with (
            running_sinks(s, stop=stop) as worker,
            running_health(s.sink_health_host, s.sink_health_port, worker.readiness),
        ):
            await worker.stopped.wait()  # a signal, or a sink failed (raised on exit)

    asyncio.run(forever())


@app.command("notices")
def notices(
    once: bool = typer.Option(False, "--once", help="Decide what is due now, then exit."),
    interval: float | None = typer.Option(
        None, help="Seconds between rounds (ACCORD_NOTICES_INTERVAL_S; default 30)."
    ),
) -> None:
    """Run the notice gate's dispatcher: every notice to a survivor that fell due is sent (as
    their safe-contact preference allows), held until a safe time, or suppressed; exactly once
    (docs/safe-contact.md). Serves /healthz, /readyz and /metrics on ACCORD_NOTICES_HEALTH_PORT."""
    import asyncio

    from services import logs
    from services.atrest.keys import kek_ring
    from services.contact import worker
    from services.db import make_engine, make_sessionmaker
    from services.observability.server import running_health
    from services.referrals import notices  # noqa: F401  (registers the referral notices' check)

    logs.configure()
    s = Settings()
    engine = make_engine(s.sqlalchemy_url)
    sessions = make_sessionmaker(engine, kek_ring=kek_ring(s))
    try:
        if once:
            done = worker.once(sessions)
            typer.echo(
                f"sent {done.sent}, held {done.held}, suppressed {done.suppressed}, "
                f"withdrawn {done.withdrawn}, failed {done.failed}"
            )
            return

        async def forever() -> None:
            stop = stopped_by_signals()  # finish the notice in hand, then stop
            gate = worker.NoticeWorker(sessions, interval_s=interval or s.notices_interval_s)
            async with running_health(s.notices_health_host, s.notices_health_port, gate.readiness):
                await gate.serve(stop)

        asyncio.run(forever())
    finally:
        engine.dispose()


@app.command("deadlines")
def deadlines() -> None:
    """Run the referral deadline worker until interrupted: each breach of a deadline to
    acknowledge, to answer or of expiry fires once (alert, overdue flag, audit entry)."""
    import asyncio

    from services import logs
    from services.observability.server import running_health
    from services.referrals.deadline_worker import running_deadlines

    logs.configure()
    s = Settings()

    async def forever() -> None:
        stop = stopped_by_signals()  # finish the breach in hand, then stop
        async with (
            running_deadlines(s, stop=stop) as worker,
            running_health(s.deadlines_health_host, s.deadlines_health_port, worker.readiness),
        ):
            await worker.stopped.wait()

    asyncio.run(forever())


@app.command("api")
def api(
    host: str | None = typer.Option(None, help="Address to listen on (ACCORD_API_HOST)."),
    port: int | None = typer.Option(None, help="Port to listen on (ACCORD_API_PORT)."),
    proxy_headers: bool | None = typer.Option(
        None,
        "--proxy-headers/--no-proxy-headers",
        help="Behind a reverse proxy: the client address is X-Forwarded-For's, on connections "
        "from a trusted forwarder only (ACCORD_API_PROXY_HEADERS; default: the socket's peer).",
    ),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        help="Comma-separated addresses of the trusted forwarders "
        "(ACCORD_API_FORWARDED_ALLOW_IPS; default 127.0.0.1).",
    ),
) -> None:
    """Serve the HTTP API."""
    import logging

    import uvicorn

    from services import logs
    from services.api import create_app
    from services.http_security import server_options, tls_options

    logs.configure()
    given = {
        "api_host": host,
        "api_port": port,
        "api_proxy_headers": proxy_headers,
        "api_forwarded_allow_ips": forwarded_allow_ips,
    }
    s = Settings().model_copy(update={k: v for k, v in given.items() if v is not None})
    try:
        tls = tls_options(s)  # ACCORD_API_TLS_CERT / ACCORD_API_TLS_KEY: serve HTTPS
    except ValueError as exc:  # a JSON line like every other, not a usage-error box
        logging.getLogger("accord.api").error(str(exc))
        raise typer.Exit(2) from exc
    uvicorn.run(
        create_app(s),
        host=s.api_host,
        port=s.api_port,
        log_config=None,
        **server_options(s),
        **tls,
    )


pilot = typer.Typer(no_args_is_help=True, help="The compose pilot (deploy/compose/).")
app.add_typer(pilot, name="pilot")


@pilot.command("init")
def pilot_init() -> None:
    """In the pilot's state volume: certificates, credentials, keys, the broker's and the
    services' configuration; then, once PostgreSQL and Kafka answer, the migrations, the
    principals and their ACLs, the topics (idempotent; prints no secret)."""
    from services import pilot as p

    s, hosts = Settings(), p.PilotHosts.from_env()
    try:
        for line in p.prepare(s, hosts):
            typer.echo(line)
        for line in p.provision(Settings()):  # re-read: prepare wrote stack.env
            typer.echo(line)
    except devstack.StackError as exc:
        _fail(exc)


@pilot.command("smoke")
def pilot_smoke(
    api: str = typer.Option("http://api:8080", "--api", help="The pilot API's base URL."),
    timeout_s: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the delivery."),
) -> None:
    """One event from a new agency over the HTTP API to a new partner, read back from the
    partner's topic and opened with its key; exit 1 unless it arrived."""
    from services import pilot as p

    try:
        r = p.smoke(Settings(), api, timeout_s)
    except devstack.StackError as exc:
        _fail(exc)
    typer.echo(
        f"smoke: {r.event_id} accepted ({r.status_code}), {r.outcome} to {p.PARTNER} in "
        f"{r.seconds} s, fields received: {', '.join(r.fields_received)}"
    )


@app.command("publish")
def publish(
    event_file: str = typer.Argument(..., help="The CloudEvent, as JSON."),
    key_file: str = typer.Option(..., "--key-file", help="The agency's Ed25519 signing key."),
    api: str | None = typer.Option(None, "--api", help="The Accord API's base URL."),
    api_key: str = typer.Option(
        ..., "--api-key", envvar="ACCORD_API_KEY", help="The agency's API key."
    ),
) -> None:
    """As an agency: sign an event and publish it through POST /v1/events (the API seals it).
    specversion, id and time are filled in when the file leaves them out."""
    from services.agency_client import PublishError, complete, load_signing_key, read_event
    from services.agency_client import publish as publish_event

    s = Settings()
    try:
        event = complete(read_event(event_file))
        answer = publish_event(
            event,
            load_signing_key(key_file),
            api_url=api or f"http://{s.api_host}:{s.api_port}",
            api_key=api_key,
        )
    except (PublishError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"{answer.get('id')} {answer.get('status')}")


@app.command("tail")
def tail(
    partner: str = typer.Option(..., "--partner", help="Your partner id."),
    key_file: str = typer.Option(..., "--key-file", help="Your Curve25519 private key file."),
    http: str | None = typer.Option(None, "--http", help="The Accord API's base URL."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="ACCORD_API_KEY", help="Your partner API key (with --http)."
    ),
    bootstrap: str | None = typer.Option(None, "--bootstrap", help="Kafka host:port."),
    relay_key: str | None = typer.Option(
        None,
        "--relay-key",
        envvar="ACCORD_RELAY_PUBLIC_KEY",
        help="The relay's public key (base64); default: the local stack's.",
    ),
    topic: str | None = typer.Option(None, "--topic", help="Default: the configured prefix + id."),
    group: str | None = typer.Option(None, "--group", help="Kafka consumer group (with --ack)."),
    ack: bool = typer.Option(False, "--ack/--no-ack", help="Acknowledge what was printed."),
    max_deliveries: int = typer.Option(0, "--max", min=0, help="Stop after this many (0: never)."),
) -> None:
    """Print a partner's deliveries, opened with its key, one JSON line each (Kafka or HTTP)."""
    import asyncio
    import sys
    from dataclasses import replace

    from services.sdk import DeliveryRejected, FeedError, HttpFeed, KafkaFeed, load_private_key
    from services.sdk.tail import run_tail

    if (http is None) == (bootstrap is None):
        _fail(ValueError("give exactly one of --http URL or --bootstrap host:port"))
    if http is not None and not api_key:
        _fail(ValueError("--http needs --api-key (or ACCORD_API_KEY)"))
    s = Settings()
    if relay_key is None:
        from services.atrest.keys import relay_key as local_relay_key
        from services.broker.pipeline.seal import public_key_of

        if not (s.relay_private_key or (s.state_dir / "keys" / "relay.key").exists()):
            _fail(ValueError("no local relay key: pass --relay-key"))
        relay_key = public_key_of(local_relay_key(s))
    from aiokafka.errors import KafkaError

    from services.kafka import client as kafka_client
    from services.kafka.acls import partner_group_prefix
    from services.kafka.client import KafkaCredentialMissing

    def make_source() -> HttpFeed | KafkaFeed:
        if http is not None:
            return HttpFeed(http, api_key=api_key or "")
        # As the partner's own Kafka principal (its password in ACCORD_KAFKA_CREDENTIALS_FILE).
        conn = replace(
            kafka_client.kafka(s, kafka_client.partner(partner)), bootstrap=bootstrap or ""
        )
        return KafkaFeed(
            conn,
            topic=topic or s.partner_topic(partner),
            group_id=group or f"{partner_group_prefix(s, partner)}tail",
        )

    async def main() -> None:
        # Made inside the loop: aiokafka's consumer refuses to be created outside one.
        await run_tail(
            partner_id=partner,
            key=load_private_key(key_file),
            relay_key=relay_key,
            source=make_source(),
            out=sys.stdout,
            acknowledge=ack,
            max_deliveries=max_deliveries or None,
        )

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except (
        DeliveryRejected,
        FeedError,
        ValueError,
        OSError,
        KafkaError,
        KafkaCredentialMissing,
    ) as exc:
        _fail(exc)
