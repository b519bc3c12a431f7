SELECT external_id FROM colpg.documents WHERE index_id = %(index_id)s
