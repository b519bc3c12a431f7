-- A cluster's sync: the version (xmin, unique per row on its node) of each listed document's token row.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version
FROM colpg.document_tokens t
WHERE t.document_id = ANY(%(ids)s)
