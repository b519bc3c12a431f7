-- An index's text search configuration, set at build before any document is written (documents copy it).
UPDATE colpg.indexes SET text_search_config = CAST(%(language)s AS pg_catalog.regconfig) WHERE id = %(index_id)s
