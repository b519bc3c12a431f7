-- Every index with its document count.
SELECT i.name, i.model, i.dim, i.nbits, i.status, i.config ->> 'precision' AS precision,
       (SELECT count(*) FROM colpg.documents d WHERE d.index_id = i.id) AS documents,
       i.created_at, i.updated_at
FROM colpg.indexes i
ORDER BY i.name
