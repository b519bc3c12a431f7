-- colpg schema v9: tokens far from their centroid kept at int8 beside their 2-bit residuals.
--   * colpg.document_tokens.outliers: per document, the int8 rows (dim bytes each, in token order)
--     of its tokens whose cosine with their own centroid is below colpg.outliers.OUTLIER_COSINE.
--     The first stage scores them for its best documents (bench/probe.py, table 11). Rows written
--     before this revision, and imported indexes, hold none: they are scored as before.

ALTER TABLE colpg.document_tokens ADD COLUMN outliers bytea NOT NULL DEFAULT ''::bytea;
COMMENT ON COLUMN colpg.document_tokens.outliers IS 'int8 rows (dim bytes each, token order) of the tokens far from their centroid, scored by the first stage instead of their residuals.';
