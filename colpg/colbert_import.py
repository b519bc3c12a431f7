"""Import a Stanford ColBERT (PLAID) index folder into colpg's tables without encoding anything again.

PLAID and colpg share the codec: a token is its nearest centroid's code plus an n-bit bucket
per dimension, and decompression is ``centroid + bucket value``, re-normalised. What differs
is layout, and the import converts it exactly:

* PLAID's buckets (``buckets.pt``: cutoffs and values) are shared by every dimension; colpg's
  are per dimension, so each dimension gets a copy.
* PLAID packs each dimension's bits least significant first (``ResidualCodec.binarize``, then
  ``np.packbits``); colpg packs them most significant first (:func:`colpg.codec.pack_bits`):
  each group of ``nbits`` bits is reversed, by one table lookup per byte.
* PLAID's centroids are float16; colpg keeps them as float32 (every float16 value is exact).

Where the mapping is not one to one: PLAID keeps no higher-precision copy of the tokens, so
the rerank store is ``none`` (the imported residuals) unless ``int8`` or ``fp16`` is asked for,
and then it holds PLAID's *decompressed* vectors, not the encoder's originals; PLAID's
inverted list (``ivf.pid.pt``) and ``avg_residual.pt`` are not read (colpg's inverted list is
built from the codes); pids become external ids, or the collection file's ids.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import torch

from colpg import db, store
from colpg.codec import ResidualCodec
from colpg.collection import CollectionDocument, read_collection
from colpg.constants import NBITS
from colpg.encoder import Encoder
from colpg.errors import CheckpointError, ConfigurationError, IndexExists, PlaidIndexError
from colpg.index import Index
from colpg.indexer import unfinished_build
from colpg.progress import bar as progress_bar
from colpg.settings import EncoderSettings
from colpg.stores import KINDS, RerankStore, train_store

__all__ = ["PRECISIONS", "PlaidChunk", "PlaidFolder", "bit_order_table", "import_colbert", "read_chunk", "read_doclens", "read_folder"]

logger = logging.getLogger(__name__)

#: Rerank stores an import can fill. ``residual4`` is left out: fitted to PLAID's 2-bit
#: residuals it would only store them again, at twice the size.
PRECISIONS = tuple(kind for kind in KINDS if kind != "residual4")
#: Decompressed tokens of the first chunk that an int8 store's scales are fitted to.
SAMPLE_TOKENS = 1 << 16
#: What a ColBERT index folder holds, for the message when a folder is not one.
LAYOUT = "metadata.json, centroids.pt, buckets.pt and, per chunk N, N.codes.pt, N.residuals.pt, doclens.N.json, N.metadata.json"
#: ColBERT's settings that colpg's encoder shares (dim is checked against the model instead).
SHARED_SETTINGS = frozenset(field.name for field in dataclasses.fields(EncoderSettings)) - {"dim"}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PlaidIndexError(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlaidIndexError(f"cannot read {path}: {exc}") from exc


def _tensors(path: Path) -> Any:
    """A .pt file's tensors; ``weights_only`` so that a folder cannot run code on load."""
    if not path.is_file():
        raise PlaidIndexError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise PlaidIndexError(f"cannot read {path} as tensors saved by torch: {exc}") from exc


def _tensor(path: Path, ndim: int, what: str) -> torch.Tensor:
    value = _tensors(path)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        found = f"a {value.ndim}-d tensor" if isinstance(value, torch.Tensor) else type(value).__name__
        raise PlaidIndexError(f"{path} holds {found}; expected {what}")
    return value


def bit_order_table(nbits: int) -> torch.Tensor:
    """Each byte of PLAID's packing as the byte colpg packs for the same buckets: the bits of
    every ``nbits`` group reversed (PLAID writes a bucket's least significant bit first).

    Shapes: -> [256] uint8.

    >>> bit_order_table(2)[0b01_10_11_00].item() == 0b10_01_11_00
    True
    """
    weights = 2 ** torch.arange(7, -1, -1)
    bits = (torch.arange(256)[:, None] // weights) % 2  # [byte, bit], most significant first
    reversed_groups = bits.view(256, 8 // nbits, nbits).flip(-1).reshape(256, 8)
    return (reversed_groups * weights).sum(dim=1).to(torch.uint8)


@dataclass(frozen=True)
class PlaidFolder:
    """A finished ColBERT index folder: its settings (metadata.json's ``config``) and colpg's codec for it."""

    path: Path
    config: dict[str, Any]
    num_chunks: int
    num_embeddings: int
    codec: ResidualCodec

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """The index's query and document settings, for colpg's encoder."""
        return {key: value for key, value in self.config.items() if key in SHARED_SETTINGS and value is not None}


@dataclass(frozen=True)
class PlaidChunk:
    """One chunk's passages. Shapes: codes [tokens] int32; packed [tokens, dim*nbits/8] uint8 in colpg's bit order."""

    passage_offset: int
    doclens: list[int]
    codes: torch.Tensor
    packed: torch.Tensor


def read_folder(path: Path) -> PlaidFolder:
    """Read and check a ColBERT index folder's metadata and codec (the chunks are read one at a time)."""
    metadata_file = path / "metadata.json"
    if not path.is_dir():
        raise PlaidIndexError(f"{path} is not a folder; expected a ColBERT index folder ({LAYOUT})")
    if not metadata_file.is_file():
        if (path / "plan.json").is_file():
            raise PlaidIndexError(f"{path} has plan.json but no metadata.json: ColBERT's indexing of it did not finish")
        raise PlaidIndexError(f"{path} is not a ColBERT index: it has no metadata.json (expected {LAYOUT})")
    metadata = _json(metadata_file)
    config = metadata.get("config") if isinstance(metadata, dict) else None
    if not isinstance(config, dict) or not all(isinstance(metadata.get(k), int) for k in ("num_chunks", "num_embeddings")):
        raise PlaidIndexError(f"{metadata_file} lacks ColBERT's config, num_chunks or num_embeddings")
    dim, nbits = config.get("dim"), config.get("nbits")
    if not isinstance(dim, int) or dim < 1 or nbits not in NBITS:
        raise PlaidIndexError(f"{metadata_file} says dim={dim!r}, nbits={nbits!r}; colpg needs a positive dim and nbits in {NBITS}")
    centroids_file = path / "centroids.pt"
    centroids = _tensor(centroids_file, 2, f"centroids [k, {dim}]")
    if centroids.shape[1] != dim:
        raise PlaidIndexError(f"{centroids_file} holds {centroids.shape[1]}-dim centroids; {metadata_file} says dim={dim}")
    buckets_file = path / "buckets.pt"
    buckets = _tensors(buckets_file)
    if not (isinstance(buckets, tuple | list) and len(buckets) == 2 and all(isinstance(b, torch.Tensor) for b in buckets)):
        raise PlaidIndexError(f"{buckets_file} holds {type(buckets).__name__}; expected (bucket_cutoffs, bucket_weights) tensors")
    cutoffs, weights = (b.flatten().float() for b in buckets)
    if len(cutoffs) != 2**nbits - 1 or len(weights) != 2**nbits:
        raise PlaidIndexError(
            f"{buckets_file} holds {len(cutoffs)} bucket cutoffs and {len(weights)} values; nbits={nbits} in {metadata_file}"
            f" needs {2**nbits - 1} and {2**nbits}"
        )
    codec = ResidualCodec(centroids.float(), nbits, cutoffs.expand(dim, -1).contiguous(), weights.expand(dim, -1).contiguous())
    return PlaidFolder(path, config, metadata["num_chunks"], metadata["num_embeddings"], codec)


def _chunk_files(folder: PlaidFolder, number: int) -> dict[str, Path]:
    """Chunk ``number``'s four files, which must all exist."""
    path = folder.path
    files = {
        "doclens": path / f"doclens.{number}.json",
        "metadata": path / f"{number}.metadata.json",
        "codes": path / f"{number}.codes.pt",
        "residuals": path / f"{number}.residuals.pt",
    }
    for file in files.values():
        if not file.is_file():
            raise PlaidIndexError(f"chunk {number} of {folder.num_chunks} is missing: {file} does not exist")
    return files


def read_doclens(folder: PlaidFolder, number: int) -> list[int]:
    """Chunk ``number``'s token count per passage."""
    file = _chunk_files(folder, number)["doclens"]
    doclens = _json(file)
    if not isinstance(doclens, list) or not all(isinstance(n, int) and n > 0 for n in doclens):
        raise PlaidIndexError(f"{file} must list a positive token count per passage (colpg keeps at least one token)")
    return doclens


def read_chunk(folder: PlaidFolder, number: int, passage_offset: int) -> PlaidChunk:
    """Chunk ``number``'s doclens, codes and residuals, checked against the folder's metadata.

    ``passage_offset`` is where the chunk must start: the passages of the chunks before it.
    """
    codec = folder.codec
    files = _chunk_files(folder, number)
    doclens = read_doclens(folder, number)
    metadata = _json(files["metadata"])
    if not isinstance(metadata, dict) or metadata.get("passage_offset") != passage_offset or metadata.get("num_passages") != len(doclens):
        raise PlaidIndexError(
            f"{files['metadata']} must say passage_offset={passage_offset} and num_passages={len(doclens)}"
            f" (from the chunks before it and {files['doclens'].name}), found {metadata!r}"
        )
    tokens = sum(doclens)
    codes = _tensor(files["codes"], 1, "one centroid code per token")
    if (
        len(codes) != tokens
        or codes.is_floating_point()
        or (tokens and not 0 <= int(codes.min()) <= int(codes.max()) < len(codec.centroids))
    ):
        raise PlaidIndexError(
            f"{files['codes']} must hold {tokens} integer codes below {len(codec.centroids)} (the tokens of"
            f" {files['doclens'].name}, the centroids of centroids.pt); found {len(codes)} {codes.dtype} values"
        )
    residuals = _tensor(files["residuals"], 2, "packed residuals [tokens, bytes]")
    if residuals.dtype != torch.uint8 or residuals.shape[1] != codec.residual_bytes:
        raise PlaidIndexError(
            f"{files['residuals']} holds {residuals.dtype} residuals of {residuals.shape[1]} bytes per token; dim={codec.dim}"
            f" at nbits={codec.nbits} (metadata.json) packs to {codec.residual_bytes} uint8 bytes: was it built with other nbits?"
        )
    if len(residuals) != tokens:
        raise PlaidIndexError(f"{files['residuals']} holds {len(residuals)} tokens; {files['doclens'].name} counts {tokens}")
    packed = bit_order_table(codec.nbits)[residuals.long()]
    return PlaidChunk(passage_offset, doclens, codes.to(torch.int32), packed)


def _documents(collection: Path | None, passages: int) -> list[CollectionDocument]:
    """The collection's documents in pid order, or ids ``0 .. passages-1`` without text."""
    if collection is None:
        return [CollectionDocument(str(pid), "") for pid in range(passages)]
    documents = read_collection(collection)
    if len(documents) != passages:
        raise PlaidIndexError(f"collection {collection} holds {len(documents)} documents; the ColBERT index holds {passages} passages")
    return documents


def _encoder(folder: PlaidFolder, model: str | Path | Encoder | None) -> Encoder:
    """The model that encodes queries: ``model``, or the checkpoint the index's metadata names."""
    checkpoint = model if model is not None else folder.config.get("checkpoint")
    if checkpoint is None:
        raise ConfigurationError(f"{folder.path / 'metadata.json'} names no checkpoint; pass the model folder (--model)")
    try:
        encoder = checkpoint if isinstance(checkpoint, Encoder) else Encoder.from_pretrained(checkpoint, folder.encoder_settings)
    except CheckpointError as exc:
        hint = "" if model is not None else f" (the checkpoint named in {folder.path / 'metadata.json'}; pass --model FOLDER)"
        raise CheckpointError(f"{exc}{hint}") from exc
    if encoder.dim != folder.codec.dim:
        raise ConfigurationError(
            f"the model {encoder.name} gives {encoder.dim}-dim vectors; the ColBERT index at {folder.path} holds {folder.codec.dim}-dim vectors"
        )
    return encoder


def _rerank_store(folder: PlaidFolder, precision: str) -> RerankStore:
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {', '.join(PRECISIONS)} for an imported index, got {precision!r}")
    sample = torch.empty(0, folder.codec.dim)
    if precision == "int8":
        first = read_chunk(folder, 0, 0)
        sample = folder.codec.decompress(first.codes[:SAMPLE_TOKENS], first.packed[:SAMPLE_TOKENS])
    return train_store(precision, sample, folder.codec)


def _prepare(conn: psycopg.Connection[Any], name: str, source: dict[str, Any], overwrite: bool) -> store.IndexRecord | None:
    """The record of an import to resume, or None for a fresh one (after dropping the old index if asked)."""
    record = unfinished_build(conn, name, overwrite)
    if record is None:
        return None
    if record.config.get("import") != source:
        raise IndexExists(f"an unfinished build of {name!r} came from elsewhere; pass overwrite=True (CLI: --overwrite) to start again")
    return record


def import_colbert(
    name: str,
    path: str | Path,
    *,
    collection: str | Path | None = None,
    model: str | Path | Encoder | None = None,
    precision: str = "none",
    overwrite: bool = False,
    batch_size: int = 256,
    url: str | None = None,
) -> Index:
    """Import the ColBERT (PLAID) index at ``path`` as colpg index ``name``, ``batch_size`` passages per commit.

    ``collection`` (default: the collection file named in the index's metadata, if it exists)
    gives the documents' texts and ids in pid order; without one, ids are the pids and there is
    no text. ``model`` (a folder or an Encoder; default: the checkpoint named in the metadata)
    must give the index's dim; it encodes queries, with the index's query settings when loaded
    here. An interrupted import resumes when called again with the same arguments.

    Raises:
        PlaidIndexError: the folder is not a finished ColBERT index, or its files disagree.
        IndexExists: ``name`` exists and ``overwrite`` is False.
    """
    folder = read_folder(Path(path).resolve())
    named = folder.config.get("collection")
    if collection is None and isinstance(named, str) and Path(named).is_file():
        collection = named
    collection_path = Path(collection).resolve() if collection is not None else None
    rerank = _rerank_store(folder, precision)
    encoder = _encoder(folder, model)
    source = {
        "format": "colbert-plaid",
        "path": str(folder.path),
        "collection": str(collection_path) if collection_path else None,
        "precision": precision,
    }
    chunks = list(range(folder.num_chunks))
    documents = _documents(collection_path, sum(len(read_doclens(folder, number)) for number in chunks))
    url = url or db.database_url()
    with db.connect(url, autocommit=True) as conn:
        record = _prepare(conn, name, source, overwrite)
        if record is None:
            config = {
                "precision": precision,
                "encoder": dataclasses.asdict(encoder.settings),
                "import": source,
                "colbert": {key: folder.config.get(key) for key in ("checkpoint", "nbits", "dim", "doc_maxlen", "query_maxlen")},
            }
            with conn.transaction():
                index_id = store.create_index(conn, name=name, model=encoder.name, config=config, codec=folder.codec, rerank=rerank)
            written: set[str] = set()
        else:
            index_id, written = record.id, store.existing_ids(conn, record.id)
            logger.info("resuming the import of %s: %d of %d documents already written", name, len(written), len(documents))
        offset = 0
        with progress_bar(total=len(documents), desc=f"importing {name}", unit="doc") as bar:
            for number in chunks:
                chunk = read_chunk(folder, number, offset)
                starts = torch.cumsum(torch.tensor([0, *chunk.doclens]), 0).tolist()
                for first in range(0, len(chunk.doclens), batch_size):
                    batch = range(first, min(first + batch_size, len(chunk.doclens)))
                    todo = [i for i in batch if documents[offset + i].external_id not in written]  # each batch commits whole
                    spans = [slice(starts[i], starts[i + 1]) for i in todo]
                    with conn.transaction():
                        store.write_compressed_documents(
                            conn,
                            index_id,
                            [documents[offset + i] for i in todo],
                            [chunk.codes[span] for span in spans],
                            [chunk.packed[span] for span in spans],
                            folder.codec,
                            rerank,
                        )
                    bar.update(len(batch))
                offset += len(chunk.doclens)
            store.finish_build(conn, index_id)
    return Index(name, url=url, encoder=encoder)
