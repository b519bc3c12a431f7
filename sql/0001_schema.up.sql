-- colpg schema v1: the index catalogue, each index's codec (centroids, residual buckets),
-- its documents, and each document's token codes with packed residuals.
-- Applied by migrations/versions/0001_schema_v1.py after CREATE EXTENSION vector.
-- The schema "colpg" itself is created by the Alembic environment, which keeps its version table there.

CREATE FUNCTION colpg.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION colpg.touch_updated_at() IS 'Keeps updated_at current on every UPDATE.';

CREATE TABLE colpg.indexes (
    id              integer GENERATED ALWAYS AS IDENTITY,
    name            text        NOT NULL,
    model           text        NOT NULL,
    dim             integer     NOT NULL,
    nbits           smallint    NOT NULL,
    config          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    bucket_cutoffs  real[],
    bucket_weights  real[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT indexes_pkey PRIMARY KEY (id),
    CONSTRAINT indexes_name_key UNIQUE (name),
    CONSTRAINT indexes_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    CONSTRAINT indexes_dim_check CHECK (dim BETWEEN 1 AND 16000),
    CONSTRAINT indexes_nbits_check CHECK (nbits IN (1, 2, 4))
);
COMMENT ON TABLE colpg.indexes IS 'One row per colpg index: model, vector size, residual bits, ColBERT settings and the residual codec buckets.';
COMMENT ON COLUMN colpg.indexes.model IS 'Checkpoint the index was built with (folder path or hub id).';
COMMENT ON COLUMN colpg.indexes.config IS 'ColBERT and build settings (query_maxlen, doc_maxlen, markers, k-means, precision store).';
COMMENT ON COLUMN colpg.indexes.bucket_cutoffs IS 'Residual quantisation cutoffs (2^nbits - 1 values); NULL until the codec is trained.';
COMMENT ON COLUMN colpg.indexes.bucket_weights IS 'Residual bucket values (2^nbits values); NULL until the codec is trained.';
CREATE TRIGGER indexes_touch_updated_at BEFORE UPDATE ON colpg.indexes
    FOR EACH ROW EXECUTE FUNCTION colpg.touch_updated_at();

CREATE TABLE colpg.centroids (
    index_id  integer NOT NULL,
    code      integer NOT NULL,
    centroid  vector  NOT NULL,
    CONSTRAINT centroids_pkey PRIMARY KEY (index_id, code),
    CONSTRAINT centroids_index_id_fkey FOREIGN KEY (index_id) REFERENCES colpg.indexes (id) ON DELETE CASCADE,
    CONSTRAINT centroids_code_check CHECK (code >= 0)
);
COMMENT ON TABLE colpg.centroids IS 'k-means centroids of an index''s token vectors; a token''s code is its nearest centroid.';

CREATE TABLE colpg.documents (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    index_id     integer     NOT NULL,
    external_id  text        NOT NULL,
    text         text,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_pkey PRIMARY KEY (id),
    CONSTRAINT documents_index_id_fkey FOREIGN KEY (index_id) REFERENCES colpg.indexes (id) ON DELETE CASCADE,
    CONSTRAINT documents_index_id_external_id_key UNIQUE (index_id, external_id)
);
COMMENT ON TABLE colpg.documents IS 'Documents of each index: the application''s id, optional text and metadata.';
CREATE TRIGGER documents_touch_updated_at BEFORE UPDATE ON colpg.documents
    FOR EACH ROW EXECUTE FUNCTION colpg.touch_updated_at();

CREATE TABLE colpg.document_tokens (
    document_id  bigint  NOT NULL,
    ntokens      integer NOT NULL,
    codes        integer[] NOT NULL,
    residuals    bytea   NOT NULL,
    CONSTRAINT document_tokens_pkey PRIMARY KEY (document_id),
    CONSTRAINT document_tokens_document_id_fkey FOREIGN KEY (document_id) REFERENCES colpg.documents (id) ON DELETE CASCADE,
    CONSTRAINT document_tokens_ntokens_check CHECK (ntokens > 0 AND cardinality(codes) = ntokens)
);
COMMENT ON TABLE colpg.document_tokens IS 'Per document: one centroid code per token and the tokens'' residuals packed to dim*nbits/8 bytes each.';
-- Packed residuals are close to random bytes: skip pglz and store them as they are.
ALTER TABLE colpg.document_tokens ALTER COLUMN residuals SET STORAGE EXTERNAL;
