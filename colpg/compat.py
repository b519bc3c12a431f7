"""Stanford ColBERT's API over colpg, so a ColBERT script runs by changing its imports.

    from colpg.compat import Checkpoint, ColBERTConfig, Indexer, Run, RunConfig, Searcher

Only the retrieval maths carries over; ColBERT's run context (experiments, ranks, roots)
is accepted and ignored, because colpg keeps its indexes in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from colpg import index as colpg_index
from colpg import indexer as colpg_indexer
from colpg.encoder import DEFAULT_BATCH_SIZE, Encoder
from colpg.errors import IndexExists

__all__ = ["Checkpoint", "ColBERTConfig", "Indexer", "Ranking", "Run", "RunConfig", "Searcher"]


@dataclass
class ColBERTConfig:
    """ColBERT's settings under their own names; None means colpg's default for k."""

    doc_maxlen: int | None = None
    query_maxlen: int | None = None
    nbits: int = 2
    kmeans_niters: int = 4
    ncells: int | None = None
    centroid_score_threshold: float | None = None
    ndocs: int | None = None
    dim: int | None = None
    similarity: str | None = None
    attend_to_mask_tokens: bool | None = None
    bsize: int = 32
    checkpoint: str | None = None
    #: ColBERT's infrastructure settings (nranks, root, experiment, gpus, ...): accepted, unused.
    ignored: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **settings: Any) -> None:
        known = {f.name for f in dataclasses.fields(self)} - {"ignored"}
        for f in dataclasses.fields(self):
            if f.name != "ignored":
                setattr(self, f.name, f.default)
        self.ignored = {}
        for key, value in settings.items():
            if key in known:
                setattr(self, key, value)
            else:
                self.ignored[key] = value

    def encoder_settings(self) -> dict[str, Any]:
        names = ("doc_maxlen", "query_maxlen", "dim", "similarity", "attend_to_mask_tokens")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class RunConfig:
    """ColBERT's run settings (nranks, experiment, root, ...): accepted for compatibility."""

    nranks: int = 1
    experiment: str = "default"
    root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Run:
    """``with Run().context(RunConfig(...)):`` works and changes nothing."""

    @contextlib.contextmanager
    def context(self, config: RunConfig | None = None, inherit_config: bool = True) -> Iterator[RunConfig]:
        yield config or RunConfig()


class Indexer:
    """``Indexer(checkpoint=..., config=ColBERTConfig(...)).index(name=..., collection=[...])``."""

    def __init__(self, checkpoint: str | Path, config: ColBERTConfig | None = None, **_: Any) -> None:
        self.checkpoint = str(checkpoint)
        self.config = config or ColBERTConfig()

    def index(self, name: str, collection: Iterable[Any] | str | Path, overwrite: bool | str = False) -> str:
        """Build ``name``; ``overwrite`` takes ColBERT's values: True, False, "reuse", "resume", "force_silent_overwrite"."""
        if isinstance(collection, str):
            collection = Path(collection)
        config = colpg_indexer.IndexConfig(
            nbits=self.config.nbits,
            kmeans_niters=self.config.kmeans_niters,
            encode_batch_size=self.config.bsize,
            doc_maxlen=self.config.doc_maxlen,
            query_maxlen=self.config.query_maxlen,
        )
        indexer = colpg_indexer.Indexer(self.checkpoint, config)
        try:
            indexer.index(name, collection, overwrite=overwrite in (True, "force_silent_overwrite"))
        except IndexExists:
            if overwrite != "reuse":
                raise
        return name


class Ranking:
    """``search_all``'s result: per query, ``(pid, rank, score)`` triples."""

    def __init__(self, data: dict[Any, list[tuple[Any, int, float]]]) -> None:
        self.data = data

    def todict(self) -> dict[Any, list[tuple[Any, int, float]]]:
        return self.data

    def flat(self) -> list[tuple[Any, Any, int, float]]:
        return [(qid, pid, rank, score) for qid, hits in self.data.items() for pid, rank, score in hits]


def _pid(external_id: str) -> int | str:
    """ColBERT's passage ids are positions: give numbers back as ints."""
    return int(external_id) if external_id.isdigit() else external_id


class Collection(Mapping[int | str, str]):
    """``searcher.collection[pid]``: a document's text, read from the index when asked for."""

    def __init__(self, index: colpg_index.Index) -> None:
        self._index = index

    def __getitem__(self, pid: int | str) -> str:
        found = self._index.texts([str(pid)])
        if str(pid) not in found:
            raise KeyError(pid)
        return found[str(pid)]

    def __iter__(self) -> Iterator[int | str]:
        """Passage numbers in order, then any other ids."""
        pids = [_pid(i) for i in self._index.ids()]
        return iter(sorted(pids, key=lambda p: (isinstance(p, str), p if isinstance(p, int) else 0, str(p))))

    def __len__(self) -> int:
        return int(self._index.info()["documents"])


class Searcher:
    """``Searcher(index=name, config=ColBERTConfig(...)).search(query, k)`` -> ``(pids, ranks, scores)``."""

    def __init__(self, index: str, config: ColBERTConfig | None = None, checkpoint: str | None = None, **_: Any) -> None:
        self.config = config or ColBERTConfig()
        self.index = colpg_index.Index(index)
        settings = dict(self.index.record.config.get("encoder", {})) | self.config.encoder_settings()
        model = checkpoint or self.config.checkpoint or self.index.record.model
        self.index = colpg_index.Index(index, encoder=Encoder.from_pretrained(model, settings))
        self.collection = Collection(self.index)

    def search(self, text: str, k: int = 10, **_: Any) -> tuple[list[int | str], list[int], list[float]]:
        # ColBERT's ncells means what colpg's does; centroid_score_threshold and ndocs size PLAID's
        # stages, which colpg's search does not have (accepted, unused).
        hits = self.index.search(text, k, ncells=self.config.ncells)
        return [_pid(h.external_id) for h in hits], [h.rank for h in hits], [h.score for h in hits]

    def search_all(self, queries: Mapping[Any, str] | Sequence[str], k: int = 10, **_: Any) -> Ranking:
        items = list(queries.items()) if isinstance(queries, Mapping) else list(enumerate(queries))
        results = self.index.search_batch([text for _, text in items], k, ncells=self.config.ncells)
        return Ranking({qid: [(_pid(h.external_id), h.rank, h.score) for h in hits] for (qid, _), hits in zip(items, results, strict=True)})


class Checkpoint(Encoder):
    """Stanford ColBERT's ``Checkpoint`` methods over :class:`Encoder`.

    ``Checkpoint(path, colbert_config=...)`` accepts a mapping or any object with ColBERT's
    field names (query_maxlen, doc_maxlen, ...).
    """

    def __init__(self, name: str | Path, colbert_config: Any = None, *, device: str | torch.device | None = None) -> None:
        settings = colbert_config if colbert_config is None or isinstance(colbert_config, Mapping) else vars(colbert_config)
        loaded = Encoder.from_pretrained(name, settings, device=device)
        super().__init__(loaded.backbone, loaded.head, loaded.tokenizer, name=loaded.name, device=loaded.device, dtype=loaded.dtype)

    def queryFromText(self, queries: Sequence[str], bsize: int | None = None, **_: Any) -> torch.Tensor:
        """[n, query_maxlen, dim], like ColBERT's."""
        return self.encode_queries(queries, batch_size=bsize or DEFAULT_BATCH_SIZE)

    def docFromText(
        self,
        docs: Sequence[str],
        bsize: int | None = None,
        keep_dims: bool | Literal["flatten"] = True,
        showprogress: bool = False,
        **_: Any,
    ) -> Any:
        """ColBERT's three shapes: keep_dims=True -> (padded [n, max_tokens, dim], mask [n, max_tokens]);
        False -> list of [tokens, dim]; "flatten" -> ([total, dim], lengths)."""
        encode: Callable[..., Any] = self.encode_documents_flat if keep_dims == "flatten" else self.encode_documents
        result = encode(docs, batch_size=bsize or DEFAULT_BATCH_SIZE, progress=showprogress)
        if keep_dims is True:
            padded = nn.utils.rnn.pad_sequence(result, batch_first=True)
            lengths = torch.tensor([len(d) for d in result])
            return padded, torch.arange(padded.shape[1])[None, :] < lengths[:, None]
        return result
