-- How many centroids an index has (a statement of its own: on a Citus cluster a reference table
-- cannot sit in a subquery of a statement over distributed ones).
SELECT count(*) FROM colpg.centroids WHERE index_id = %(index_id)s
