-- A cluster's sync: the rows of an index's token log, counted on every shard.
SELECT count(*) FROM colpg.token_changes WHERE index_id = %(index_id)s
