-- Undo colpg schema v1. The schema "colpg" stays: it holds Alembic's version table.
DROP TABLE IF EXISTS colpg.rerank_vectors;
DROP TABLE IF EXISTS colpg.document_tokens;
DROP TABLE IF EXISTS colpg.documents;
DROP TABLE IF EXISTS colpg.centroids;
DROP TABLE IF EXISTS colpg.indexes;
DROP FUNCTION IF EXISTS colpg.touch_updated_at();

-- pgvector goes too, unless something outside colpg still uses it.
DO $$
BEGIN
    DROP EXTENSION IF EXISTS vector;
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'extension vector kept: other objects in this database use it';
END;
$$;
