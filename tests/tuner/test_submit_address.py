"""``tautune submit --address`` goes to the address given, even with ``$RAY_ADDRESS`` set
(Ray lets the variable override a client's address; the cluster env files set it)."""

from __future__ import annotations

import os
import socket

import pytest

from tuner.commands.submit import _client
from tuner.errors import ConfigError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_explicit_address_is_not_overridden_by_ray_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given, other = _closed_port(), _closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"http://127.0.0.1:{other}")
    with pytest.raises(ConfigError) as e:
        _client(f"http://127.0.0.1:{given}")
    assert f":{given}" in str(e.value) and f":{other}" not in str(e.value)
    assert os.environ["RAY_ADDRESS"] == f"http://127.0.0.1:{other}"  # put back
