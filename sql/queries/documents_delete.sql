DELETE FROM colpg.documents
WHERE index_id = %(index_id)s AND external_id = ANY(%(external_ids)s)
RETURNING external_id
