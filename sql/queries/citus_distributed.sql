-- Whether colpg.documents is a distributed table (run only where the citus extension exists).
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = 'colpg.documents'::regclass) AS distributed
