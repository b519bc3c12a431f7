-- The texts of the given external ids in one index (ids it does not hold are absent).
SELECT external_id, text FROM colpg.documents
WHERE index_id = %(index_id)s AND external_id = ANY(%(external_ids)s)
