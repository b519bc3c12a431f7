-- Which of the given external ids the named index holds, each with its document row and whether
-- it has tokens (a document queued after a text change, or failed, has none until a worker encodes it).
SELECT d.external_id, d.id, EXISTS (SELECT FROM colpg.document_tokens t WHERE t.document_id = d.id) AS indexed
FROM colpg.documents d
JOIN colpg.indexes i ON i.id = d.index_id
WHERE i.name = %(name)s AND d.external_id = ANY(%(external_ids)s)
