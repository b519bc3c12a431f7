-- Distributes colpg's tables on a Citus coordinator (colpg.distribute, one transaction).
-- Per-document tables are hash-distributed by the document id and co-located, so a document's
-- row, token row, rerank row and change-log rows live on one shard and join there; the
-- per-index tables (catalogue, centroids, trim horizon) are reference tables, copied to every
-- node. Citus takes foreign keys only among co-located or reference tables, and a unique
-- constraint only with the distribution column: the foreign keys are dropped and added again
-- around the conversion, and (index_id, external_id) uniqueness moves to colpg's writers
-- (colpg.store takes an advisory lock per index on the coordinator and checks the ids).
SET LOCAL citus.enable_unsafe_triggers = on;  -- colpg's row triggers run on the shards, next to their rows
SET LOCAL citus.multi_shard_modify_mode = 'sequential';
ALTER TABLE colpg.centroids DROP CONSTRAINT centroids_index_id_fkey;
ALTER TABLE colpg.documents DROP CONSTRAINT documents_index_id_fkey;
ALTER TABLE colpg.rerank_vectors DROP CONSTRAINT rerank_vectors_document_id_fkey;
ALTER TABLE colpg.document_tokens DROP CONSTRAINT document_tokens_document_id_index_id_fkey;
ALTER TABLE colpg.documents DROP CONSTRAINT documents_index_id_external_id_key;
CREATE INDEX documents_index_id_external_id_idx ON colpg.documents (index_id, external_id);
SELECT create_distributed_table('colpg.documents', 'id');
SELECT create_distributed_table('colpg.document_tokens', 'document_id', colocate_with => 'colpg.documents');
SELECT create_distributed_table('colpg.rerank_vectors', 'document_id', colocate_with => 'colpg.documents');
SELECT create_distributed_table('colpg.token_changes', 'document_id', colocate_with => 'colpg.documents');
SELECT create_reference_table('colpg.indexes');
SELECT create_reference_table('colpg.centroids');
SELECT create_reference_table('colpg.token_changes_trimmed');
ALTER TABLE colpg.centroids ADD CONSTRAINT centroids_index_id_fkey
    FOREIGN KEY (index_id) REFERENCES colpg.indexes (id) ON DELETE CASCADE;
ALTER TABLE colpg.documents ADD CONSTRAINT documents_index_id_fkey
    FOREIGN KEY (index_id) REFERENCES colpg.indexes (id) ON DELETE CASCADE;
ALTER TABLE colpg.rerank_vectors ADD CONSTRAINT rerank_vectors_document_id_fkey
    FOREIGN KEY (document_id) REFERENCES colpg.documents (id) ON DELETE CASCADE;
ALTER TABLE colpg.document_tokens ADD CONSTRAINT document_tokens_document_id_index_id_fkey
    FOREIGN KEY (document_id, index_id) REFERENCES colpg.documents (id, index_id) ON DELETE CASCADE;
