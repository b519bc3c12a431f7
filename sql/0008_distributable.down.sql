-- Back to schema v7: the trim function of 0004 and no trim counter.

CREATE OR REPLACE FUNCTION colpg.trim_token_changes(target_index integer, keep integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    cut xid8;
    removed integer;
BEGIN
    -- Nothing to do until the log holds twice what it keeps: trims stay rare.
    IF NOT EXISTS (SELECT FROM colpg.token_changes WHERE index_id = target_index ORDER BY xid DESC OFFSET 2 * keep LIMIT 1) THEN
        RETURN 0;
    END IF;
    SELECT xid INTO cut FROM colpg.token_changes WHERE index_id = target_index ORDER BY xid DESC OFFSET keep LIMIT 1;
    DELETE FROM colpg.token_changes WHERE index_id = target_index AND xid <= cut;
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO colpg.token_changes_trimmed (index_id, horizon) VALUES (target_index, cut)
    ON CONFLICT (index_id) DO UPDATE SET horizon = greatest(colpg.token_changes_trimmed.horizon, EXCLUDED.horizon);
    RETURN removed;
END;
$$;

ALTER TABLE colpg.token_changes_trimmed DROP COLUMN trims;

-- The SQL functions of 0005 and the trigger function of 0003.
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

CREATE OR REPLACE FUNCTION colpg.documents_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('colpg_ingest', NEW.index_name);  -- equal payloads fold into one per transaction
    RETURN NULL;
END;
$$;
