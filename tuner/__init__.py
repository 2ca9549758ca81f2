"""tautune's head: controllers, the job head, the tuning API and the command line.

``from tuner import tune, LRSpec`` is the Python entry point; importing ``tuner`` loads
neither Ray nor torch until they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.api import LRSpec, MixtureSpec, Result, tune

__all__ = ["LRSpec", "MixtureSpec", "Result", "tune"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tuner import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
