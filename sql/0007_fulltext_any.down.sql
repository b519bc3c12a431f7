-- Undo colpg schema v7: v6's colpg.fulltext_candidates (every word, websearch_to_tsquery) and no colpg.fulltext_query.
DROP FUNCTION colpg.fulltext_candidates(text, text, integer, text);
DROP FUNCTION colpg.fulltext_query(regconfig, text, text);

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
