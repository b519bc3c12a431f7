"""colpg on a real local Citus cluster (coordinator + 2 workers): distribution, migrations both
ways, build, add/update/delete, ingest through the worker, search equal to a single server's,
and the candidate query pushed down to the shards."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from colpg import db, embedded, migrate
from colpg.cli import app
from colpg.distribute import distribute, is_distributed
from colpg.encoder import Encoder
from colpg.errors import SchemaError
from colpg.index import Index, list_indexes
from colpg.indexer import IndexConfig, Indexer
from colpg.worker import IngestWorker
from tests.conftest import url_for_database

QUERIES = [
    "vitamin D deficiency and bone density",
    "gene expression in cancer cells",
    "antibiotic resistance of bacteria",
    "neurons in the brain",
    "randomised trial of a drug",
]
CONFIG = IndexConfig(kmeans_niters=2, write_batch_size=8)


def _corpus(texts: list[str]) -> list[dict[str, object]]:
    return [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def cluster_index(citus_url: str, encoder: Encoder, small_texts: list[str]) -> Iterator[Index]:
    """SciFact's 24 abstracts indexed on the cluster, after a full migration cycle on distributed tables."""
    migrate.upgrade(citus_url)
    with db.connect(citus_url, autocommit=True) as conn:
        distribute(conn)
    migrate.downgrade(citus_url, "base")  # every down migration runs on distributed tables
    migrate.upgrade(citus_url)
    with db.connect(citus_url, autocommit=True) as conn:
        assert distribute(conn) is True
    yield Indexer(encoder, CONFIG, url=citus_url).index("cit", _corpus(small_texts), overwrite=True)


@pytest.fixture(scope="module")
def single_index(server: embedded.EmbeddedServer, encoder: Encoder, small_texts: list[str]) -> Iterator[Index]:
    """The same documents on one plain server."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # generated name
    url = url_for_database(server.url, name)
    migrate.upgrade(url)
    yield Indexer(encoder, CONFIG, url=url).index("cit", _corpus(small_texts))
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_tables_are_distributed_and_colocated(cluster_index: Index, citus_url: str, migrated_url: str) -> None:
    with db.connect(citus_url, autocommit=True) as conn:
        rows = dict(conn.execute(
            "SELECT logicalrelid::regclass::text, partmethod FROM pg_dist_partition WHERE logicalrelid::regclass::text LIKE 'colpg.%'"
        ).fetchall())
        colocation = conn.execute(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h' AND logicalrelid::regclass::text LIKE 'colpg.%'"
        ).fetchone()
        assert is_distributed(conn) and distribute(conn) is False  # a second run changes nothing
        nodes = conn.execute("SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = 'colpg.document_tokens'::regclass").fetchone()
    hashed = {"colpg.documents", "colpg.document_tokens", "colpg.rerank_vectors", "colpg.token_changes"}
    assert {t for t, m in rows.items() if m == "h"} == hashed and colocation == (1,)
    assert {t for t, m in rows.items() if m == "n"} >= {"colpg.indexes", "colpg.centroids", "colpg.token_changes_trimmed"}
    assert nodes == (2,)  # the tokens are spread over both workers
    with db.connect(migrated_url, autocommit=True) as conn, pytest.raises(SchemaError, match="no citus extension"):
        distribute(conn)
    done = CliRunner().invoke(app, ["db", "distribute"], env={db.DATABASE_URL_ENV: citus_url})
    assert done.exit_code == 0 and "already distributed" in done.output
    status = CliRunner().invoke(app, ["db", "status"], env={db.DATABASE_URL_ENV: citus_url})
    assert "citus     colpg's tables distributed over 2 active workers" in status.output
    alone = CliRunner().invoke(app, ["db", "status"], env={db.DATABASE_URL_ENV: migrated_url})
    assert "citus     not installed (one server)" in alone.output


def test_catalogue_counts_and_sizes(cluster_index: Index, citus_url: str) -> None:
    listed = {i["name"]: i for i in list_indexes(url=citus_url)}
    info = cluster_index.info()
    assert listed["cit"]["documents"] == 24 and info["documents"] == 24 and info["centroids"] > 0 and info["tokens"] > 0


def test_search_equals_a_single_servers(cluster_index: Index, single_index: Index) -> None:
    for query in QUERIES:
        on_cluster = [(h.external_id, h.score) for h in cluster_index.search(query, k=10)]
        alone = [(h.external_id, h.score) for h in single_index.search(query, k=10)]
        assert [i for i, _ in on_cluster] == [i for i, _ in alone]
        assert [s for _, s in on_cluster] == pytest.approx([s for _, s in alone], abs=1e-4)
        exact = [h.external_id for h in cluster_index.search(query, k=5, exact=True)]
        assert exact == [h.external_id for h in single_index.search(query, k=5, exact=True)]


def test_add_update_delete_are_seen_by_the_next_search(cluster_index: Index) -> None:
    query = "zebra stripes on the savanna"
    assert "z1" not in [h.external_id for h in cluster_index.search(query, k=3)]
    cluster_index.add([("z1", "Zebras have black and white stripes and graze on the African savanna.")])
    assert cluster_index.search(query, k=3)[0].external_id == "z1"
    before = cluster_index.search(query, k=1)[0].score
    cluster_index.update([("z1", "Glaciers carve valleys in mountain ranges over thousands of years.")])
    after = {h.external_id: h.score for h in cluster_index.search(query, k=25)}
    exact = {h.external_id: h.score for h in cluster_index.search(query, k=25, exact=True)}
    assert after == pytest.approx(exact, abs=1e-4) and after["z1"] < before  # scored at its new tokens only
    assert cluster_index.search("glaciers carving mountain valleys", k=1)[0].external_id == "z1"
    with pytest.raises(Exception, match="already holds"):  # uniqueness is checked by the writer on a cluster
        cluster_index.add([("z1", "again")])
    cluster_index.delete(["z1"])
    assert "z1" not in [h.external_id for h in cluster_index.search("glaciers carving mountain valleys", k=3)]


def test_sql_inserted_rows_are_ingested_by_the_worker(cluster_index: Index, citus_url: str) -> None:
    with db.connect(citus_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('cit', 'w1', %s), ('cit', 'w2', %s)",
            ("Honeybees dance to tell the hive where the flowers are.", "Volcanoes erupt molten rock called lava."),
        )
    assert IngestWorker(citus_url, batch_size=1).run_once() == 2  # claimed one by one, by id
    with db.connect(citus_url) as conn:
        assert conn.execute("SELECT status FROM colpg.documents WHERE external_id IN ('w1', 'w2')").fetchall() == [("ready",), ("ready",)]
    assert cluster_index.search("bees dancing in the hive", k=1)[0].external_id == "w1"
    cluster_index.delete(["w1", "w2"])


def test_candidate_query_runs_on_every_shard(cluster_index: Index, single_index: Index, citus_url: str, encoder: Encoder) -> None:
    vectors = [v.numpy() for v in encoder.encode_queries(["gene expression in cancer cells"])[0]]
    with db.connect(citus_url) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT t.document_id FROM colpg.document_tokens t WHERE t.index_id = %s AND t.codes && %s::int[]",
            (cluster_index.record.id, [1, 2, 3]),
        ).fetchall())
        on_cluster = conn.execute("SELECT external_id, score FROM colpg.search_approx('cit', %s, 5)", (vectors,)).fetchall()
        candidates = {r[0] for r in conn.execute("SELECT document_id FROM colpg.candidates('cit', %s, 4)", (vectors,)).fetchall()}
        fulltext = conn.execute("SELECT external_id, rank FROM colpg.fulltext_candidates('cit', 'gene expression cancer', 5)").fetchall()
    assert "Custom Scan (Citus Adaptive)" in plan and "Task Count: 32" in plan and "codes && " in plan.split("Task Count")[1]  # the lookup runs on the shards
    with db.connect(single_index.url) as conn:
        alone = conn.execute("SELECT external_id, score FROM colpg.search_approx('cit', %s, 5)", (vectors,)).fetchall()
        count = conn.execute("SELECT count(*) FROM colpg.candidates('cit', %s, 4)", (vectors,)).fetchone()
        assert fulltext and fulltext == conn.execute("SELECT external_id, rank FROM colpg.fulltext_candidates('cit', 'gene expression cancer', 5)").fetchall()
    assert [r[0] for r in on_cluster] == [r[0] for r in alone] and [r[1] for r in on_cluster] == pytest.approx([r[1] for r in alone])
    assert (len(candidates),) == count


def test_a_running_worker_finds_sql_inserts_without_notify(cluster_index: Index, citus_url: str) -> None:
    worker = IngestWorker(citus_url)
    thread = threading.Thread(target=worker.run_forever, kwargs={"poll_seconds": 30.0}, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # the worker has drained the queue and waits
        with db.connect(citus_url, autocommit=True) as conn:
            conn.execute("INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('cit', 'w3', 'Owls hunt at night.')")
            deadline = time.monotonic() + 20  # well within the 30 s poll: the cluster's own interval applies
            while time.monotonic() < deadline:
                if conn.execute("SELECT status FROM colpg.documents WHERE external_id = 'w3'").fetchone() == ("ready",):
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the worker did not index a row inserted on the cluster within 20 s")
    finally:
        worker.stop()
        thread.join(timeout=10)
    cluster_index.delete(["w3"])
