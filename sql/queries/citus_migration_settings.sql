-- Within a migration on a Citus coordinator: DDL on distributed tables one shard connection at a
-- time (so reference tables may follow in the same transaction), and colpg's row triggers allowed on them.
SET LOCAL citus.multi_shard_modify_mode = 'sequential';
SET LOCAL citus.enable_unsafe_triggers = on
