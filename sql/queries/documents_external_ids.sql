-- The external ids of documents of an index given by document id (ids from another table may name none).
SELECT id, external_id FROM colpg.documents WHERE index_id = %(index_id)s AND id = ANY(%(ids)s)
