-- A cluster's sync, first statement: the index as the catalogue holds it, and how many times its
-- token log was trimmed (both reference tables, so this is answered on one node).
SELECT i.id, i.updated_at, coalesce(h.trims, 0) AS trims
FROM colpg.indexes i
LEFT JOIN colpg.token_changes_trimmed h ON h.index_id = i.id
WHERE i.name = %(name)s
