"""The tautune error family.

Every error tautune raises on purpose is a :class:`TautuneError`, so callers can catch the
family in one ``except``. Each message says what was wrong, where, and what to do.
"""

from __future__ import annotations


class TautuneError(Exception):
    """Base class of every error tautune raises on purpose."""


class ConfigError(TautuneError, ValueError):
    """An argument, environment variable or spec string is invalid."""


class StoreError(TautuneError):
    """The trial store (Redis) refused or failed an operation."""


class StoreUnavailableError(StoreError):
    """Redis could not be reached after retrying with backoff."""


class SchemaVersionError(StoreError):
    """The store holds data written under another tautune schema version."""


class MalformedEntryError(StoreError, ValueError):
    """A stream entry or stored record is not what this tautune writes."""


class InvalidMetricError(StoreError, ValueError):
    """A reported metric is not a finite number."""


class StepRegressionError(StoreError, ValueError):
    """A rank reported a step that is not after its last reported step."""


class DecisionConflictError(StoreError):
    """A decision would rewrite a started stage, or another head wrote first."""


class TrimmedHistoryError(StoreError):
    """A step was asked about whose decisions the store's retention already dropped."""


class EmbeddedRedisError(TautuneError):
    """The embedded redis-server could not be started or stopped."""
