-- Per-index counts and the stored bytes of each column (after TOAST compression, before page overhead).
SELECT count(d.id)                                   AS documents,
       coalesce(sum(t.ntokens), 0)                   AS tokens,
       coalesce(sum(pg_column_size(t.codes)), 0)     AS codes_bytes,
       coalesce(sum(pg_column_size(t.residuals)), 0) AS residuals_bytes,
       coalesce(sum(pg_column_size(r.payload)), 0) + coalesce(sum(pg_column_size(r.vectors)), 0) AS rerank_bytes,
       coalesce(sum(pg_column_size(d.text)), 0)      AS text_bytes
FROM colpg.documents d
LEFT JOIN colpg.document_tokens t ON t.document_id = d.id
LEFT JOIN colpg.rerank_vectors r ON r.document_id = d.id
WHERE d.index_id = %(index_id)s
