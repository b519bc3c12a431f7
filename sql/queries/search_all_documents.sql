-- Every document of an index with its codes: for exact search, and for filters that leave
-- fewer documents than the candidate budget. SQLAlchemy binds (a colon before the name).
SELECT t.document_id, t.codes
FROM colpg.document_tokens t
JOIN colpg.documents d ON d.id = t.document_id
WHERE d.index_id = :index_id
