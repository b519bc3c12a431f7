"""Ingest by INSERT: rows written with plain SQL are indexed by `colpg worker`, once, and never lost."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from colpg import db, embedded
from colpg.cli import app
from colpg.encoder import Encoder
from colpg.errors import DatabaseUnavailable
from colpg.faults import Backoff
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.worker import IngestWorker


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    return Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("live", small_texts[:12])


def _insert(url: str, rows: list[tuple[str, str | None]], index_name: str = "live") -> None:
    """What an application in any language does: plain INSERTs on its own connection."""
    # Writable even while a test makes the database read-only (a client's option beats the database's).
    with psycopg.connect(url, options="-c default_transaction_read_only=off") as conn:
        for external_id, text in rows:
            conn.execute(
                'INSERT INTO colpg.documents (index_name, external_id, text, metadata) VALUES (%s, %s, %s, \'{"src": "sql"}\')',
                (index_name, external_id, text),
            )


def _statuses(url: str, index_name: str = "live") -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT external_id, status, error FROM colpg.documents WHERE index_name = %s", (index_name,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_inserted_rows_become_searchable(index: Index, migrated_url: str) -> None:
    _insert(migrated_url, [("axo", "Axolotl limb regeneration in salamanders."), ("empty", "   ")])
    assert _statuses(migrated_url)["axo"] == ("queued", None)
    assert index.search("axolotl regeneration", k=1)[0].external_id != "axo"  # not indexed yet

    result = CliRunner().invoke(app, ["worker", "--once"], env={"COLPG_DATABASE_URL": migrated_url})
    assert result.exit_code == 0, result.output
    assert "settled 2" in result.output
    statuses = _statuses(migrated_url)
    assert statuses["axo"] == ("ready", None)
    assert statuses["empty"][0] == "failed" and "no text" in (statuses["empty"][1] or "")
    assert all(status == "ready" for key, (status, _) in statuses.items() if key not in ("axo", "empty"))
    hit = index.search("axolotl regeneration", k=1)[0]
    assert hit.external_id == "axo" and hit.metadata == {"src": "sql"}


def test_changed_text_is_indexed_again(index: Index, migrated_url: str) -> None:
    _insert(migrated_url, [("moving", "Axolotl limb regeneration in salamanders.")])
    IngestWorker(migrated_url).run_once()
    assert index.search("axolotl regeneration", k=1)[0].external_id == "moving"
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE colpg.documents SET text = 'Volcanic eruptions and magma chambers.' WHERE external_id = 'moving'")
    assert _statuses(migrated_url)["moving"] == ("queued", None)
    IngestWorker(migrated_url).run_once()
    assert index.search("volcano magma eruption", k=1)[0].external_id == "moving"
    assert index.search("axolotl regeneration", k=1)[0].external_id != "moving"


def test_document_whose_new_text_fails_is_not_found_by_its_old_text(index: Index, migrated_url: str) -> None:
    _insert(migrated_url, [("emptied", "Axolotl limb regeneration in salamanders.")])
    IngestWorker(migrated_url).run_once()
    assert index.search("axolotl regeneration", k=1)[0].external_id == "emptied"
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE colpg.documents SET text = '  ' WHERE external_id = 'emptied'")
    IngestWorker(migrated_url).run_once()
    assert _statuses(migrated_url)["emptied"][0] == "failed"
    assert "emptied" not in {hit.external_id for hit in index.search("axolotl regeneration", k=12)}


def test_unknown_index_name_is_refused(index: Index, migrated_url: str) -> None:
    with (
        psycopg.connect(migrated_url) as conn,
        pytest.raises(psycopg.errors.ForeignKeyViolation, match='colpg index "nope" does not exist'),
    ):
        conn.execute("INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('nope', 'x', 'y')")


def test_two_workers_index_each_row_once(index: Index, migrated_url: str, small_texts: list[str]) -> None:
    _insert(migrated_url, [(f"q{i}", text) for i, text in enumerate(small_texts[12:24])])
    workers = [IngestWorker(migrated_url, batch_size=2) for _ in range(2)]
    settled = [0, 0]

    def run(i: int) -> None:
        settled[i] = workers[i].run_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(settled) == 12 and min(settled) > 0  # both worked, no row twice
    assert all(status == "ready" for status, _ in _statuses(migrated_url).values())
    with db.connect(migrated_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM colpg.document_tokens t JOIN colpg.documents d ON d.id = t.document_id WHERE d.index_name = 'live'"
        ).fetchone() == (24,)


def test_killed_worker_loses_nothing(index: Index, migrated_url: str, small_texts: list[str]) -> None:
    _insert(migrated_url, [(f"k{i}", text) for i, text in enumerate(small_texts[12:24])])
    env = dict(os.environ, COLPG_DATABASE_URL=migrated_url)
    # One batch holds every row; the worker is killed once it has claimed them, before it commits.
    colpg = Path(sys.executable).with_name("colpg")
    worker = subprocess.Popen([str(colpg), "worker", "--once", "--batch-size", "100"], env=env)
    try:
        deadline = time.monotonic() + 120
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            # The claim (SELECT ... FOR UPDATE) holds a RowShareLock on documents until the worker commits.
            claimed = "SELECT count(*) FROM pg_locks WHERE relation = 'colpg.documents'::regclass AND mode = 'RowShareLock'"
            while conn.execute(claimed).fetchone() == (0,):
                assert worker.poll() is None and time.monotonic() < deadline, "the worker never claimed the rows"
                time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        worker.kill()
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        # The server notices the dead client and rolls its transaction back, releasing the rows.
        while conn.execute(claimed).fetchone() != (0,):
            assert time.monotonic() < deadline, "the killed worker's transaction was never rolled back"
            time.sleep(0.05)
    statuses = _statuses(migrated_url)
    assert {key: s for key, s in statuses.items() if key.startswith("k")} == {f"k{i}": ("queued", None) for i in range(12)}
    assert IngestWorker(migrated_url).run_once() == 12
    assert all(status == "ready" for status, _ in _statuses(migrated_url).values())


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.1)


@contextmanager
def _running_worker(url: str, health_file: Path | None = None) -> Iterator[IngestWorker]:
    """``run_forever`` in a thread, with short polls and backoff; stopped on exit, its exception re-raised."""
    worker = IngestWorker(url, backoff=Backoff(first_s=0.05, cap_s=0.2), health_file=health_file)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run_forever(poll_seconds=0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
    assert not raised, f"the worker died: {raised[0]!r}"
    assert not thread.is_alive()


def _ready(url: str, *keys: str, index_name: str = "live") -> Callable[[], bool]:
    def check() -> bool:
        statuses = _statuses(url, index_name)
        return all(statuses.get(key, ("?", None))[0] == "ready" for key in keys)

    return check


def test_worker_resumes_after_a_server_restart(
    index: Index, migrated_url: str, server: embedded.EmbeddedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    health = tmp_path / "healthy"
    with caplog.at_level(logging.WARNING, logger="colpg.worker"), _running_worker(migrated_url, health) as worker:
        _wait_for(health.exists, "the first pass over the queue")
        try:
            assert embedded.stop_server(server.pgdata)
            _wait_for(lambda: worker._failures >= 2, "the worker to notice the server is down")
        finally:
            embedded.ensure_server(server.pgdata)
        restarted = time.time()
        _insert(migrated_url, [("after", "Axolotl limb regeneration in salamanders.")])
        _wait_for(_ready(migrated_url, "after"), "the row inserted after the restart to be indexed")
        _wait_for(lambda: health.stat().st_mtime >= restarted, "the health file to be touched again")
    assert index.search("axolotl regeneration", k=1)[0].external_id == "after"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ingest paused" in w for w in warnings) and any("ingest resumed" in w for w in warnings)
    assert all("password" not in w for w in warnings)


def test_worker_waits_out_a_read_only_database(index: Index, migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(migrated_url)["dbname"]
    with caplog.at_level(logging.WARNING, logger="colpg.worker"), _running_worker(migrated_url) as worker:
        with psycopg.connect(migrated_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')  # type: ignore[arg-type]  # generated name
            # Sessions keep the setting they started with: end the worker's, so it reconnects read-only.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            _insert(migrated_url, [("ro", "Axolotl limb regeneration in salamanders.")])
            _wait_for(lambda: any("25006" in r.getMessage() for r in caplog.records), "the worker to meet the read-only database")
            assert _statuses(migrated_url)["ro"] == ("queued", None)
            admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')  # type: ignore[arg-type]
        _wait_for(_ready(migrated_url, "ro"), "the row to be indexed once the database is writable")
        assert worker._failures == 0


def test_worker_goes_on_after_its_index_is_rebuilt(index: Index, migrated_url: str, encoder: Encoder, small_texts: list[str]) -> None:
    with _running_worker(migrated_url):
        _insert(migrated_url, [("before", "Volcanic eruptions and magma chambers.")])
        _wait_for(_ready(migrated_url, "before"), "the row inserted before the rebuild")
        Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("live", small_texts[6:18], overwrite=True)
        _insert(migrated_url, [("rebuilt", "Axolotl limb regeneration in salamanders.")])
        _wait_for(_ready(migrated_url, "rebuilt"), "the row inserted after the rebuild")
    assert Index("live", url=migrated_url).search("axolotl regeneration", k=1)[0].external_id == "rebuilt"


def test_a_batch_that_loses_a_race_with_a_rebuild_is_retried(index: Index, migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """What a rebuild dropping the index under a batch gives the worker (a foreign key violation), injected once."""
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE SEQUENCE public.fault_count")  # not rolled back with the failed batch
        conn.execute(
            """CREATE FUNCTION public.lose_race() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('public.fault_count') = 1 THEN
                    RAISE foreign_key_violation USING MESSAGE = 'the document''s index was dropped by a concurrent rebuild';
                END IF;
                RETURN NULL;
            END $$"""
        )
        conn.execute(
            "CREATE TRIGGER lose_race BEFORE INSERT ON colpg.document_tokens FOR EACH STATEMENT EXECUTE FUNCTION public.lose_race()"
        )
    with caplog.at_level(logging.WARNING, logger="colpg.worker"), _running_worker(migrated_url):
        _insert(migrated_url, [("raced", "Axolotl limb regeneration in salamanders.")])
        _wait_for(_ready(migrated_url, "raced"), "the row to be indexed on the retry")
    assert any("23503" in r.getMessage() for r in caplog.records)


def test_an_index_whose_model_is_gone_fails_only_its_own_rows(
    index: Index, migrated_url: str, encoder: Encoder, small_texts: list[str]
) -> None:
    Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("moved", small_texts[12:18])
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE colpg.indexes SET model = '/gone/all-MiniLM-L6-v2' WHERE name = 'moved'")
    _insert(migrated_url, [("lost", "Volcanic eruptions and magma chambers.")], index_name="moved")
    _insert(migrated_url, [("kept", "Axolotl limb regeneration in salamanders.")])
    assert IngestWorker(migrated_url).run_once() == 2
    status, error = _statuses(migrated_url, "moved")["lost"]
    assert status == "failed" and "/gone/all-MiniLM-L6-v2" in (error or "") and "status = 'queued'" in (error or "")
    assert _statuses(migrated_url)["kept"] == ("ready", None)
    assert index.search("axolotl regeneration", k=1)[0].external_id == "kept"


def test_worker_gives_up_after_max_failures_without_showing_the_password(tmp_path: Path) -> None:
    url = f"postgresql://colpg:s3cret@/postgres?host={tmp_path}"  # no server listens there
    with pytest.raises(DatabaseUnavailable, match="gave up after 3 failed attempts in a row") as raised:
        IngestWorker(url, backoff=Backoff(first_s=0.01, cap_s=0.01), max_failures=3).run_forever(poll_seconds=0.1)
    assert "s3cret" not in str(raised.value)
    result = CliRunner().invoke(app, ["worker", "--max-failures", "1"], env={"COLPG_DATABASE_URL": url})
    assert result.exit_code == 1 and "gave up after 1 failed attempts" in result.output and "s3cret" not in result.output
