COPY colpg.rerank_vectors (document_id, payload, vectors) FROM STDIN (FORMAT BINARY)
