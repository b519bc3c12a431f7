-- Undo colpg schema v2: document_tokens without its index column.
-- One subcommand per ALTER TABLE: Citus takes no other subcommand beside ADD CONSTRAINT.
ALTER TABLE colpg.document_tokens DROP CONSTRAINT document_tokens_document_id_index_id_fkey;
ALTER TABLE colpg.document_tokens ADD CONSTRAINT document_tokens_document_id_fkey FOREIGN KEY (document_id)
    REFERENCES colpg.documents (id) ON DELETE CASCADE;
ALTER TABLE colpg.document_tokens DROP COLUMN index_id;
ALTER TABLE colpg.documents DROP CONSTRAINT documents_id_index_id_key;
