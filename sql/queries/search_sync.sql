-- First statement of every search, in its snapshot: the index as this snapshot sees it, the
-- snapshot itself, and the documents whose token rows changed since the searcher's last snapshot
-- (%(since)s, NULL on the first search): rows logged by transactions that snapshot could not see.
-- `trimmed`: the log no longer reaches back to that snapshot, so the searcher reloads instead.
SELECT i.id, i.updated_at, CAST(pg_current_snapshot() AS text) AS snapshot,
       coalesce((SELECT h.horizon >= pg_snapshot_xmin(CAST(%(since)s AS pg_snapshot))
                 FROM colpg.token_changes_trimmed h WHERE h.index_id = i.id), false) AS trimmed,
       ARRAY(SELECT DISTINCT c.document_id FROM colpg.token_changes c
             WHERE c.index_id = i.id
               AND c.xid >= pg_snapshot_xmin(CAST(%(since)s AS pg_snapshot))
               AND NOT pg_visible_in_snapshot(c.xid, CAST(%(since)s AS pg_snapshot))) AS changed
FROM colpg.indexes i
WHERE i.name = %(name)s
