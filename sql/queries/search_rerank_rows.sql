-- What the final rerank reads of the best candidates (rows the searcher's cache lacks), with
-- their token row's version. Columns the rerank store does not use stay NULL, so PostgreSQL
-- never reads them from TOAST. Codes come in array_send's binary format; fp16 tokens as one
-- bytea of halfvec_send records (20x faster to read than a HalfVector per token).
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens,
       CASE WHEN %(want_codes)s THEN array_send(t.codes) END AS codes,
       CASE WHEN %(want_residuals)s THEN t.residuals END AS residuals,
       CASE WHEN %(want_payload)s THEN r.payload END AS payload,
       CASE WHEN %(want_vectors)s THEN (
           SELECT string_agg(halfvec_send(u.v), ''::bytea ORDER BY u.o) FROM unnest(r.vectors) WITH ORDINALITY AS u(v, o)
       ) END AS vectors
FROM colpg.document_tokens t
LEFT JOIN colpg.rerank_vectors r ON r.document_id = t.document_id AND (%(want_payload)s OR %(want_vectors)s)
WHERE t.document_id = ANY(%(ids)s)
