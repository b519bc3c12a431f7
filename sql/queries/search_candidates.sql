-- Stage 1 of search: the documents of an index that hold any of the query's cells (the
-- centroids nearest its tokens), found through the GIN inverted list, with their codes.
-- SQLAlchemy binds (a colon before the name): colpg.search wraps this in a SELECT that adds the caller's filter.
SELECT t.document_id, t.codes
FROM colpg.document_tokens t
JOIN colpg.documents d ON d.id = t.document_id
WHERE d.index_id = :index_id
  AND t.codes && CAST(:cells AS integer[])
