"""Every exception class the replicator defines is rooted in ``replicator.errors.ReplicatorError`` (one of its
three kinds), so the daemon's ``except ReplicatorError`` is complete."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import replicator
from replicator.errors import ConfigurationError, PermanentError, ReplicatorError, RetryableError

OPTIONAL = {"replicator.sinks.pinecone.embedding.local"}  # imports sentence-transformers (an extra) lazily anyway


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(replicator.__path__, "replicator."):
        if module_info.name in OPTIONAL or module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_replicator_exception_is_a_replicator_error() -> None:
    classes = _exception_classes()
    assert len(classes) > 10  # the walk found the sinks', the source's, the CLI's and the query's errors
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, ReplicatorError))
    assert outside == []


def test_each_is_of_one_kind_or_decides_per_instance() -> None:
    kinds = (RetryableError, PermanentError, ConfigurationError)
    undecided = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _exception_classes()
        if c is not ReplicatorError
        and not issubclass(c, kinds)
        and "retryable" not in inspect.signature(c.__init__).parameters
    )
    # SinkError and its subclasses take ``retryable=`` per instance; everything else has one kind.
    assert all(name.startswith("replicator.sinks") for name in undecided), undecided
