"""The `reservations` command: serve, worker, migrate, history, keys, audit, demo."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from reservations import __version__
from reservations.config import Settings, SettingsError, load_settings
from reservations.kit import migrate as migrations
from reservations.kit import shardmap
from reservations.kit.db import Database, acting_as
from reservations.kit.embedded import EmbeddedPostgres
from reservations.kit.embedded_valkey import EmbeddedValkey
from reservations.kit.redis import RedisTier
from reservations.sharding import move as shard_move
from reservations.sharding import status as shard_status
from reservations.sharding import twophase
from reservations.sharding.router import Shards
from reservations.tenancy import service as tenancy
from reservations.tenancy.cache import KeyCache

if TYPE_CHECKING:
    from reservations.audit.service import Verification
    from reservations.context import Context

app = typer.Typer(
    help="Reservation API that never double-books.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
shards_app = typer.Typer(
    help="Inspect the shard clusters and resolve in-doubt cross-shard bookings.",
    no_args_is_help=True,
)
app.add_typer(shards_app, name="shards")
audit_app = typer.Typer(help="Seal and verify the audit log's hash chain.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reservations {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Reservation API that never double-books."""


# The audit log's actor for changes made from this command line (keys) and at first start.
CLI_ACTOR = "system:cli"
BOOTSTRAP_ACTOR = "system:bootstrap"

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


@contextlib.contextmanager
def _database_url(settings: Settings, *, apply_migrations: bool = True) -> Iterator[str]:
    """DATABASE_URL, or the embedded server in the data directory for as long as needed."""
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        try:
            url = embedded.start()
        except Exception as exc:
            raise _fail(
                f"could not start the embedded PostgreSQL in {embedded.pgdata}: {exc}\n"
                "Set RESERVATIONS_DATA_DIR to a writable directory, or DATABASE_URL."
            ) from exc
    try:
        if apply_migrations:
            targets = [url]
            if settings.shards:  # every shard cluster has the same schema as the catalog
                targets += list(shardmap.parse(settings.shards).clusters.values())
            for target in dict.fromkeys(targets):
                try:
                    migrations.upgrade(target)
                except Exception as exc:
                    raise _fail(f"could not migrate the database: {exc}") from exc
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def _redis_url(settings: Settings) -> Iterator[str]:
    """REDIS_URL (or "none"), or the embedded Valkey in the data directory while serving."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    embedded = EmbeddedValkey(settings.data_dir)
    try:
        url = embedded.start()
    except Exception as exc:
        raise _fail(
            f"could not start the embedded Valkey in {embedded.dir}: {exc}\n"
            "Set REDIS_URL to a Redis server, or REDIS_URL=none to run without the cache tier."
        ) from exc
    try:
        yield url
    finally:
        embedded.stop()


def _reachable_redis(settings: Settings) -> str | None:
    """Where the serving processes' Redis is, for commands that must invalidate it."""
    if settings.redis_url is None:
        return EmbeddedValkey(settings.data_dir).running_url()
    return None if settings.redis_disabled else settings.redis_url


@contextlib.asynccontextmanager
async def _services(
    settings: Settings, db: Database, *, redis_url: str | None = None
) -> AsyncIterator[Context]:
    """The context a command needs around an open catalog database (wiring.py; the Redis
    tier only with `redis_url`): with shards, their clusters opened (and Redlock's clients
    closed after)."""
    from reservations import wiring
    from reservations.kit.clock import Clock

    if redis_url is not None:
        settings = settings.model_copy(update={"redis_url": redis_url})
    context = wiring.build(settings, db, Clock(), redis=redis_url is not None)
    async with wiring.opened(context) as svc:
        yield svc


def _run_db(settings: Settings, url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        small = settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 2})
        db = Database(url, small)
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(main())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
    worker: Annotated[
        bool, typer.Option(help="Run the background sweeper inside the API processes.")
    ] = True,
) -> None:
    """Start the API (and, without DATABASE_URL / REDIS_URL, the embedded PostgreSQL and
    Valkey)."""
    import uvicorn

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    _check_port(host, port)  # before starting anything, and before saying "Serving"
    with (
        _database_url(settings, apply_migrations=migrate) as url,
        _redis_url(settings) as redis_url,
    ):
        with acting_as(BOOTSTRAP_ACTOR):
            created = _run_db(settings, url, tenancy.bootstrap_default)
        if created is not None:
            typer.echo(
                "First start: created tenant 'default' with an admin API key (shown once):\n"
                f"\n    {created.token}\n",
                err=True,
            )
        os.environ["DATABASE_URL"] = url
        os.environ["REDIS_URL"] = redis_url
        os.environ["RESERVATIONS_RUN_WORKER"] = "true" if worker else "false"
        if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="reservations-prom-")
        typer.echo(f"Serving on http://{host}:{port} (docs at /docs)", err=True)
        # uvicorn drains requests on SIGTERM, restores the previous handler and raises the
        # signal again; this handler turns that into SystemExit so the embedded database is
        # stopped cleanly on the way out instead of the process dying with it still running.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        uvicorn.run(
            "reservations.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_graceful_shutdown=10,
            log_level="info",
            server_header=False,
        )


def _check_port(host: str, port: int) -> None:
    """Fail now, with a message that says what to do, when the address cannot be listened on
    (uvicorn would only find out after the embedded servers started and "Serving on" was
    printed). Bound with SO_REUSEADDR, as uvicorn binds, so a port in TIME_WAIT passes."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _fail(f"cannot listen on {host}: {exc.strerror}; check --host") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _fail(
                        f"port {port} on {host} is already in use (another `reservations "
                        "serve`?): stop that process, or serve on another port with --port "
                        "(or RESERVATIONS_PORT)"
                    ) from None
                raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _exit_on_signal(signum: int, _frame: object) -> None:
    # uvicorn re-raises the signal after draining. SIGTERM is how orchestrators ask for a
    # clean stop, and a clean stop is a success; Ctrl-C keeps the conventional 130.
    raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)


@app.command()
def worker() -> None:
    """Run the background jobs (hold expiry, idempotency purge, map repair, history,
    webhook delivery) without serving HTTP."""
    from reservations import worker as background

    settings = _settings()
    with _database_url(settings) as url:
        # The API's Redis, so the jobs that keep it (the availability map's repair, the map
        # and caches after a hold expires) run here as they do inside `serve`.
        redis_url = _reachable_redis(settings)

        async def main() -> None:
            db = Database(url, settings)
            await db.open()
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                async with _services(settings, db, redis_url=redis_url) as svc:
                    await background.run_forever(svc)
            except asyncio.CancelledError:
                pass
            finally:
                await db.close()

        typer.echo("worker running; Ctrl-C to stop", err=True)
        asyncio.run(main())


@app.command()
def history() -> None:
    """Move ended reservations to the history now (workers do it every
    RESERVATIONS_HISTORY_INTERVAL_SECONDS) and print what was done."""
    from reservations.history import tasks as history_job

    settings = _settings()

    async def everywhere(db: Database) -> list[tuple[str, history_job.HistoryRun]]:
        async with _services(settings, db) as svc:  # each cluster has its own history
            return [
                (
                    other.name,
                    await history_job.run_once(other, svc.settings, now=svc.clock.now()),
                )
                for other in svc.shards.databases()
            ]

    with _database_url(settings) as url:
        runs = _run_db(settings, url, everywhere)
    for name, run in runs:
        where = f"{name}: " if len(runs) > 1 else ""
        typer.echo(f"{where}horizon: {run.horizon.isoformat()}")
        typer.echo(f"{where}moved: {run.moved}")
        typer.echo(f"{where}partitions made: {', '.join(run.created) or 'none'}")
        typer.echo(f"{where}partitions detached: {', '.join(run.detached) or 'none'}")


@app.command()
def migrate() -> None:
    """Apply database migrations (serve does this by default)."""
    settings = _settings()
    with _database_url(settings) as url:
        typer.echo(f"database at revision {migrations.current(url)}")


@app.command()
def demo() -> None:
    """Seed tenant 'demo' (a dozen resources and a week of bookings) for the booking page at
    /app. Seeds once; run again, it only prints a new admin key for the tenant. The key is
    printed alone on the last line of stdout."""
    from reservations import demo as demo_data

    settings = _settings()

    async def seed(db: Database) -> demo_data.Seeded:
        async with _services(settings, db) as svc:
            return await demo_data.seed(svc)

    with _database_url(settings) as url, acting_as(CLI_ACTOR):
        seeded = _run_db(settings, url, seed)
    if seeded.created:
        made = ", ".join(f"{n} {status}" for status, n in seeded.bookings.items())
        typer.echo(f"seeded tenant '{demo_data.TENANT}': {seeded.resources} resources; {made}")
    else:
        typer.echo(
            f"tenant '{demo_data.TENANT}' is already seeded ({seeded.resources} resources): "
            "nothing added; a new admin key for it follows"
        )
    typer.echo(f"open http://{settings.host}:{settings.port}/app and sign in with this admin key:")
    typer.echo(seeded.token)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    role: Annotated[tenancy.Role, typer.Option(help="admin, booker, viewer or agent.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    expires: Annotated[
        datetime | None, typer.Option(help="Expiry (ISO 8601 with offset).", formats=None)
    ] = None,
) -> None:
    """Create an API key. The key is printed alone on the last line of stdout, once."""
    settings = _settings()
    if not 1 <= len(tenant) <= 200 or "\x00" in tenant:
        raise _fail("--tenant must be 1-200 characters")
    if expires is not None and expires.tzinfo is None:
        raise _fail("--expires needs a time zone offset, e.g. 2027-01-01T00:00:00+00:00")
    with _database_url(settings) as url, acting_as(CLI_ACTOR):
        created = _run_db(
            settings,
            url,
            lambda db: tenancy.create_key(
                db, tenant=tenant, role=role, label=label, expires_at=expires
            ),
        )
    typer.echo(f"tenant: {created.tenant}  role: {created.role}  prefix: {created.prefix}")
    typer.echo(created.token)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """List keys (prefixes only; secrets are never stored)."""
    settings = _settings()
    with _database_url(settings) as url:
        rows = _run_db(settings, url, lambda db: tenancy.list_keys(db, tenant))
    if not rows:
        typer.echo("no keys" + (f" in tenant {tenant!r}" if tenant else ""))
        return
    now = datetime.now(UTC)
    table = Table(
        "prefix", "tenant", "role", "state", "created (UTC)", "expires (UTC)", "label",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for r in rows:
        expires = r.expires_at
        if r.revoked_at:
            state = "revoked"
        else:
            state = "expired" if expires is not None and expires <= now else "active"
        table.add_row(
            r.prefix,
            r.tenant,
            r.role,
            state,
            f"{r.created_at.astimezone(UTC):%Y-%m-%d %H:%M}",
            f"{expires.astimezone(UTC):%Y-%m-%d %H:%M}" if expires else "never",
            r.label,
        )
    console = Console()
    if not console.is_terminal:  # piped: whole lines, not wrapped at 80 columns
        console = Console(width=400)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix.")]) -> None:
    """Revoke a key by its prefix (the 12 characters after `rsv_`, or the whole key)."""
    settings = _settings()
    if prefix.startswith("rsv_"):
        prefix = prefix.split("_")[1]
    with _database_url(settings) as url:
        redis_url = _reachable_redis(settings)

        async def revoke(db: Database) -> tenancy.RevokedKey | None:
            tier = RedisTier(redis_url, timeout=2.0, prefix=settings.redis_key_prefix)
            await tier.open()
            try:
                cache = KeyCache(tier, ttl_seconds=settings.api_key_cache_ttl_seconds)
                return await tenancy.revoke_key(db, prefix, cache=cache if redis_url else None)
            finally:
                await tier.close()

        with acting_as(CLI_ACTOR):
            row = _run_db(settings, url, revoke)
    if row is None:
        raise _fail(f"no key with prefix {prefix}")
    typer.echo(f"revoked {row.prefix} at {row.revoked_at:%Y-%m-%d %H:%M:%S%z}")
    if row.cache_invalidated is False:
        typer.echo(
            f"warning: Redis ({redis_url}) could not be told; API processes may accept the key "
            f"for up to {settings.api_key_cache_ttl_seconds} s more",
            err=True,
        )


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every audit row that can be sealed now (workers do it every second)."""
    from reservations.audit import tasks as audit_tasks

    settings = _settings()

    async def everywhere(shards: Shards) -> int:
        return sum([await audit_tasks.seal(db) for db in shards.databases()])

    with _database_url(settings) as url:
        if settings.shards:  # every cluster has its own chain
            sealed = _run_shards(settings, url, everywhere)
        else:
            sealed = _run_db(settings, url, audit_tasks.seal)
    typer.echo(f"sealed {sealed} rows")


def _anchor(value: str | None) -> tuple[int, bytes] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    try:
        anchor = int(seq), bytes.fromhex(digest)
    except ValueError:
        anchor = (0, b"")
    if anchor[0] < 1 or len(anchor[1]) != 32:
        raise _fail("--anchor must be POSITION:HASH as verify printed it, e.g. 1234:9f86d0...")
    return anchor


@audit_app.command("verify")
def audit_verify(
    max_unsealed_age: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds an audit row may wait for the sealer before it counts as a failure.",
        ),
    ] = 600.0,
    anchor: Annotated[
        str | None,
        typer.Option(
            help="POSITION:HASH printed by an earlier verify and kept elsewhere: "
            "the chain must still hold that hash there (catches a rewritten or cut chain)."
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(help="With shards: verify this cluster's own chain (default: the catalog's)."),
    ] = None,
) -> None:
    """Recompute the audit log's hash chain. Prints "ok N rows" and exits 0, or names the
    first broken position (or unsealed rows that should not be) and exits 1."""
    settings = _settings()
    expected = _anchor(anchor)
    with _database_url(settings) as url:
        found = _verify_chain(
            settings, url, cluster=cluster, max_unsealed_age=max_unsealed_age, anchor=expected
        )
    _report_verification(found, max_unsealed_age=max_unsealed_age)


def _verify_chain(
    settings: Settings,
    url: str,
    *,
    cluster: str | None,
    max_unsealed_age: float,
    anchor: tuple[int, bytes] | None,
) -> Verification:
    """Which chain is verified: the catalog's without a cluster, else that cluster's own."""
    from reservations.audit import service as audit_service

    if cluster is None:
        return _run_db(
            settings,
            url,
            lambda db: audit_service.verify(
                db, max_unsealed_age_seconds=max_unsealed_age, anchor=anchor
            ),
        )

    async def on_cluster(shards: Shards) -> Verification:
        if cluster not in shards.clusters:
            raise _fail(f"no cluster {cluster!r}; the clusters: {sorted(shards.clusters)}")
        return await audit_service.verify(
            shards.by_name(cluster),
            max_unsealed_age_seconds=max_unsealed_age,
            anchor=anchor,
        )

    return _run_shards(settings, url, on_cluster)


def _report_verification(found: Verification, *, max_unsealed_age: float) -> None:
    """Whether the verification passed: prints the findings, exits 1 on any failure."""
    if found.broken_at is not None:
        typer.echo(f"broken at position {found.broken_at}: {found.problem}")
        typer.echo(f"positions 1-{found.broken_at - 1} are intact")
        raise typer.Exit(1)
    head = f" (head {found.rows}:{found.head.hex()})" if found.head else ""
    typer.echo(f"ok {found.rows} rows{head}")
    typer.echo(
        f"unsealed: {found.pending} waiting for the sealer, {found.stale} of them older than "
        f"{max_unsealed_age:g} s; {found.behind} behind the chain's head"
    )
    if found.behind:
        typer.echo(
            f"FAILED: {found.behind} audit rows were passed over by the sealer: written "
            "outside the triggers, or their seals removed"
        )
    if found.stale:
        typer.echo("FAILED: audit rows are waiting longer than they should; is a worker running?")
    if not found.ok:
        raise typer.Exit(1)


@app.command("mcp")
def mcp_stdio(
    key: Annotated[
        str,
        typer.Option(
            envvar="RESERVATIONS_MCP_KEY",
            help="The API key every tool call acts as (an agent key): --key or "
            "RESERVATIONS_MCP_KEY.",
        ),
    ],
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
) -> None:
    """Serve the MCP tools (docs/agents.md) over stdin/stdout for one agent key."""
    from reservations.errors import DomainError
    from reservations.mcp import callers
    from reservations.mcp import server as mcp_server

    settings = _settings()
    with _database_url(settings, apply_migrations=migrate) as url:
        redis_url = _reachable_redis(settings)

        async def main() -> None:
            db = Database(url, settings)
            await db.open()
            try:
                async with _services(settings, db, redis_url=redis_url) as svc:
                    try:
                        await callers.caller_of(svc, key, charge=False)
                    except DomainError as refused:
                        raise _fail(f"the key is refused: {refused.detail}") from None
                    await mcp_server.build(svc, token=key).run_stdio_async()
            finally:
                await db.close()

        typer.echo("MCP server on stdio; tools act as the given key", err=True)
        asyncio.run(main())


def main() -> None:
    sys.exit(app())


def _run_shards(settings: Settings, url: str, work: Callable[[Shards], Awaitable[T]]) -> T:
    if not settings.shards:
        raise _fail("RESERVATIONS_SHARDS is not set: every resource lives on DATABASE_URL.")

    async def main(db: Database) -> T:
        shards = Shards(db, settings)
        await shards.open()
        try:
            return await work(shards)
        finally:
            await shards.close()

    return _run_db(settings, url, main)


@shards_app.command("status")
def shards_status() -> None:
    """The shard map, each cluster's logical shards, rows and in-doubt transactions."""
    settings = _settings()
    if not settings.shards:
        typer.echo(
            "no shards: RESERVATIONS_SHARDS is not set, so every resource lives on one "
            "database (DATABASE_URL, or the embedded PostgreSQL)"
        )
        return
    with _database_url(settings) as url:
        clusters = _run_shards(settings, url, shard_status.status)
    for cluster in clusters:
        for line in cluster.lines():
            typer.echo(line)


@shards_app.command("recover")
def shards_recover(
    older_than: Annotated[
        float, typer.Option(help="Only transactions prepared at least this many seconds ago.")
    ] = 30.0,
) -> None:
    """Resolve in-doubt cross-shard bookings now (the workers do it every few seconds):
    commit those whose decision is commit, roll back the rest."""
    settings = _settings()
    with _database_url(settings) as url:
        done = _run_shards(
            settings, url, lambda shards: twophase.recover(shards, older_than=older_than)
        )
    typer.echo(f"committed: {done['committed']}  rolled back: {done['aborted']}")


@shards_app.command("move")
def shards_move(
    logical: Annotated[int, typer.Argument(help="The logical shard to move.")],
    to: Annotated[str, typer.Option(help="The cluster (a name in RESERVATIONS_SHARDS).")],
    settle: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait before deleting the moved rows from the old cluster "
            "(default: twice RESERVATIONS_SHARD_MAP_REFRESH_SECONDS)."
        ),
    ] = None,
) -> None:
    """Move one logical shard to another cluster, with a short write pause on that shard
    only (see sharding/move.py); safe to run again after an interruption."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    settings = _settings()
    with _database_url(settings) as url, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} rows"),
        TimeElapsedColumn(), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("copying", total=None)

        def progress(what: str, rows: int) -> None:
            bar.update(task, description=what, completed=rows)

        try:
            report = _run_shards(
                settings,
                url,
                lambda shards: shard_move.move(
                    shards, logical, to, progress=progress, settle_seconds=settle
                ),
            )
        except ValueError as exc:
            raise _fail(str(exc)) from None
    if report.source == report.target:
        typer.echo(f"logical shard {logical} is on {to} already")
        return
    copied = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n) or "no rows"
    typer.echo(f"moved logical shard {logical} from {report.source} to {report.target}: {copied}")
    typer.echo(f"write pause on shard {logical}: {report.pause_seconds * 1000:.0f} ms")
    typer.echo(f"removed {report.removed} rows from {report.source}")
