-- Undo colpg schema v6: no full-text column, configuration or function; the 0003 trigger function.
DROP FUNCTION colpg.fulltext_candidates(text, text, integer);
REVOKE SELECT (text_search_config) ON colpg.indexes FROM colpg_reader, colpg_writer;

CREATE OR REPLACE FUNCTION colpg.documents_before_write() RETURNS trigger
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

DROP INDEX colpg.documents_fulltext_idx;
ALTER TABLE colpg.documents DROP COLUMN fulltext, DROP COLUMN text_search_config;
ALTER TABLE colpg.indexes DROP COLUMN text_search_config;
