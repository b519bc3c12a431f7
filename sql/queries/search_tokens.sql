-- Codes, packed residuals and padding gap of the given documents' token rows, with the row's version (xmin):
-- what a searcher adds to its resident tokens for documents that changed. A document without a
-- row in this snapshot has been deleted. Codes come in array_send's binary format.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens, array_send(t.codes) AS codes, t.residuals, t.padding_gap
FROM colpg.document_tokens t
WHERE t.document_id = ANY(%(ids)s)
