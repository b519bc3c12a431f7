-- Undo colpg schema v3. The roles go unless another database still grants them something.
REVOKE ALL ON ALL TABLES IN SCHEMA colpg FROM colpg_reader, colpg_writer;
REVOKE ALL ON SEQUENCE colpg.documents_id_seq FROM colpg_writer;
REVOKE ALL ON SCHEMA colpg FROM colpg_reader, colpg_writer;
DROP VIEW colpg.table_sizes;
DROP VIEW colpg.index_health;
DROP FUNCTION colpg.search_approx(text, vector[], integer, integer);
DROP FUNCTION colpg.maxsim(vector[], halfvec[]);
DROP FUNCTION colpg.maxsim(vector[], vector[]);
DROP FUNCTION colpg.candidates(text, vector[], integer);
DROP FUNCTION colpg.query_cells(text, vector[], integer);
DROP FUNCTION colpg.index_id(text);
DROP TRIGGER documents_notify ON colpg.documents;
DROP TRIGGER documents_before_write ON colpg.documents;
DROP FUNCTION colpg.documents_notify();
DROP FUNCTION colpg.documents_before_write();
DROP INDEX colpg.documents_queued_idx;
ALTER TABLE colpg.documents
    DROP CONSTRAINT documents_status_check,
    DROP COLUMN error,
    DROP COLUMN status,
    DROP COLUMN index_name;
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['colpg_reader', 'colpg_writer'] LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', role_name);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % kept: another database still grants it privileges', role_name;
        END;
    END LOOP;
END;
$$;
