"""The channel between the trials of a population job: states through Redis.

:class:`StorePeers` is the :class:`~workers.explore.PeerChannel` an
:class:`~workers.agent.Agent` of a trial gives its :class:`~workers.explore.StateMover`.
A rank publishes its state under its own trial, rank and step
(:mod:`trials.peer_states`); a rank of another trial that must go on from it polls the same
key, since the publisher may reach that step a little later. A state that is gone for good
(the publisher has reported that step, so it published there, and the key has expired or
was deleted: a rank that restarted replays an old decision) is not waited for.
"""

from __future__ import annotations

import time

from trials.store import JobStore
from tuner.errors import ConfigError

_PROGRESS_EVERY_S = 0.5
"""How often a waiting rank asks whether the publisher is past the step already."""


class StorePeers:
    """Publishes and fetches one rank's states for the trials of ``store``'s job.

    Args:
        store: The trial's view of the job (``store.trial`` set).
        rank: This rank; a state is exchanged between equal ranks of different trials.
        timeout_s: Longest wait for a peer's state.
    """

    def __init__(self, store: JobStore, rank: int, *, timeout_s: float = 300.0) -> None:
        if store.trial is None:
            raise ConfigError("StorePeers needs the view of one trial of a population job")
        self.store = store
        self.rank = rank
        self.timeout_s = timeout_s
        self.waited_s = 0.0

    def publish(self, step: int, blob: bytes) -> None:
        self.store.publish_state(self.rank, step, blob)

    def fetch(self, trial: int, step: int) -> bytes | None:
        """The state this rank of ``trial`` published at ``step``, waiting for it; ``None``
        when it is gone for good (see the module's docstring).

        Raises:
            ConfigError: it did not come within ``timeout_s``.
        """
        start = time.monotonic()
        delay, next_check = 0.002, start
        while (blob := self.store.peer_state(trial, self.rank, step)) is None:
            now = time.monotonic()
            if now >= next_check:
                if self._published_past(trial, step):
                    self.waited_s += time.monotonic() - start
                    return None
                next_check = now + _PROGRESS_EVERY_S
            waited = now - start
            if waited > self.timeout_s:
                raise ConfigError(
                    f"trial {self.store.trial} rank {self.rank} waited {waited:.0f}s at step "
                    f"{step} for the state rank {self.rank} of trial {trial} publishes there; "
                    f"is trial {trial} running, with the same number of ranks?"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.waited_s += time.monotonic() - start
        return blob

    def _published_past(self, trial: int, step: int) -> bool:
        """Whether that rank of ``trial`` has reported ``step`` or later: it published its
        state at ``step`` (in the scheduler step before training it) and went on."""
        last = self.store.for_trial(trial).progress().get(self.rank)
        return last is not None and last[1] >= step
