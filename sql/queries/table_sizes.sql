-- On-disk size of colpg's tables: heap, TOAST, and indexes, for every index together.
SELECT c.relname                                    AS table_name,
       pg_relation_size(c.oid)                      AS heap_bytes,
       coalesce(pg_total_relation_size(c.reltoastrelid), 0) AS toast_bytes,
       pg_indexes_size(c.oid)                       AS index_bytes,
       pg_total_relation_size(c.oid)                AS total_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'colpg' AND c.relkind = 'r' AND c.relname <> 'alembic_version'
ORDER BY c.relname
