-- Stage 1 of search: the documents of an index that hold any of the query's cells (the
-- centroids nearest its tokens), found through the GIN inverted list, with the version of
-- their token row (xmin), which tells the worker whether its cached copy is current.
-- SQLAlchemy binds (a colon before the name): colpg.search wraps this in a SELECT that adds the caller's filter.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version
FROM colpg.document_tokens t
WHERE t.index_id = :index_id
  AND t.codes && CAST(:cells AS integer[])
