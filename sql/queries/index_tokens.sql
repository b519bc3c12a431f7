-- Every token row of an index, streamed once (server-side cursor) when a searcher loads it.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens, array_send(t.codes) AS codes, t.residuals, t.padding_gap
FROM colpg.document_tokens t
WHERE t.index_id = %(index_id)s
