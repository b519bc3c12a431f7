-- Every node of a local Citus cluster: Citus (loaded by shared_preload_libraries) and pgvector.
CREATE EXTENSION IF NOT EXISTS citus;
CREATE EXTENSION IF NOT EXISTS vector;
