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

-- name: renew_leases
-- LEASE RENEWAL (heartbeat) — correctness-critical. A worker whose batch takes long extends the lease of the rows it
-- still holds; a row another worker claimed meanwhile (its lease had run out) has another ``claimed_by`` and is not
-- touched, and is not returned, so the renewing worker learns it lost that row and writes it no more.
UPDATE replicator.outbox AS o
SET claimed_until = now() + make_interval(secs => %(lease)s)
FROM unnest(%(entities)s::text[], %(ids)s::uuid[]) AS k(entity, entity_id)
WHERE o.sink = %(sink)s AND o.claimed_by = %(worker)s AND (o.entity, o.entity_id) = (k.entity, k.entity_id)
RETURNING o.entity, o.entity_id

-- name: held_claims
-- FENCE before recording outcomes — correctness-critical. Locks the rows this worker still holds, in the recording
-- transaction, so none of them can be claimed by another worker before it commits; a row missing from the answer
-- was lost (its lease ran out and another worker took it), and its outcome, sink_state included, is not recorded.
SELECT o.entity, o.entity_id
FROM replicator.outbox AS o
JOIN unnest(%(entities)s::text[], %(ids)s::uuid[]) AS k(entity, entity_id)
  ON (o.entity, o.entity_id) = (k.entity, k.entity_id)
WHERE o.sink = %(sink)s AND o.claimed_by = %(worker)s
FOR UPDATE OF o

-- name: release_claims
-- RELEASE ALL: a worker that hit a database error (its connection broke mid-pass: a Postgres restart) gives back
-- every row it holds at once (attempts unchanged), so another worker takes them without waiting for the leases to
-- run out. Only this worker's own rows (its id is unique per process run); a row it had applied downstream is
-- applied again, which every sink tolerates (upserts by key).
UPDATE replicator.outbox SET claimed_by = NULL, claimed_until = NULL
WHERE sink = %(sink)s AND claimed_by = %(worker)s

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
       leader, backfill_done_at,
       -- CHECKPOINT AGE: every confirmed batch and every heartbeat seen moves updated_at; a process that is gone
       -- (or cannot stream) leaves it behind.
       extract(epoch FROM now() - updated_at)::float8
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

-- name: record_intents
-- WRITE INTENT — correctness-critical: the replicator's one record-before-write (``WriteIntent``). Recorded BEFORE a
-- sink writes these documents, in its own committed transaction: before the pass for what the sink knows then
-- (Pinecone: the chunk count each write will have), right before the call for what it knows only then (Notion: a page
-- create, with the moment by which the page must show in queries). content_hash becomes a marker no render produces,
-- chunk_count the larger of what is recorded and what is about to be written, remote_id the one the write targets
-- (NULL before a create). So an upsert whose answer is lost (applied downstream, reported as a failure) or a worker
-- killed after the write still leaves a count that covers every part that may exist (the next write deletes the
-- surplus by it), a create that may have happened is looked for before another is sent, and the "unchanged, skip"
-- shortcut cannot trust a hash of content that may have been overwritten downstream. A successful write records the
-- exact state afterwards (``record_state``). Only for rows this worker still holds: a worker that lost its lease
-- writes nothing, so it records no intent either.
INSERT INTO replicator.sink_state AS s (sink, entity, entity_id, remote_id, content_hash, chunk_count, synced_at)
SELECT %(sink)s, k.entity, k.entity_id, k.remote_id, k.hash, k.parts, now()
FROM unnest(%(entities)s::text[], %(ids)s::uuid[], %(hashes)s::text[], %(parts)s::int[], %(remote_ids)s::text[])
    AS k(entity, entity_id, hash, parts, remote_id)
WHERE EXISTS (
    SELECT 1 FROM replicator.outbox AS o
    WHERE o.sink = %(sink)s AND o.claimed_by = %(worker)s AND (o.entity, o.entity_id) = (k.entity, k.entity_id)
)
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET content_hash = EXCLUDED.content_hash, chunk_count = greatest(s.chunk_count, EXCLUDED.chunk_count),
    remote_id = EXCLUDED.remote_id

-- name: forget_state
DELETE FROM replicator.sink_state WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s

-- name: invalidate_states
-- VERIFY REPAIR: a hash no render produces, so the worker rewrites these documents instead of skipping them. A
-- recorded write in flight (``intent:…``, e.g. a Notion create whose answer may be lost) is kept: it already
-- differs from every render, and the sink needs it to look for the page before creating another.
UPDATE replicator.sink_state SET content_hash = %(hash)s
WHERE sink = %(sink)s AND (entity, entity_id) IN (SELECT * FROM unnest(%(entities)s::text[], %(ids)s::uuid[]))
  AND content_hash NOT LIKE 'intent:%%'

-- name: force_rewrite
-- RESYNC --FORCE: a hash no render produces, for every document these sinks hold (of one entity, or all), in the
-- transaction that enqueues them, so the worker rewrites each one instead of trusting sink_state (a sink restored
-- empty or from an old backup still has our records saying "in sync"). remote_id and chunk_count stay: the sink
-- still finds, updates and cleans up what may exist. A hash starting with ``intent:`` is a write in flight, not a
-- hash of anything written (a Pinecone chunk-count intent, a Notion create intent that keeps a retry from making a
-- twin page): it is left alone, and is never taken for "unchanged" anyway. So is ``scope:removed`` (a document a
-- scope removed is not held: it must not look held again).
UPDATE replicator.sink_state SET content_hash = %(hash)s
WHERE sink = ANY(%(sinks)s::text[]) AND (%(entity)s::text IS NULL OR entity = %(entity)s)
  AND content_hash NOT LIKE 'intent:%%' AND content_hash <> 'scope:removed'

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

-- name: sink_duplicates
-- DUPLICATES FOUND: a sink found (and trashed or reported) pages of one document beyond the one it keeps; a
-- running count for ``status`` and the operator, never reset by the workers.
INSERT INTO replicator.sink_status AS s (sink, enabled, duplicates_found, last_duplicate_at)
VALUES (%(sink)s, true, %(n)s, now())
ON CONFLICT (sink) DO UPDATE SET duplicates_found = s.duplicates_found + EXCLUDED.duplicates_found,
                                 last_duplicate_at = now()

-- name: sink_schema_problem
-- SCHEMA PROBLEM: documents of ``entity`` wait because the downstream schema lacks what the sink writes (a
-- property renamed or deleted by a person); shown by ``status`` and ``health`` until a write of that entity works.
INSERT INTO replicator.sink_status AS s (sink, enabled, schema_problem, schema_problem_entity, schema_problem_at)
VALUES (%(sink)s, true, %(problem)s, %(entity)s, now())
ON CONFLICT (sink) DO UPDATE SET schema_problem = EXCLUDED.schema_problem,
                                 schema_problem_entity = EXCLUDED.schema_problem_entity,
                                 schema_problem_at = now()

-- name: clear_sink_schema_problem
-- A document of the entity the problem named was written: the schema holds what the sink writes again.
UPDATE replicator.sink_status SET schema_problem = NULL, schema_problem_entity = NULL, schema_problem_at = NULL
WHERE sink = %(sink)s AND schema_problem_entity = ANY(%(entities)s::text[])

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
       coalesce(s.needs_resync, false), s.last_success_at, s.last_error, s.last_error_at,
       coalesce(s.duplicates_found, 0), s.last_duplicate_at, s.schema_problem, s.schema_problem_at
FROM names
LEFT JOIN pending USING (sink)
LEFT JOIN dead USING (sink)
LEFT JOIN replicator.sink_status s USING (sink)
ORDER BY names.sink

-- ==== sink health =============================================================================================

-- name: record_sink_health
-- SINK HEALTH: what a daemon's sink gate last found (replicator/sink_gate.py). ``down_since`` is kept while the
-- sink stays down (so `health` can tell how long), set when it goes down and cleared when it comes back.
INSERT INTO replicator.sink_health AS h (sink, up, reason, fix, down_since, checked_at, process)
VALUES (%(sink)s, %(up)s, %(reason)s, %(fix)s, CASE WHEN %(up)s THEN NULL ELSE now() END, now(), %(process)s)
ON CONFLICT (sink) DO UPDATE
SET up = EXCLUDED.up, reason = EXCLUDED.reason, fix = EXCLUDED.fix,
    down_since = CASE WHEN EXCLUDED.up THEN NULL ELSE coalesce(h.down_since, now()) END,
    checked_at = now(), process = EXCLUDED.process

-- name: read_sink_health
SELECT sink, up, reason, fix, extract(epoch FROM now() - down_since)::float8,
       extract(epoch FROM now() - checked_at)::float8, process
FROM replicator.sink_health ORDER BY sink

-- ==== narrative capture (#14) ========================================================================================

-- name: narrative_seen
-- A page the poll found edited in its window. It becomes pending unless its blocks were already read for this very
-- last_edited_time AND that read happened after the whole rounded minute had passed (Notion reports the time
-- rounded down to the minute, so a read inside the minute may have missed a later edit of the same minute).
INSERT INTO replicator.narrative_page AS p (page_id, entity, entity_id, url, seen_edit, seen_by, pending)
VALUES (%(page_id)s, %(entity)s, %(entity_id)s, %(url)s, %(seen_edit)s, %(seen_by)s, true)
ON CONFLICT (page_id) DO UPDATE
SET entity = EXCLUDED.entity, entity_id = EXCLUDED.entity_id, url = EXCLUDED.url,
    seen_edit = EXCLUDED.seen_edit, seen_by = EXCLUDED.seen_by,
    pending = p.pending
              OR p.captured_edit IS DISTINCT FROM EXCLUDED.seen_edit
              OR p.checked_at IS NULL
              OR p.checked_at < EXCLUDED.seen_edit + make_interval(secs => %(settle_s)s)
RETURNING pending

-- name: narrative_pending
-- The backlog, oldest edit first.
SELECT page_id, entity, entity_id, url, seen_edit, seen_by
FROM replicator.narrative_page WHERE pending ORDER BY seen_edit, page_id LIMIT %(limit)s

-- name: narrative_checked
-- The page's blocks were read (from checked_at on) for seen_edit; it stays pending if a poll saw a newer edit since.
UPDATE replicator.narrative_page
SET pending = seen_edit IS DISTINCT FROM %(seen_edit)s, checked_at = %(checked_at)s, captured_edit = %(seen_edit)s
WHERE page_id = %(page_id)s

-- name: narrative_backlog
SELECT count(*) FILTER (WHERE pending), min(seen_edit) FILTER (WHERE pending), count(*), max(checked_at)
FROM replicator.narrative_page

-- name: narrative_hash
SELECT content_hash, notion_page_id FROM public.narrative WHERE entity = %(entity)s AND entity_id = %(entity_id)s

-- name: narrative_upsert
-- People's text changed (or the page did): one row per page; an equal hash was filtered out by the caller.
INSERT INTO public.narrative AS n
    (entity, entity_id, notion_page_id, notion_url, text, last_edited_time, last_edited_by, content_hash)
VALUES (%(entity)s, %(entity_id)s, %(page_id)s, %(url)s, %(text)s, %(edited)s, %(edited_by)s, %(hash)s)
ON CONFLICT (entity, entity_id) DO UPDATE
SET notion_page_id = EXCLUDED.notion_page_id, notion_url = EXCLUDED.notion_url, text = EXCLUDED.text,
    last_edited_time = EXCLUDED.last_edited_time, last_edited_by = EXCLUDED.last_edited_by,
    content_hash = EXCLUDED.content_hash

-- name: narrative_delete
DELETE FROM public.narrative WHERE entity = %(entity)s AND entity_id = %(entity_id)s

-- name: narrative_counts
SELECT entity, count(*) FROM public.narrative GROUP BY entity

-- name: overwrite_record
-- One person's edit of one owned property is recorded once, however many polls see it.
INSERT INTO replicator.property_overwrite
    (page_id, property, edited_at, notion_value, entity, entity_id, edited_by, postgres_value)
VALUES (%(page_id)s, %(property)s, %(edited_at)s, %(notion_value)s, %(entity)s, %(entity_id)s, %(edited_by)s,
        %(postgres_value)s)
ON CONFLICT DO NOTHING

-- name: overwrite_list
SELECT entity, entity_id, page_id, property, edited_by, edited_at, notion_value, postgres_value, recorded_at
FROM replicator.property_overwrite ORDER BY edited_at DESC, page_id, property LIMIT %(limit)s

-- name: overwrite_count
SELECT count(*) FROM replicator.property_overwrite

-- ==== verify results =================================================================================================

-- name: verify_record
INSERT INTO replicator.verify_result AS v
    (sink, checked_at, in_sync, documents, remote, missing, orphaned, stale, duplicated)
VALUES (%(sink)s, now(), %(in_sync)s, %(documents)s, %(remote)s, %(missing)s, %(orphaned)s, %(stale)s, %(duplicated)s)
ON CONFLICT (sink) DO UPDATE
SET checked_at = now(), in_sync = EXCLUDED.in_sync, documents = EXCLUDED.documents, remote = EXCLUDED.remote,
    missing = EXCLUDED.missing, orphaned = EXCLUDED.orphaned, stale = EXCLUDED.stale, duplicated = EXCLUDED.duplicated

-- name: verify_results
SELECT sink, checked_at, in_sync, documents, remote, missing, orphaned, stale, duplicated
FROM replicator.verify_result ORDER BY sink

-- name: sink_state_counts
-- Documents a scope removed (content_hash 'scope:removed', sink_state.SCOPE_REMOVED_HASH) are not held.
SELECT sink, entity, count(*) FROM replicator.sink_state WHERE content_hash <> 'scope:removed' GROUP BY sink, entity

-- ==== rate budget: one token bucket per API credential, shared by every process ======================================

-- name: budget_ensure
-- The row of a credential (``key`` is a fingerprint, never the token), full at first. A process started with
-- another rate or burst updates them (the newest start wins: NOTION_RATE_PER_S should be the same everywhere);
-- tokens saved up are kept, capped at the new burst.
INSERT INTO replicator.rate_budget AS b (key, rate, burst, tokens, refilled_at)
VALUES (%(key)s, %(rate)s, %(burst)s, %(burst)s, clock_timestamp())
ON CONFLICT (key) DO UPDATE
SET rate = EXCLUDED.rate, burst = EXCLUDED.burst, tokens = least(b.tokens, EXCLUDED.burst)
WHERE b.rate IS DISTINCT FROM EXCLUDED.rate OR b.burst IS DISTINCT FROM EXCLUDED.burst

-- name: budget_take
-- ATOMIC TAKE — correctness-critical: never grants more than ``burst + rate × elapsed`` over any span. The row is
-- locked (FOR UPDATE) before it is read, so concurrent takes of every process queue on it and each sees the one
-- before it. Refill is computed on the SERVER's clock (clock_timestamp(), one reading per statement, so all
-- processes share one clock) from ``refilled_at``, which only moves forward: a reading older than ``refilled_at``
-- (taken before a lock wait) refills nothing, so time is never counted twice. While ``blocked_until`` lies ahead
-- (a 429 seen by any process) nothing is granted. ``force`` takes without waiting and may leave debt (a call that
-- cost more than expected). Returns (granted, seconds to wait before asking again); no row: call budget_ensure.
WITH c AS (SELECT clock_timestamp() AS at),
cur AS (
    SELECT b.key, b.rate, b.burst, b.blocked_until, b.refilled_at, c.at,
           least(b.burst, b.tokens + b.rate * greatest(0, extract(epoch FROM c.at - b.refilled_at))) AS available
    FROM replicator.rate_budget AS b CROSS JOIN c
    WHERE b.key = %(key)s
    FOR UPDATE OF b
),
d AS (
    SELECT cur.*,
           %(force)s OR (coalesce(cur.blocked_until <= cur.at, true) AND cur.available >= %(tokens)s - 1e-9)
               AS granted
    FROM cur
)
UPDATE replicator.rate_budget AS b
SET tokens = CASE WHEN d.granted THEN d.available - %(tokens)s ELSE d.available END,
    refilled_at = greatest(d.refilled_at, d.at)
FROM d
WHERE b.key = d.key
RETURNING d.granted,
    CASE WHEN d.granted THEN 0.0
         ELSE greatest(extract(epoch FROM d.blocked_until - d.at), (%(tokens)s - d.available) / d.rate, 0.001)
    END::float8

-- name: budget_penalize
-- A 429 with Retry-After seen by one process: nobody is granted anything until then, and exactly one token at that
-- moment, Notion's own word on when a request goes through (``refilled_at`` moves there, so nothing accrues during
-- the block; a debt is forgiven). A later block never shortens an earlier one.
WITH c AS (SELECT clock_timestamp() + make_interval(secs => %(seconds)s) AS until)
UPDATE replicator.rate_budget AS b
SET blocked_until = greatest(b.blocked_until, c.until),
    tokens = 1.0,
    refilled_at = greatest(b.refilled_at, c.until)
FROM c
WHERE b.key = %(key)s

-- ==== sink scope (#14: the staged rollout) ===========================================================================

-- name: read_sink_scope
SELECT scope, narrow FROM replicator.sink_scope WHERE sink = %(sink)s

-- name: record_sink_scope
-- Written in the transaction that enqueued the re-scope's documents, so applied_at (now(): the transaction's start)
-- is no earlier than their first_enqueued_at: the sink's rows enqueued no later are the re-scope's backlog.
INSERT INTO replicator.sink_scope AS s (sink, scope, narrow, applied_at, previous_scope, widened, narrowed)
VALUES (%(sink)s, %(scope)s, %(narrow)s, now(), %(previous)s, %(widened)s, %(narrowed)s)
ON CONFLICT (sink) DO UPDATE
SET scope = EXCLUDED.scope, narrow = EXCLUDED.narrow, applied_at = now(), previous_scope = EXCLUDED.previous_scope,
    widened = EXCLUDED.widened, narrowed = EXCLUDED.narrowed

-- name: sink_scopes
SELECT s.sink, s.scope, s.narrow, s.applied_at, s.previous_scope, s.widened, s.narrowed,
       CASE WHEN s.widened + s.narrowed = 0 THEN 0 ELSE (
           SELECT count(*) FROM replicator.outbox o WHERE o.sink = s.sink AND o.first_enqueued_at <= s.applied_at
       ) END
FROM replicator.sink_scope s ORDER BY s.sink

-- name: held_documents
-- What a sink holds downstream, as its workers recorded it; documents a scope removed keep a marker row (their
-- remote id, so a page comes back from the trash when its document is in scope again) and are not held.
SELECT entity, entity_id FROM replicator.sink_state WHERE sink = %(sink)s AND content_hash <> %(removed)s
