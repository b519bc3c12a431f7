"""Precomputed token vectors on disk, for building an index without encoding: a folder of shards.

Format: a folder holding, for each shard ``NAME`` (shards are taken in sorted name order),

* ``NAME.tokens.npy``: every token vector of the shard's documents, one after the other,
  ``[tokens, dim]`` float16 or float32 in C order (``numpy.save``);
* ``NAME.doclens.npy``: ``[documents]`` integers, each document's token count (at least 1),
  summing to the rows of ``NAME.tokens.npy``;
* ``NAME.ids.txt``: one external id per line (UTF-8, no tabs or newlines inside an id), as
  many as doclens, unique across all shards.

Vectors need not be exactly unit length (float16 rounding moves norms by ~1e-3): they are
L2-normalised in float32 when read, as colpg's encoder normalises its own; a token that is not
finite or has norm 0 is an error naming its document, found when the batch holding it is read.

Memory: a folder is checked up front with the doclens and a 64-bit hash of each id in memory
(16 bytes per document); token rows are read by mapping just the rows asked for, copying them
and unmapping again, so resident file pages never pile up in the reader's RSS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colpg.errors import CollectionError, DocumentError

__all__ = ["SUFFIXES", "Shard", "VectorFolder", "read_folder"]

#: The files of a shard NAME: NAME.tokens.npy, NAME.doclens.npy, NAME.ids.txt.
SUFFIXES = (".tokens.npy", ".doclens.npy", ".ids.txt")
#: Token dtypes a shard may hold.
DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
LAYOUT = "NAME.tokens.npy [tokens, dim] float16/float32, NAME.doclens.npy [documents] int, NAME.ids.txt (one id a line)"


def _id_hash(external_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(external_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Shard:
    """One shard, checked. Shapes: doclens [documents] int64."""

    name: str
    folder: Path
    dtype: np.dtype
    rows: int
    dim: int
    #: Bytes of the .npy header before the first row.
    offset: int
    doclens: np.ndarray

    @property
    def tokens_path(self) -> Path:
        return self.folder / f"{self.name}.tokens.npy"

    @property
    def ids_path(self) -> Path:
        return self.folder / f"{self.name}.ids.txt"

    @property
    def documents(self) -> int:
        return len(self.doclens)

    @cached_property
    def starts(self) -> np.ndarray:
        """The first token row of each document, then the row count. Shapes: [documents + 1] int64."""
        return np.concatenate([[0], np.cumsum(self.doclens)])

    def ids(self) -> list[str]:
        """The shard's external ids, in document order."""
        return _read_ids(self.ids_path)

    def vectors(self, first: int, stop: int) -> torch.Tensor:
        """Documents ``first .. stop-1``'s tokens, float32 and L2-normalised.

        Raises:
            DocumentError: a token is not finite or has norm 0 (the message names its document).

        Shapes: -> [tokens of those documents, dim] float32.
        """
        start, end = int(self.starts[first]), int(self.starts[stop])
        mapped = np.memmap(
            self.tokens_path,
            dtype=self.dtype,
            mode="r",
            offset=self.offset + start * self.dim * self.dtype.itemsize,
            shape=(end - start, self.dim),
        )
        rows = torch.from_numpy(np.array(mapped, dtype=np.float32))
        del mapped  # unmapped here: its pages leave this process's RSS
        norms = rows.norm(dim=1)
        bad = ~torch.isfinite(norms) | (norms == 0)
        if bool(bad.any()):
            row = start + int(bad.nonzero()[0])
            document = int(np.searchsorted(self.starts, row, side="right")) - 1
            found = "a zero vector" if bool(torch.isfinite(norms[row - start])) else "a value that is not finite"
            raise DocumentError(
                f"document {self.ids()[document]!r} (shard {self.name}, document {document}) has {found} at token"
                f" {row - int(self.starts[document])} (row {row} of {self.tokens_path.name}); expected finite, non-zero vectors"
            )
        return F.normalize(rows, dim=1)


@dataclass(frozen=True)
class VectorFolder:
    """A checked folder of shards: their shapes, and a fingerprint of names, shapes, dtypes, doclens and ids."""

    path: Path
    shards: tuple[Shard, ...]
    dim: int
    fingerprint: str

    @property
    def documents(self) -> int:
        return sum(shard.documents for shard in self.shards)

    @property
    def tokens(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def doclens(self) -> np.ndarray:
        """Every document's token count, shards in order. Shapes: [documents] int64."""
        return np.concatenate([shard.doclens for shard in self.shards])

    def batches(self, size: int) -> Iterator[tuple[Shard, range]]:
        """Fixed slices of at most ``size`` documents, each inside one shard, in order."""
        for shard in self.shards:
            for first in range(0, shard.documents, size):
                yield shard, range(first, min(first + size, shard.documents))


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CollectionError(f"{path} is not UTF-8: {exc}") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _load_tokens(path: Path) -> np.memmap:
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read {path} as a .npy array: {exc}") from exc
    if not isinstance(tokens, np.memmap) or tokens.ndim != 2 or tokens.dtype not in DTYPES or not tokens.flags.c_contiguous:
        found = f"a {tokens.ndim}-d {tokens.dtype} array" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise CollectionError(f"{path} holds {found}; expected [tokens, dim] float16 or float32 in C order")
    return tokens


def _read_shard(folder: Path, name: str) -> Shard:
    for suffix in SUFFIXES:
        if not (folder / f"{name}{suffix}").is_file():
            raise CollectionError(f"shard {name} in {folder} has no {name}{suffix}; each shard needs {LAYOUT}")
    tokens = _load_tokens(folder / f"{name}.tokens.npy")
    doclens_path = folder / f"{name}.doclens.npy"
    try:
        doclens = np.load(doclens_path)
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read {doclens_path} as a .npy array: {exc}") from exc
    if doclens.ndim != 1 or doclens.dtype.kind not in "iu":
        raise CollectionError(f"{doclens_path} holds a {doclens.ndim}-d {doclens.dtype} array; expected [documents] integers")
    if len(doclens) == 0:
        raise CollectionError(f"shard {name} in {folder} holds no documents; expected at least one")
    if int(doclens.min()) < 1:
        position = int(np.argmin(doclens))
        raise CollectionError(f"{doclens_path} gives document {position} {int(doclens[position])} tokens; expected at least 1")
    doclens = doclens.astype(np.int64)
    if int(doclens.sum()) != tokens.shape[0]:
        raise CollectionError(f"{doclens_path} sums to {int(doclens.sum())} tokens; {name}.tokens.npy holds {tokens.shape[0]} rows")
    return Shard(name, folder, tokens.dtype, tokens.shape[0], tokens.shape[1], int(tokens.offset), doclens)


def read_folder(path: str | Path) -> VectorFolder:
    """Read and check a folder of shards (every file's shape, dtype and ids; not the token values).

    Raises:
        CollectionError: not a folder of shards, a file missing or unreadable, shapes that disagree,
            empty or repeated ids (naming the shard and what was expected and found).
    """
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise CollectionError(f"{folder} is not a folder; expected a folder of vector shards ({LAYOUT})")
    names = sorted({file.name.removesuffix(suffix) for file in folder.iterdir() for suffix in SUFFIXES if file.name.endswith(suffix)})
    if not names:
        raise CollectionError(f"{folder} holds no vector shards; expected {LAYOUT}")
    shards = tuple(_read_shard(folder, name) for name in names)
    dims = {shard.dim for shard in shards}
    if len(dims) > 1:
        first = shards[0]
        other = next(shard for shard in shards if shard.dim != first.dim)
        raise CollectionError(f"shard {other.name} holds {other.dim}-dim vectors; shard {first.name} holds {first.dim}-dim ones")
    digest = hashlib.sha256()
    hashes: list[np.ndarray] = []
    for shard in shards:
        ids = shard.ids()
        if len(ids) != shard.documents:
            raise CollectionError(f"{shard.ids_path} holds {len(ids)} ids; {shard.name}.doclens.npy counts {shard.documents} documents")
        for line, external_id in enumerate(ids, start=1):
            if not external_id.strip() or "\t" in external_id:
                raise CollectionError(f"{shard.ids_path} line {line} holds {external_id!r}; expected a non-empty id without tabs")
        digest.update(f"{shard.name}\x1f{shard.dtype.str}\x1f{shard.rows}x{shard.dim}\x1e".encode())
        digest.update(shard.doclens.tobytes())
        digest.update("\n".join(ids).encode() + b"\x1e")
        hashes.append(np.fromiter((_id_hash(i) for i in ids), dtype=np.uint64, count=len(ids)))
    _check_unique(shards, np.concatenate(hashes))
    return VectorFolder(folder, shards, shards[0].dim, digest.hexdigest())


def _check_unique(shards: tuple[Shard, ...], hashes: np.ndarray) -> None:
    """Raise on an id given twice, naming both places; ``hashes`` narrows the search to candidates."""
    values, counts = np.unique(hashes, return_counts=True)
    candidates = set(values[counts > 1].tolist())
    if not candidates:
        return
    seen: dict[str, str] = {}
    for shard in shards:
        for line, external_id in enumerate(shard.ids(), start=1):
            if _id_hash(external_id) not in candidates:
                continue
            place = f"{shard.ids_path.name} line {line}"
            if external_id in seen:
                raise CollectionError(f"id {external_id!r} is given twice: {seen[external_id]} and {place}; ids must be unique")
            seen[external_id] = place
