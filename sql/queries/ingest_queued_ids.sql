-- A cluster's ingest claim, first step: queued documents of ready indexes, unlocked (see ingest_claim_one.sql).
SELECT d.id
FROM colpg.documents d
JOIN colpg.indexes i ON i.id = d.index_id
WHERE d.status = 'queued' AND i.status = 'ready'
  AND (%(index_name)s::text IS NULL OR d.index_name = %(index_name)s::text)
ORDER BY d.id
LIMIT %(limit)s
