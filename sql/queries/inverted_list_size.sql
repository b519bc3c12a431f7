-- On-disk size of the GIN inverted list from centroid codes to documents (all indexes together).
SELECT pg_relation_size('colpg.document_tokens_codes_idx'::regclass)
