-- Internal ids for a batch written by COPY (documents.id is an identity BY DEFAULT).
SELECT nextval(pg_get_serial_sequence('colpg.documents', 'id')) FROM generate_series(1, %(count)s)
