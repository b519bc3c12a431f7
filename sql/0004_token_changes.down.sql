-- Undo colpg schema v4.
DROP FUNCTION colpg.trim_token_changes(integer, integer);
DROP TRIGGER document_tokens_log ON colpg.document_tokens;
DROP FUNCTION colpg.log_token_change();
DROP TABLE colpg.token_changes_trimmed;
DROP TABLE colpg.token_changes;
