-- Bound an index's token-change log after a write (colpg.trim_token_changes: rarely does anything).
SELECT colpg.trim_token_changes(%(index_id)s, %(keep)s)
