-- colpg schema v4: a log of token-row changes, so a search process keeps its resident copy of
-- an index current by reading, in each search's snapshot, only what changed since its last one.
--   * colpg.token_changes: one row per document whose token row was inserted, updated or
--     deleted (by a trigger, so every writer is covered: colpg, the worker, plain SQL), with the
--     writing transaction's id. A reader holding the snapshot S it last synced to asks for the
--     rows with xid >= xmin(S) that S could not see: exactly what committed after S.
--   * colpg.token_changes_trimmed: how far each index's log was trimmed; a reader whose last
--     snapshot is older reloads the index instead.

CREATE TABLE colpg.token_changes (
    index_id     integer NOT NULL,
    document_id  bigint  NOT NULL,
    xid          xid8    NOT NULL DEFAULT pg_current_xact_id()
);
COMMENT ON TABLE colpg.token_changes IS 'Documents whose token rows changed, with the writing transaction: how searchers keep their resident tokens current.';
CREATE INDEX token_changes_index_id_xid_idx ON colpg.token_changes (index_id, xid);

CREATE TABLE colpg.token_changes_trimmed (
    index_id  integer NOT NULL,
    horizon   xid8    NOT NULL,
    CONSTRAINT token_changes_trimmed_pkey PRIMARY KEY (index_id)
);
COMMENT ON TABLE colpg.token_changes_trimmed IS 'Per index, the newest transaction whose token_changes rows were trimmed.';

CREATE FUNCTION colpg.log_token_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO colpg.token_changes (index_id, document_id) VALUES (OLD.index_id, OLD.document_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.document_id <> OLD.document_id) THEN
        INSERT INTO colpg.token_changes (index_id, document_id) VALUES (NEW.index_id, NEW.document_id);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION colpg.log_token_change() IS 'Logs each inserted, updated or deleted token row in colpg.token_changes.';
CREATE TRIGGER document_tokens_log AFTER INSERT OR UPDATE OR DELETE ON colpg.document_tokens
    FOR EACH ROW EXECUTE FUNCTION colpg.log_token_change();

CREATE FUNCTION colpg.trim_token_changes(target_index integer, keep integer) RETURNS integer
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
COMMENT ON FUNCTION colpg.trim_token_changes(integer, integer) IS
    'Keeps the newest `keep` rows of an index''s token_changes once it holds twice that; records the horizon.';
