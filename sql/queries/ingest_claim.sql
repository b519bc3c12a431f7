-- Claim a batch of queued documents for this worker: rows locked by another worker are
-- skipped, and a worker that dies releases its rows by ending its transaction.
-- Only indexes whose codec is trained (status ready) can encode documents; the index's id and
-- updated_at tell the worker whether the codec it holds is still that index's (not rebuilt).
SELECT d.id, d.index_name, d.text, i.id AS index_id, i.updated_at
FROM colpg.documents d
JOIN colpg.indexes i ON i.id = d.index_id
WHERE d.status = 'queued' AND i.status = 'ready'
  AND (%(index_name)s::text IS NULL OR d.index_name = %(index_name)s::text)
ORDER BY d.id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED
