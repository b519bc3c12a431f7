"""One hierarchy for everything colpg raises on purpose, so callers can catch ``ColpgError``."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CitusBuildError",
    "ClusterError",
    "CollectionError",
    "ColpgError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DocumentError",
    "DocumentNotFound",
    "EncodingError",
    "IndexExists",
    "IndexNotFound",
    "IndexNotReadyWarning",
    "PlaidIndexError",
    "SchemaError",
    "ServerStartError",
]


class ColpgError(Exception):
    """Base class of colpg's own errors; the message says what was expected and what was found."""


class ConfigurationError(ColpgError):
    """A setting (environment variable, URL, path) cannot be used as given."""


class DatabaseUnavailable(ColpgError):
    """PostgreSQL could not be reached at the configured address."""


class ServerStartError(ColpgError):
    """The embedded PostgreSQL server could not be initialised or started."""


class CitusBuildError(ColpgError):
    """Citus could not be compiled from its source tarball (no C compiler, or the build failed; the message carries its log)."""


class ClusterError(ColpgError):
    """The local Citus cluster cannot be created, started or reached as asked (a port taken, a layout that differs)."""


class SchemaError(ColpgError):
    """The database lacks what colpg needs (pgvector, the colpg schema, a recent enough revision)."""


class CheckpointError(ColpgError):
    """A model checkpoint cannot be found, read, or matched to the architecture it claims."""


class EncodingError(ColpgError, ValueError):
    """Text given to the encoder cannot be encoded (empty, for example)."""


class IndexNotFound(ColpgError, LookupError):
    """No index of that name in the database."""


class IndexExists(ColpgError):
    """An index of that name is already built; pass overwrite=True to replace it."""


class DocumentError(ColpgError, ValueError):
    """Documents given to an index are malformed or clash with what it holds (ids present, absent, or repeated)."""


class DocumentNotFound(DocumentError, LookupError):
    """An index does not hold a document it was asked to change or delete."""


class CollectionError(ColpgError, ValueError):
    """A collection file cannot be read or parsed (missing, not UTF-8, not JSON, no tab)."""


class PlaidIndexError(ColpgError, ValueError):
    """A Stanford ColBERT (PLAID) index folder is missing a file, or a file does not say what its metadata does."""


class IndexNotReadyWarning(UserWarning):
    """A search ran on an index whose build has not finished: its results cover part of the collection."""
