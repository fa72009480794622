"""Open the store's database and bring its schema up to date (Alembic).

URLs: ``store.url`` null means a SQLite file ``store.sqlite3`` in the state directory;
``sqlite:///PATH`` a file of your choosing; ``postgresql://`` (or ``postgres://``) a
PostgreSQL server through psycopg 3.

SQLite runs in WAL mode (readers never block the one writer, the publisher's store sink)
with ``synchronous=FULL`` (a committed interval survives a power cut) and foreign keys on;
PostgreSQL gets a pool of ``store.pool_size`` connections, checked before use
(``pool_pre_ping``) so a connection broken by a server restart is replaced, and the
reader's queries run under ``statement_timeout``.

Migrations: ``migrate`` upgrades the schema to the newest revision this code ships (on
PostgreSQL under an advisory lock, so several daemons of a fleet starting at once
migrate one at a time) and refuses a database whose revision this code does not know,
that is one migrated by a newer itsd (``StoreVersionError``, a configuration error:
the daemon stops instead of writing rows an older schema would misread).

This module must never import a stage, the supervisor, ``control`` or ``monitor``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from itsd.config import Config
from itsd.errors import ConfigError, ItsdError
from itsd.redact import redact_url

log = logging.getLogger("itsd.store")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_NAME = "store.sqlite3"
#: Key of the PostgreSQL advisory lock held while migrating.
MIGRATION_LOCK = 0x17_5D_0001


class StoreError(ItsdError):
    """The store cannot do what was asked; the message says why."""


class StoreUnavailable(StoreError):  # noqa: N818 - the name says what it means
    """The database cannot be reached now (down, restarting, locked): try again later."""


class StoreRejected(StoreError):  # noqa: N818
    """The database refused the data itself (a constraint); retrying cannot help."""


class StoreVersionError(ConfigError):
    """The database's schema is newer than this code, or unknown to it."""


def store_url(config: Config) -> str | None:
    """The SQLAlchemy URL of the configured store; None when the store is disabled."""
    s = config.store
    if not s.enabled:
        return None
    if s.url is None:
        return f"sqlite:///{config.resolved_state_dir() / SQLITE_NAME}"
    return normalize_url(s.url)


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` -> ``postgresql+psycopg://``; others as given."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"store.url: not a database URL: {redact_url(url)}")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


def describe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return str(make_url(url).render_as_string(hide_password=True))


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def make_engine(
    url: str,
    *,
    pool_size: int = 4,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float | None = None,
) -> Engine:
    """An engine for ``url`` (see the module docstring); connects lazily."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            u,
            connect_args={"timeout": connect_timeout_s, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        busy_ms = int(connect_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        return engine
    if backend != "postgresql":
        raise ConfigError(f"store.url: unsupported database {backend!r} (use sqlite or postgresql)")
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, math.ceil(connect_timeout_s)),
        "application_name": "itsd",
    }
    if statement_timeout_s is not None:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    try:
        return sa.create_engine(
            u,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=connect_timeout_s,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
    except ImportError as err:
        raise ConfigError(
            f"store.url: {describe_url(url)} needs the PostgreSQL driver ({err}): "
            "pip install 'itsd[postgres]'"
        ) from None


def engine_for(config: Config, *, reader: bool = False) -> Engine | None:
    """The engine of the configured store (None when disabled)."""
    url = store_url(config)
    if url is None:
        return None
    s = config.store
    return make_engine(
        url,
        pool_size=s.pool_size,
        connect_timeout_s=s.connect_timeout_s,
        statement_timeout_s=s.query_timeout_s if reader else None,
    )


def is_unavailable(err: BaseException) -> bool:
    """True for errors that mean "the database is away", not "the data is wrong"."""
    if isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        return True
    return isinstance(err, sa.exc.DisconnectionError | OSError)


def _alembic_config(connection: sa.Connection) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest schema revision this code ships."""
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return str(head)


def _current(conn: sa.Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(MigrationContext.configure(conn).get_current_heads())


def _check_known(current: tuple[str, ...], script: Any, url: str) -> None:
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError

    for rev in current:
        try:
            known = script.get_revision(rev)
        except (RevisionError, CommandError, KeyError):
            known = None
        if known is None:
            raise StoreVersionError(
                f"store {describe_url(url)}: its schema is at revision {rev}, which this itsd "
                f"does not know (it knows up to {script.get_current_head()}): the database was "
                "migrated by a newer itsd. Upgrade itsd, or point store.url at another database"
            )


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.SQLAlchemyError as err:
        cause = err.orig if isinstance(err, sa.exc.DBAPIError) else err
        what = f"store {describe_url(url)}: {type(err).__name__}: {cause}"
        if is_unavailable(err):
            raise StoreUnavailable(what) from err
        raise StoreError(what) from err


def schema_revision(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty when it has no itsd schema yet."""
    with _translated(str(engine.url)), engine.connect() as conn:
        return _current(conn)


def migrate(engine: Engine) -> tuple[tuple[str, ...], str]:
    """Upgrade the schema to this code's newest revision; returns (before, after).

    Raises ``StoreVersionError`` for a database migrated by a newer itsd and
    ``StoreUnavailable`` when the database cannot be reached.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    url = engine.url.render_as_string(hide_password=False)
    with _translated(url), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        cfg = _alembic_config(conn)
        script = ScriptDirectory.from_config(cfg)
        head = str(script.get_current_head())
        before = _current(conn)
        _check_known(before, script, url)
        if before != (head,):
            log.info(
                "store %s: upgrading the schema from %s to %s",
                describe_url(url),
                ", ".join(before) or "nothing",
                head,
            )
            command.upgrade(cfg, "head")
        conn.commit()
    return before, head
