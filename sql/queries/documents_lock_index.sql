-- Held until the transaction ends: writers of one index's documents take turns (colpg.distribute.lock_index).
SELECT pg_advisory_xact_lock(hashtext('colpg.documents'), %(index_id)s)
