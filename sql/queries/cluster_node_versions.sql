-- The Citus and pgvector extension versions installed in a node's database (NULL when absent).
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS vector;
