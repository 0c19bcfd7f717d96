"""Upstream's Python heartbeat API; here the heartbeat is done natively.

Upstream's workers ran a ``HeartbeatClient`` that pinged Elixir and
exited when pings kept failing. In Snakepit native the runtime pings each
worker instead (``heartbeat:`` pool config: ``ping_interval_ms``,
``timeout_ms``, ``max_missed_heartbeats``, ``dependent``), answered on the
worker's own gRPC threads so a long tool call is not a missed beat, and a
worker whose BEAM is gone is killed through its lifeline pipe. So
``HeartbeatConfig`` keeps its shape and parsing, and ``HeartbeatClient``
keeps its methods, but ``start()`` schedules nothing (it returns False and
says why once) and ``ping_once()`` sends nothing (returns None).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Awaitable, Callable, Mapping, Optional

__all__ = ["HeartbeatClient", "HeartbeatConfig"]

log = logging.getLogger("snakepit.bridge.heartbeat")

_TRUE = {"1", "true", "t", "yes", "y", "on"}


@dataclass(frozen=True)
class HeartbeatConfig:
    """Heartbeat settings (upstream's fields and defaults)."""

    enabled: bool = True
    interval_ms: int = 2_000
    timeout_ms: int = 10_000
    max_missed_heartbeats: int = 3
    initial_delay_ms: int = 0
    jitter_ms: int = 0
    dependent: bool = True

    @classmethod
    def from_mapping(
        cls, options: Optional[Mapping[str, Any]], *, defaults: Optional["HeartbeatConfig"] = None
    ) -> "HeartbeatConfig":
        """A config from a mapping (camelCase or snake_case keys); unknown
        keys are ignored, bad values keep the default."""
        data = asdict(defaults or cls())
        names = {f.name for f in fields(cls)}
        for raw_key, value in (options or {}).items():
            key = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), str(raw_key)).lower()
            if key == "ping_interval_ms":  # the Elixir config's name
                key = "interval_ms"
            if key in names:
                data[key] = cls._coerce(key, value, data[key])
        return cls(**data)

    @staticmethod
    def _coerce(name: str, value: Any, default: Any) -> Any:
        if name in ("enabled", "dependent"):
            if isinstance(value, str):
                return value.strip().lower() in _TRUE
            return bool(value)
        try:
            number = int(value)
        except (TypeError, ValueError):
            return default
        if name == "max_missed_heartbeats" and number < 0:
            return default
        return number


class HeartbeatClient:
    """Upstream's client API over the native heartbeat (see the module docstring)."""

    _explained = False

    def __init__(
        self,
        stub: Any,
        session_id: str,
        config: Optional[HeartbeatConfig] = None,
        *,
        loop: Any = None,
        on_threshold_exceeded: Optional[Callable[[int], Awaitable[None]]] = None,
    ) -> None:
        self._stub = stub
        self._session_id = session_id
        self._config = config or HeartbeatConfig()
        self._on_threshold_exceeded = on_threshold_exceeded

    @property
    def config(self) -> HeartbeatConfig:
        return self._config

    def start(self) -> bool:
        """Schedules nothing: the native runtime pings this worker. Returns False."""
        if self._config.enabled and not HeartbeatClient._explained:
            HeartbeatClient._explained = True
            log.info("HeartbeatClient.start(): the native runtime pings this worker; no Python heartbeat loop runs")
        return False

    async def stop(self) -> None:
        """Nothing to stop."""

    def status(self) -> Mapping[str, Any]:
        return {
            "enabled": self._config.enabled,
            "missed_heartbeats": 0,
            "last_ping_monotonic": None,
            "last_success_monotonic": None,
            "running": False,
            "dependent": self._config.dependent,
            "native": True,
        }

    async def ping_once(self) -> None:
        """Sends nothing (the native runtime pings this worker); returns None."""
        return None
