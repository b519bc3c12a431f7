-- colpg schema v8: what a Citus cluster needs before `colpg db distribute` (the same revision on a
-- plain server, where nothing changes in behaviour).
--   * colpg.trim_token_changes: `SELECT 1` instead of an empty select list (Citus cannot plan
--     `SELECT FROM` a distributed table), and every trim counts itself in
--     colpg.token_changes_trimmed.trims: on a cluster, searchers notice a trim by that counter,
--     since transaction ids (the horizon) are per node there.
--   * colpg.query_cells, colpg.candidates, colpg.search_approx in PL/pgSQL (below), and
--     colpg.documents_notify silent on shards.

ALTER TABLE colpg.token_changes_trimmed ADD COLUMN trims bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN colpg.token_changes_trimmed.trims IS 'How many times the index''s log was trimmed (searchers on a Citus cluster reload after a trim).';

CREATE OR REPLACE FUNCTION colpg.trim_token_changes(target_index integer, keep integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    cut xid8;
    removed integer;
BEGIN
    -- Nothing to do until the log holds twice what it keeps: trims stay rare.
    IF NOT EXISTS (SELECT 1 FROM colpg.token_changes WHERE index_id = target_index ORDER BY xid DESC OFFSET 2 * keep LIMIT 1) THEN
        RETURN 0;
    END IF;
    SELECT xid INTO cut FROM colpg.token_changes WHERE index_id = target_index ORDER BY xid DESC OFFSET keep LIMIT 1;
    DELETE FROM colpg.token_changes WHERE index_id = target_index AND xid <= cut;
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO colpg.token_changes_trimmed (index_id, horizon, trims) VALUES (target_index, cut, 1)
    ON CONFLICT (index_id) DO UPDATE
        SET horizon = greatest(colpg.token_changes_trimmed.horizon, EXCLUDED.horizon),
            trims = colpg.token_changes_trimmed.trims + 1;
    RETURN removed;
END;
$$;

-- Functions a cluster can run: the index id and the query's cells are computed first, into
-- PL/pgSQL variables, so that the statements over distributed tables reach the shards with
-- constants (Citus refuses a function that reads a distributed or reference table inside a
-- statement it pushes down to the shards). Same signatures, results and privileges.
DO $do$
DECLARE
    vs text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector');
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION colpg.query_cells(index_name text, query %1$I.vector[], ncells integer DEFAULT 8)
        RETURNS TABLE (query_token integer, code integer, score double precision)
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            target integer := colpg.index_id(index_name);
        BEGIN
            PERFORM colpg.check_query(pg_catalog.cardinality(query), ncells);
            RETURN QUERY
            SELECT q.i::integer, c.code, -(c.centroid OPERATOR(%1$I.<#>) q.v)
            FROM pg_catalog.unnest(query) WITH ORDINALITY AS q(v, i)
            CROSS JOIN LATERAL (
                SELECT cc.code, cc.centroid FROM colpg.centroids cc
                WHERE cc.index_id = target
                ORDER BY cc.centroid OPERATOR(%1$I.<#>) q.v
                LIMIT ncells
            ) c;
        END;
        $body$ $f$, vs);
END;
$do$;

CREATE OR REPLACE FUNCTION colpg.candidates(index_name text, query vector[], ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, version bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := colpg.index_id(index_name);
    cells integer[] := ARRAY(SELECT DISTINCT qc.code FROM colpg.query_cells(index_name, query, ncells) qc);
BEGIN
    RETURN QUERY
    SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint)
    FROM colpg.document_tokens t
    WHERE t.index_id = target AND t.codes && cells;
END;
$$;

CREATE OR REPLACE FUNCTION colpg.search_approx(index_name text, query vector[], k integer DEFAULT 10, ncells integer DEFAULT 8)
RETURNS TABLE (document_id bigint, external_id text, score double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := colpg.index_id(index_name);
    cell_tokens integer[];
    cell_codes integer[];
    cell_scores double precision[];
BEGIN
    SELECT array_agg(qc.query_token), array_agg(qc.code), array_agg(qc.score)
    INTO cell_tokens, cell_codes, cell_scores
    FROM colpg.query_cells(index_name, query, ncells) qc;
    RETURN QUERY
    WITH cells AS (
        SELECT u.query_token, u.code, u.score FROM unnest(cell_tokens, cell_codes, cell_scores) AS u(query_token, code, score)
    ), per_token AS (
        -- Centroid interaction: a query token scores a document by its best centroid among the
        -- token's cells; tokens with none of them count 0 (PLAID's pruning).
        SELECT t.document_id AS doc, cells.query_token AS qt, max(cells.score) AS best
        FROM colpg.document_tokens t JOIN cells ON cells.code = ANY(t.codes)
        WHERE t.index_id = target AND t.codes && cell_codes
        GROUP BY t.document_id, cells.query_token
    )
    SELECT d.id, d.external_id, sum(p.best) AS total
    FROM per_token p JOIN colpg.documents d ON d.id = p.doc
    GROUP BY d.id, d.external_id
    ORDER BY total DESC
    LIMIT k;
END;
$$;

-- On a cluster this trigger runs on the shards (colpg.documents_NNNN), where a NOTIFY would make
-- Citus's two-phase commit fail; the worker polls there instead (`colpg worker --poll`).
CREATE OR REPLACE FUNCTION colpg.documents_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'documents' THEN
        PERFORM pg_notify('colpg_ingest', NEW.index_name);  -- equal payloads fold into one per transaction
    END IF;
    RETURN NULL;
END;
$$;
