-- Run once, when the postgres service initialises its data volume.
-- The statements collector reads pg_stat_statements in the checkpoint database; the library is
-- preloaded by the service's command (shared_preload_libraries).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
