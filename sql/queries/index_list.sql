-- Every index with its document count (counted per index first: on a Citus cluster, a subquery
-- per catalogue row over the distributed documents could not be planned).
WITH counts AS (
    SELECT d.index_id, count(*) AS documents FROM colpg.documents d GROUP BY d.index_id
)
SELECT i.name, i.model, i.dim, i.nbits, i.status, i.config ->> 'precision' AS precision,
       coalesce(c.documents, 0) AS documents, i.created_at, i.updated_at
FROM colpg.indexes i
LEFT JOIN counts c ON c.index_id = i.id
ORDER BY i.name
