-- colpg schema v5: the SQL surface hardened (issue 14).
--   * SECURITY DEFINER functions follow PostgreSQL's "Writing SECURITY DEFINER Functions
--     Safely": search_path = pg_catalog, pg_temp (pg_temp last, no schema others can write),
--     every table, function, type and operator schema-qualified (pgvector's by the schema it
--     is installed in). colpg.check_query bounds what one call may ask for: 1 to 256 cells
--     per query token and 1 to 512 query tokens.
--   * colpg.query_cells is internal: it returned each probed centroid's inner product with
--     any vector the caller chose, so a reader rebuilt every centroid with one-hot queries.
--     Readers keep candidates (ids and versions only) and search_approx, whose scores are
--     sums of query-centroid inner products over the cells a found document holds (README,
--     "Roles": what a reader can still derive).
--   * documents.id comes from its sequence only (GENERATED ALWAYS; COPY, used by colpg's own
--     bulk writes with ids reserved by nextval, still gives them), and colpg_writer may write
--     only index_id, index_name, external_id, text and metadata: status, error and id belong
--     to colpg (the worker, the Python API).
--   * A document whose text changes loses its token and rerank rows at once (trigger
--     documents_drop_stale_tokens), so search cannot find it by its old tokens, with its new
--     text, before the worker has indexed the new text; the token_changes trigger logs the
--     delete, so searchers drop it from their resident tokens.
--   * Two more roles (NOLOGIN groups, like colpg_reader and colpg_writer):
--       colpg_service  what colpg's Python API needs to search and to add, update and delete
--                      documents (Index.search/add/update/delete/info; `colpg serve`);
--       colpg_worker   what `colpg worker` needs: read queued documents and the codec, write
--                      token rows, mark documents ready or failed.
--     Neither may create, alter or drop anything, change colpg.indexes or centroids, or read
--     another schema's tables.

-- Limits and search_path --------------------------------------------------------------

CREATE FUNCTION colpg.check_query(ntokens integer, ncells integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ncells IS NULL OR ncells NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'ncells must be between 1 and 256, got %', coalesce(ncells::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ntokens IS NULL OR ntokens NOT BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'a query must hold between 1 and 512 token vectors, got %', coalesce(ntokens::text, 'none')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;
COMMENT ON FUNCTION colpg.check_query(integer, integer) IS
    'The limits of one search call: 1..256 cells per query token, 1..512 query tokens; an error names the one exceeded.';

ALTER FUNCTION colpg.index_id(text) SET search_path = pg_catalog, pg_temp;

-- The functions that use pgvector's operators name them by the extension's schema.
DO $do$
DECLARE
    vs text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector');
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION colpg.query_cells(index_name text, query %1$I.vector[], ncells integer DEFAULT 8)
        RETURNS TABLE (query_token integer, code integer, score double precision)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            SELECT colpg.check_query(pg_catalog.cardinality(query), ncells);
            SELECT q.i::integer, c.code, -(c.centroid OPERATOR(%1$I.<#>) q.v)
            FROM pg_catalog.unnest(query) WITH ORDINALITY AS q(v, i)
            CROSS JOIN LATERAL (
                SELECT cc.code, cc.centroid FROM colpg.centroids cc
                WHERE cc.index_id = colpg.index_id(index_name)
                ORDER BY cc.centroid OPERATOR(%1$I.<#>) q.v
                LIMIT ncells
            ) c
        $body$ $f$, vs);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION colpg.maxsim(query %1$I.vector[], document %1$I.vector[]) RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $body$
            SELECT sum(best) FROM (
                SELECT max(-(q.v OPERATOR(%1$I.<#>) d.v)) AS best
                FROM pg_catalog.unnest(query) WITH ORDINALITY AS q(v, i) CROSS JOIN pg_catalog.unnest(document) AS d(v)
                GROUP BY q.i
            ) per_token
        $body$ $f$, vs);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION colpg.maxsim(query %1$I.vector[], document %1$I.halfvec[]) RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $body$
            SELECT sum(best) FROM (
                SELECT max(-(q.v OPERATOR(%1$I.<#>) CAST(d.v AS %1$I.vector))) AS best
                FROM pg_catalog.unnest(query) WITH ORDINALITY AS q(v, i) CROSS JOIN pg_catalog.unnest(document) AS d(v)
                GROUP BY q.i
            ) per_token
        $body$ $f$, vs);
END;
$do$;
COMMENT ON FUNCTION colpg.query_cells(text, vector[], integer) IS
    'Internal (owner only): for each query token (1-based), its ncells nearest centroids by inner product, with the similarity.';

CREATE OR REPLACE FUNCTION colpg.candidates(index_name text, query vector[], ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, version bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint)
    FROM colpg.document_tokens t
    WHERE t.index_id = colpg.index_id(index_name)
      AND t.codes && ARRAY(SELECT DISTINCT qc.code FROM colpg.query_cells(index_name, query, ncells) qc)
$$;

CREATE OR REPLACE FUNCTION colpg.search_approx(index_name text, query vector[], k integer DEFAULT 10, ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, external_id text, score double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH cells AS (
        SELECT * FROM colpg.query_cells(index_name, query, ncells)
    ), candidates AS (
        SELECT t.document_id, t.codes
        FROM colpg.document_tokens t
        WHERE t.index_id = colpg.index_id(index_name)
          AND t.codes && ARRAY(SELECT DISTINCT code FROM cells)
    ), per_token AS (
        -- Centroid interaction: a query token scores a document by its best centroid among the
        -- token's cells; tokens with none of them count 0 (PLAID's pruning).
        SELECT c.document_id, cells.query_token, max(cells.score) AS best
        FROM candidates c JOIN cells ON cells.code = ANY(c.codes)
        GROUP BY c.document_id, cells.query_token
    )
    SELECT d.id, d.external_id, sum(p.best) AS score
    FROM per_token p JOIN colpg.documents d ON d.id = p.document_id
    GROUP BY d.id
    ORDER BY score DESC
    LIMIT k
$$;

REVOKE EXECUTE ON FUNCTION colpg.query_cells(text, vector[], integer) FROM colpg_reader;

-- Documents: ids, status and error belong to colpg ------------------------------------

ALTER TABLE colpg.documents ALTER COLUMN id SET GENERATED ALWAYS;

-- Column privileges: a table-level REVOKE also takes back column grants, so this is the whole of it.
REVOKE INSERT, UPDATE ON colpg.documents FROM colpg_writer;
GRANT INSERT (index_id, index_name, external_id, text, metadata),
      UPDATE (index_id, index_name, external_id, text, metadata) ON colpg.documents TO colpg_writer;
REVOKE USAGE ON SEQUENCE colpg.documents_id_seq FROM colpg_writer;  -- an identity default needs none

CREATE FUNCTION colpg.documents_drop_stale_tokens() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- SECURITY DEFINER: colpg_writer, whose UPDATE fires this, has no privilege on token rows.
    -- A trigger function cannot be called directly, and it deletes only the updated row's tokens.
    DELETE FROM colpg.rerank_vectors WHERE document_id = OLD.id;
    DELETE FROM colpg.document_tokens WHERE document_id = OLD.id;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION colpg.documents_drop_stale_tokens() IS
    'Deletes the token and rerank rows of a document whose text changed and that is queued again: search cannot find it by its old text.';
REVOKE EXECUTE ON FUNCTION colpg.documents_drop_stale_tokens() FROM PUBLIC;
-- After documents_before_write (BEFORE triggers fire by name), which queues the row again; a
-- caller that sets status 'ready' with the new text (it wrote the tokens) keeps its rows.
CREATE TRIGGER documents_drop_stale_tokens BEFORE UPDATE OF text ON colpg.documents
    FOR EACH ROW WHEN (NEW.text IS DISTINCT FROM OLD.text AND NEW.status <> 'ready')
    EXECUTE FUNCTION colpg.documents_drop_stale_tokens();

-- Roles ---------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'colpg_service') THEN
        CREATE ROLE colpg_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'colpg_worker') THEN
        CREATE ROLE colpg_worker NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA colpg TO colpg_service, colpg_worker;

-- colpg_service: Index.search (index row and codec, token rows and their change log, rerank
-- rows, documents), Index.add/update (ids reserved by nextval, COPY of documents ready with
-- their token and rerank rows; an update deletes and adds), Index.delete, Index.info.
-- The token_changes log and its trim run as the writer, hence its rights on them.
GRANT SELECT ON colpg.indexes, colpg.centroids, colpg.documents, colpg.document_tokens, colpg.rerank_vectors,
    colpg.token_changes, colpg.token_changes_trimmed, colpg.index_health TO colpg_service;
GRANT INSERT (id, index_id, external_id, text, metadata, status), DELETE ON colpg.documents TO colpg_service;
GRANT USAGE ON SEQUENCE colpg.documents_id_seq TO colpg_service;
GRANT INSERT ON colpg.document_tokens, colpg.rerank_vectors TO colpg_service;
GRANT INSERT, DELETE ON colpg.token_changes TO colpg_service;
GRANT INSERT, UPDATE ON colpg.token_changes_trimmed TO colpg_service;

-- colpg_worker: claim queued rows (FOR UPDATE needs an UPDATE privilege: status), read the
-- index and its codec, replace token and rerank rows, mark ready or failed.
GRANT SELECT ON colpg.indexes, colpg.centroids, colpg.documents, colpg.document_tokens, colpg.rerank_vectors,
    colpg.token_changes, colpg.token_changes_trimmed TO colpg_worker;
GRANT UPDATE (status, error) ON colpg.documents TO colpg_worker;
GRANT INSERT, DELETE ON colpg.document_tokens, colpg.rerank_vectors, colpg.token_changes TO colpg_worker;
GRANT INSERT, UPDATE ON colpg.token_changes_trimmed TO colpg_worker;
