-- Register a worker once; a restarted cluster finds it registered already.
SELECT citus_add_node(%(host)s, %(port)s)
WHERE NOT EXISTS (SELECT FROM pg_dist_node WHERE nodename = %(host)s AND nodeport = %(port)s);
