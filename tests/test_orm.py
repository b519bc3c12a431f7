"""The ORM models against the migrated schema: round trips, constraints, cascades, triggers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from colpg import db
from colpg.encoder import Encoder
from colpg.orm import Centroid, Document, DocumentTokens, IndexEntry


@pytest.fixture
def engine(migrated_url: str) -> Iterator[sa.Engine]:
    engine = db.create_engine(migrated_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _index(name: str = "demo") -> IndexEntry:
    return IndexEntry(name=name, model="/models/minilm", dim=4, nbits=2, config={"query_maxlen": 32})


def test_round_trip_of_every_table(engine: sa.Engine) -> None:
    with Session(engine) as session:
        index = _index()
        index.centroids = [Centroid(code=c, centroid=np.eye(4, dtype=np.float32)[c]) for c in range(4)]
        document = Document(index=index, external_id="doc-1", text="hello world", metadata_={"lang": "en"})
        document.tokens = DocumentTokens(ntokens=3, codes=[0, 3, 1], residuals=bytes(range(3)))
        session.add_all([index, document])
        session.commit()
        index_id = index.id

    with Session(engine) as session:
        index = session.get_one(IndexEntry, index_id)
        assert index.config == {"query_maxlen": 32} and index.bucket_cutoffs is None
        assert [list(c.centroid) for c in index.centroids][3] == [0.0, 0.0, 0.0, 1.0]
        document = session.scalars(sa.select(Document).where(Document.metadata_["lang"].astext == "en")).one()
        assert document.tokens is not None and document.tokens.codes == [0, 3, 1]
        assert document.tokens.residuals == b"\x00\x01\x02"
        assert document.created_at.tzinfo is not None


def test_external_id_is_unique_per_index(engine: sa.Engine) -> None:
    with Session(engine) as session:
        first, second = _index("a"), _index("b")
        session.add_all([Document(index=first, external_id="x"), Document(index=second, external_id="x")])
        session.commit()  # the same external id in two indexes is fine
        session.add(Document(index=first, external_id="x"))
        with pytest.raises(sa.exc.IntegrityError, match="documents_index_id_external_id_key"):
            session.commit()


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"nbits": 3}, "indexes_nbits_check"),
        ({"dim": 0}, "indexes_dim_check"),
        ({"name": "bad name; drop"}, "indexes_name_check"),
    ],
)
def test_index_constraints(engine: sa.Engine, values: dict[str, object], constraint: str) -> None:
    with Session(engine) as session:
        index = _index()
        for key, value in values.items():
            setattr(index, key, value)
        session.add(index)
        with pytest.raises(sa.exc.IntegrityError, match=constraint):
            session.commit()


def test_token_count_must_match_codes(engine: sa.Engine) -> None:
    with Session(engine) as session:
        document = Document(index=_index(), external_id="d")
        document.tokens = DocumentTokens(ntokens=2, codes=[1], residuals=b"\x00")
        session.add(document)
        with pytest.raises(sa.exc.IntegrityError, match="document_tokens_ntokens_check"):
            session.commit()


def test_deleting_an_index_removes_everything_under_it(engine: sa.Engine) -> None:
    with Session(engine) as session:
        index = _index()
        index.centroids = [Centroid(code=0, centroid=[1.0, 0.0, 0.0, 0.0])]
        document = Document(index=index, external_id="d")
        document.tokens = DocumentTokens(ntokens=1, codes=[0], residuals=b"\x00")
        session.add(document)
        session.commit()
        session.execute(sa.delete(IndexEntry))
        session.commit()
        for model in (Centroid, Document, DocumentTokens):
            assert session.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_updated_at_follows_updates(engine: sa.Engine) -> None:
    with Session(engine) as session:
        document = Document(index=_index(), external_id="d", text="v1")
        session.add(document)
        session.commit()
        created = document.updated_at
        document.text = "v2"
        session.commit()
        session.refresh(document)
        assert document.updated_at > created


def test_residuals_skip_compression(engine: sa.Engine) -> None:
    """Packed residuals are near-random bytes: PostgreSQL must not try to compress them."""
    with engine.connect() as connection:
        storage = connection.execute(
            sa.text(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = 'colpg.document_tokens'::regclass"
                " AND attname = 'residuals'"
            )
        ).scalar_one()
    assert storage == "e"


def test_search_stmt_joins_the_applications_table(engine: sa.Engine, migrated_url: str, encoder: Encoder, small_texts: list[str]) -> None:
    """The README's example: an app's `articles` table, searched with a filter on its own column."""
    from colpg.indexer import IndexConfig, Indexer
    from colpg.orm import search, search_stmt

    class AppBase(DeclarativeBase):
        pass

    class Article(AppBase):
        __tablename__ = "articles"
        id: Mapped[str] = mapped_column(primary_key=True)
        published_at: Mapped[dt.date]

    AppBase.metadata.create_all(engine)
    corpus = [{"id": f"a{i}", "text": text} for i, text in enumerate(small_texts)]
    index = Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("articles", corpus)
    with Session(engine) as session:
        session.add_all(Article(id=f"a{i}", published_at=dt.date(2020 + i % 4, 1, 1)) for i in range(len(small_texts)))
        session.commit()

        query = "glaciers and ice sheets"
        stmt = (
            search_stmt("articles", encoder.encode_queries([query])[0])
            .join(Article, Article.id == Document.external_id)
            .where(Article.published_at >= dt.date(2022, 1, 1))
        )
        results = search(session, stmt, index, query, k=5)
        assert len(results) == 5 and all(isinstance(document, Document) for document, _ in results)
        dates = {a.id: a.published_at for a in session.scalars(sa.select(Article))}
        assert all(dates[document.external_id] >= dt.date(2022, 1, 1) for document, _ in results)
        assert [score for _, score in results] == sorted((score for _, score in results), reverse=True)
        recent = [f"a{i}" for i in range(len(small_texts)) if 2020 + i % 4 >= 2022]
        best = index.search(query, k=1, where=Document.external_id.in_(recent))[0]
        assert results[0][0].external_id == best.external_id and results[0][1] == pytest.approx(best.score, abs=1e-4)
