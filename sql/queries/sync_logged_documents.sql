-- A cluster's sync, when the log grew: every document it names (at most twice CHANGES_KEPT rows).
SELECT DISTINCT document_id FROM colpg.token_changes WHERE index_id = %(index_id)s
