COPY colpg.document_tokens (document_id, index_id, ntokens, codes, residuals) FROM STDIN (FORMAT BINARY)
