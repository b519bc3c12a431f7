-- colpg schema v9: the first stage's codec error along the query padding's direction.
--   * colpg.indexes.padding: the encoder's [MASK] padding direction (colpg.encoder.Encoder.padding_direction),
--     dim values; NULL for indexes built before this revision and imported ones.
--   * colpg.document_tokens.padding_gap: per document, its tokens' best exact similarity with that
--     direction less the best the first stage scores from their codes and residuals
--     (colpg.codec.ResidualCodec.padding_gaps). The first stage adds it for each padding token of a
--     query (bench/README.md, table 14). Rows written before this revision hold 0: scored as before.

ALTER TABLE colpg.indexes ADD COLUMN padding real[];
COMMENT ON COLUMN colpg.indexes.padding IS 'The encoder''s query padding direction, dim values; NULL where not known.';
ALTER TABLE colpg.document_tokens ADD COLUMN padding_gap real NOT NULL DEFAULT 0;
COMMENT ON COLUMN colpg.document_tokens.padding_gap IS 'Best exact similarity of the tokens with indexes.padding less the best their codes and residuals score.';
