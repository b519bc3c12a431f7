-- colpg schema v6: full-text search over documents, for hybrid search (issue 16).
--   * colpg.indexes.text_search_config: the index's text search configuration (any installed
--     regconfig, e.g. 'english', 'french', 'simple'), chosen at build (IndexConfig.language,
--     `colpg index create --language`).
--   * colpg.documents.text_search_config: the index's configuration copied onto each row by the
--     documents_before_write trigger, so that documents.fulltext, a stored generated tsvector,
--     is an immutable function of its own row (to_tsvector(regconfig, text) is immutable;
--     to_tsvector(text) and a lookup of the index are not). A GIN index serves @@.
--   * colpg.fulltext_candidates(index_name, query, k): the index's k best documents for a
--     web-search-style query (websearch_to_tsquery, ts_rank_cd), for colpg_reader.
-- Cost on a large table: adding the stored generated column rewrites colpg.documents (every
-- row, with an ACCESS EXCLUSIVE lock for the whole rewrite) and then builds the GIN index; plan
-- it like any table rewrite (roughly the time of a VACUUM FULL of documents plus tokenizing
-- every text once). text_search_config is added with a constant default, which rewrites nothing.

ALTER TABLE colpg.indexes ADD COLUMN text_search_config regconfig NOT NULL DEFAULT 'english';
COMMENT ON COLUMN colpg.indexes.text_search_config IS
    'Text search configuration of the index''s full-text column (documents.fulltext); set when the index is built.';

-- Every existing index is 'english' (the default above), so every existing row takes the same constant.
ALTER TABLE colpg.documents ADD COLUMN text_search_config regconfig NOT NULL DEFAULT 'english';
ALTER TABLE colpg.documents ALTER COLUMN text_search_config DROP DEFAULT;
COMMENT ON COLUMN colpg.documents.text_search_config IS
    'The index''s text search configuration, copied by the documents_before_write trigger (so fulltext is immutable).';
ALTER TABLE colpg.documents ADD COLUMN fulltext tsvector
    GENERATED ALWAYS AS (to_tsvector(text_search_config, text)) STORED;
COMMENT ON COLUMN colpg.documents.fulltext IS 'The text''s lexemes in the index''s text search configuration (NULL without text).';
CREATE INDEX documents_fulltext_idx ON colpg.documents USING gin (fulltext);

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
        SELECT name, text_search_config INTO NEW.index_name, NEW.text_search_config FROM colpg.indexes WHERE id = NEW.index_id;
    ELSE
        NEW.text_search_config := OLD.text_search_config;  -- the index's, never the writer's
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.text IS DISTINCT FROM OLD.text AND NEW.status = OLD.status THEN
        NEW.status := 'queued';  -- new text: index it again
        NEW.error := NULL;
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION colpg.documents_before_write() IS
    'Fills index_id from index_name (or back) and the index''s text search configuration, and queues a document whose text changed.';

-- Readers and writers read the configuration (the trigger runs as the writer); no one but colpg's
-- owner writes either column: the column grants of 0005 name neither.
GRANT SELECT (text_search_config) ON colpg.indexes TO colpg_reader, colpg_writer;

CREATE FUNCTION colpg.fulltext_candidates(index_name text, query text, k integer DEFAULT 100)
RETURNS TABLE (document_id bigint, external_id text, rank real)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := colpg.index_id(index_name);
    parsed tsquery;
BEGIN
    IF k IS NULL OR k NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, got %', coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.websearch_to_tsquery(i.text_search_config, query) INTO parsed FROM colpg.indexes i WHERE i.id = target;
    RETURN QUERY
        SELECT d.id, d.external_id, pg_catalog.ts_rank_cd(d.fulltext, parsed)
        FROM colpg.documents d
        WHERE d.fulltext OPERATOR(pg_catalog.@@) parsed AND d.index_id = target
        ORDER BY 3 DESC, 1
        LIMIT k;
END;
$$;
COMMENT ON FUNCTION colpg.fulltext_candidates(text, text, integer) IS
    'The k (1..10000) best documents of an index for a web-search-style query (websearch_to_tsquery in the index''s '
    'text search configuration, ranked by ts_rank_cd), best first: the full-text stage of hybrid search. Runs as the caller.';
REVOKE EXECUTE ON FUNCTION colpg.fulltext_candidates(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION colpg.fulltext_candidates(text, text, integer) TO colpg_reader, colpg_service;
