-- The text search configurations installed in the database, named as a regconfig value would be written.
SELECT CAST(CAST(c.oid AS pg_catalog.regconfig) AS text) AS name
FROM pg_catalog.pg_ts_config c
ORDER BY 1
