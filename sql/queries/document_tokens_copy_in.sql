COPY colpg.document_tokens (document_id, index_id, ntokens, codes, residuals, outliers) FROM STDIN (FORMAT BINARY)
