-- Record the outcome for each claimed document: ready, or failed with the reason.
UPDATE colpg.documents d
SET status = u.status, error = u.error
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(errors)s::text[]) AS u(id, status, error)
WHERE d.id = u.id
