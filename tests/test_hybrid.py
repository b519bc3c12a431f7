"""Hybrid search on a real index: the full-text column and colpg.fulltext_candidates, colpg's
candidates unioned with full-text and single-vector ones, ranked by MaxSim or RRF."""

from __future__ import annotations

from typing import Any, get_args

import psycopg
import pytest
import torch
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from colpg import db
from colpg.cli import app
from colpg.constants import DEFAULT_MATCH, Match
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError
from colpg.hybrid import RRF_K, Hybrid, VectorSource, hybrid_candidates, hybrid_rank
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.orm import Document, fulltext_stmt

CONFIG = IndexConfig(kmeans_niters=2)
QUERY = "1990"  # a number: d17's ("... reference curves for the UK, 1990") and no other's
RARE = "craniosynostosis"  # a word of d18's only


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    corpus = [{"id": f"d{i}", "text": t, "metadata": {"n": i, "even": i % 2 == 0}} for i, t in enumerate(small_texts)]
    return Indexer(encoder, CONFIG).index("scifact", corpus)


def _exact_scores(index: Index, query: str) -> dict[str, float]:
    return {h.external_id: h.score for h in index.search(query, k=100, exact=True)}


def test_fulltext_candidates_in_sql_respect_the_index(index: Index, encoder: Encoder, small_texts: list[str], migrated_url: str) -> None:
    Indexer(encoder, CONFIG).index("other", [{"id": "o1", "text": small_texts[18]}, {"id": "o2", "text": small_texts[0]}])
    with db.connect(migrated_url) as conn:
        conn.execute("SET ROLE colpg_reader")
        rows = conn.execute("SELECT * FROM colpg.fulltext_candidates('scifact', %s)", (RARE,)).fetchall()
        assert [r[1] for r in rows] == ["d18"] and rows[0][2] > 0
        other = conn.execute("SELECT external_id FROM colpg.fulltext_candidates('other', %s, 5)", (f"{RARE} or cerebral",)).fetchall()
        assert sorted(r[0] for r in other) == ["o1", "o2"]
        ranked = conn.execute("SELECT rank FROM colpg.fulltext_candidates('scifact', 'stem cells', 3)").fetchall()
        assert len(ranked) == 3 and [r[0] for r in ranked] == sorted((r[0] for r in ranked), reverse=True)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be between 1 and 10000, got 0"):
            conn.execute("SELECT * FROM colpg.fulltext_candidates('scifact', 'x', 0)")


def _sql_fulltext(conn: psycopg.Connection[Any], query: str, match: str) -> list[str]:
    rows = conn.execute("SELECT external_id FROM colpg.fulltext_candidates('scifact', %s, 10, %s)", (query, match)).fetchall()
    return [r[0] for r in rows]


def test_any_word_finds_what_every_word_misses(index: Index, migrated_url: str) -> None:
    query = f"{RARE} zebra"  # d18's rare word and a word of no document
    with db.connect(migrated_url) as conn:
        conn.execute("SET ROLE colpg_reader")
        assert _sql_fulltext(conn, query, "all") == []
        assert _sql_fulltext(conn, query, "any") == ["d18"]
        assert [r[0] for r in conn.execute("SELECT external_id FROM colpg.fulltext_candidates('scifact', %s)", (query,))] == (
            ["d18"] if DEFAULT_MATCH == "any" else []
        )
        assert conn.execute("SELECT colpg.fulltext_query('english', 'The Stem cells!', 'any')::text").fetchone() == ("'cell' | 'stem'",)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="match must be any or all, got 'some'"):
            conn.execute("SELECT * FROM colpg.fulltext_candidates('scifact', 'x', 5, 'some')")
    assert [h.external_id for h in index.search(query, k=3, hybrid=Hybrid(fulltext=10, colpg=0, match="any"))] == ["d18"]
    assert index.search(query, k=3, hybrid=Hybrid(fulltext=10, colpg=0, match="all")) == []
    with Session(db.create_engine(index.url)) as session:
        assert [d.external_id for d, _ in session.execute(fulltext_stmt("scifact", query, 10, match="any"))] == ["d18"]
        assert session.execute(fulltext_stmt("scifact", query, 10, match="all")).all() == []
    with pytest.raises(ConfigurationError, match="match must be one of all, any, got 'some'"):
        Hybrid(match="some")  # type: ignore[arg-type]


def test_every_word_keeps_phrases_and_exclusions(index: Index, migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        assert _sql_fulltext(conn, f"{RARE} -zebra", "all") == ["d18"]
        assert _sql_fulltext(conn, f"{RARE} -suture", "all") == []  # d18 has "suture": excluded
        assert "d18" in _sql_fulltext(conn, '"mesenchymal stem cells"', "all")
        assert "d18" not in _sql_fulltext(conn, '"cells stem mesenchymal"', "all")  # the words, not the phrase


HOSTILE = [
    "",
    "   ",
    "the of and a",  # English stop words only
    "'",
    "''",
    '"',
    '"unclosed phrase',
    "&|!():*",
    "!!! ((( ))) <-> <2> :* & | -",
    "stem & | cells ! : *",
    "'; DROP TABLE colpg.documents; --",
    "\\' \\ stem\\cells '' \\\\",
    "o'neil's cells",
    "-",
    "- - -stem",
    "or or or",
]


def test_hostile_queries_give_no_error_in_either_mode(index: Index, migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        for query in HOSTILE:
            for match in get_args(Match):
                assert isinstance(_sql_fulltext(conn, query, match), list), (query, match)
        assert _sql_fulltext(conn, "the of and a", "any") == _sql_fulltext(conn, "", "any") == []
        assert conn.execute("SELECT count(*) FROM colpg.documents").fetchone() == (24,)
    vectors = index.encoder.encode_queries(["stem cells"])[0]
    for query in filter(None, HOSTILE):  # an empty text is refused before the full-text stage
        for match in get_args(Match):
            hybrid_candidates(index.searcher, query, vectors, Hybrid(fulltext=5, colpg=0, match=match))


def test_sql_default_match_is_the_python_default(migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        row = conn.execute("SELECT pg_get_function_arguments('colpg.fulltext_candidates'::regproc)").fetchone()
    assert row is not None and f"match text DEFAULT '{DEFAULT_MATCH}'::text" in row[0]


def test_language_is_any_installed_configuration_and_documents_copy_it(migrated_url: str, encoder: Encoder) -> None:
    with pytest.raises(ConfigurationError, match="installed in PostgreSQL .*simple.*got 'klingon'"):
        Indexer(encoder, IndexConfig(kmeans_niters=2, language="klingon")).index("k", [{"id": "a", "text": "The cat."}])
    corpus = [{"id": "a", "text": "The cat sat."}, {"id": "b", "text": "A dog ran."}]
    Indexer(encoder, IndexConfig(kmeans_niters=2, language="simple")).index("plain", corpus)
    Indexer(encoder, IndexConfig(kmeans_niters=2)).index("english", corpus)
    with db.connect(migrated_url) as conn:
        configs = conn.execute("SELECT DISTINCT index_name, text_search_config::text FROM colpg.documents ORDER BY 1").fetchall()
        assert configs == [("english", "english"), ("plain", "simple")]
        # "the" is an English stop word, an ordinary word in the simple configuration.
        assert conn.execute("SELECT external_id FROM colpg.fulltext_candidates('plain', 'the')").fetchall() == [("a",)]
        assert conn.execute("SELECT external_id FROM colpg.fulltext_candidates('english', 'the')").fetchall() == []
        conn.execute("SET ROLE colpg_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE colpg.documents SET text_search_config = 'simple' WHERE index_name = 'english'")


def test_hybrid_finds_what_only_full_text_finds_ranked_by_maxsim(index: Index) -> None:
    options = Hybrid(fulltext=10, colpg=2, fusion="maxsim")
    vectors = index.encoder.encode_queries([QUERY])[0]
    lists = hybrid_candidates(index.searcher, QUERY, vectors, options)
    assert lists["fulltext"] == ["d17"] and "d17" not in lists["colpg"]
    hits = index.search(QUERY, k=3, hybrid=options)
    exact = _exact_scores(index, QUERY)
    assert {h.external_id for h in hits} == {"d17", *lists["colpg"]}
    assert [h.score for h in hits] == pytest.approx([exact[h.external_id] for h in hits], abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search(QUERY, k=1, hybrid=Hybrid(fulltext=10, colpg=0))[0].external_id == "d17"


def test_rrf_fuses_the_ranks(index: Index) -> None:
    query = "stem cells"
    options = Hybrid(fulltext=5, colpg=5, fusion="rrf")
    vectors = index.encoder.encode_queries([query])[0]
    lists = hybrid_candidates(index.searcher, query, vectors, options)
    expected = {
        e: sum(1 / (RRF_K + found.index(e) + 1) for found in lists.values() if e in found) for e in {*lists["colpg"], *lists["fulltext"]}
    }
    hits = index.search(query, k=4, hybrid=options, explain=True)
    assert [h.score for h in hits] == pytest.approx(sorted(expected.values(), reverse=True)[:4])
    assert all(expected[h.external_id] == pytest.approx(h.score) for h in hits)
    assert hits[0].explanation  # tokens scored for explanations, as in any search


def test_filter_combines_with_hybrid(index: Index) -> None:
    even = Document.metadata_["even"].as_boolean()
    assert index.search(QUERY, k=5, where=~even, hybrid=Hybrid(fulltext=10, colpg=0))[0].external_id == "d17"
    hits = index.search(QUERY, k=5, where=even, hybrid=Hybrid(fulltext=10, colpg=3))
    assert len(hits) == 3 and all(h.metadata["even"] for h in hits) and "d17" not in {h.external_id for h in hits}
    fragment = index.search("stem cells", k=24, where=("(metadata->>'n')::int < :n", {"n": 10}), hybrid=Hybrid())
    assert fragment and all(h.metadata["n"] < 10 for h in fragment)


def test_single_vector_source_of_an_application_table(index: Index, migrated_url: str) -> None:
    ids, _, tokens = index.searcher.stored_documents()
    means = [torch.nn.functional.normalize(t.float().mean(0), dim=0).tolist() for t in tokens]
    with db.connect(migrated_url) as conn:
        conn.execute("CREATE TABLE app_docs (doc text PRIMARY KEY, embedding vector(384))")
        conn.execute("CREATE INDEX ON app_docs USING hnsw (embedding vector_cosine_ops)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO app_docs VALUES (%s, %s::vector)", [(i, str(m)) for i, m in zip(ids, means, strict=True)])
        by_row = dict(conn.execute("SELECT external_id, id FROM colpg.documents").fetchall())
        conn.execute("CREATE TABLE app_rows (row_id bigint, embedding vector(384))")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO app_rows VALUES (%s, %s::vector)", [(by_row[i], str(m)) for i, m in zip(ids, means, strict=True)]
            )
        conn.commit()
    query = "white matter development in the newborn brain"
    vectors = index.encoder.encode_queries([query])[0]
    single = torch.nn.functional.normalize(vectors.mean(0), dim=0)
    nearest = sorted(ids, key=lambda i: -float(torch.tensor(means[ids.index(i)]) @ single))[:4]
    source = VectorSource("app_docs", "embedding", "doc", single, k=4)
    lists = hybrid_candidates(index.searcher, query, vectors, Hybrid(fulltext=0, colpg=0, vector=source))
    assert lists == {"vector": nearest}
    hits = index.search(query, k=4, hybrid=Hybrid(fulltext=0, colpg=0, vector=source, fusion="maxsim"))
    exact = _exact_scores(index, query)
    assert sorted(h.external_id for h in hits) == sorted(nearest)
    assert [h.score for h in hits] == pytest.approx(sorted((exact[i] for i in nearest), reverse=True), abs=1e-4)
    by_id = VectorSource("app_rows", "embedding", "row_id", single.tolist(), k=4, schema="public", ids="document_id")
    assert hybrid_candidates(index.searcher, query, vectors, Hybrid(fulltext=0, colpg=0, vector=by_id)) == {"vector": nearest}


def test_hostile_identifiers_are_names_not_sql(index: Index, migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        conn.execute("CREATE TABLE app_docs (doc text, embedding vector(384))")
        conn.execute("INSERT INTO app_docs VALUES ('d0', array_fill(0.1, ARRAY[384])::vector)")
        conn.commit()
    vectors = index.encoder.encode_queries(["brain"])[0]
    for table, column in (('app_docs" ; DROP TABLE app_docs; --', "embedding"), ("app_docs", "embedding <=> embedding) --")):
        source = VectorSource(table, column, "doc", [0.0] * 384)
        with pytest.raises(ConfigurationError, match="cannot be searched: expected a table with a pgvector column"):
            index.search("brain", hybrid=Hybrid(fulltext=0, colpg=0, vector=source))
    with pytest.raises(ConfigurationError, match="size \\(3\\)"):
        hybrid_candidates(
            index.searcher, "brain", vectors, Hybrid(fulltext=0, vector=VectorSource("app_docs", "embedding", "doc", [1.0, 0, 0]))
        )
    with db.connect(migrated_url) as conn:
        assert conn.execute("SELECT to_regclass('app_docs')").fetchone() == ("app_docs",)
    with pytest.raises(ConfigurationError, match="fusion must be one of maxsim, rrf, got 'sum'"):
        Hybrid(fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a source"):
        Hybrid(fulltext=0, colpg=0)


def test_a_document_updated_between_stages_is_ranked_at_its_current_tokens(index: Index) -> None:
    query = "craniofacial bone stem cells"
    vectors = index.encoder.encode_queries([query])[0]
    lists = hybrid_candidates(index.searcher, query, vectors, Hybrid(fulltext=5, colpg=5))
    assert "d18" in lists["fulltext"]
    index.update([{"id": "d18", "text": "Volcanic eruptions and magma chambers.", "metadata": {"n": 18, "even": True}}])
    ranked = {r.external_id: r.score for r in hybrid_rank(index.searcher, vectors, lists, 24, fusion="maxsim")}
    assert ranked["d18"] == pytest.approx(_exact_scores(index, query)["d18"], abs=1e-4)
    index.delete(["d17"])
    assert "d17" not in {r.external_id for r in hybrid_rank(index.searcher, vectors, {"fulltext": ["d17", "d18"]}, 5)}


def test_hybrid_over_http_and_cli(index: Index, migrated_url: str) -> None:
    import httpx
    from service_support import running

    from colpg.service import create_app

    with running(create_app(migrated_url, anonymous=True)) as base, httpx.Client(base_url=base, timeout=60) as http:
        body = {"query": QUERY, "k": 3, "hybrid": {"fulltext": 10, "colpg": 2}}
        hits = http.post("/indexes/scifact/search", json=body).json()["hits"]
        assert "d17" in [h["external_id"] for h in hits]
        rrf = http.post("/indexes/scifact/search", json=body | {"hybrid": {"fulltext": 10, "colpg": 0, "fusion": "rrf"}}).json()
        assert rrf["hits"][0]["external_id"] == "d17" and rrf["hits"][0]["score"] == pytest.approx(1 / (RRF_K + 1))
        refused = http.post("/indexes/scifact/search", json=body | {"hybrid": {"fusion": "sum"}})
        assert refused.status_code == 422
        for match, expected in (("any", ["d18"]), ("all", [])):
            found = http.post("/indexes/scifact/search", json={"query": f"{RARE} zebra", "hybrid": {"colpg": 0, "match": match}})
            assert [h["external_id"] for h in found.json()["hits"]] == expected
        assert http.post("/indexes/scifact/search", json=body | {"hybrid": {"match": "some"}}).status_code == 422
        vectors_only = http.post("/indexes/scifact/search", json={"vectors": [[1.0] * 384], "hybrid": {"fulltext": 5}})
        assert vectors_only.status_code == 422 and "query's text" in vectors_only.text
    result = CliRunner().invoke(app, ["search", "scifact", QUERY, "-k", "3", "--fulltext", "10", "--fusion", "rrf"])
    assert result.exit_code == 0, result.output
    assert "d17" in result.output.splitlines()[0]
    bad = CliRunner().invoke(app, ["search", "scifact", QUERY, "--fulltext", "10", "--fusion", "sum"])
    assert bad.exit_code != 0 and "fusion must be one of maxsim, rrf" in bad.output
    # d18 is among colpg's candidates either way; with any word it is also the full-text list's first, so RRF adds 1/(RRF_K+1).
    top = {
        m: CliRunner().invoke(app, ["search", "scifact", f"{RARE} zebra", "-k", "1", "--fulltext", "10", "--match", m])
        for m in ("any", "all")
    }
    assert all(r.exit_code == 0 and "d18" in r.output for r in top.values()), top
    assert float(top["any"].output.split()[1]) - float(top["all"].output.split()[1]) == pytest.approx(1 / (RRF_K + 1), abs=1e-3)
    refused_match = CliRunner().invoke(app, ["search", "scifact", QUERY, "--fulltext", "10", "--match", "some"])
    assert refused_match.exit_code != 0 and "match must be one of all, any" in refused_match.output


def test_fulltext_statement_from_the_orm_reranked_by_maxsim(index: Index) -> None:
    """Hybrid from SQLAlchemy: the full-text stage as a Select the application narrows, then MaxSim."""
    from colpg.orm import rerank

    stmt = fulltext_stmt("scifact", "stem cells", k=20).where(Document.metadata_["even"].as_boolean())
    with Session(db.create_engine(index.url)) as session:
        found = session.execute(stmt).all()
        assert found and all(row[0].metadata_["even"] for row in found)
        assert [row[1] for row in found] == sorted((row[1] for row in found), reverse=True)
        ranked = rerank(session, stmt, index, "stem cells", k=3)
    exact = _exact_scores(index, "stem cells")
    assert len(ranked) == min(3, len(found)) and {d.external_id for d, _ in ranked} <= {row[0].external_id for row in found}
    assert [score for _, score in ranked] == pytest.approx([exact[d.external_id] for d, _ in ranked], abs=1e-4)
