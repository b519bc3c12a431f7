-- Drop the tokens claimed documents had (their text changed): new ones replace them, or none if the new text fails.
WITH gone AS (
    DELETE FROM colpg.rerank_vectors WHERE document_id = ANY(%(ids)s)
)
DELETE FROM colpg.document_tokens WHERE document_id = ANY(%(ids)s)
