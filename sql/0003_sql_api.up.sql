-- colpg schema v3: colpg from SQL.
--   * ingest by INSERT: documents carry a status; a row inserted (or whose text changes) is
--     queued and announced on the channel colpg_ingest; `colpg worker` indexes it;
--   * search functions: colpg.candidates (the search's SQL stage, taking query vectors),
--     colpg.maxsim, colpg.search_approx (centroid interaction entirely in SQL);
--   * the view colpg.index_health;
--   * roles colpg_reader (search functions and documents) and colpg_writer (documents).

-- Ingest queue -------------------------------------------------------------------------

ALTER TABLE colpg.documents
    ADD COLUMN index_name text,
    ADD COLUMN status text NOT NULL DEFAULT 'queued',
    ADD COLUMN error text,
    ADD CONSTRAINT documents_status_check CHECK (status IN ('queued', 'ready', 'failed'));
UPDATE colpg.documents d SET index_name = i.name, status = 'ready' FROM colpg.indexes i WHERE i.id = d.index_id;
ALTER TABLE colpg.documents ALTER COLUMN index_name SET NOT NULL;
COMMENT ON COLUMN colpg.documents.index_name IS 'The index''s name: give it (or index_id) on INSERT, the other is filled in.';
COMMENT ON COLUMN colpg.documents.status IS 'queued until a worker has encoded the text, then ready; failed (with error) if it cannot be indexed.';
COMMENT ON COLUMN colpg.documents.error IS 'Why indexing failed; NULL otherwise.';
-- The queue: small, and only the queued rows.
CREATE INDEX documents_queued_idx ON colpg.documents (id) WHERE status = 'queued';

CREATE FUNCTION colpg.documents_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.index_id IS DISTINCT FROM OLD.index_id OR NEW.index_name IS DISTINCT FROM OLD.index_name THEN
        IF NEW.index_id IS NULL THEN
            SELECT id INTO NEW.index_id FROM colpg.indexes WHERE name = NEW.index_name;
            IF NEW.index_id IS NULL THEN
                RAISE EXCEPTION 'colpg index "%" does not exist', NEW.index_name USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        SELECT name INTO NEW.index_name FROM colpg.indexes WHERE id = NEW.index_id;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.text IS DISTINCT FROM OLD.text AND NEW.status = OLD.status THEN
        NEW.status := 'queued';  -- new text: index it again
        NEW.error := NULL;
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION colpg.documents_before_write() IS 'Fills index_id from index_name (or back), and queues a document whose text changed.';
CREATE TRIGGER documents_before_write BEFORE INSERT OR UPDATE ON colpg.documents
    FOR EACH ROW EXECUTE FUNCTION colpg.documents_before_write();

CREATE FUNCTION colpg.documents_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('colpg_ingest', NEW.index_name);  -- equal payloads fold into one per transaction
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION colpg.documents_notify() IS 'Wakes `colpg worker` (LISTEN colpg_ingest) when documents are queued.';
CREATE TRIGGER documents_notify AFTER INSERT OR UPDATE OF status ON colpg.documents
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION colpg.documents_notify();

-- Search functions ---------------------------------------------------------------------

CREATE FUNCTION colpg.index_id(index_name text) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    found integer;
BEGIN
    SELECT id INTO found FROM colpg.indexes WHERE name = index_name;
    IF found IS NULL THEN
        RAISE EXCEPTION 'colpg index "%" does not exist', index_name USING ERRCODE = 'undefined_object';
    END IF;
    RETURN found;
END;
$$;
COMMENT ON FUNCTION colpg.index_id(text) IS 'An index''s id by name; an unknown name is an error that names it.';

CREATE FUNCTION colpg.query_cells(index_name text, query vector[], ncells integer DEFAULT 8)
RETURNS TABLE (query_token integer, code integer, score double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT q.i::integer, c.code, -(c.centroid <#> q.v)
    FROM unnest(query) WITH ORDINALITY AS q(v, i)
    CROSS JOIN LATERAL (
        SELECT code, centroid FROM colpg.centroids
        WHERE index_id = colpg.index_id(index_name)
        ORDER BY centroid <#> q.v
        LIMIT ncells
    ) c
$$;
COMMENT ON FUNCTION colpg.query_cells(text, vector[], integer) IS
    'For each query token (1-based), its ncells nearest centroids by inner product, with the similarity.';

CREATE FUNCTION colpg.candidates(index_name text, query vector[], ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, version bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint)
    FROM colpg.document_tokens t
    WHERE t.index_id = colpg.index_id(index_name)
      AND t.codes && ARRAY(SELECT DISTINCT code FROM colpg.query_cells(index_name, query, ncells))
$$;
COMMENT ON FUNCTION colpg.candidates(text, vector[], integer) IS
    'Search stage 1 in SQL: the documents holding any query token''s ncells nearest centroids (GIN inverted list), '
    'with their token rows'' versions. Join colpg.documents to filter.';

CREATE FUNCTION colpg.maxsim(query vector[], document vector[]) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, public AS $$
    SELECT sum(best) FROM (
        SELECT max(-(q.v <#> d.v)) AS best
        FROM unnest(query) WITH ORDINALITY AS q(v, i) CROSS JOIN unnest(document) AS d(v)
        GROUP BY q.i
    ) per_token
$$;
COMMENT ON FUNCTION colpg.maxsim(vector[], vector[]) IS 'ColBERT MaxSim: the sum over query tokens of the best inner product with any document token.';

CREATE FUNCTION colpg.maxsim(query vector[], document halfvec[]) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, public AS $$
    SELECT sum(best) FROM (
        SELECT max(-(q.v <#> CAST(d.v AS vector))) AS best
        FROM unnest(query) WITH ORDINALITY AS q(v, i) CROSS JOIN unnest(document) AS d(v)
        GROUP BY q.i
    ) per_token
$$;
COMMENT ON FUNCTION colpg.maxsim(vector[], halfvec[]) IS 'MaxSim against the fp16 rerank store (rerank_vectors.vectors).';

CREATE FUNCTION colpg.search_approx(index_name text, query vector[], k integer DEFAULT 10, ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, external_id text, score double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
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
COMMENT ON FUNCTION colpg.search_approx(text, vector[], integer, integer) IS
    'Approximate search entirely in SQL (centroid interaction, no residuals): for applications that cannot run the worker, '
    'and the candidates of colpg.orm.search_stmt.';

-- Views --------------------------------------------------------------------------------

CREATE VIEW colpg.index_health AS
SELECT i.name, i.status, i.dim, i.nbits, i.config ->> 'precision' AS precision,
       count(d.id) AS documents,
       count(d.id) FILTER (WHERE d.status = 'ready') AS ready,
       count(d.id) FILTER (WHERE d.status = 'queued') AS queued,
       count(d.id) FILTER (WHERE d.status = 'failed') AS failed,
       (SELECT count(*) FROM colpg.centroids c WHERE c.index_id = i.id) AS centroids,
       (SELECT coalesce(sum(t.ntokens), 0) FROM colpg.document_tokens t WHERE t.index_id = i.id) AS tokens,
       (SELECT coalesce(sum(pg_column_size(t.codes) + pg_column_size(t.residuals)), 0)
        FROM colpg.document_tokens t WHERE t.index_id = i.id) AS codes_residuals_bytes,
       (SELECT coalesce(sum(coalesce(pg_column_size(r.payload), 0) + coalesce(pg_column_size(r.vectors), 0)), 0)
        FROM colpg.rerank_vectors r JOIN colpg.documents rd ON rd.id = r.document_id WHERE rd.index_id = i.id) AS rerank_bytes,
       min(d.created_at) FILTER (WHERE d.status = 'queued') AS oldest_queued_at
FROM colpg.indexes i
LEFT JOIN colpg.documents d ON d.index_id = i.id
GROUP BY i.id;
COMMENT ON VIEW colpg.index_health IS 'Per index: documents ready, queued and failed, the oldest queued, centroids, tokens, and the stored bytes of codes+residuals and of the rerank store.';

CREATE VIEW colpg.table_sizes AS
SELECT c.relname AS table_name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       coalesce(pg_total_relation_size(c.reltoastrelid), 0) AS toast_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'colpg' AND c.relkind = 'r';
COMMENT ON VIEW colpg.table_sizes IS 'Bytes on disk of each colpg table: heap, indexes (GIN inverted list included), TOAST.';

-- Roles --------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'colpg_reader') THEN
        CREATE ROLE colpg_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'colpg_writer') THEN
        CREATE ROLE colpg_writer NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA colpg TO colpg_reader, colpg_writer;
-- Readers search through the SECURITY DEFINER functions and read documents; codec tables stay closed.
REVOKE EXECUTE ON FUNCTION colpg.query_cells(text, vector[], integer), colpg.candidates(text, vector[], integer),
    colpg.search_approx(text, vector[], integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION colpg.query_cells(text, vector[], integer), colpg.candidates(text, vector[], integer),
    colpg.search_approx(text, vector[], integer, integer) TO colpg_reader;
GRANT SELECT ON colpg.documents, colpg.index_health TO colpg_reader, colpg_writer;
GRANT SELECT (id, name, model, dim, nbits, config, status, created_at, updated_at) ON colpg.indexes TO colpg_reader, colpg_writer;
GRANT INSERT, UPDATE, DELETE ON colpg.documents TO colpg_writer;
GRANT USAGE ON SEQUENCE colpg.documents_id_seq TO colpg_writer;
