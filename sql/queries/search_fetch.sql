-- Stage 3 of search: what the rerank reads of the best candidates, then what the results show, in one round trip each.
-- SQLAlchemy binds (a colon before the name).
-- Columns the caller does not want stay NULL, so PostgreSQL never reads them from TOAST.
SELECT d.id, d.external_id, d.metadata, t.ntokens,
       CASE WHEN :want_text THEN d.text END AS text,
       CASE WHEN :want_codes THEN t.codes END AS codes,
       CASE WHEN :want_residuals THEN t.residuals END AS residuals,
       CASE WHEN :want_payload THEN r.payload END AS payload,
       -- fp16 tokens as one bytea of halfvec_send records (4-byte header, then dim big-endian
       -- halves each): 20x faster to read than one Python HalfVector per token.
       CASE WHEN :want_vectors THEN (
           SELECT string_agg(halfvec_send(u.v), ''::bytea ORDER BY u.o) FROM unnest(r.vectors) WITH ORDINALITY AS u(v, o)
       ) END AS vectors
FROM colpg.documents d
JOIN colpg.document_tokens t ON t.document_id = d.id
LEFT JOIN colpg.rerank_vectors r ON r.document_id = d.id
WHERE d.id = ANY(CAST(:ids AS bigint[]))
