-- One index by name, with its codec parameters.
SELECT id, name, model, dim, nbits, config, status, bucket_cutoffs, bucket_weights, rerank_codec
FROM colpg.indexes
WHERE name = %(name)s
