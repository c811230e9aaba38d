"""The ``accord`` command: the local stack, the services, and the demo."""

from __future__ import annotations

import typer

from services import devstack
from services.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Accord: consent-governed case-event sharing.")
dev = typer.Typer(no_args_is_help=True, help="The local stack: Kafka, OPA and PostgreSQL.")
app.add_typer(dev, name="dev")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@dev.command("up")
def dev_up() -> None:
    """Install what is missing and start Kafka, OPA and PostgreSQL (idempotent)."""
    try:
        for line in devstack.up(Settings()):
            typer.echo(line)
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
    from services.bench.opa_latency import run

    s = Settings()
    if not devstack.opa.healthy(s):
        _fail(devstack.StackError(f"OPA is not answering at {s.opa_base_url}: accord dev up"))
    for line in run(s, decisions=decisions, batches=batches, batch_size=batch_size, warmup=warmup):
        typer.echo(line)


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
        async with running_relay(Settings()) as task:
            await task

    asyncio.run(forever())


@app.command("api")
def api() -> None:
    """Serve the HTTP API."""
    import uvicorn

    from services import logs
    from services.api import create_app

    logs.configure()
    s = Settings()
    uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_config=None)
