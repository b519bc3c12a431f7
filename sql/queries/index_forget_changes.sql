-- After an index is dropped: its token-change log (written by the cascade's deletes) and trim horizon.
WITH changes AS (
    DELETE FROM colpg.token_changes WHERE index_id = %(index_id)s
)
DELETE FROM colpg.token_changes_trimmed WHERE index_id = %(index_id)s
