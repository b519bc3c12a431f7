-- Codes and packed residuals of candidates the worker has not cached (at this version), and
-- their int8 rerank rows when it caches those too: rerank rows are written and deleted with the
-- token row in one transaction, so the token row's xmin versions both.
-- SQLAlchemy binds (a colon before the name). Codes come in array_send's binary format.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens,
       array_send(t.codes) AS codes, t.residuals,
       CASE WHEN :want_payload THEN r.payload END AS payload
FROM colpg.document_tokens t
LEFT JOIN colpg.rerank_vectors r ON :want_payload AND r.document_id = t.document_id
WHERE t.document_id = ANY(CAST(:ids AS bigint[]))
