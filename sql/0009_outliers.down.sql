-- Back to schema v8: the outlier rows go.
ALTER TABLE colpg.document_tokens DROP COLUMN outliers;
