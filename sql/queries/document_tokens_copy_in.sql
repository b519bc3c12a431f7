COPY colpg.document_tokens (document_id, index_id, ntokens, codes, residuals, padding_gap) FROM STDIN (FORMAT BINARY)
