"""The service's memory while it refuses an oversized body: peak RSS of `colpg serve` under a 300 MB upload.

    .venv/bin/python bench/service_body.py [--mb 300] [--url URL]

Starts the service (``colpg serve --no-auth`` on a free loopback port, its default 16 MiB body
limit) as a subprocess, samples its RSS every 5 ms with psutil, and sends the body twice: with
Content-Length (refused from the header) and chunked (refused once 16 MiB have streamed in).
Without --url the service gets its own embedded server in a temporary COLPG_DATA_DIR (never the
user's); the refusals do not touch the database.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

CHUNK = b"x" * (1 << 20)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def body(megabytes: int) -> Iterator[bytes]:
    for _ in range(megabytes):
        yield CHUNK


def upload(base: str, megabytes: int, declared: bool, process: psutil.Process) -> dict[str, float]:
    """One refused upload: its status, seconds, and the service's peak RSS meanwhile."""
    peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    headers = {"Content-Type": "application/json"} | ({"Content-Length": str(megabytes << 20)} if declared else {})
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=120) as http:
        response = http.post("/indexes/any/documents", content=body(megabytes), headers=headers)
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    return {"status": response.status_code, "seconds": seconds, "peak_rss_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="body size in MiB")
    parser.add_argument("--url", default=None, help="a PostgreSQL server to use (default: an embedded one in a temp dir)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, COLPG_DATA_DIR=str(Path(folder) / "pgdata"), HF_HUB_OFFLINE="1")
        env.pop("COLPG_API_KEYS", None)
        if args.url:
            env["COLPG_DATABASE_URL"] = args.url
        colpg = Path(sys.executable).with_name("colpg")
        service = subprocess.Popen([str(colpg), "serve", "--no-auth", "--port", str(port)], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"{base}/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and service.poll() is None, "the service did not start"
                    time.sleep(0.2)
            process = psutil.Process(service.pid)
            idle = process.memory_info().rss / 2**20
            print(f"service RSS before: {idle:.0f} MiB")
            for declared in (True, False):
                result = upload(base, args.mb, declared, process)
                how = "Content-Length" if declared else "chunked"
                print(
                    f"{args.mb} MiB body, {how:<14}: HTTP {result['status']:.0f} in {result['seconds']:.2f} s,"
                    f" peak service RSS {result['peak_rss_mb']:.0f} MiB (+{result['peak_rss_mb'] - idle:.0f} MiB)"
                )
        finally:
            service.terminate()
            service.wait(30)
            if not args.url:
                from colpg import embedded

                embedded.stop_server(Path(folder) / "pgdata")


if __name__ == "__main__":
    main()
