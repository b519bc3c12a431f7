"""The rerank-precision stores: each kind knows its parameters, its columns, and how its rows decode.

A store keeps every token again at a higher precision than the 2-bit residuals, for the
final MaxSim: ``int8`` (the default, per-dimension scales), ``residual4`` (4-bit residuals
over the same centroids), ``fp16`` (pgvector halfvec) or ``none`` (the codes and residuals
themselves). Whatever the kind, a document's stored tokens reach search as one ``[tokens,
width]`` uint8 tensor (:meth:`RerankStore.raw`), which the row cache keeps and
:meth:`RerankStore.decode` turns into unit vectors. Rows are written and deleted with the
document's token row, in one transaction, so the token row's version is theirs too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pgvector import HalfVector

from colpg.codec import Int8Codec, ResidualCodec, fit_buckets
from colpg.device import int8_products_pay_on
from colpg.int8_kernel import int8_kernel, maxsim_scorer, wide_kernel
from colpg.int8_kernel import raws as kernel_raws
from colpg.scoring import Int8Query, maxsim_blocks

__all__ = ["KINDS", "RerankStore", "StoredRow", "store_for", "train_store"]

#: The kinds of rerank store, the order of ``colpg index create --precision``.
KINDS = ("none", "residual4", "int8", "fp16")

#: The most a MaxSim from the query's first int8 part alone may differ from both parts', per query
#: token: 3x the largest difference bench/probe.py measured (table 6: 0.00097, NFCorpus).
COARSE_ERROR = 0.003
#: Tokens converted to float and multiplied at once where int8 rows are scored in float on a CPU:
#: a block converted is still in cache when it is multiplied (bench/probe.py, table 10).
FLOAT_BLOCK = 2048
ARRAY_HEADER = 20  # array_send of int4[]: ndim, flags, element type, length, lower bound
HALFVEC_HEADER = 4  # halfvec_send: int16 dim, int16 unused

#: A fetched row: ``ntokens`` and the store's columns as bytes (codes in array_send's format).
StoredRow = Mapping[str, Any]


def codes_from_array_send(raw: bytes) -> np.ndarray:
    """int4[] in PostgreSQL's binary array format to int32 values.

    >>> codes_from_array_send(bytes(20) + bytes([0, 0, 0, 4, 0, 0, 0, 7])).tolist()
    [7]
    """
    return np.frombuffer(raw, dtype=">i4", offset=ARRAY_HEADER)[1::2].astype(np.int32)


def _bytes(raw: bytes | memoryview, rows: int) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(rows, -1)


def _codes_bytes(row: StoredRow) -> torch.Tensor:
    """Codes as 4 little-endian bytes per token, so codes and residual bytes share one uint8 tensor."""
    return torch.from_numpy(codes_from_array_send(row["codes"]).astype("<i4").view(np.uint8).reshape(-1, 4).copy())


class RerankStore(ABC):
    """One kind of rerank store. Subclasses say which columns a row needs and how they decode."""

    kind: ClassVar[str]
    #: The columns of ``sql/queries/search_rerank_rows.sql`` this store reads.
    columns: ClassVar[frozenset[str]]
    #: Whether rows go to ``colpg.rerank_vectors`` (``none`` reuses the token row).
    keeps_rows: ClassVar[bool] = True

    def params(self) -> dict[str, Any] | None:
        """What ``colpg.indexes.rerank_codec`` keeps of it."""
        return {"kind": self.kind}

    def wanted(self) -> dict[str, bool]:
        """The SQL flags that select this store's columns and no others."""
        return {f"want_{name}": name in self.columns for name in ("codes", "residuals", "payload", "vectors")}

    @abstractmethod
    def encode(self, vectors: torch.Tensor, codes: torch.Tensor) -> tuple[bytes | None, list[HalfVector] | None]:
        """One document's ``rerank_vectors`` row: ``(payload, vectors)``. Shapes: vectors [tokens, dim], codes [tokens]."""

    @abstractmethod
    def raw(self, row: StoredRow) -> torch.Tensor:
        """A fetched row's tokens as bytes. Shapes: -> [ntokens, width] uint8."""

    def raws(self, rows: Sequence[StoredRow]) -> list[torch.Tensor]:
        """:meth:`raw` of each row (a store may convert them together, the same bytes faster)."""
        return [self.raw(row) for row in rows]

    @abstractmethod
    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Shapes: [n, width] uint8 -> [n, dim] float32, L2-normalised."""

    @abstractmethod
    def width(self, dim: int) -> int:
        """Bytes of a token's raw form at ``dim`` dimensions (what the row cache holds of it)."""

    def scorer(self, query: torch.Tensor) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """Each stored token's similarity with each query token, for blocks of documents' rows (on
        the CPU), the query prepared once for every block. Shapes: query [q, dim]; the scorer:
        rows [n_i, width] -> [sum n_i, q], on the query's device."""
        return lambda rows: self.decode(torch.cat(rows).to(query.device)) @ query.T

    def coarse_scorer(self, query: torch.Tensor) -> tuple[Callable[[list[torch.Tensor]], torch.Tensor], float]:
        """A faster scorer for the whole rerank, and how far its MaxSim may lie from :meth:`scorer`'s,
        at most: the final top k are scored again with :meth:`scorer` (colpg.rerank_stage)."""
        return self.scorer(query), 0.0

    def maxsims(self, query: torch.Tensor, coarse: bool = False) -> tuple[Callable[[list[torch.Tensor]], list[float]], float]:
        """MaxSim of each document's rows, from :meth:`scorer` (``coarse``: :meth:`coarse_scorer`),
        and how far it may lie from the store's own scores. Shapes: the scorer: rows [n_i, width] -> n floats."""
        similarity, error = self.coarse_scorer(query) if coarse else (self.scorer(query), 0.0)
        return lambda rows: maxsim_blocks(similarity, rows, query.device), error


class Int8Store(RerankStore):
    """int8 per dimension. A row's raw form is each token's int8 values followed by its inverse
    norm (float32, computed once when the row is read), so scoring never re-normalises."""

    kind = "int8"
    columns = frozenset({"payload"})

    def __init__(self, codec: Int8Codec) -> None:
        self.codec = codec

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "scales": self.codec.scales.tolist()}

    def encode(self, vectors: torch.Tensor, codes: torch.Tensor) -> tuple[bytes, None]:
        return self.codec.compress(vectors).cpu().numpy().tobytes(), None

    def _scale(self, device: torch.device) -> torch.Tensor:
        return self.codec.scales.to(device) / 127

    def raw(self, row: StoredRow) -> torch.Tensor:
        return self.raws([row])[0]

    def raws(self, rows: Sequence[StoredRow]) -> list[torch.Tensor]:
        """Copied and their norms computed in one pass in C (colpg.int8_kernel), or in PyTorch for
        every row's tokens at once (fewer, larger operations), the same bytes: bench/rows.py times them."""
        if not rows:
            return []
        lengths = [row["ntokens"] for row in rows]
        lib = int8_kernel(self.codec.scales.shape[0])
        if lib is not None:
            return kernel_raws(lib, [row["payload"] for row in rows], lengths, self._scale(torch.device("cpu")))
        values = _bytes(b"".join(row["payload"] for row in rows), sum(lengths))
        scaled = values.view(torch.int8).float().mul_(self._scale(values.device))
        inverse_norms = torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_(min=1e-12).reciprocal_()
        return [
            torch.cat([v, n.view(torch.uint8)], dim=1)
            for v, n in zip(torch.split(values, lengths), torch.split(inverse_norms, lengths), strict=True)
        ]

    def _split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A row's int8 values (a strided view: products read it as fast as a copy) and inverse norms [n, 1]."""
        dim = raw.shape[1] - 4
        return raw[:, :dim].view(torch.int8), raw[:, dim:].contiguous().view(torch.float32)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        tokens, inverse_norms = self._split(raw)
        return tokens.float() * self._scale(raw.device) * inverse_norms

    def width(self, dim: int) -> int:
        return dim + 4  # the values and the inverse norm

    def scorer(
        self, query: torch.Tensor, parts: int | None = None, block: int = FLOAT_BLOCK
    ) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """The scales fold into the query, the stored norms into the result: one pass over the int8
        values, in integer arithmetic with the query in ``parts`` int8 parts (colpg.scoring.Int8Query;
        None: 2 on a CPU where they pay, colpg.device.int8_products_pay) or in float (0; None elsewhere,
        and on a GPU, where int8 products want shapes in multiples of 8), converted ``block`` tokens
        at a time on a CPU."""
        scaled = query * self._scale(query.device)
        parts = parts if parts is not None else 2 if _integer(query) else 0
        prepared = Int8Query.of(scaled, parts) if parts else None

        def score(rows: list[torch.Tensor]) -> torch.Tensor:
            tokens, inverse_norms = self._split(torch.cat(rows).to(query.device))
            if prepared is not None:
                return prepared.products(tokens) * inverse_norms
            step = block if tokens.device.type == "cpu" else max(1, tokens.shape[0])
            sims = torch.empty(tokens.shape[0], scaled.shape[0], dtype=scaled.dtype, device=scaled.device)
            for start in range(0, tokens.shape[0], step):
                torch.mm(tokens[start : start + step].to(scaled.dtype), scaled.T, out=sims[start : start + step])
            return sims.mul_(inverse_norms)

        return score

    def coarse_scorer(self, query: torch.Tensor) -> tuple[Callable[[list[torch.Tensor]], torch.Tensor], float]:
        """Where int8 products pay: the query's first int8 part alone (half the product), within COARSE_ERROR per query token."""
        if not _integer(query):
            return super().coarse_scorer(query)
        return self.scorer(query, parts=1), COARSE_ERROR * query.shape[0]

    def maxsims(self, query: torch.Tensor, coarse: bool = False) -> tuple[Callable[[list[torch.Tensor]], list[float]], float]:
        """On a CPU, in C (colpg.int8_kernel), coarse or not, where int8 products do not pay in PyTorch
        or the kernel has AVX-512 VNNI's wide steps (a 64-document step of the 10k: 1.2 against 2.2 ms, bench/rows.py, session 27)."""
        lib = int8_kernel(query.shape[1]) if query.device.type == "cpu" else None
        if lib is None or (_integer(query) and not wide_kernel(lib)):
            return super().maxsims(query, coarse)
        return maxsim_scorer(lib, query * self._scale(query.device)), 0.0


def _integer(query: torch.Tensor) -> bool:
    """Whether to score int8 rows in integer arithmetic: on a CPU whose int8 products beat float's."""
    return int8_products_pay_on(query.device)


class Residual4Store(RerankStore):
    kind = "residual4"
    columns = frozenset({"codes", "payload"})

    def __init__(self, codec: ResidualCodec) -> None:
        self.codec = codec

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "cutoffs": self.codec.cutoffs.flatten().tolist(), "weights": self.codec.weights.flatten().tolist()}

    def encode(self, vectors: torch.Tensor, codes: torch.Tensor) -> tuple[bytes, None]:
        return self.codec.compress(vectors, codes)[1].cpu().numpy().tobytes(), None

    def raw(self, row: StoredRow) -> torch.Tensor:
        return torch.cat([_codes_bytes(row), _bytes(row["payload"], row["ntokens"])], dim=1)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        codes = raw[:, :4].contiguous().view(torch.int32).flatten()
        return self.codec.decompress(codes, raw[:, 4:])

    def width(self, dim: int) -> int:
        return 4 + dim // 2  # the code and 4-bit residuals


class Fp16Store(RerankStore):
    kind = "fp16"
    columns = frozenset({"vectors"})

    def encode(self, vectors: torch.Tensor, codes: torch.Tensor) -> tuple[None, list[HalfVector]]:
        return None, [HalfVector(v) for v in vectors.cpu().numpy()]

    def raw(self, row: StoredRow) -> torch.Tensor:
        """``vectors`` come as one bytea of halfvec_send records: a 4-byte header, then big-endian halves."""
        records = np.frombuffer(row["vectors"], dtype=">f2").reshape(row["ntokens"], -1)[:, HALFVEC_HEADER // 2 :]
        return torch.from_numpy(records.astype("<f2").view(np.uint8).copy())

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return F.normalize(raw.contiguous().view(torch.float16).float(), dim=-1)

    def width(self, dim: int) -> int:
        return 2 * dim


class NoStore(RerankStore):
    """No store: the final rerank decompresses the 2-bit residuals (re-normalised)."""

    kind = "none"
    columns = frozenset({"codes", "residuals"})
    keeps_rows = False

    def __init__(self, codec: ResidualCodec) -> None:
        self.codec = codec

    def params(self) -> None:
        return None

    def encode(self, vectors: torch.Tensor, codes: torch.Tensor) -> tuple[bytes | None, list[HalfVector] | None]:
        raise ValueError("the 'none' store keeps no rows")

    def raw(self, row: StoredRow) -> torch.Tensor:
        return torch.cat([_codes_bytes(row), _bytes(row["residuals"], row["ntokens"])], dim=1)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        codes = raw[:, :4].contiguous().view(torch.int32).flatten()
        return self.codec.decompress(codes, raw[:, 4:])

    def width(self, dim: int) -> int:
        return 4 + self.codec.residual_bytes  # the code and the residuals


def store_for(params: dict[str, Any] | None, codec: ResidualCodec) -> RerankStore:
    """The store an index's ``rerank_codec`` parameters describe, over its residual codec."""
    if params is None:
        return NoStore(codec)
    kind = params["kind"]
    if kind == "int8":
        return Int8Store(Int8Codec(torch.tensor(params["scales"], dtype=torch.float32)))
    if kind == "residual4":
        cutoffs = torch.tensor(params["cutoffs"], dtype=torch.float32).view(codec.dim, 15)
        weights = torch.tensor(params["weights"], dtype=torch.float32).view(codec.dim, 16)
        return Residual4Store(ResidualCodec(codec.centroids, 4, cutoffs, weights))
    if kind == "fp16":
        return Fp16Store()
    raise ValueError(f"unknown rerank store {kind!r}; expected one of {', '.join(KINDS)}")


def train_store(kind: str, sample: torch.Tensor, codec: ResidualCodec) -> RerankStore:
    """A new store of ``kind`` fitted to a sample of token vectors. Shapes: sample [n, dim]."""
    if kind == "int8":
        return Int8Store(Int8Codec.fit(sample))
    if kind == "residual4":
        cutoffs, weights = fit_buckets(sample - codec.centroids[codec.compress(sample)[0]], 4)
        return Residual4Store(ResidualCodec(codec.centroids, 4, cutoffs, weights))
    if kind == "fp16":
        return Fp16Store()
    if kind == "none":
        return NoStore(codec)
    raise ValueError(f"unknown rerank store {kind!r}; expected one of {', '.join(KINDS)}")
