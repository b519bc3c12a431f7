-- Whether the database has the citus extension, and whether colpg's documents are distributed
-- (a Citus table has a row in pg_dist_partition; read through to_regclass so that this runs
-- on a server without Citus too).
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS installed,
       to_regclass('colpg.documents') IS NOT NULL AS migrated
