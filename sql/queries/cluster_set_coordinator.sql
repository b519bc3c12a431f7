-- Where the workers reach the coordinator: its socket folder (a host name for libpq) and port.
SELECT citus_set_coordinator_host(%(host)s, %(port)s);
