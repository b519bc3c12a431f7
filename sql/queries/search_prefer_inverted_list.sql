-- For the rest of this transaction: reach candidates through the GIN inverted list.
-- The planner prices a row's `codes && cells` test like any operator and picks a sequential
-- scan; measured on SciFact (5,183 documents) that is 30 ms against 1 ms for the GIN lookup.
SET LOCAL enable_seqscan = off
