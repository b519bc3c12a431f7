-- colpg schema v7: the full-text stage can match any word of a query, not only every word (issue 16).
--   * colpg.fulltext_query(config, query, match): the tsquery of a query in a text search
--     configuration. match 'all' is websearch_to_tsquery (every word; quotes for phrases, or,
--     -word to exclude); 'any' is an OR of the query's lexemes (to_tsvector's, so stop words drop
--     out and words are stemmed as in the documents; operators are read as words). Natural-language
--     queries (a claim, a title, a question) rarely have every word in one document, so 'all'
--     finds few of them. Each lexeme is quoted by PostgreSQL's own tsvector output, never by
--     formatting the query's text into a tsquery; a query without lexemes gives NULL, which
--     matches nothing.
--   * colpg.fulltext_candidates(index_name, query, k, match DEFAULT 'any') replaces v6's
--     three-argument function (an overload with a default would make its calls ambiguous).
--     The default is colpg.constants.DEFAULT_MATCH (tests/test_hybrid.py checks they agree).

CREATE FUNCTION colpg.fulltext_query(config regconfig, query text, match text) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF match = 'all' THEN
        RETURN pg_catalog.websearch_to_tsquery(config, query);
    ELSIF match = 'any' THEN
        RETURN (
            SELECT pg_catalog.string_agg(pg_catalog.array_to_tsvector(ARRAY[w.lexeme])::text, ' | ' ORDER BY w.lexeme)::tsquery
            FROM pg_catalog.unnest(pg_catalog.to_tsvector(config, query)) AS w
        );
    END IF;
    RAISE EXCEPTION 'match must be any or all, got %', coalesce(pg_catalog.quote_literal(match), 'NULL')
        USING ERRCODE = 'invalid_parameter_value';
END;
$$;
COMMENT ON FUNCTION colpg.fulltext_query(regconfig, text, text) IS
    'A query as a tsquery in a text search configuration: match ''all'' is websearch_to_tsquery (every word), '
    '''any'' an OR of the query''s lexemes; NULL when it has none.';
REVOKE EXECUTE ON FUNCTION colpg.fulltext_query(regconfig, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION colpg.fulltext_query(regconfig, text, text) TO colpg_reader, colpg_service;

DROP FUNCTION colpg.fulltext_candidates(text, text, integer);
CREATE FUNCTION colpg.fulltext_candidates(index_name text, query text, k integer DEFAULT 100, match text DEFAULT 'any')
RETURNS TABLE (document_id bigint, external_id text, rank real)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := colpg.index_id(index_name);
    parsed tsquery;
BEGIN
    IF k IS NULL OR k NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, got %', coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT colpg.fulltext_query(i.text_search_config, query, match) INTO parsed FROM colpg.indexes i WHERE i.id = target;
    RETURN QUERY
        SELECT d.id, d.external_id, pg_catalog.ts_rank_cd(d.fulltext, parsed)
        FROM colpg.documents d
        WHERE d.fulltext OPERATOR(pg_catalog.@@) parsed AND d.index_id = target
        ORDER BY 3 DESC, 1
        LIMIT k;
END;
$$;
COMMENT ON FUNCTION colpg.fulltext_candidates(text, text, integer, text) IS
    'The k (1..10000) best documents of an index for a query (colpg.fulltext_query in the index''s text search '
    'configuration: match ''any'' word or ''all'' words, websearch-style; ranked by ts_rank_cd), best first: the '
    'full-text stage of hybrid search. Runs as the caller.';
REVOKE EXECUTE ON FUNCTION colpg.fulltext_candidates(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION colpg.fulltext_candidates(text, text, integer, text) TO colpg_reader, colpg_service;
