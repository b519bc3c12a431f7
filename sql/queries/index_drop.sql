-- Remove an index and, by cascade, its centroids, documents, tokens and rerank vectors.
DELETE FROM colpg.indexes WHERE name = %(name)s RETURNING id
