COPY colpg.documents (id, index_id, external_id, text, metadata) FROM STDIN (FORMAT BINARY)
