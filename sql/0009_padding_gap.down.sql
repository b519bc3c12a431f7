-- Back to schema v8: no padding direction or gaps.
ALTER TABLE colpg.document_tokens DROP COLUMN padding_gap;
ALTER TABLE colpg.indexes DROP COLUMN padding;
