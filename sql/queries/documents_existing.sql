-- Which of the given external ids the index already holds.
SELECT external_id FROM colpg.documents
WHERE index_id = %(index_id)s AND external_id = ANY(%(external_ids)s)
