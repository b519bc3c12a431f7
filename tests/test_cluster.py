"""The local Citus cluster (colpg db cluster): real nodes built from the vendored source, no mocks."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from colpg import citus_build, cluster, db
from colpg.cli import app
from colpg.errors import CitusBuildError, ClusterError, ConfigurationError

runner = CliRunner()


def _layout(url: str) -> cluster.Layout:
    """The cluster behind a coordinator URL: its folder holds the socket folder."""
    return cluster.cluster_layout(Path(str(conninfo_to_dict(url)["host"])).parent)


def _pids(layout: cluster.Layout) -> list[str]:
    return [(layout.folder / name / "postmaster.pid").read_text().split()[0] for name, _ in layout.nodes]


def test_two_active_workers_and_citus_and_vector_on_every_node(citus_url: str) -> None:
    layout = _layout(citus_url)
    nodes = cluster.cluster_status(layout.folder)
    assert [(node.name, node.running) for node in nodes] == [("coordinator", True), ("worker1", True), ("worker2", True)]
    assert all(node.citus and node.citus.startswith("14.") and node.vector for node in nodes)
    assert [port for _, port in nodes[0].active_workers] == [layout.port + 1, layout.port + 2]

    result = runner.invoke(app, ["db", "cluster", "status", "--data-dir", str(layout.folder)])
    assert result.exit_code == 0, result.output
    assert f"coordinator port {layout.port}  running  citus 14." in result.output
    assert f"active workers: {layout.port + 1}, {layout.port + 2}" in result.output
    result = runner.invoke(app, ["db", "cluster", "url", "--data-dir", str(layout.folder)])
    assert result.output.strip() == citus_url


def test_distributed_table_with_vectors_and_reference_table_through_the_coordinator(citus_url: str) -> None:
    docs, topics = f"docs_{uuid.uuid4().hex[:8]}", f"topics_{uuid.uuid4().hex[:8]}"
    with db.connect(citus_url, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE TABLE {topics} (id int PRIMARY KEY, name text)")  # type: ignore[arg-type]  # generated names
            conn.execute(f"CREATE TABLE {docs} (id bigint PRIMARY KEY, topic int, embedding vector(3))")  # type: ignore[arg-type]
            conn.execute("SELECT create_reference_table(%s)", [topics])
            conn.execute("SELECT create_distributed_table(%s, 'id')", [docs])
            conn.execute(f"INSERT INTO {topics} VALUES (1, 'near'), (2, 'far')")  # type: ignore[arg-type]
            conn.execute(
                f"INSERT INTO {docs} SELECT i, 1 + (i > 50)::int, ARRAY[i, 0, 0]::vector FROM generate_series(1, 100) i"  # type: ignore[arg-type]
            )
            nearest = conn.execute(
                f"SELECT d.id, t.name FROM {docs} d JOIN {topics} t ON t.id = d.topic"  # type: ignore[arg-type]
                " ORDER BY d.embedding <-> '[60, 0, 0]' LIMIT 3"
            ).fetchall()
            placed = conn.execute("SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = %s::regclass", [docs]).fetchone()
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {docs}, {topics}")  # type: ignore[arg-type]
    assert sorted(nearest) == [(59, "far"), (60, "far"), (61, "far")]
    assert placed == (2,)  # shards on both workers


def test_up_on_a_running_cluster_prints_its_url_and_changes_nothing(citus_url: str) -> None:
    layout = _layout(citus_url)
    before = _pids(layout)
    result = runner.invoke(app, ["db", "cluster", "up", "--data-dir", str(layout.folder)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == citus_url
    assert _pids(layout) == before
    with pytest.raises(ClusterError, match="has 2 workers .* asked for 3"):
        cluster.cluster_up(layout.folder, workers=3)


def test_down_then_up_restarts_the_same_nodes_and_keeps_their_data(citus_url: str) -> None:
    layout = _layout(citus_url)
    table = f"kept_{uuid.uuid4().hex[:8]}"
    with db.connect(citus_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")  # type: ignore[arg-type]  # generated name
        conn.execute("SELECT create_distributed_table(%s, 'id')", [table])
        conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 10)")  # type: ignore[arg-type]
        system_id = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    before = _pids(layout)

    result = runner.invoke(app, ["db", "cluster", "down", "--remove", "--data-dir", str(layout.folder)], input="n\n")
    assert result.exit_code == 1 and "delete the Citus cluster" in result.output  # declined: nothing stopped
    assert cluster.cluster_down(layout.folder) == ["coordinator", "worker1", "worker2"]
    assert not any(node.running for node in cluster.cluster_status(layout.folder))

    assert cluster.cluster_up(layout.folder) == citus_url
    assert _pids(layout) != before
    with db.connect(citus_url, autocommit=True) as conn:
        assert conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone() == system_id  # no new initdb
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (10,)  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone() == (2,)
        conn.execute(f"DROP TABLE {table}")  # type: ignore[arg-type]


def test_a_missing_tarball_is_named_with_where_to_give_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(citus_build.SOURCE_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=f"pass --source FILE or set {citus_build.SOURCE_ENV}; neither was given"):
        citus_build.build_citus()
    missing = tmp_path / "citus-0.0.tar.gz"
    folder = tmp_path / "cluster"
    result = runner.invoke(app, ["db", "cluster", "up", "--data-dir", str(folder), "--source", str(missing), "--port", "59990"])
    assert result.exit_code == 1
    assert f"the Citus source tarball given by --source is not a file: {missing} does not exist" in " ".join(result.output.split())
    assert not folder.exists()


def test_a_taken_port_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {taken} \\(for the coordinator\\) is taken"):
            cluster.cluster_up(tmp_path / "cluster", workers=1, port=taken)
    assert not (tmp_path / "cluster").exists()


def test_no_c_compiler_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "citus.tar.gz"
    tarball.write_bytes(b"never unpacked")
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without gcc or cc
    with pytest.raises(CitusBuildError, match="needs a C compiler, and neither gcc nor cc is on PATH; .*build-essential"):
        citus_build.build_citus(tarball)
