"""Session tools: state kept per session id in this worker (upstream's
shapes). With session affinity (``Snakepit.execute_in_session``) a
session's calls reach the same worker."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any, Dict, Optional

from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method


class SessionOpsHandler:
    _sessions: Dict[Optional[str], Dict[str, Any]] = {}
    _sessions_lock = threading.Lock()

    def _session_id(self) -> Optional[str]:
        ctx = self.session_context
        return ctx.session_id if ctx is not None else None

    def _session(self, session_id: Optional[str]) -> Dict[str, Any]:
        return self._sessions.setdefault(session_id, {"command_count": 0, "counter": 0})

    @tool(description="Initialize session state")
    @thread_safe_method
    def init_session(self, **kwargs: Any) -> Dict[str, Any]:
        session_id = self._session_id()
        with self._sessions_lock:
            self._sessions[session_id] = {"session_start_time": time.time(), "command_count": 0, "counter": 0}
        return {"timestamp": datetime.now().isoformat(), "worker_pid": os.getpid(), "session_id": session_id}

    @tool(description="Clean up the session's state; report its duration and command count")
    @thread_safe_method
    def cleanup(self) -> Dict[str, Any]:
        with self._sessions_lock:
            data = self._sessions.pop(self._session_id(), {})
        started = data.get("session_start_time", time.time())
        return {"duration_ms": round((time.time() - started) * 1000, 2), "command_count": data.get("command_count", 0)}

    @tool(description="Set the session's counter")
    @thread_safe_method
    def set_counter(self, value: int) -> Dict[str, Any]:
        with self._sessions_lock:
            session = self._session(self._session_id())
            session["counter"] = value
            session["command_count"] += 1
        return {"value": value}

    @tool(description="Get the session's counter")
    @thread_safe_method
    def get_counter(self) -> Dict[str, Any]:
        session_id = self._session_id()
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                return {"value": 0}
            session["command_count"] += 1
            return {"value": session.get("counter", 0)}

    @tool(description="Increment the session's counter")
    @thread_safe_method
    def increment_counter(self) -> Dict[str, Any]:
        with self._sessions_lock:
            session = self._session(self._session_id())
            session["counter"] += 1
            session["command_count"] += 1
            return {"value": session["counter"]}

    @tool(description="The worker serving this session call")
    @thread_safe_method
    def get_worker_info(self, call_number: int = 0) -> Dict[str, Any]:
        session_id = self._session_id()
        with self._sessions_lock:
            if session_id in self._sessions:
                self._sessions[session_id]["command_count"] += 1
        return {"worker_pid": str(os.getpid()), "call_number": call_number, "session_id": session_id}
