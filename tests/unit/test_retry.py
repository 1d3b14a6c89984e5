"""The retry policy, the token bucket, RetryingSink and retry_reads, driven by fake clocks and sleeps (no real
waiting)."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import httpx
import pytest
from notion_client import APIResponseError

from replicator.config import Settings
from replicator.documents import Document, DocumentKey
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy, RetryingSink, RetrySettings, TokenBucket, recheck_policy, retry_reads
from replicator.sinks.base import DeleteItem, Outcome, OutcomeKind, RemoteState, Sink, SinkError, UpsertItem


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    policy = BackoffPolicy(base_s=0.5, cap_s=10.0, rng=random.Random(7))
    assert [policy.ceiling(n) for n in (1, 2, 3, 4, 5, 6, 100)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    delays = [policy.delay(4) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 2.0  # jitter spreads the herd


def test_backoff_never_retries_sooner_than_retry_after_but_caps_a_bogus_hint() -> None:
    policy = BackoffPolicy(base_s=0.1, cap_s=1.0, max_retry_after_s=30.0, rng=random.Random(1))
    assert policy.delay(1, retry_after=5.0) >= 5.0
    assert policy.delay(1, retry_after=86400.0) == 30.0


def test_a_sink_that_is_down_is_rechecked_at_80_to_100_percent_of_each_step_from_its_settings() -> None:
    settings = Settings.model_validate(
        {"POSTGRES_URL": "postgresql://h/db", "REPLICATOR_SINK_RECHECK_MIN_S": 2, "REPLICATOR_SINK_RECHECK_MAX_S": 20}
    )
    policy = replace(recheck_policy(settings), rng=random.Random(5))
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 20.0), (40, 20.0)):
        delays = [policy.delay(attempt) for _ in range(100)]
        assert all(0.8 * ceiling <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
    assert policy.delay(1, retry_after=45.0) == 45.0


def test_the_token_bucket_allows_a_burst_then_paces_to_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=3.0, burst=3.0, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        assert bucket.acquire() == 0.0
    waited = sum(bucket.acquire() for _ in range(6))
    assert waited == pytest.approx(2.0)  # six more tokens at three per second
    assert t.now == pytest.approx(2.0)


def test_charging_the_bucket_leaves_a_debt_that_later_calls_pay() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=2.0, burst=2.0, clock=t.clock, sleep=t.sleep)
    bucket.acquire(2)
    bucket.charge(4)  # the last call cost four more requests than paid for
    assert bucket.acquire() == pytest.approx(2.5)


def test_a_penalty_grants_nothing_until_retry_after_then_one_token_then_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=2.0, burst=4.0, clock=t.clock, sleep=t.sleep)
    bucket.penalize(3.0)  # a 429 with Retry-After: 3, with four tokens saved up
    assert bucket.acquire() == pytest.approx(3.0)  # nothing before the Retry-After, one token at it
    assert t.now == pytest.approx(3.0)
    assert bucket.acquire() == pytest.approx(0.5)  # then the rate, not the saved-up burst
    bucket.penalize(1.0)
    bucket.penalize(0.2)  # a shorter penalty never shortens the one before
    assert bucket.acquire() == pytest.approx(1.0)


def test_the_token_bucket_is_safe_across_threads() -> None:
    lock = threading.Lock()
    t = FakeTime()

    def sleep(seconds: float) -> None:
        with lock:
            t.sleep(seconds)

    bucket = TokenBucket(rate=100.0, burst=1.0, clock=t.clock, sleep=sleep)
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(50)]) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 200 tokens at 100/s with a burst of one: at least ~1.99 s of (fake) time must have passed.
    assert t.now >= 1.98


def _doc() -> Document:
    return Document(key=DocumentKey("dataset", uuid.uuid4()), name="d")


class ScriptedSink(Sink):
    """Per call, a mode per document key (default ok); or raise a SinkError for the whole call."""

    def __init__(self, script: list[dict[DocumentKey, str] | SinkError]) -> None:
        self.name = "scripted"
        self.script = script
        self.calls: list[list[DocumentKey]] = []

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        keys = [i.document.key for i in items]
        self.calls.append(keys)
        step = self.script.pop(0) if self.script else {}
        if isinstance(step, SinkError):
            raise step
        out = []
        for key in keys:
            mode = step.get(key, "ok")
            if mode == "ok":
                out.append(Outcome(key, OutcomeKind.APPLIED, state=RemoteState("r", "h", 1), calls=3))
            else:
                error = SinkError(
                    mode, retryable=mode.startswith("retry"), retry_after=2.0 if "after" in mode else None
                )
                out.append(Outcome(key, OutcomeKind.FAILED, error=error, calls=1))
        return out

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        return [Outcome(i.key, OutcomeKind.DELETED) for i in items]


def _retrying(inner: Sink, t: FakeTime, attempts: int = 3, metrics: Metrics | None = None) -> RetryingSink:
    return RetryingSink(
        inner,
        policy=BackoffPolicy(base_s=0.1, cap_s=1.0, rng=random.Random(3)),
        settings=RetrySettings(attempts=attempts, max_inline_wait_s=10.0),
        metrics=metrics,
        sleep=t.sleep,
    )


def test_retrying_sink_retries_only_the_items_that_failed_retryably() -> None:
    a, b, c = _doc(), _doc(), _doc()
    inner = ScriptedSink([{b.key: "retry", c.key: "permanent"}])
    t = FakeTime()
    metrics = Metrics()
    outcomes = _retrying(inner, t, metrics=metrics).upsert([UpsertItem(d, None) for d in (a, b, c)])
    assert [o.kind for o in outcomes] == [OutcomeKind.APPLIED, OutcomeKind.APPLIED, OutcomeKind.FAILED]
    assert inner.calls == [[a.key, b.key, c.key], [b.key]]
    assert len(t.sleeps) == 1
    assert metrics.registry.get_sample_value("replicator_sink_retries_total", {"sink": "scripted"}) == 1
    # API requests as the sink reports them: 3 + 1 + 1 on the first call, 3 on the retry.
    assert metrics.registry.get_sample_value("replicator_sink_requests_total", {"sink": "scripted"}) == 8


def test_retrying_sink_honours_retry_after_and_gives_up_after_its_attempts() -> None:
    a = _doc()
    inner = ScriptedSink([{a.key: "retry after"}] * 5)
    t = FakeTime()
    (outcome,) = _retrying(inner, t, attempts=3).upsert([UpsertItem(a, None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable
    assert len(inner.calls) == 3
    assert t.sleeps == [pytest.approx(2.0, abs=1.0)] * 2
    assert all(s >= 2.0 for s in t.sleeps)


def test_a_retry_after_longer_than_the_inline_limit_goes_back_to_the_worker() -> None:
    a = _doc()

    class LongHint(ScriptedSink):
        def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
            self.calls.append([i.document.key for i in items])
            error = SinkError("429", retryable=True, retry_after=120.0)
            return [Outcome(i.document.key, OutcomeKind.FAILED, error=error) for i in items]

    inner = LongHint([])
    t = FakeTime()
    (outcome,) = _retrying(inner, t).upsert([UpsertItem(a, None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert (len(inner.calls), t.sleeps) == (1, [])


def test_a_whole_batch_error_fails_or_retries_every_item() -> None:
    a, b = _doc(), _doc()
    t = FakeTime()
    inner = ScriptedSink([SinkError("connection reset", retryable=True)])
    outcomes = _retrying(inner, t).upsert([UpsertItem(a, None), UpsertItem(b, None)])
    assert [o.kind for o in outcomes] == [OutcomeKind.APPLIED, OutcomeKind.APPLIED]
    inner = ScriptedSink([SinkError("bad request", retryable=False)])
    outcomes = _retrying(inner, t).upsert([UpsertItem(a, None)])
    assert [o.kind for o in outcomes] == [OutcomeKind.FAILED]
    assert len(inner.calls) == 1


def test_retrying_sink_paces_calls_through_the_bucket_and_charges_extra_calls() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=t.clock, sleep=t.sleep)
    sink = RetryingSink(ScriptedSink([]), policy=BackoffPolicy(), bucket=bucket, sleep=t.sleep)
    sink.upsert([UpsertItem(_doc(), None)])  # costs 3 calls: 1 paid up front, 2 charged after
    sink.upsert([UpsertItem(_doc(), None)])
    assert t.now == pytest.approx(3.0)


def test_the_retrying_wrapper_passes_on_whether_its_sink_wants_relation_ids() -> None:
    class RelationSink(ScriptedSink):
        wants_relation_ids = True

    assert RetryingSink(RelationSink([]), policy=BackoffPolicy()).wants_relation_ids is True
    assert RetryingSink(ScriptedSink([]), policy=BackoffPolicy()).wants_relation_ids is False


# ---- retry_reads: the one retry of a sink's reads ------------------------------------------------------------
class FlakyRead:
    """A read that fails with ``errors`` in turn, then answers ``"answer"``."""

    def __init__(self, *errors: SinkError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def test_retry_reads_retries_a_retryable_read_by_the_policy_and_returns_its_answer() -> None:
    time = FakeTime()
    read = FlakyRead(SinkError("503", retryable=True), SinkError("429", retryable=True, retry_after=7.0))
    policy = BackoffPolicy(base_s=1.0, cap_s=100.0, rng=random.Random(3))
    expected = BackoffPolicy(base_s=1.0, cap_s=100.0, rng=random.Random(3))

    assert retry_reads(read, policy=policy, attempts=5, sleep=time.sleep) == "answer"
    assert read.calls == 3
    assert time.sleeps == [expected.delay(1), expected.delay(2, 7.0)]
    assert time.sleeps[1] >= 7.0  # never sooner than the server's Retry-After


def test_retry_reads_raises_a_permanent_error_at_once() -> None:
    time = FakeTime()
    permanent = SinkError("400 validation", retryable=False)
    read = FlakyRead(permanent)
    with pytest.raises(SinkError) as raised:
        retry_reads(read, policy=BackoffPolicy(), attempts=5, sleep=time.sleep)
    assert raised.value is permanent
    assert (read.calls, time.sleeps) == (1, [])


def test_retry_reads_gives_up_after_its_attempts_with_the_last_error() -> None:
    time = FakeTime()
    errors = [SinkError(f"503 #{n}", retryable=True) for n in range(5)]
    read = FlakyRead(*errors)
    with pytest.raises(SinkError) as raised:
        retry_reads(read, policy=BackoffPolicy(base_s=0.1, cap_s=0.1), attempts=3, sleep=time.sleep)
    assert raised.value is errors[2]
    assert read.calls == 3
    assert len(time.sleeps) == 2  # a wait between attempts, none after the last


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float] = []

    def acquire(self, tokens: float = 1.0) -> float:
        self.acquired += 1
        return 0.0

    def charge(self, tokens: float) -> None:
        pass

    def penalize(self, retry_after_s: float) -> None:
        self.penalties.append(retry_after_s)


def test_a_notion_read_goes_through_retry_reads_and_penalizes_the_budget_on_each_429() -> None:
    from replicator.sinks.notion import NotionSink

    def rate_limited() -> APIResponseError:
        return APIResponseError(
            code="rate_limited",
            status=429,
            message="slow down",
            headers=httpx.Headers({"Retry-After": "2"}),
            raw_body_text="{}",
        )

    answers: list[Any] = [rate_limited(), rate_limited(), {"id": "db"}]

    def retrieve(database_id: str) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    time = FakeTime()
    limiter = RecordingLimiter()
    sink = NotionSink(
        cast(Any, None), {}, bucket=limiter, read_policy=BackoffPolicy(base_s=0.1, cap_s=0.1), sleep=time.sleep
    )

    assert sink._read("retrieve database", retrieve, "db") == {"id": "db"}
    assert limiter.acquired == 3  # every attempt is paced
    assert limiter.penalties == [2.0, 2.0]  # every 429 holds the whole budget for its Retry-After
    assert [s >= 2.0 for s in time.sleeps] == [True, True]
