-- Whether the role colpg is connected as is a superuser (colpg serve warns: the service should run as colpg_service).
SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user
