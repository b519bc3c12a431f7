-- One index by name, with its codec parameters and when its row last changed (a rebuild or a finished build).
SELECT id, name, model, dim, nbits, config, status, bucket_cutoffs, bucket_weights, rerank_codec, padding, updated_at
FROM colpg.indexes
WHERE name = %(name)s
