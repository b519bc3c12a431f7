-- A cluster's ingest claim: one queued document locked by its id (a statement Citus routes to one
-- shard, where FOR UPDATE SKIP LOCKED is allowed); no row when another worker holds it or it is done.
SELECT d.id, d.index_name, d.text, d.index_id, i.updated_at
FROM colpg.documents d
JOIN colpg.indexes i ON i.id = d.index_id
WHERE d.id = %(id)s AND d.status = 'queued' AND i.status = 'ready'
FOR UPDATE OF d SKIP LOCKED
