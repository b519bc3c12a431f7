-- A new index with its trained codec; its centroids follow by COPY in the same transaction.
INSERT INTO colpg.indexes (name, model, dim, nbits, config, bucket_cutoffs, bucket_weights, rerank_codec, padding)
VALUES (%(name)s, %(model)s, %(dim)s, %(nbits)s, %(config)s, %(bucket_cutoffs)s, %(bucket_weights)s, %(rerank_codec)s, %(padding)s)
RETURNING id
