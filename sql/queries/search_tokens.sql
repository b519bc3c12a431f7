-- Codes and packed residuals of candidates the worker has not cached (at this version).
-- SQLAlchemy binds (a colon before the name). Codes come in array_send's binary format.
SELECT t.document_id, CAST(CAST(t.xmin AS text) AS bigint) AS version, t.ntokens,
       array_send(t.codes) AS codes, t.residuals
FROM colpg.document_tokens t
WHERE t.document_id = ANY(CAST(:ids AS bigint[]))
