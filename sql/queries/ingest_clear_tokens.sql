-- Drop the tokens a re-queued document had (its text changed); new ones replace them.
WITH gone AS (
    DELETE FROM colpg.rerank_vectors WHERE document_id = ANY(%(ids)s)
)
DELETE FROM colpg.document_tokens WHERE document_id = ANY(%(ids)s)
