"""Alembic environment for colpg's own schema.

The database comes from the caller's connection (``config.attributes["connection"]``),
``sqlalchemy.url``, ``-x url=...``, or colpg's default (COLPG_DATABASE_URL or the embedded
server). The version table lives in the ``colpg`` schema, which is created here first.
"""

from __future__ import annotations

import logging.config

import sqlalchemy as sa
from alembic import context

from colpg import db
from colpg.migrate import VERSION_TABLE
from colpg.orm import SCHEMA, Base

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only colpg's schema; the rest of the database belongs to others."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=_include_name,
        **kwargs,
    )


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url") or db.database_url()


def run_offline() -> None:
    _configure(url=str(db.sqlalchemy_url(_url())), literal_binds=True)
    with context.begin_transaction():
        context.execute(sa.schema.CreateSchema(SCHEMA, if_not_exists=True))
        context.run_migrations()


def run_online(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateSchema(SCHEMA, if_not_exists=True))
    connection.commit()
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_online(given)
else:
    engine = db.create_engine(_url(), vector_types=False, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        run_online(connection)
    engine.dispose()
