-- Least-privilege roles for omics-cdc (issue 5). Run it as a superuser, on the application database, AFTER the
-- migrations (`alembic upgrade head`): it grants on the tables that exist and sets default privileges so that
-- tables added by later migrations are covered too.
--
--   psql -v ON_ERROR_STOP=1 -f docker/roles.sql "$POSTGRES_URL"          # or: make roles
--   psql -v ON_ERROR_STOP=1 -v ingest_role=lab_ingest -v replicator_role=lab_cdc -f docker/roles.sql "$URL"
--
-- Variables (psql -v NAME=VALUE), all optional:
--   ingest_role      (default omics_ingest)      writes the domain tables in schema public, nothing else
--   replicator_role  (default omics_replicator)  REPLICATION; reads the domain tables; writes schema replicator only
--   owner_role       (default: the current user) the role that runs the migrations, i.e. owns the tables;
--                                                default privileges are set for the tables IT creates later
--
-- Idempotent: run it again after every migration or to repair drifted grants; it only converges.
-- Passwords are never in this file. Set them yourself, e.g. in psql:  \password omics_replicator
-- (or ALTER ROLE omics_replicator PASSWORD '...' from a session that is not logged), then put the URL in the
-- replicator's secret store (Kubernetes Secret, /etc/omics-cdc/replicator.env with mode 0600).
--
-- What the replicator needs, and why each grant is (or is not) here:
--   * LOGIN REPLICATION: to open a replication=database connection, create the wal2json slot, stream it, and drop
--     it (`replicator slot drop`). Only a superuser can give the REPLICATION attribute.
--   * SELECT on the domain tables: workers render each document from the current rows (and `verify` compares).
--   * INSERT/UPDATE/DELETE on public.narrative only: the narrative capture stores what people wrote in Notion.
--   * USAGE + SELECT/INSERT/UPDATE/DELETE on schema replicator (outbox, dead_letter, sink_state, sink_status,
--     sink_health, source_checkpoint, heartbeat) and its sequences: its own state.
--   * Nothing else: pg_replication_slots, pg_current_wal_lsn(), pg_notify()/LISTEN, advisory locks and
--     pg_logical_emit_message() are open to every role; no CREATE on the database or any schema (the migrations
--     create the objects, run by owner_role).

\set ON_ERROR_STOP on

\if :{?ingest_role}
\else
  \set ingest_role omics_ingest
\endif
\if :{?replicator_role}
\else
  \set replicator_role omics_replicator
\endif
\if :{?owner_role}
\else
  SELECT current_user AS owner_role \gset
\endif

-- The migrations must have run: the grants below name schema replicator.
DO $$
BEGIN
  IF to_regnamespace('replicator') IS NULL THEN
    RAISE EXCEPTION 'schema "replicator" does not exist in database %: run the migrations (alembic upgrade head) '
                    'before docker/roles.sql', current_database();
  END IF;
END
$$;

-- ---- the roles (cluster-wide; created once, attributes re-asserted on every run) ---------------------------------
SELECT format('CREATE ROLE %I LOGIN', :'ingest_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'ingest_role') \gexec
SELECT format('CREATE ROLE %I LOGIN REPLICATION', :'replicator_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'replicator_role') \gexec

ALTER ROLE :"ingest_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"replicator_role" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT;

-- ---- database ------------------------------------------------------------------------------------------------
-- TEMPORARY for ingest: a loader may stage rows in a temporary table. The replicator needs only CONNECT.
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'ingest_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'replicator_role') \gexec
SELECT format('REVOKE CREATE ON DATABASE %I FROM %I, %I', current_database(), :'ingest_role', :'replicator_role')
\gexec

-- ---- ingest: the domain tables in public, read and write; nothing in schema replicator ----------------------------
GRANT USAGE ON SCHEMA public TO :"ingest_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"ingest_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"ingest_role";
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM :"ingest_role";
-- Alembic's bookkeeping is the migration owner's alone.
SELECT format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLE public.alembic_version FROM %I', :'ingest_role')
 WHERE to_regclass('public.alembic_version') IS NOT NULL \gexec
REVOKE ALL ON SCHEMA replicator FROM :"ingest_role";
REVOKE ALL ON ALL TABLES IN SCHEMA replicator FROM :"ingest_role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA replicator FROM :"ingest_role";

-- ---- replicator: read the domain tables, write its own schema -------------------------------------------------
GRANT USAGE ON SCHEMA public TO :"replicator_role";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"replicator_role";
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM :"replicator_role";
REVOKE USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA public FROM :"replicator_role";
-- The one domain table the replicator writes: public.narrative, the notes people wrote on the Notion pages, which
-- its narrative capture reads back into Postgres (#14).
SELECT format('GRANT INSERT, UPDATE, DELETE ON TABLE public.narrative TO %I', :'replicator_role')
 WHERE to_regclass('public.narrative') IS NOT NULL \gexec
GRANT USAGE ON SCHEMA replicator TO :"replicator_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA replicator TO :"replicator_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA replicator TO :"replicator_role";

-- Neither role may create objects in either schema (PostgreSQL 15 already denies CREATE on public to PUBLIC;
-- on older servers also run: REVOKE CREATE ON SCHEMA public FROM PUBLIC).
REVOKE CREATE ON SCHEMA public FROM :"ingest_role", :"replicator_role";
REVOKE CREATE ON SCHEMA replicator FROM :"ingest_role", :"replicator_role";

-- ---- tables and sequences that later migrations (run by owner_role) will create -------------------------------
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"ingest_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"ingest_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
  GRANT SELECT ON TABLES TO :"replicator_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA replicator
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"replicator_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA replicator
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"replicator_role";

\echo roles ready on database :"DBNAME": ingest :"ingest_role", replicator :"replicator_role" (passwords: see the top of this file)
