"""Search on a real index: candidates in SQL, MaxSim in the worker, filters, explanations, compatibility."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from colpg import db
from colpg.collection import CollectionDocument
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, EncodingError, IndexNotFound
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.orm import Document
from colpg.params import SearchParams, default_params
from colpg.rerank_stage import Shortlist
from colpg.scoring import maxsim_flat, owners
from colpg.search import Hit

CONFIG = IndexConfig(kmeans_niters=2)


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    corpus = [{"id": f"d{i}", "text": t, "metadata": {"n": i, "even": i % 2 == 0}} for i, t in enumerate(small_texts)]
    return Indexer(encoder, CONFIG).index("scifact", corpus)


def _exact_original(encoder: Encoder, texts: list[str], query: str, k: int) -> list[str]:
    documents = encoder.encode_documents(texts)
    scores = maxsim_flat(encoder.encode_queries([query]), torch.cat(documents), owners([len(d) for d in documents]), len(texts))[0]
    return [f"d{i}" for i in scores.topk(k).indices.tolist()]


def test_search_finds_what_exact_maxsim_finds(index: Index, encoder: Encoder, small_texts: list[str]) -> None:
    query = "white matter development in the newborn brain"
    hits = index.search(query, k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.external_id for h in hits][:3] == _exact_original(encoder, small_texts, query, 3)
    assert hits[0].text == small_texts[int(hits[0].external_id[1:])] and "n" in hits[0].metadata


def test_exact_search_scores_every_document(index: Index) -> None:
    """exact=True is MaxSim over every document's stored tokens: the same ids, order and scores as brute force."""
    query = "cancer"
    hits = index.search(query, k=100, exact=True)
    assert len(hits) == 24  # k larger than the collection returns the collection
    ids, _, tokens = index.searcher.stored_documents()
    vectors = index.encoder.encode_queries([query])
    scores = maxsim_flat(vectors, torch.cat(tokens), owners([len(t) for t in tokens]), len(ids))[0]
    expected = sorted(zip(ids, scores.tolist(), strict=True), key=lambda item: -item[1])
    assert [h.external_id for h in hits] == [i for i, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert len(index.search(query, k=100, ncells=1)) == 24


def test_where_filter_holds_for_every_hit(index: Index) -> None:
    where = Document.metadata_["even"].as_boolean()
    hits = index.search("cells and tissue", k=10, where=where)
    every = index.search("cells and tissue", k=24, exact=True)
    expected = [(h.external_id, h.score) for h in every if h.metadata["even"]][:10]
    assert [(h.external_id, h.score) for h in hits] == [(i, pytest.approx(s, abs=1e-4)) for i, s in expected]
    five = ["d1", "d4", "d9", "d16", "d23"]
    narrow = index.search("cells and tissue", k=10, where=Document.external_id.in_(five))
    assert sorted(h.external_id for h in narrow) == sorted(five)  # 5 matching documents: 5 hits


def test_sql_fragment_filter_with_bound_parameters(index: Index) -> None:
    hits = index.search("protein", k=10, where=("(documents.metadata ->> 'n')::int < :limit", {"limit": 3}))
    assert sorted(h.external_id for h in hits) == ["d0", "d1", "d2"]
    hostile = "0; DROP TABLE colpg.documents"
    assert index.search("protein", k=3, where=("documents.external_id = :x", {"x": hostile})) == []
    assert index.info()["documents"] == 24


def test_filter_larger_than_budget_goes_through_candidates(index: Index) -> None:
    """A filter passing more than nrerank documents checks the probe's best candidates against it in SQL."""
    where = Document.metadata_["even"].as_boolean()
    hits = index.search("brain", k=3, where=where, nrerank=4)
    assert len(hits) == 3 and all(h.metadata["even"] for h in hits)
    exact = index.search("brain", k=3, where=where, exact=True)
    assert [h.external_id for h in hits] == [h.external_id for h in exact]


def test_explanation_points_at_the_matching_token(migrated_url: str, encoder: Encoder) -> None:
    corpus = ["The zebra crossed the savanna at dawn.", "Quantum chromodynamics describes quarks.",
              "A recipe for sourdough bread.", "Glaciers retreat as climates warm."]
    index = Indexer(encoder, CONFIG).index("hand", corpus)
    hits = index.search("zebra", k=1, explain=True)
    assert hits[0].external_id == "0"
    assert hits[0].explanation is not None
    by_query_token = {m.query_token: m for m in hits[0].explanation}
    assert by_query_token["zebra"].document_token == "zebra"
    assert by_query_token["zebra"].similarity > 0.9
    assert by_query_token["[CLS]"].document_token == "[CLS]"


def test_batch_search_matches_single(index: Index) -> None:
    queries = ["neural development", "vaccine trial outcomes"]
    batch = index.search_batch(queries, k=3)
    assert [[h.external_id for h in hits] for hits in batch] == [[h.external_id for h in index.search(q, k=3)] for q in queries]


def test_bad_queries_are_clear(index: Index, migrated_url: str) -> None:
    with pytest.raises(EncodingError, match="query 0 is empty"):
        index.search("   ")
    with pytest.raises(ConfigurationError, match="k must be positive"):
        index.search("x", k=0)
    with pytest.raises(ConfigurationError, match=r"query vectors must be \[tokens, 384\]"):
        index.searcher.search_vectors(torch.zeros(32, 128), 3)
    with pytest.raises(IndexNotFound):
        Index("nope")


def test_default_params_by_k() -> None:
    assert all(default_params(k).nrerank >= k for k in (1, 10, 100, 1000))
    defaults = default_params(10)
    assert defaults.replace(nrerank=7) == SearchParams(defaults.ncells, 7, defaults.margin, defaults.slack, cell_margin=defaults.cell_margin)
    assert defaults.replace(slack=0.5).slack == 0.5 and defaults.replace(slack=float("inf")).slack == float("inf")
    with pytest.raises(ConfigurationError, match="ncells must be a positive integer"):
        SearchParams(0, 10)
    with pytest.raises(ConfigurationError, match="margin must be a number of 0 or more"):
        SearchParams(8, 10, -1.0)
    with pytest.raises(ConfigurationError, match="slack must be a number of 0 or more"):
        SearchParams(8, 10, slack=float("nan"))
    assert defaults.replace(residual=False).residual is False and defaults.residual is None
    with pytest.raises(ConfigurationError, match="residual must be True, False or None"):
        SearchParams(8, 10, residual="yes")  # type: ignore[arg-type]
    assert defaults.replace(cell_margin=0.5).cell_margin == 0.5
    with pytest.raises(ConfigurationError, match="cell_margin must be a number of 0 or more"):
        SearchParams(8, 10, cell_margin=-0.1)


class _Unchanged:
    """A rerank store whose raw rows are the tokens themselves and whose MaxSims are given (for Reranker without PostgreSQL)."""

    def __init__(self, scores: Callable[[list[torch.Tensor]], list[float]]) -> None:
        self.scores = scores

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def maxsims(self, query: torch.Tensor, coarse: bool = False) -> tuple[Callable[[list[torch.Tensor]], list[float]], float]:
        return self.scores, 0.0


class _AllHeld:
    """A view that holds every document at version 1 (for Reranker without PostgreSQL)."""

    def versions_of(self, ids: list[int]) -> list[int | None]:
        return [1] * len(ids)


def test_early_stop_rule_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """First-stage scores 10, 9, ..., 1 and exact scores 0.5 above them, two documents a step, k=2,
    one query token: after the first step the 2nd best exact score is 9.5 and the next candidate can
    reach at most 8 + 0.5 (largest gap) + slack, so slack 0 stops at 2 documents, slack 1 at 4."""
    from colpg import rerank_stage
    from colpg.rowcache import RowCache

    monkeypatch.setattr(rerank_stage, "EARLY_STEP", 2)
    first = [10.0 - i for i in range(10)]
    reranker = rerank_stage.Reranker(RowCache(0), torch.device("cpu"))
    monkeypatch.setattr(reranker, "begin", lambda pg, versions, store, ids: rerank_stage.Step(ids, {i: torch.full((1, 1), float(i)) for i in ids}, None))
    query = torch.zeros(1, 1)

    def best(slack: float) -> tuple[list[tuple[int, float]], int]:
        ranked, scored = reranker.best(None, _AllHeld(), _Unchanged(lambda rows: [first[int(r[0, 0])] + 0.5 for r in rows]), query, Shortlist(list(range(10)), first, slack), 2)  # type: ignore[arg-type]
        return [(r.document_id, r.score) for r in ranked], scored

    assert best(0.0) == ([(0, 10.5), (1, 9.5)], 2)
    assert best(1.0) == ([(0, 10.5), (1, 9.5)], 4)
    assert best(float("inf"))[1] == 10
    # A step of one (the caller's, as the residual stage gives): after 3, the next reaches 7 + 0.5 + 1 < 9.5.
    ranked, scored = reranker.best(None, _AllHeld(), _Unchanged(lambda rows: [first[int(r[0, 0])] + 0.5 for r in rows]), query, Shortlist(list(range(10)), first, 1.0, step=1), 2)  # type: ignore[arg-type]
    assert ([(r.document_id, r.score) for r in ranked], scored) == ([(0, 10.5), (1, 9.5)], 3)


def test_the_walk_reads_no_step_the_steps_scored_put_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next step's rows are read while a step is scored, unless the steps scored so far already
    put it out of reach. First stage 10, 9, ..., 1, two documents a step, k=2, slack 1; exact scores
    0.5 above the first stage, but 5 above for documents 2 and 3. After step 1 (k-th 9.5, gap 0.5)
    step 3's first candidate reaches 6 + 0.5 + 1 < 9.5: not read ahead; step 2 then raises the gap
    to 5 (6 + 5 + 1 = 12, the k-th) and the walk goes on, step 3 read when it is needed; step 4
    (4 + 5 + 1 < 12) is never read. The same hits and count as reading every step ahead."""
    from colpg import rerank_stage
    from colpg.rowcache import RowCache

    monkeypatch.setattr(rerank_stage, "EARLY_STEP", 2)
    first = [10.0 - i for i in range(10)]
    exact = [f + (5.0 if i in (2, 3) else 0.5) for i, f in enumerate(first)]
    reranker = rerank_stage.Reranker(RowCache(0), torch.device("cpu"))
    begun: list[list[int]] = []

    def begin(pg: object, versions: object, store: object, ids: list[int]) -> rerank_stage.Step:
        begun.append(list(ids))
        return rerank_stage.Step(ids, {i: torch.full((1, 1), float(i)) for i in ids}, None)

    monkeypatch.setattr(reranker, "begin", begin)
    store = _Unchanged(lambda rows: [exact[int(r[0, 0])] for r in rows])
    ranked, scored = reranker.best(None, _AllHeld(), store, torch.zeros(1, 1), Shortlist(list(range(10)), first, 1.0), 2)  # type: ignore[arg-type]
    assert [(r.document_id, r.score) for r in ranked] == [(2, 13.0), (3, 12.0)] and scored == 6
    assert begun == [[0, 1], [2, 3], [4, 5]]


def test_grouped_rows_walk_first_and_the_whole_query_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four like query tokens make one grouped row, whose MaxSims (0.1 below the whole query's: a
    lower bound) the early stop walks on; its best are then rescored with the whole query. First
    stage 10, 9, ..., 1, two documents a step, k=2: slack 0 stops the walk at 2 documents (the next
    bound reaches 8 + 0.4 < 9.4), slack 1 a token at 6 (4 + 0.4 + 4 < 9.4), as the whole query alone
    would; the results carry the whole query's scores."""
    from colpg import rerank_stage
    from colpg.rowcache import RowCache

    monkeypatch.setattr(rerank_stage, "EARLY_STEP", 2)
    monkeypatch.setattr(rerank_stage, "RESCORED", 4)
    first = [10.0 - i for i in range(10)]
    rows_scored: list[int] = []

    class Store(_Unchanged):
        def maxsims(self, query: torch.Tensor, coarse: bool = False) -> tuple[Callable[[list[torch.Tensor]], list[float]], float]:
            rows_scored.append(query.shape[0])
            whole = [first[i] + 0.5 for i in range(10)]
            lower = 0.0 if query.shape[0] == 4 else 0.1
            return (lambda rows: [whole[int(r[0, 0])] - lower for r in rows]), 0.0

    reranker = rerank_stage.Reranker(RowCache(0), torch.device("cpu"))
    monkeypatch.setattr(reranker, "begin", lambda pg, versions, store, ids: rerank_stage.Step(ids, {i: torch.full((1, 1), float(i)) for i in ids}, None))
    query = torch.tensor([[1.0, 0.0]] * 4)

    def best(slack: float) -> tuple[list[tuple[int, float]], int]:
        ranked, scored = reranker.best(None, _AllHeld(), Store(lambda rows: []), query, Shortlist(list(range(10)), first, slack), 2)  # type: ignore[arg-type]
        return [(r.document_id, r.score) for r in ranked], scored

    assert best(0.0) == ([(0, 10.5), (1, 9.5)], 2)
    assert rows_scored == [1, 4]
    assert best(1.0) == ([(0, 10.5), (1, 9.5)], 6)
    monkeypatch.setattr(rerank_stage, "GROUPED_SHARE", 0.0)  # the whole query alone
    assert best(1.0) == ([(0, 10.5), (1, 9.5)], 6)


def test_the_grouped_walk_finds_what_the_whole_query_finds(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real index, queries whose [MASK] padding groups (few rows for 32 tokens) get the same
    hits and scores from the walk on grouped rows as from the walk on the whole query."""
    from colpg import rerank_stage
    from colpg.scoring import grouped_query

    queries = ("brain development", "vaccine trial outcomes", "protein folding in cells")
    for vectors in index.encoder.encode_queries(list(queries)):
        assert grouped_query(vectors, rerank_stage.GROUPED_COSINE).shape[0] <= rerank_stage.GROUPED_SHARE * vectors.shape[0]
    grouped = [_ranking(index.search(query, k=5)) for query in queries]
    monkeypatch.setattr(rerank_stage, "GROUPED_SHARE", 0.0)
    assert [_ranking(index.search(query, k=5)) for query in queries] == grouped


def test_a_failed_read_is_raised_from_the_step_that_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next step's rows are read while this step is scored (Reranker.begin): a read that fails
    fails the search when its rows are needed, not silently, and no read is left running."""
    from concurrent.futures import Future

    from colpg import rerank_stage
    from colpg.rowcache import RowCache

    monkeypatch.setattr(rerank_stage, "EXACT_BATCH", 2)  # a full rerank, two documents a step
    reranker = rerank_stage.Reranker(RowCache(0), torch.device("cpu"))
    failed: Future[dict[int, torch.Tensor]] = Future()
    failed.set_exception(ConnectionError("server closed the connection unexpectedly"))

    def begin(pg: object, versions: object, store: object, ids: list[int]) -> rerank_stage.Step:
        if ids and ids[0] >= 2:
            return rerank_stage.Step(ids, {}, failed)
        return rerank_stage.Step(ids, {i: torch.full((1, 1), float(i)) for i in ids}, None)

    monkeypatch.setattr(reranker, "begin", begin)
    store = _Unchanged(lambda rows: [float(r[0, 0]) for r in rows])
    with pytest.raises(ConnectionError, match="server closed"):
        reranker.best(None, _AllHeld(), store, torch.zeros(1, 1), Shortlist(list(range(10))), 2)  # type: ignore[arg-type]
    assert failed.done()


def test_slack_reranks_fewer_documents(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real index, an early-stopped rerank scores at most what the full one does and finds its best hit."""
    from colpg import rerank_stage

    monkeypatch.setattr(rerank_stage, "EARLY_STEP", 4)
    searcher = index.searcher
    vectors = index.encoder.encode_queries(["white matter development in the newborn brain"])[0]
    full = searcher.search_vectors(vectors, 3, params=SearchParams(64, 24))
    assert searcher.stats["reranked"] == 24
    early = searcher.search_vectors(vectors, 3, params=SearchParams(64, 24, slack=0.0))
    assert searcher.stats["reranked"] <= 24 and searcher.stats["reranked"] % 4 == 0
    assert early[0].external_id == full[0].external_id
    assert [h.external_id for h in index.search("white matter development in the newborn brain", k=3, nrerank=24, slack=0.0)][:1] == [
        full[0].external_id
    ]


def test_a_cell_margin_probes_fewer_tokens_and_finds_the_best_hit(index: Index) -> None:
    """Each query token probes only its cells within the margin of its nearest (colpg.params): at 0, its nearest alone."""
    searcher = index.searcher
    vectors = index.encoder.encode_queries(["white matter development in the newborn brain"])[0]
    every = searcher.search_vectors(vectors, 3, params=SearchParams(64, 24))
    tokens = searcher.stats["tokens_scored"]
    nearest = searcher.search_vectors(vectors, 3, params=SearchParams(64, 24, cell_margin=0.0))
    assert searcher.stats["tokens_scored"] < tokens
    assert nearest[0].external_id == every[0].external_id
    assert [h.external_id for h in index.search("white matter development in the newborn brain", k=3, nrerank=24, cell_margin=0.0)][:1] == [
        every[0].external_id
    ]


@pytest.mark.parametrize("precision", ["none", "int8"])
def test_search_follows_rows_rewritten_behind_the_cache(
    migrated_url: str, encoder: Encoder, small_texts: list[str], precision: str
) -> None:
    """The resident tokens follow a token row rewritten in SQL (colpg.token_changes), and the row
    cache, keyed by the token row's version, serves its new rerank row, not the old one."""
    index = Indexer(encoder, IndexConfig(precision=precision, kmeans_niters=2)).index("rows", small_texts[:12])
    searcher = index.searcher
    assert searcher.warm(rows=True, progress=False) == 12
    assert len(searcher.cache) == 12
    query = "glacier ice sheets"
    best = index.search(query, k=1)[0]
    last = index.search(query, k=12)[-1]
    with db.connect(migrated_url) as conn:
        # Give the worst document the best one's tokens, behind the worker's back.
        conn.execute(
            """
            UPDATE colpg.document_tokens t SET ntokens = s.ntokens, codes = s.codes, residuals = s.residuals
            FROM colpg.document_tokens s JOIN colpg.documents sd ON sd.id = s.document_id, colpg.documents td
            WHERE td.id = t.document_id AND td.external_id = %s AND sd.external_id = %s AND td.index_id = sd.index_id
            """,
            (last.external_id, best.external_id),
        )
        conn.execute(
            """
            UPDATE colpg.rerank_vectors t SET payload = s.payload
            FROM colpg.rerank_vectors s JOIN colpg.documents sd ON sd.id = s.document_id, colpg.documents td
            WHERE td.id = t.document_id AND td.external_id = %s AND sd.external_id = %s AND td.index_id = sd.index_id
            """,
            (last.external_id, best.external_id),
        )
        conn.commit()
    hits = {h.external_id: h.score for h in index.search(query, k=12)}
    assert hits[last.external_id] == pytest.approx(best.score, abs=1e-5)
    assert len(searcher.loaded().view.delta_slots) == 1  # the rewritten document moved to the delta


@pytest.mark.parametrize("precision", ["none", "residual4", "fp16", "int8"])
def test_every_precision_store_searches(migrated_url: str, encoder: Encoder, small_texts: list[str], precision: str) -> None:
    index = Indexer(encoder, IndexConfig(precision=precision, kmeans_niters=2)).index("p", small_texts[:12])
    hits = index.search("brain development", k=3)
    assert len(hits) == 3 and hits[0].score > hits[2].score
    assert index.search("brain development", k=3, exact=True)[0].external_id == hits[0].external_id
    searcher = index.searcher
    loaded = searcher.loaded()
    with searcher._snapshot() as (_, pg):
        rows = searcher.reranker.rows(pg, loaded.view, loaded.store, loaded.view.ids.tolist())
    # the width the residual stage's default reckons the rows by (colpg.residual_stage.pays)
    assert {raw.shape[1] for _, raw in rows} == {loaded.store.width(encoder.dim)}


def test_the_residual_stage_runs_where_the_rows_outgrow_the_cache(migrated_url: str, index: Index) -> None:
    """Off by default where the row cache holds every row, on where it cannot; either way the same top hits."""
    query = index.encoder.encode_queries(["white matter development in the newborn brain"])[0]
    searcher = index.searcher
    held = searcher.search_vectors(query, 3)
    assert "whole_tokens" not in searcher.stats and "whole" not in searcher.timings
    forced = searcher.search_vectors(query, 3, params=default_params(3).replace(residual=True))
    assert searcher.stats["whole_tokens"] > 0
    by_text = index.search("white matter development in the newborn brain", 3, residual=True)  # the knob of Index.search
    assert searcher.stats["whole_tokens"] > 0 and [h.external_id for h in by_text] == [r.external_id for r in held]
    small = Index(index.name, url=migrated_url, encoder=index.encoder, cache_bytes=1024)
    outgrown = small.searcher.search_vectors(query, 3)
    assert small.searcher.stats["whole_tokens"] == searcher.stats["whole_tokens"]
    assert [r.external_id for r in held] == [r.external_id for r in forced] == [r.external_id for r in outgrown]
    assert [r.score for r in forced] == pytest.approx([r.score for r in held], abs=1e-5)
    small.searcher.close()


def test_the_rerank_walks_the_residual_stages_order_by_its_own_step(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the order of the whole scores the rerank checks every RERANK_STEP documents (colpg.residual_stage),
    in first-stage order every EARLY_STEP (colpg.rerank_stage): its documents scored come in those steps."""
    from colpg import rerank_stage, search

    monkeypatch.setattr(rerank_stage, "EARLY_STEP", 5)
    monkeypatch.setattr(search, "RERANK_STEP", 3)
    query = index.encoder.encode_queries(["white matter development in the newborn brain"])[0]
    searcher = index.searcher
    for residual, step in ((True, 3), (False, 5)):
        searcher.search_vectors(query, 3, params=SearchParams(64, 24, slack=0.0, residual=residual))
        assert 0 < searcher.stats["reranked"] < 24 and searcher.stats["reranked"] % step == 0


def test_changes_are_visible_to_the_next_query(index: Index) -> None:
    index.add([{"id": "new", "text": "Axolotl limb regeneration in salamanders."}])
    assert index.search("axolotl regeneration", k=1)[0].external_id == "new"
    index.delete(["new"])
    assert all(h.external_id != "new" for h in index.search("axolotl regeneration", k=5))




def test_cli_search_with_filter_and_explanation(index: Index) -> None:
    from typer.testing import CliRunner

    from colpg.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["search", "scifact", "brain development", "-k", "2", "--explain",
         "--where", "documents.metadata ->> 'n' = :n", "--param", "n=0"],
    )
    assert result.exit_code == 0, result.output
    assert "  1 " in result.output and "d0" in result.output and "matches:" in result.output
    assert "of the score" in result.output and "[MASK] padding" in result.output
    bad = runner.invoke(app, ["search", "scifact", "x", "--param", "n=0"])
    assert bad.exit_code != 0 and "--param needs --where" in bad.output
    unbound = runner.invoke(app, ["search", "scifact", "x", "--where", "documents.metadata ->> 'n' = :n"])
    assert unbound.exit_code == 1 and "it uses :n with no value given (CLI: --param NAME=VALUE)" in unbound.output
    assert "Traceback" not in unbound.output
    unused = runner.invoke(app, ["search", "scifact", "x", "--where", "documents.id > 0", "--param", "n=0"])
    assert unused.exit_code == 1 and "values were given for n, which it does not use" in unused.output
    full = runner.invoke(
        app, ["search", "scifact", "brain development", "-k", "2", "--nrerank", "24", "--slack", "inf", "--residual", "--cell-margin", "inf"]
    )
    assert full.exit_code == 0 and "  1 " in full.output, full.output
    negative = runner.invoke(app, ["search", "scifact", "x", "--slack", "-1"])
    assert negative.exit_code == 2 and "--slack" in negative.output
    negative = runner.invoke(app, ["search", "scifact", "x", "--cell-margin", "-0.5"])
    assert negative.exit_code == 2 and "--cell-margin" in negative.output


def test_eval_reports_quality_and_agreement_with_exact(index: Index, tmp_path: Path, small_texts: list[str]) -> None:
    import json

    from typer.testing import CliRunner

    from colpg.cli import app
    from colpg.evaluate import evaluate

    (tmp_path / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": small_texts[i][:60]}) for i in range(4))
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    report = evaluate(index, tmp_path, k=5, vs_exact=True)
    assert report.queries == 4
    assert report.approximate["MRR@10"] > 0.5  # a query cut from a document finds that document
    assert report.recall_vs_exact_stored is not None and report.recall_vs_exact_stored > 0.8
    assert report.recall_vs_exact_original is not None and report.recall_vs_exact_original > 0.8
    result = CliRunner().invoke(app, ["eval", "scifact", "--dataset", str(tmp_path), "--vs-exact", "-k", "5"])
    assert result.exit_code == 0, result.output
    assert "exact, original vectors" in result.output and "recall@5 vs exact on stored tokens" in result.output
    assert report.judged == report.judged_indexed == 4 and report.coverage_warning() is None and "warning" not in result.output
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\tgone{i}\t1\nq{i}\td{i}\t1\n" for i in range(4)))
    partial = CliRunner().invoke(app, ["eval", "scifact", "--dataset", str(tmp_path), "-k", "5"])
    assert partial.exit_code == 0, partial.output
    assert "warning: the index holds 4 of the 8 documents these queries judge relevant" in partial.output


def _ranking(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.external_id, round(h.score, 5)) for h in hits]


def test_coarse_rerank_scores_as_the_store_does(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 rerank on a CPU where int8 products pay scores with the query's first int8 part,
    then the near top with both: the hits and scores are those of the store's own scorer."""
    from colpg.stores import Int8Store, RerankStore

    queries = ("brain development", "vaccine trial outcomes", "protein folding in cells")
    monkeypatch.setattr("colpg.stores.int8_products_pay_on", lambda device: True)  # whatever this CPU's own choice
    monkeypatch.setattr("colpg.stores.wide_kernel", lambda lib: False)  # PyTorch's products, not the kernel's AVX-512 VNNI steps
    coarse = [_ranking(index.search(query, k=5, nrerank=24)) for query in queries]
    monkeypatch.setattr(Int8Store, "coarse_scorer", RerankStore.coarse_scorer)
    assert [_ranking(index.search(query, k=5, nrerank=24)) for query in queries] == coarse


def test_a_tiny_row_cache_gives_the_same_results(index: Index, migrated_url: str, encoder: Encoder) -> None:
    """Rerank rows evicted at every step (a 1-byte cap holds none) are read from PostgreSQL instead."""
    tiny = Index("scifact", url=migrated_url, encoder=encoder, cache_bytes=1)
    for query in ("brain development", "vaccine trial outcomes", "protein folding in cells"):
        assert _ranking(tiny.search(query, k=5)) == _ranking(index.search(query, k=5))
    assert len(tiny.searcher.cache) == 0 and tiny.searcher.cache.bytes == 0
    assert len(index.searcher.cache) > 0


def test_a_small_row_cache_hands_back_what_it_evicts(
    index: Index, migrated_url: str, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache that evicts as it goes returns the free heap once it has evicted its share (colpg.rowcache),
    and the results stay those of an unbounded cache."""
    from colpg import device

    monkeypatch.setattr("colpg.rowcache.TRIM_MIN_BYTES", 0)
    trims: list[None] = []
    monkeypatch.setattr("colpg.rerank_stage.release_freed_memory", lambda: trims.append(device.release_freed_memory()))
    small = Index("scifact", url=migrated_url, encoder=encoder, cache_bytes=256 << 10)
    for query in ("brain development", "vaccine trial outcomes", "protein folding in cells"):
        assert _ranking(small.search(query, k=5)) == _ranking(index.search(query, k=5))
    assert 0 < small.searcher.cache.bytes <= 256 << 10
    assert trims and small.searcher.cache.evicted < (256 << 10) // 4  # each search ends with the count below the share


HEAPS_SCRIPT = """
import ctypes, os, re, sys, tempfile, threading
from colpg.device import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
barrier = threading.Barrier(8)
def work():
    held = bytearray(64 << 10)  # from the thread's heap (below glibc's mmap threshold either way)
    barrier.wait()  # all eight hold memory at once, so none can take over another's heap
libc = ctypes.CDLL(None)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "info.xml")
    libc.fopen.restype = ctypes.c_void_p
    handle = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(handle))
    libc.fclose(ctypes.c_void_p(handle))
    print(len(re.findall("<heap nr=", open(path).read())))
"""


def test_a_search_process_keeps_few_heaps_for_all_its_threads() -> None:
    """glibc keeps the free top of every heap but the first, which no hand-back returns: once colpg
    asks (colpg.device.keep_freed_memory, before a model loads), threads share ARENAS heaps instead."""
    import ctypes
    import subprocess
    import sys

    from colpg.device import ARENAS

    if not hasattr(ctypes.CDLL(None), "malloc_info"):
        pytest.skip("not glibc: its heaps are what this checks")

    def heaps(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", HEAPS_SCRIPT, mode], capture_output=True, text=True, check=True).stdout)

    assert heaps("default") > ARENAS  # what the setting is for: glibc's default gives threads heaps of their own
    assert heaps("kept") <= ARENAS


def test_concurrent_changes_never_serve_a_stale_document(index: Index, migrated_url: str, encoder: Encoder) -> None:
    """Searches during adds, updates and deletes only return documents as some snapshot held them;
    afterwards the long-running searcher answers exactly as a fresh one and as exact search."""
    query = "axolotl limb regeneration"
    written: set[str] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(6):
                index.add([{"id": f"x{i}", "text": f"Axolotl limb regeneration, report {i}."}])
                written.add(f"x{i}")
                if i % 2:
                    index.update([{"id": f"x{i}", "text": "A recipe for sourdough bread."}])
                if i % 3 == 2:
                    index.delete([f"x{i}"])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def search() -> None:
        try:
            while not done.is_set():
                for hit in index.search(query, k=5):
                    assert hit.external_id.startswith("d") or hit.external_id in written | {f"x{i}" for i in range(6)}
                    if hit.external_id.startswith("x"):
                        assert "Axolotl" in (hit.text or "") or "sourdough" in (hit.text or "")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=search) for _ in range(2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    fresh = Index("scifact", url=migrated_url, encoder=encoder)
    assert _ranking(index.search(query, k=8)) == _ranking(fresh.search(query, k=8)) == _ranking(index.search(query, k=8, exact=True))
    alive = {h.external_id for h in index.search(query, k=40, exact=True) if h.external_id.startswith("x")}
    assert alive == {"x0", "x1", "x3", "x4"}


def test_a_rebuild_is_picked_up_by_a_running_searcher_and_worker(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> None:
    from colpg.worker import IngestWorker

    index = Indexer(encoder, CONFIG).index("live", small_texts[:8])
    worker = IngestWorker(migrated_url)
    assert worker.run_once() == 0
    assert index.search("brain", k=3)[0].external_id in {str(i) for i in range(8)}
    Indexer(encoder, CONFIG).index("live", [{"id": f"new{i}", "text": t} for i, t in enumerate(small_texts[8:16])], overwrite=True)
    hits = index.search("brain", k=3)  # the same Index object, opened before the rebuild
    assert len(hits) == 3 and all(h.external_id.startswith("new") for h in hits)
    with db.connect(migrated_url) as conn:
        conn.execute("INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('live', 'sql', 'Axolotl limb regeneration.')")
        conn.commit()
    assert worker.run_once() == 1  # the worker loaded the rebuilt index's codec instead of failing on its old id
    assert index.search("axolotl regeneration", k=1)[0].external_id == "sql"


def test_search_cost_follows_the_probed_cells_not_the_collection(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> None:
    """Documents whose tokens all lie under centroids the query does not probe add nothing to its work."""
    from colpg import store

    index = Indexer(encoder, CONFIG).index("cost", small_texts[:12])
    query = encoder.encode_queries(["white matter development in the newborn brain"])[0]
    searcher = index.searcher
    before = searcher.search_vectors(query, 3)
    scored = searcher.stats["tokens_scored"]
    loaded = searcher.loaded()
    ncells = searcher.stats["ncells"]
    centroids = loaded.codec.centroids.float()  # a searcher holds them in float16 (ResidualCodec.half)
    far = (query @ centroids.T).max(dim=0).values.argsort()[: 4].tolist()  # centroids no query token probes
    assert ncells < centroids.shape[0] - 4
    vectors = [centroids[far].clone() for _ in range(50)]
    documents = [CollectionDocument(f"far{i}", "unrelated", {}) for i in range(50)]
    with db.connect(migrated_url) as conn, conn.transaction():
        store.write_documents(conn, loaded.record.id, documents, vectors, loaded.codec, loaded.store)
    after = searcher.search_vectors(query, 3)
    assert searcher.loaded().view.documents == 62
    assert searcher.stats["tokens_scored"] == scored
    assert [r.external_id for r in after] == [r.external_id for r in before]


def test_default_cells_follow_the_index_size(migrated_url: str, encoder: Encoder, small_texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ncells=None probes cells_for(the view's tokens); an ncells given is kept whatever the size."""
    from colpg import params

    index = Indexer(encoder, CONFIG).index("sized", small_texts[:12])
    query = encoder.encode_queries(["white matter development in the newborn brain"])[0]
    searcher = index.searcher
    searcher.search_vectors(query, 3)
    assert searcher.stats["ncells"] == params.cells_for(0) == 64
    monkeypatch.setattr(params, "LARGE_INDEX_TOKENS", searcher.loaded().view.tokens)
    searcher.search_vectors(query, 3)
    assert searcher.stats["ncells"] == 96
    searcher.search_vectors(query, 3, params=default_params(3).replace(ncells=5))
    assert searcher.stats["ncells"] == 5


def test_a_loaded_index_is_left_out_of_garbage_collections(index: Index) -> None:
    """Loading an index freezes what the process holds by then (colpg.device.freeze_long_lived), so
    full collections skip the modules, the model and the view; and searches still find the same."""
    import gc

    gc.unfreeze()
    before = index.search("white matter development in the newborn brain", k=3)
    assert gc.get_freeze_count() > 0  # the first search loaded the index
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    index.searcher.warm()  # loaded already: nothing more is frozen
    assert gc.get_freeze_count() == 0
    assert [h.external_id for h in index.search("white matter development in the newborn brain", k=3)] == [h.external_id for h in before]
