COPY colpg.documents (id, index_id, external_id, text, metadata, status) FROM STDIN (FORMAT BINARY)
