-- Every statement the replicator runs on its own schema, ``replicator.*``, in one place (procrastinate's
-- queries.sql is the model). ``replicator/store/queries.py`` loads them by name; the modules of
-- ``replicator/store/`` are the only callers. A block starts with ``-- name: NAME``; the comment lines right
-- below it say why the statement is safe, and stay with it.

-- ==== outbox: the source's writes ====================================================================================

-- name: enqueue
-- COALESCING UPSERT — correctness-critical. One statement per batch: the batch's documents (entity names and
-- uuids, each list comma-joined: neither contains a comma) for every sink of ``sinks``. A newer change bumps
-- ``version`` so a worker that claimed the older version will not delete the row after applying it (it compares
-- versions); the LSN only moves forward; first_enqueued_at is kept. ``attempts`` and ``next_attempt_at`` are left
-- alone on purpose: a row waits because its SINK failed, which a newer change does not cure. LOCK ORDER: rows are
-- taken in key order (sink, entity, entity_id; byte order, as Python sorts them), the order of every other
-- statement that locks several outbox rows, so the source and the workers never deadlock. The caller passes
-- each document once (ON CONFLICT may not touch a row twice in one statement).
INSERT INTO replicator.outbox AS o (sink, entity, entity_id, lsn)
SELECT s.sink, k.entity, k.entity_id, %(lsn)s
FROM unnest(%(sinks)s::text[]) AS s(sink)
CROSS JOIN unnest(string_to_array(%(entities)s, ','), string_to_array(%(ids)s, ',')::uuid[]) AS k(entity, entity_id)
ORDER BY s.sink COLLATE "C", k.entity COLLATE "C", k.entity_id
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET version = o.version + 1,
    lsn = greatest(o.lsn, EXCLUDED.lsn),
    last_enqueued_at = now()

-- name: enqueue_entity
-- WHOLE ENTITY — every current row of the entity ({table}, an identifier), plus every document a sink still holds
-- for it (its row may be gone, e.g. after a TRUNCATE: the worker then renders None and deletes downstream). UNION
-- keeps the rows distinct, which ON CONFLICT requires within one statement. Same conflict rule and lock order
-- (key order) as ``enqueue``.
INSERT INTO replicator.outbox AS o (sink, entity, entity_id, lsn)
SELECT u.sink, u.entity, u.entity_id, %(lsn)s
FROM (
    SELECT s.sink, %(entity)s AS entity, d.id AS entity_id
    FROM unnest(%(sinks)s::text[]) AS s(sink) CROSS JOIN {table} AS d
    UNION
    SELECT st.sink, st.entity, st.entity_id
    FROM replicator.sink_state AS st
    WHERE st.sink = ANY(%(sinks)s::text[]) AND st.entity = %(entity)s
) AS u
ORDER BY u.sink COLLATE "C", u.entity COLLATE "C", u.entity_id
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET version = o.version + 1,
    lsn = greatest(o.lsn, EXCLUDED.lsn),
    last_enqueued_at = now()

-- name: notify
SELECT pg_notify(%(channel)s, s) FROM unnest(%(sinks)s::text[]) AS s

-- name: clear_needs_resync
-- A full backfill re-enqueued everything these sinks could have missed.
UPDATE replicator.sink_status SET needs_resync = false WHERE sink = ANY(%(sinks)s::text[])

-- ==== outbox: the workers' side ======================================================================================

-- name: claim_batch
-- CLAIM_BATCH — correctness-critical. Leases up to ``limit`` due rows of one sink to this worker and commits at
-- once. Safe with any number of concurrent workers: FOR UPDATE SKIP LOCKED makes two claims never pick the same row
-- while either is deciding, and a row another worker just leased fails the ``claimed_until < now()`` recheck that
-- Postgres applies to a row it locks after a concurrent update. MATERIALIZED keeps the locking subquery evaluated
-- exactly once (the classic ``IN (SELECT … SKIP LOCKED)`` form may be re-planned as a join that re-executes it).
-- Oldest first, so a backlog drains in arrival order. SETTLE: a row is due once its document has gone ``settle``
-- seconds without a new change (a burst becomes one write), or has waited ten times that since its first change
-- (so a document that never stops changing is still written).
WITH due AS MATERIALIZED (
    SELECT sink, entity, entity_id
    FROM replicator.outbox
    WHERE sink = %(sink)s
      AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND (last_enqueued_at <= now() - make_interval(secs => %(settle)s)
           OR first_enqueued_at <= now() - make_interval(secs => 10 * %(settle)s))
    ORDER BY first_enqueued_at, entity, entity_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE replicator.outbox AS o
SET claimed_by = %(worker)s, claimed_until = now() + make_interval(secs => %(lease)s)
FROM due
WHERE (o.sink, o.entity, o.entity_id) = (due.sink, due.entity, due.entity_id)
RETURNING o.entity, o.entity_id, o.version, o.attempts,
          extract(epoch FROM now() - o.first_enqueued_at)::float8

-- name: complete
-- COMPLETE — correctness-critical. Removes the row only if no change arrived since the claim (same version) and
-- this worker still holds it; otherwise the row stays, so the newer change is applied too (release).
DELETE FROM replicator.outbox
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s
  AND version = %(version)s AND claimed_by = %(worker)s

-- name: release
-- RELEASE: give a still-pending row back (a newer version arrived while we applied the older one).
UPDATE replicator.outbox SET claimed_by = NULL, claimed_until = NULL, attempts = 0, last_error = NULL
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s

-- name: retry_later
-- RETRY_LATER: count the attempt and come back after the backoff (or a deferral, which is not an attempt).
UPDATE replicator.outbox
SET attempts = attempts + %(count)s, next_attempt_at = now() + make_interval(secs => %(delay)s),
    last_error = %(error)s, claimed_by = NULL, claimed_until = NULL
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s

-- name: dead_letter
-- DEAD_LETTER: move the row out of the outbox with its error in one statement (so it is never in both or neither).
-- ``version`` is NULL to move whatever version is there (retries exhausted), or the claimed version (a permanent
-- rejection of THAT content; a newer version deserves its own try).
WITH moved AS (
    DELETE FROM replicator.outbox
    WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s
      AND (%(version)s::bigint IS NULL OR version = %(version)s::bigint)
    RETURNING sink, entity, entity_id, version, lsn, attempts, first_enqueued_at
)
INSERT INTO replicator.dead_letter AS d
    (sink, entity, entity_id, version, lsn, attempts, error, permanent, first_enqueued_at, failed_at)
SELECT sink, entity, entity_id, version, lsn, attempts + %(count)s, %(error)s, %(permanent)s, first_enqueued_at, now()
FROM moved
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET version = EXCLUDED.version, lsn = EXCLUDED.lsn, attempts = EXCLUDED.attempts, error = EXCLUDED.error,
    permanent = EXCLUDED.permanent, first_enqueued_at = EXCLUDED.first_enqueued_at, failed_at = now()

-- name: resolve_dead_letter
-- RESOLVE: the document is now in sync downstream, so an older dead letter for it (rejected content that a later
-- change fixed, or a retry from `dlq retry`) no longer describes anything wrong; keeping it would leave `health`
-- failing for a problem that is gone.
DELETE FROM replicator.dead_letter WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s

-- name: next_due
-- The soonest moment a row of this sink becomes claimable: the worker wakes then even if no NOTIFY comes.
SELECT extract(epoch FROM min(greatest(
    next_attempt_at,
    coalesce(claimed_until, next_attempt_at),
    least(last_enqueued_at + make_interval(secs => %(settle)s),
          first_enqueued_at + make_interval(secs => 10 * %(settle)s))
)) - now())::float8
FROM replicator.outbox WHERE sink = %(sink)s

-- ==== dead letters: the operator's side ==============================================================================

-- name: dlq_list
SELECT sink, entity, entity_id, version, attempts, permanent, error, first_enqueued_at, failed_at
FROM replicator.dead_letter
WHERE (%(sink)s::text IS NULL OR sink = %(sink)s) AND (%(entity)s::text IS NULL OR entity = %(entity)s)
ORDER BY failed_at, sink, entity, entity_id
LIMIT %(limit)s

-- name: dlq_retry
-- DLQ_RETRY: move dead letters back into the outbox in one statement (never in both tables, never in neither). A
-- fresh row starts at version 1 with no attempts; if the key is pending again already, that row is just made due.
-- Outbox rows are taken in key order, like ``enqueue``.
WITH moved AS (
    DELETE FROM replicator.dead_letter
    WHERE (%(sink)s::text IS NULL OR sink = %(sink)s) AND (%(entity)s::text IS NULL OR entity = %(entity)s)
    RETURNING sink, entity, entity_id, lsn
)
INSERT INTO replicator.outbox AS o (sink, entity, entity_id, lsn)
SELECT sink, entity, entity_id, lsn FROM moved
ORDER BY sink COLLATE "C", entity COLLATE "C", entity_id
ON CONFLICT (sink, entity, entity_id) DO UPDATE SET next_attempt_at = now(), attempts = 0
RETURNING o.sink

-- name: dlq_count
SELECT count(*) FROM replicator.dead_letter
WHERE (%(sink)s::text IS NULL OR sink = %(sink)s) AND (%(entity)s::text IS NULL OR entity = %(entity)s)

-- name: dlq_purge
DELETE FROM replicator.dead_letter
WHERE (%(sink)s::text IS NULL OR sink = %(sink)s) AND (%(entity)s::text IS NULL OR entity = %(entity)s)

-- ==== checkpoints and heartbeat ======================================================================================

-- name: save_checkpoint
-- CHECKPOINT ADVANCE — correctness-critical. Written in the outbox transaction, so it never claims an LSN whose
-- rows are not committed; greatest() keeps it monotonic across a replay after a crash.
INSERT INTO replicator.source_checkpoint AS c
    (slot_name, confirmed_lsn, heartbeat_seen, heartbeat_received_at, leader, updated_at)
VALUES (%(slot)s, %(lsn)s, %(beat)s::timestamptz,
        CASE WHEN %(beat)s::timestamptz IS NULL THEN NULL ELSE now() END, %(leader)s, now())
ON CONFLICT (slot_name) DO UPDATE
SET confirmed_lsn = greatest(c.confirmed_lsn, EXCLUDED.confirmed_lsn),
    heartbeat_seen = coalesce(EXCLUDED.heartbeat_seen, c.heartbeat_seen),
    heartbeat_received_at = coalesce(EXCLUDED.heartbeat_received_at, c.heartbeat_received_at),
    leader = coalesce(EXCLUDED.leader, c.leader),
    updated_at = now()

-- name: mark_backfilled
UPDATE replicator.source_checkpoint SET backfill_done_at = now(), updated_at = now() WHERE slot_name = %(slot)s

-- name: load_checkpoint
SELECT slot_name, confirmed_lsn, backfill_done_at, heartbeat_seen, heartbeat_received_at, leader
FROM replicator.source_checkpoint WHERE slot_name = %(slot)s

-- name: forget_checkpoint
-- After ``slot drop``: the next run recreates the slot and backfills.
DELETE FROM replicator.source_checkpoint WHERE slot_name = %(slot)s

-- name: forget_heartbeat
DELETE FROM replicator.heartbeat WHERE slot_name = %(slot)s

-- name: beat
-- HEARTBEAT: a row change on a streamed table, so it comes back through the slot (lag in seconds, an idle slot
-- that still advances).
INSERT INTO replicator.heartbeat (slot_name, beat_at) VALUES (%(slot)s, now())
ON CONFLICT (slot_name) DO UPDATE SET beat_at = now()

-- name: checkpoint_lag
-- LAG IN SECONDS from the heartbeat: the time the newest heartbeat took from its commit to the replicator
-- (heartbeat_received_at − heartbeat_seen) or, when no heartbeat has come back for longer than the heartbeat
-- interval, how overdue the next one is (now − heartbeat_seen − interval): a stuck stream shows as growing lag,
-- while a caught-up one reads near zero instead of "time since the last heartbeat", which is up to one interval.
SELECT greatest(
           extract(epoch FROM heartbeat_received_at - heartbeat_seen),
           extract(epoch FROM now() - heartbeat_seen) - %(interval)s,
           0
       )::float8,
       leader, backfill_done_at
FROM replicator.source_checkpoint WHERE slot_name = %(slot)s

-- ==== sink state =====================================================================================================

-- name: read_sink_state
-- What each document looked like when this sink last wrote it.
SELECT s.entity, s.entity_id, s.remote_id, s.content_hash, s.chunk_count
FROM replicator.sink_state s
JOIN unnest(%(entities)s::text[], %(ids)s::uuid[]) AS k(entity, entity_id)
  ON (s.entity, s.entity_id) = (k.entity, k.entity_id)
WHERE s.sink = %(sink)s

-- name: record_state
INSERT INTO replicator.sink_state AS s (sink, entity, entity_id, remote_id, content_hash, chunk_count, synced_at)
VALUES (%(sink)s, %(entity)s, %(id)s, %(remote_id)s, %(hash)s, %(chunks)s, now())
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET remote_id = EXCLUDED.remote_id, content_hash = EXCLUDED.content_hash, chunk_count = EXCLUDED.chunk_count,
    synced_at = now()

-- name: forget_state
DELETE FROM replicator.sink_state WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s

-- name: invalidate_states
-- VERIFY REPAIR: a hash no render produces, so the worker rewrites these documents instead of skipping them.
UPDATE replicator.sink_state SET content_hash = %(hash)s
WHERE sink = %(sink)s AND (entity, entity_id) IN (SELECT * FROM unnest(%(entities)s::text[], %(ids)s::uuid[]))

-- name: forget_states
DELETE FROM replicator.sink_state
WHERE sink = %(sink)s AND (entity, entity_id) IN (SELECT * FROM unnest(%(entities)s::text[], %(ids)s::uuid[]))

-- ==== sink status ====================================================================================================

-- name: known_sinks
SELECT sink FROM replicator.sink_status ORDER BY sink

-- name: sync_sink_status
-- SINK SWITCHES — a sink that was off (or is new on a slot that already streamed) missed changes while it was not
-- enqueued, so it is flagged needs_resync; the flag is cleared by a full backfill (``replicator resync``).
INSERT INTO replicator.sink_status AS s (sink, enabled, changed_at, needs_resync)
VALUES (%(sink)s, %(enabled)s, now(), %(enabled)s AND %(streamed_before)s)
ON CONFLICT (sink) DO UPDATE
SET enabled = EXCLUDED.enabled,
    changed_at = CASE WHEN s.enabled IS DISTINCT FROM EXCLUDED.enabled THEN now() ELSE s.changed_at END,
    needs_resync = s.needs_resync OR (EXCLUDED.enabled AND NOT s.enabled)
RETURNING needs_resync

-- name: sink_success
INSERT INTO replicator.sink_status AS s (sink, enabled, last_success_at) VALUES (%(sink)s, true, now())
ON CONFLICT (sink) DO UPDATE SET last_success_at = now()

-- name: sink_error
INSERT INTO replicator.sink_status AS s (sink, enabled, last_error, last_error_at)
VALUES (%(sink)s, true, %(error)s, now())
ON CONFLICT (sink) DO UPDATE SET last_error = EXCLUDED.last_error, last_error_at = now()

-- name: sink_counts
-- SINK_COUNTS: pending rows and the age of the oldest one per sink, and dead letters per sink, from the tables
-- themselves (no counters to drift).
WITH names AS (
    SELECT sink FROM replicator.sink_status
    UNION SELECT DISTINCT sink FROM replicator.outbox
    UNION SELECT DISTINCT sink FROM replicator.dead_letter
    UNION SELECT unnest(%(configured)s::text[])
),
pending AS (
    SELECT sink, count(*) AS n, extract(epoch FROM now() - min(first_enqueued_at))::float8 AS oldest
    FROM replicator.outbox GROUP BY sink
),
dead AS (SELECT sink, count(*) AS n FROM replicator.dead_letter GROUP BY sink)
SELECT names.sink, coalesce(pending.n, 0), pending.oldest, coalesce(dead.n, 0),
       coalesce(s.needs_resync, false), s.last_success_at, s.last_error, s.last_error_at
FROM names
LEFT JOIN pending USING (sink)
LEFT JOIN dead USING (sink)
LEFT JOIN replicator.sink_status s USING (sink)
ORDER BY names.sink
