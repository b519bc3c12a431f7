UPDATE colpg.indexes SET status = 'ready' WHERE id = %(index_id)s
