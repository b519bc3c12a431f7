"""Ingest by INSERT: rows written with plain SQL are indexed by `colpg worker`, once, and never lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from colpg import db
from colpg.cli import app
from colpg.encoder import Encoder
from colpg.index import Index, IndexConfig, Indexer
from colpg.worker import IngestWorker


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    return Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("live", small_texts[:12])


def _insert(url: str, rows: list[tuple[str, str | None]]) -> None:
    """What an application in any language does: plain INSERTs on its own connection."""
    with psycopg.connect(url) as conn:
        for external_id, text in rows:
            conn.execute(
                "INSERT INTO colpg.documents (index_name, external_id, text, metadata) VALUES ('live', %s, %s, '{\"src\": \"sql\"}')",
                (external_id, text),
            )


def _statuses(url: str) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT external_id, status, error FROM colpg.documents WHERE index_name = 'live'").fetchall()
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
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation, match='colpg index "nope" does not exist'):
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
        assert conn.execute("SELECT count(*) FROM colpg.document_tokens t JOIN colpg.documents d ON d.id = t.document_id WHERE d.index_name = 'live'").fetchone() == (24,)


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
