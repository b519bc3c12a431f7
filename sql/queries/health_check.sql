-- The service's health check: the database answers and colpg's schema is in place.
SELECT 1 FROM colpg.indexes LIMIT 1
