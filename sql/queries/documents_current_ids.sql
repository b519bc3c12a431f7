-- The document each external id names now: hybrid search's first stages name documents by external id,
-- so a document replaced since (Index.update gives it a new row) is ranked at its new row.
SELECT external_id, id FROM colpg.documents WHERE index_id = %(index_id)s AND external_id = ANY(%(external_ids)s)
