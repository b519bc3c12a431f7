"""What keeps a search honest: a SQL filter stays within its index, and an unfinished index says so."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

from colpg import db
from colpg.cli import app
from colpg.encoder import Encoder
from colpg.errors import IndexNotReadyWarning
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer

CONFIG = IndexConfig(kmeans_niters=2)
runner = CliRunner()


@pytest.fixture
def two_indexes(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> tuple[Index, Index]:
    first = Indexer(encoder, CONFIG).index("first", [{"id": f"a{i}", "text": t, "metadata": {"lang": "en"}} for i, t in enumerate(small_texts[:12])])
    second = Indexer(encoder, CONFIG).index("second", [{"id": f"b{i}", "text": t} for i, t in enumerate(small_texts[12:])])
    return first, second


def test_an_or_in_a_sql_filter_stays_within_the_index(two_indexes: tuple[Index, Index]) -> None:
    first, _ = two_indexes
    where = ("documents.metadata ->> 'lang' = :lang OR documents.metadata ->> 'lang' IS NULL", {"lang": "en"})
    hits = first.search("protein expression in cells", k=24, where=where, exact=True)
    assert len(hits) == 12 and all(hit.external_id.startswith("a") for hit in hits)
    trailing_comment = ("documents.metadata ->> 'lang' = :lang -- a comment", {"lang": "en"})
    assert len(first.search("protein", k=24, where=trailing_comment, exact=True)) == 12


def test_the_cli_where_stays_within_the_index(two_indexes: tuple[Index, Index]) -> None:
    result = runner.invoke(
        app,
        ["search", "first", "protein expression in cells", "-k", "24", "--exact",
         "--where", "documents.metadata ->> 'lang' = 'en' OR documents.metadata ->> 'lang' IS NULL"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ids = [line.split()[2] for line in result.output.splitlines() if line.strip()]
    assert len(ids) == 12 and all(i.startswith("a") for i in ids)
    assert "Trusted" in runner.invoke(app, ["search", "--help"]).output


def test_an_unfinished_index_warns_on_search(two_indexes: tuple[Index, Index], migrated_url: str) -> None:
    first, _ = two_indexes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert first.search("protein", k=3)  # ready: no warning
    with db.connect(migrated_url) as conn:
        conn.execute("UPDATE colpg.indexes SET status = 'building' WHERE name = 'first'")
        conn.commit()
    with pytest.warns(IndexNotReadyWarning, match=r"'first' is still being built \(12 documents written so far\)"):
        assert first.search("protein", k=3)
    assert first.searcher.status == "building"
    result = runner.invoke(app, ["search", "first", "protein", "-k", "3"])
    assert result.exit_code == 0 and "warning: index 'first' is still being built" in result.output


def test_an_unfinished_index_says_so_over_http(two_indexes: tuple[Index, Index], migrated_url: str) -> None:
    from fastapi.testclient import TestClient

    from colpg.service import create_app

    client = TestClient(create_app(migrated_url, anonymous=True))
    ready = client.post("/indexes/first/search", json={"query": "protein", "k": 3}).json()
    assert ready["index_status"] == "ready" and ready["warning"] is None
    with db.connect(migrated_url) as conn:
        conn.execute("UPDATE colpg.indexes SET status = 'building' WHERE name = 'first'")
        conn.commit()
    with pytest.warns(IndexNotReadyWarning):
        building = client.post("/indexes/first/search", json={"query": "protein", "k": 3}).json()
    assert building["index_status"] == "building" and "still being built" in building["warning"] and building["hits"]
