"""colpg from SQL: the search functions, the health view, and what each role may do."""

from __future__ import annotations

import psycopg
import pytest
import torch

from colpg import db, store
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.scoring import maxsim_flat, owners


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    corpus = [{"id": f"d{i}", "text": t} for i, t in enumerate(small_texts)]
    return Indexer(encoder, IndexConfig(kmeans_niters=2, precision="fp16"), url=migrated_url).index("sqlapi", corpus)


def _vectors(tensor: torch.Tensor) -> list[object]:
    return [row.numpy() for row in tensor]


def _centroids(index: Index, url: str) -> torch.Tensor:
    """The index's centroids as stored (float32, as SQL reads them; a searcher holds them in float16)."""
    with db.connect(url) as conn:
        return store.load_codec(conn, index.record)[0].centroids


def test_candidates_function_matches_the_worker_lookup(index: Index, encoder: Encoder, migrated_url: str) -> None:
    query = encoder.encode_queries(["glaciers and ice sheets"])[0]
    cells = torch.unique((query @ _centroids(index, migrated_url).T).topk(2, dim=1).indices).tolist()
    with db.connect(migrated_url) as conn:
        from_sql = {row[0] for row in conn.execute("SELECT document_id FROM colpg.candidates('sqlapi', %s, 2)", (_vectors(query),))}
        expected = {
            row[0]
            for row in conn.execute(
                "SELECT document_id FROM colpg.document_tokens WHERE index_id = %s AND codes && %s::int[]", (index.record.id, cells)
            )
        }
    assert from_sql == expected and from_sql


def test_maxsim_in_sql_equals_the_worker(index: Index, encoder: Encoder, migrated_url: str) -> None:
    query = encoder.encode_queries(["glaciers and ice sheets"])[0]
    with db.connect(migrated_url) as conn:
        row = conn.execute(
            """
            SELECT colpg.maxsim(%s, r.vectors), d.external_id
            FROM colpg.rerank_vectors r JOIN colpg.documents d ON d.id = r.document_id
            WHERE d.external_id = 'd3' AND d.index_name = 'sqlapi'
            """,
            (_vectors(query),),
        ).fetchone()
        assert row is not None
        stored = conn.execute(
            "SELECT r.vectors FROM colpg.rerank_vectors r JOIN colpg.documents d ON d.id = r.document_id WHERE d.external_id = 'd3'"
        ).fetchone()
    assert stored is not None
    tokens = torch.from_numpy(__import__("numpy").stack([v.to_numpy() for v in stored[0]])).float()
    expected = maxsim_flat(query[None], tokens, owners([len(tokens)]), 1)[0, 0].item()
    assert row[0] == pytest.approx(expected, abs=1e-3)


def test_search_approx_ranks_in_sql(index: Index, encoder: Encoder, migrated_url: str) -> None:
    query = encoder.encode_queries(["glaciers and ice sheets"])[0]
    with db.connect(migrated_url) as conn:
        rows = conn.execute("SELECT external_id, score FROM colpg.search_approx('sqlapi', %s, 5)", (_vectors(query),)).fetchall()
        with pytest.raises(psycopg.errors.UndefinedObject, match='colpg index "nope" does not exist'):
            conn.execute("SELECT * FROM colpg.search_approx('nope', %s, 5)", (_vectors(query),))
    assert len(rows) == 5 and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    # The same centroid interaction in torch: per query token, the best of its 8 cells that the document holds.
    scores = query @ _centroids(index, migrated_url).T
    top = scores.topk(8, dim=1)
    with db.connect(migrated_url) as conn:
        documents = conn.execute(
            "SELECT d.external_id, t.codes FROM colpg.documents d JOIN colpg.document_tokens t ON t.document_id = d.id WHERE d.index_name = 'sqlapi'"
        ).fetchall()
    expected = {}
    for external_id, codes in documents:
        held = torch.isin(top.indices, torch.tensor(codes))
        expected[external_id] = torch.where(held, top.values, torch.zeros_like(top.values)).amax(dim=1).sum().item()
    assert [r[1] for r in rows] == pytest.approx([expected[r[0]] for r in rows], abs=1e-4)
    fifth = sorted(expected.values(), reverse=True)[4]
    assert rows[-1][1] == pytest.approx(fifth, abs=1e-4)  # the best five, ties aside


def test_health_view(index: Index, migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        row = conn.execute(
            "SELECT documents, ready, queued, failed, codes_residuals_bytes / tokens, rerank_bytes / tokens FROM colpg.index_health WHERE name = 'sqlapi'"
        ).fetchone()
    assert row is not None and row[:4] == (24, 24, 0, 0)
    assert 96 <= row[4] < 110 and 768 <= row[5] < 800  # 2-bit codes+residuals; fp16 store


def test_reader_searches_but_cannot_write_or_read_codec_internals(index: Index, encoder: Encoder, migrated_url: str) -> None:
    query = _vectors(encoder.encode_queries(["glaciers"])[0])
    with db.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE colpg_reader")
        assert len(conn.execute("SELECT * FROM colpg.search_approx('sqlapi', %s, 3)", (query,)).fetchall()) == 3
        assert conn.execute("SELECT count(*) FROM colpg.documents").fetchone() == (24,)
        for statement in (
            "SELECT codes FROM colpg.document_tokens LIMIT 1",
            "SELECT centroid FROM colpg.centroids LIMIT 1",
            "SELECT bucket_weights FROM colpg.indexes",
            "SELECT payload FROM colpg.rerank_vectors LIMIT 1",
            "INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('sqlapi', 'r', 'x')",
            "DELETE FROM colpg.documents",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_writer_writes_documents_only(index: Index, migrated_url: str) -> None:
    with db.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE colpg_writer")
        conn.execute("INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('sqlapi', 'w', 'Written by the writer role.')")
        conn.execute("UPDATE colpg.documents SET metadata = '{\"k\": 1}' WHERE external_id = 'w'")
        conn.execute("DELETE FROM colpg.documents WHERE external_id = 'd0'")  # its tokens go by cascade
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM colpg.centroids")
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT status FROM colpg.documents WHERE external_id = 'w'").fetchone() == ("queued",)
        assert conn.execute(
            "SELECT count(*) FROM colpg.document_tokens t JOIN colpg.documents d ON d.id = t.document_id WHERE d.external_id = 'd0'"
        ).fetchone() == (0,)


def test_search_functions_refuse_oversized_calls(index: Index, encoder: Encoder, migrated_url: str) -> None:
    query = _vectors(encoder.encode_queries(["glaciers"])[0])
    with db.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE colpg_reader")
        assert conn.execute("SELECT count(*) FROM colpg.candidates('sqlapi', %s, 256)", (query,)).fetchone() == (24,)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="ncells must be between 1 and 256, got 10000"):
            conn.execute("SELECT * FROM colpg.candidates('sqlapi', %s, 10000)", (query,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="ncells must be between 1 and 256, got 0"):
            conn.execute("SELECT * FROM colpg.search_approx('sqlapi', %s, 3, 0)", (query,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="between 1 and 512 token vectors, got 513"):
            conn.execute("SELECT * FROM colpg.search_approx('sqlapi', %s, 3)", (query[:1] * 513,))


def test_readers_cannot_probe_centroids_with_query_cells(index: Index, migrated_url: str) -> None:
    """query_cells gave any vector's inner product with every centroid: one-hot queries rebuilt them all."""
    one_hot = __import__("numpy").eye(index.record.dim, dtype="float32")[:1]
    with db.connect(migrated_url, autocommit=True) as conn:
        assert len(conn.execute("SELECT * FROM colpg.query_cells('sqlapi', %s, 256)", (list(one_hot),)).fetchall()) > 0  # the owner's
        conn.execute("SET ROLE colpg_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM colpg.query_cells('sqlapi', %s, 256)", (list(one_hot),))


def test_security_definer_functions_ignore_objects_planted_in_public(index: Index, encoder: Encoder, migrated_url: str) -> None:
    """A role that may create in public plants a better-matching unnest(vector[]): the functions
    that run as their owner must not call it (qualified names, search_path pg_catalog, pg_temp)."""
    query = _vectors(encoder.encode_queries(["glaciers"])[0])
    with db.connect(migrated_url, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO colpg_reader")
        conn.execute("SET ROLE colpg_reader")
        conn.execute(
            "CREATE FUNCTION public.unnest(vector[]) RETURNS SETOF vector LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'planted function ran as %', current_user; END $$"
        )
        assert len(conn.execute("SELECT * FROM colpg.search_approx('sqlapi', %s, 3)", (query,)).fetchall()) == 3
        assert len(conn.execute("SELECT * FROM colpg.candidates('sqlapi', %s, 2)", (query,)).fetchall()) > 0
        definers = conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p WHERE p.pronamespace = 'colpg'::regnamespace AND p.prosecdef"
        ).fetchall()
    assert definers and all(config == ["search_path=pg_catalog, pg_temp"] for _, config in definers), definers


def test_changed_text_is_not_found_by_its_old_tokens(index: Index, encoder: Encoder, migrated_url: str, small_texts: list[str]) -> None:
    """An UPDATE of text drops the document's tokens at once: until the worker indexes the new text,
    search finds it neither by its old words (showing the new text) nor at all."""
    from colpg.worker import IngestWorker

    old_words = small_texts[3][:80]
    assert index.search(old_words, k=1)[0].external_id == "d3"
    with db.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE colpg_writer")
        conn.execute(
            "UPDATE colpg.documents SET text = 'Penguins huddle through the Antarctic winter.' WHERE index_name = 'sqlapi' AND external_id = 'd3'"
        )
        conn.execute("RESET ROLE")
        status = conn.execute("SELECT status FROM colpg.documents WHERE external_id = 'd3'").fetchone()
        tokens = conn.execute(
            "SELECT count(*) FROM colpg.document_tokens t JOIN colpg.documents d ON d.id = t.document_id WHERE d.external_id = 'd3'"
        )
        assert status == ("queued",) and tokens.fetchone() == (0,)
    assert "d3" not in {hit.external_id for hit in index.search(old_words, k=24)}
    assert "d3" not in {hit.external_id for hit in index.search("penguins in the Antarctic winter", k=24)}

    assert IngestWorker(migrated_url).run_once() == 1
    hit = index.search("penguins in the Antarctic winter", k=1)[0]
    assert (hit.external_id, hit.text) == ("d3", "Penguins huddle through the Antarctic winter.")
    assert index.search(old_words, k=1)[0].external_id != "d3"
