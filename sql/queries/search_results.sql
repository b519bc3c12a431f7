-- The rows search returns for its results (the top k only), with the text when asked for.
SELECT d.id, d.external_id, d.metadata, CASE WHEN %(want_text)s THEN d.text END AS text
FROM colpg.documents d
WHERE d.id = ANY(%(ids)s)
