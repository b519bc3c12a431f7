-- Every document's codes and packed residuals (and int8 rerank rows, when the worker caches
-- them), streamed once to fill the worker's cache.
-- SQLAlchemy binds (a colon before the name). Codes come in array_send's binary format.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens,
       array_send(t.codes) AS codes, t.residuals,
       CASE WHEN :want_payload THEN r.payload END AS payload
FROM colpg.document_tokens t
LEFT JOIN colpg.rerank_vectors r ON :want_payload AND r.document_id = t.document_id
WHERE t.index_id = :index_id
