"""A connection to one Redis: URL resolution, retries with backoff, clear errors.

Only ``trials`` imports ``redis``. Pickling (for Ray) carries the URL only; a copy
reconnects on first use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from trials import keys as K
from tuner.errors import ConfigError, StoreUnavailableError

if TYPE_CHECKING:
    from trials.retention import Retention
    from trials.store import JobStore

T = TypeVar("T")

URL_ENV = "TAUTUNE_REDIS_URL"
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)


def redact(url: str) -> str:
    """``url`` with any password (user info or ``password=`` query) replaced by ``***``."""
    url = re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def _has_credentials(url: str) -> bool:
    return bool(re.match(r"^\w+://[^/]*@", url)) or "password=" in url


def resolve_url(url: str | None) -> str | None:
    """``url`` if given, else ``$TAUTUNE_REDIS_URL``, else ``None`` (embedded server)."""
    return url or os.environ.get(URL_ENV) or None


class Store:
    """A connection to one Redis.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, with ACL user and
            password where the server wants them.
        retries: Connection attempts before :class:`StoreUnavailableError`; backoff doubles
            from 50 ms up to 2 s between them.
    """

    def __init__(self, url: str, *, retries: int = 6, socket_timeout_s: float = 10.0) -> None:
        if not url:
            raise ConfigError("a Redis URL is required (redis://, rediss:// or unix://)")
        self.url = url
        self.retries = retries
        self.socket_timeout_s = socket_timeout_s
        self._client: Any = None

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> Store:
        """Open a store and check that Redis answers (retrying with backoff)."""
        store = cls(url, **kwargs)
        store.call(lambda c: c.ping())
        return store

    @property
    def client(self) -> Any:
        """The redis-py client (typed ``Any``: its reply types depend on decode_responses,
        which tautune leaves off, so replies are bytes)."""
        if self._client is None:
            try:
                self._client = redis.Redis.from_url(
                    self.url,
                    socket_timeout=self.socket_timeout_s,
                    socket_connect_timeout=self.socket_timeout_s,
                    retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), self.retries),
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                )
            except ValueError as e:
                raise ConfigError(f"invalid Redis URL {self.url!r}: {e}") from None
        return self._client

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``, turning connection failures into :class:`StoreUnavailableError`."""
        try:
            return fn(self.client)
        except redis.AuthenticationError as e:  # before ConnectionError, its base class
            raise ConfigError(
                f"Redis at {redact(self.url)} refused the credentials "
                f"({'wrong user or password' if _has_credentials(self.url) else 'none given'}: "
                f"{e}); put them in the URL, redis://USER:PASSWORD@HOST:PORT/DB, in --redis "
                f"or ${URL_ENV}"
            ) from None
        except redis.exceptions.InvalidResponse as e:
            raise ConfigError(
                f"{redact(self.url)} did not answer as a Redis server does ({e}); check the "
                f"host and port in --redis or ${URL_ENV}"
            ) from None
        except _CONNECTION_ERRORS as e:
            raise StoreUnavailableError(
                f"Redis at {redact(self.url)} is unreachable after {self.retries} retries with "
                f"backoff ({type(e).__name__}: {e}). Check that it runs and that --redis / "
                f"${URL_ENV} points at it."
            ) from e

    def job(
        self, job: str, trial: int | None = None, *, retention: Retention | None = None
    ) -> JobStore:
        """One job's view (or one trial's, in a population job); raises
        :class:`SchemaVersionError` if it was written by another schema version.

        Args:
            retention: How much history the view keeps when it writes (default:
                :data:`~trials.retention.DEFAULT_RETENTION`).
        """
        from trials.store import JobStore

        if retention is None:
            return JobStore(self, job, trial)
        return JobStore(self, job, trial, retention=retention)

    def jobs(self) -> list[str]:
        """Names of the jobs this Redis holds, sorted."""
        found = []
        for key in self.call(lambda c: list(c.scan_iter(match="tt:{*}:schema", count=1000))):
            name = K.job_from_schema_key(key.decode())
            if name is not None:
                found.append(name)
        return sorted(found)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "retries": self.retries, "socket_timeout_s": self.socket_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.retries = state["retries"]
        self.socket_timeout_s = state["socket_timeout_s"]
        self._client = None
