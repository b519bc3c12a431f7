"""PLAID's token codec: k-means centroids plus a per-dimension n-bit residual.

Each token is stored as the code of its nearest centroid and ``dim * nbits / 8`` bytes of
bucketed residual; decompression is ``centroid + bucket value``, re-normalised. Buckets are
per dimension (cutoffs and values from quantiles of held-out residuals), because token
dimensions differ widely in spread. Pure tensor functions; storage is the caller's job.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from colpg.constants import NBITS
from colpg.errors import ConfigurationError
from colpg.scoring import owners, token_maxima

__all__ = [
    "Int8Codec",
    "ResidualCodec",
    "kmeans",
    "num_centroids_for",
    "pack_bits",
    "sample_size",
    "train_residual_codec",
]

logger = logging.getLogger(__name__)

TYPICAL_DOCLEN = 120  # ColBERTv2's assumption when sizing the k-means sample
HELDOUT_FRACTION = 0.05
MAX_HELDOUT = 50_000
ASSIGN_BATCH_ELEMENTS = 1 << 26  # tokens x centroids scored at once when assigning codes


def sample_size(num_docs: int) -> int:
    """ColBERTv2's k-means sample: about ``16 * sqrt(120 * num_docs)`` documents.

    >>> sample_size(100), sample_size(100_000)
    (100, 55426)
    """
    return min(num_docs, 1 + int(16 * math.sqrt(TYPICAL_DOCLEN * num_docs)))


def num_centroids_for(num_tokens: int) -> int:
    """ColBERTv2's centroid count: ``2^floor(log2(16 * sqrt(num_tokens)))``.

    >>> num_centroids_for(973_203)
    8192
    """
    return int(2 ** math.floor(math.log2(16 * math.sqrt(max(num_tokens, 1)))))


def kmeans(vectors: torch.Tensor, k: int, *, niters: int, seed: int) -> torch.Tensor:
    """L2-normalised k-means centroids with faiss (on the GPU when faiss has one).

    Shapes: vectors [n, dim] -> [k, dim] float32.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ConfigurationError(
            "building an index needs faiss for k-means: pip install 'colpg[cpu]' (or 'colpg[gpu]' on a CUDA machine)"
        ) from exc

    data = np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy())
    gpu = faiss.get_num_gpus() > 0 if hasattr(faiss, "get_num_gpus") else False
    # min_points_per_centroid=1: a small collection gets fewer centroids already (train_residual_codec);
    # faiss's own advice to supply 39 points per centroid would only be printed to stderr.
    clustering = faiss.Kmeans(data.shape[1], k, niter=niters, seed=seed, gpu=gpu, verbose=False, min_points_per_centroid=1)
    clustering.train(data)
    assert clustering.centroids is not None  # set by train()
    return F.normalize(torch.from_numpy(clustering.centroids.copy()), dim=-1)


def assign(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid (maximum inner product) of each vector.

    Most of a build's time at tens of thousands of centroids. On a CPU with faiss installed, its
    exact flat search, which fuses the product with the running maximum: 1.58x the tokens a second
    of torch's product and argmax at 32,768 centroids on 2 AVX2 cores (bench/assign.py). Elsewhere
    (a GPU, or no faiss) torch's, in batches (:func:`assign_batched`).

    Shapes: vectors [n, dim], centroids [k, dim] -> [n] int64.
    """
    if vectors.device.type != "cpu" or not len(vectors):
        return assign_batched(vectors, centroids)
    try:
        import faiss
    except ImportError:
        return assign_batched(vectors, centroids)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids.detach().to(torch.float32).numpy()))
    _, found = index.search(np.ascontiguousarray(vectors.detach().to(torch.float32).numpy()), 1)
    return torch.from_numpy(found[:, 0]).long()


def assign_batched(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """:func:`assign` as torch's product and argmax, ASSIGN_BATCH_ELEMENTS scores at a time.

    Shapes: vectors [n, dim], centroids [k, dim] -> [n] int64.
    """
    step = max(1, ASSIGN_BATCH_ELEMENTS // max(1, centroids.shape[0]))
    parts = [(chunk @ centroids.T).argmax(dim=1) for chunk in torch.split(vectors, step)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=vectors.device)


def _quantiles(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-column linear-interpolation quantiles, without torch.quantile's input size limit.

    Shapes: values [n, dim], q [m] -> [dim, m].
    """
    ordered = values.sort(dim=0).values
    position = q.to(values) * (values.shape[0] - 1)
    low, high = position.floor().long(), position.ceil().long()
    frac = (position - low.to(position))[:, None]
    return (ordered[low] * (1 - frac) + ordered[high] * frac).T.contiguous()


def pack_bits(values: torch.Tensor, nbits: int) -> torch.Tensor:
    """Pack n-bit values (0 .. 2^nbits - 1), most significant bit first, into bytes.

    Shapes: values [n, dim] -> [n, dim * nbits / 8] uint8.

    >>> pack_bits(torch.tensor([[3, 0, 1, 2]]), 2).tolist()
    [[198]]
    """
    n, dim = values.shape
    shifts = torch.arange(nbits - 1, -1, -1, device=values.device)
    bits = ((values.to(torch.uint8)[:, :, None] >> shifts.to(torch.uint8)) & 1).reshape(n, dim * nbits // 8, 8)
    weights = (2 ** torch.arange(7, -1, -1, device=values.device)).to(torch.uint8)
    return (bits * weights).sum(dim=-1, dtype=torch.uint8)


@dataclass(frozen=True)
class ResidualCodec:
    """Centroids and per-dimension residual buckets, and the encoder's query padding direction
    (:meth:`colpg.encoder.Encoder.padding_direction`; None: not known, as in an imported index).

    The centroids may be held in float16 (:meth:`half`, a search process's copy); every
    computation with them is in float32.

    Shapes: centroids [k, dim]; cutoffs [dim, 2^nbits - 1]; weights [dim, 2^nbits]; padding [dim].
    """

    centroids: torch.Tensor
    nbits: int
    cutoffs: torch.Tensor
    weights: torch.Tensor
    padding: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.nbits not in NBITS:
            raise ValueError(f"nbits must be one of {NBITS}, got {self.nbits}")
        if (self.dim * self.nbits) % 8:
            raise ValueError(f"dim * nbits must be a multiple of 8, got {self.dim} * {self.nbits}")
        if self.padding is not None and tuple(self.padding.shape) != (self.dim,):
            raise ValueError(f"the padding direction must have the centroids' {self.dim} dimensions, got shape {list(self.padding.shape)}")

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def residual_bytes(self) -> int:
        """Bytes of packed residual per token."""
        return self.dim * self.nbits // 8

    def to(self, device: torch.device) -> ResidualCodec:
        padding = None if self.padding is None else self.padding.to(device)
        return ResidualCodec(self.centroids.to(device), self.nbits, self.cutoffs.to(device), self.weights.to(device), padding)

    def half(self) -> ResidualCodec:
        """This codec with its centroids held in float16: what a search process keeps. A search uses them
        only for centroid scores (colpg.probe.centroid_scores converts them a block at a time), and half
        the bytes is 24 MB less at 32,768 x 384; a score moves by 2e-4 at most (float16 keeps 11 bits)."""
        return replace(self, centroids=self.centroids.half())

    def padding_gaps(self, vectors: torch.Tensor, codes: torch.Tensor, packed: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Per document: the best similarity of its exact tokens with the padding direction, less the
        best of what the first stage scores them (centroid + residual values, not re-normalised:
        colpg.probe). A query's [MASK] padding matches nothing well, so its best token in a document
        is often one far from every centroid, which 2 bits underrate on every padding position at
        once; the first stage adds this gap back for each of them (bench/README.md, table 14).
        0 for every document where the direction is not known.

        Shapes: vectors [n, dim]; codes [n]; packed [n, dim*nbits/8]; lengths sum to n -> [len(lengths)] float32.

        >>> codec = ResidualCodec(torch.eye(4)[:2], 2, torch.zeros(4, 3), torch.zeros(4, 4), torch.tensor([1.0, 0, 0, 0]))
        >>> vectors = torch.tensor([[0.6, 0.8, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
        >>> codec.padding_gaps(vectors, torch.tensor([1, 1, 0]), torch.zeros(3, 1, dtype=torch.uint8), [2, 1]).tolist()
        [0.6000000238418579, 0.0]
        """
        if self.padding is None:
            return torch.zeros(len(lengths))
        direction, centroids = self.padding[None], self.centroids.float()
        exact = vectors.to(centroids) @ self.padding
        table = self.query_table(direction, direction @ centroids.T, torch.float32)  # float32: the gap is stored as computed
        device = self.centroids.device
        scored = self.similarity(table, codes.to(device), packed.to(device))[:, 0]
        best = token_maxima(torch.stack([exact, scored], dim=1), owners(lengths, exact.device), len(lengths))
        return (best[:, 0] - best[:, 1]).cpu()

    def buckets(self, residuals: torch.Tensor) -> torch.Tensor:
        """Bucket index of each residual component. Shapes: [n, dim] -> [n, dim] int64."""
        return (residuals[:, :, None] > self.cutoffs[None, :, :]).sum(dim=-1)

    def compress(self, vectors: torch.Tensor, codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and packed residuals. Shapes: [n, dim] -> ([n] int64, [n, dim*nbits/8] uint8)."""
        centroids = self.centroids.float()
        vectors = vectors.to(centroids)
        codes = assign(vectors, centroids) if codes is None else codes
        residuals = vectors - centroids[codes]
        return codes, pack_bits(self.buckets(residuals), self.nbits)

    def decompress(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """Shapes: ([n], [n, dim*nbits/8]) -> [n, dim] float32, L2-normalised."""
        return F.normalize(self.centroids[codes.to(self.centroids.device)].float() + self.residual_values(packed), dim=-1)

    @functools.cached_property
    def _byte_table(self) -> torch.Tensor:
        """The residual values each byte value stands for, at each byte position of a token.

        Shapes: [dim * nbits / 8 * 256, 8 / nbits]; row ``position * 256 + byte``.
        """
        per_byte = 8 // self.nbits
        shifts = self.nbits * torch.arange(per_byte - 1, -1, -1, device=self.weights.device)
        buckets = (torch.arange(256, device=self.weights.device)[:, None] >> shifts) & (2**self.nbits - 1)
        dims = torch.arange(self.dim, device=self.weights.device).view(-1, per_byte)
        return self.weights[dims[:, None, :], buckets[None, :, :]].reshape(-1, per_byte)

    def query_table(self, query: torch.Tensor, centroid_scores: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """What each byte value at each position, and each centroid, adds to each query token's similarity.

        In float16 by default: :meth:`similarity` reads half the bytes (30% faster on 2 CPU cores) and a
        similarity moves by 6e-4 at most (tests/test_codec.py), far below the 2-bit residuals' own error.

        Shapes: query [q, dim]; centroid_scores [q, k] -> [dim*nbits/8 * 256 + k, q] ``dtype``; row
        ``position * 256 + byte`` for residual bytes, then one row per centroid.
        """
        residual = self.residual_table(query)
        return torch.cat([residual, centroid_scores.T.to(residual)]).to(dtype).contiguous()

    def residual_table(self, query: torch.Tensor) -> torch.Tensor:
        """What each byte value at each position adds to each query token's similarity: the rows of
        :meth:`query_table` for residual bytes, in the codec's precision (colpg.kernel sums them).

        Shapes: query [q, dim] -> [dim*nbits/8 * 256, q]; row ``position * 256 + byte``.
        """
        per_byte = 8 // self.nbits
        values = self._byte_table.view(-1, 256, per_byte)  # [positions, byte, dims of the byte]
        parts = query.to(values).reshape(query.shape[0], -1, per_byte)  # [q, positions, dims of the byte]
        return torch.einsum("pbj,qpj->pbq", values, parts).reshape(-1, query.shape[0])

    def similarity(self, table: torch.Tensor, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """Query token · (centroid + residual) for compressed tokens, without decompressing them:
        the sum of one :meth:`query_table` row per residual byte and one for the code.

        Summing table rows (embedding_bag) took 0.35 s for 800,000 tokens on 2 CPU cores,
        against 0.96 s to unpack the residuals and multiply.

        Shapes: table from :meth:`query_table`; codes [n]; packed [n, bytes] uint8 -> [n, q] float32.
        """
        width = packed.shape[1]
        rows = torch.empty(packed.shape[0], width + 1, dtype=torch.int32, device=packed.device)  # int32: 15% faster than int64
        torch.add(packed, torch.arange(0, width * 256, 256, dtype=torch.int32, device=packed.device), out=rows[:, :width])
        rows[:, width] = codes + width * 256
        return F.embedding_bag(rows, table, mode="sum").float()

    def residual_values(self, packed: torch.Tensor) -> torch.Tensor:
        """Unpacked residuals, one table lookup per byte (8x faster than unpacking bits on CPU).

        Shapes: [n, dim*nbits/8] uint8 -> [n, dim] float32.
        """
        packed = packed.to(self.weights.device)
        offsets = torch.arange(packed.shape[1], device=packed.device) * 256
        return F.embedding(packed.long() + offsets, self._byte_table).view(packed.shape[0], self.dim)


def fit_buckets(residuals: torch.Tensor, nbits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension cutoffs at quantiles i/2^nbits and bucket values at their midpoints.

    Shapes: residuals [n, dim] -> ([dim, 2^nbits - 1], [dim, 2^nbits]).
    """
    options = 2**nbits
    quantiles = torch.arange(options, dtype=torch.float32) / options
    cutoffs = _quantiles(residuals.float(), quantiles[1:])
    weights = _quantiles(residuals.float(), quantiles + 0.5 / options)
    return cutoffs, weights


def train_residual_codec(sample: torch.Tensor, *, nbits: int, num_centroids: int, niters: int, seed: int) -> ResidualCodec:
    """k-means on most of ``sample``; residual buckets from the held-out rest (ColBERTv2's recipe).

    A sample too small for ``num_centroids`` (a collection of a few sentences) gets fewer
    centroids, and too small to hold tokens out uses all of them for the buckets.

    Shapes: sample [n, dim] float32.
    """
    generator = torch.Generator().manual_seed(seed)
    shuffled = sample[torch.randperm(sample.shape[0], generator=generator)]
    heldout_count = min(MAX_HELDOUT, int(HELDOUT_FRACTION * shuffled.shape[0]))
    train = shuffled[heldout_count:] if heldout_count >= 2 ** (nbits + 1) else shuffled
    heldout = shuffled[:heldout_count] if heldout_count >= 2 ** (nbits + 1) else shuffled
    k = min(num_centroids, train.shape[0])
    if k < num_centroids:
        logger.info("%d centroids capped at %d: the sample has only %d tokens", num_centroids, k, train.shape[0])
    centroids = kmeans(train, k, niters=niters, seed=seed)
    residuals = heldout - centroids[assign(heldout, centroids)]
    cutoffs, weights = fit_buckets(residuals, nbits)
    return ResidualCodec(centroids, nbits, cutoffs, weights)


@dataclass(frozen=True)
class Int8Codec:
    """Per-dimension symmetric int8 with max-abs scales; decompression re-normalises.

    Shapes: scales [dim].
    """

    scales: torch.Tensor

    @classmethod
    def fit(cls, sample: torch.Tensor) -> Int8Codec:
        scales = sample.abs().amax(dim=0).float()
        # Some dimensions are zero in every token (two of MiniLM's): any scale will do there.
        return cls(torch.where(scales > 0, scales, torch.ones_like(scales)))

    def compress(self, vectors: torch.Tensor) -> torch.Tensor:
        """Shapes: [n, dim] -> [n, dim] int8."""
        scaled = vectors.float() / self.scales.to(vectors.device) * 127
        return scaled.round().clamp(-127, 127).to(torch.int8)

    def decompress(self, quantized: torch.Tensor) -> torch.Tensor:
        """Shapes: [n, dim] int8 -> [n, dim] float32, L2-normalised."""
        return F.normalize(quantized.float() * (self.scales.to(quantized.device) / 127), dim=-1)
