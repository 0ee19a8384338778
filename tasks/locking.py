"""Prefect's file lock manager, made safe against holders that died without releasing.

`FileSystemLockManager` writes `<key>.lock` naming its holder (a transaction's uuid) and, without a
hold timeout, waits on it forever. A flow process that is SIGKILLed (preempted node, OOM killer)
would leave its stage key locked for good. Here each lock also records the host and the process that
took it (pid and start time) and, once the stage program runs, that program too
(`record_stage_process`): the lock is held while either runs, so a stage program still writing its
directory keeps its key locked even if its flow is gone. A lock whose processes on this host are
gone, or a lock file left empty by a crash between its creation and its write, counts as released.
Locks taken on other hosts are left to Prefect's own expiration.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from prefect.locking.filesystem import FileSystemLockManager
from prefect.logging import get_logger

from sparse2dense.processes import ProcessRecord

logger = get_logger("s2d.locking")

EMPTY_LOCK_GRACE_S = 10.0
DEAD = "<dead>"


def owner_is_dead(info: dict[str, Any]) -> bool:
    """The lock's flow process and its stage program (if one was recorded) have both ended on this host."""
    if info.get("holder") == DEAD:
        return True
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    owners = [ProcessRecord(pid=pid, started=info.get("started"))]
    if isinstance(stage := info.get("stage"), dict):
        owners.append(ProcessRecord.model_validate(stage))
    return not any(owner.is_running() for owner in owners)


class StaleLockRecoveringManager(FileSystemLockManager):
    def _rewrite(self, path: Path, info: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    def _stamp_owner(self, key: str) -> None:
        """Add this process's host, pid and start time to the lock file Prefect just wrote (atomically)."""
        path = self._lock_path_for_key(key)
        info = json.loads(path.read_bytes())
        me = ProcessRecord.of(os.getpid())
        self._rewrite(path, info | {"host": socket.gethostname(), "pid": me.pid, "started": me.started})

    def record_stage_process(self, key: str, pid: int) -> None:
        """Name the stage program `pid` in the lock this process holds on `key` (no lock held here: no-op)."""
        path = self._lock_path_for_key(key)
        try:
            info = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return
        if info.get("pid") != os.getpid() or info.get("host") != socket.gethostname():
            return
        self._rewrite(path, info | {"stage": ProcessRecord.of(pid).model_dump()})

    def acquire_lock(self, key: str, holder: str, acquire_timeout=None, hold_timeout=None) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            self._stamp_owner(key)
        return acquired

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout=None, hold_timeout=None) -> bool:
        acquired = await super().aacquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            self._stamp_owner(key)
        return acquired

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # created but not yet (or never) written
            path = self._lock_path_for_key(key)
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return None
            stale = age > EMPTY_LOCK_GRACE_S
            return {"holder": DEAD if stale else "<writing>", "expiration": None, "path": path}

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        info = self._get_lock_info(key, use_cache=use_cache)
        if info is not None and owner_is_dead(info):
            owner = f"pid {info.get('pid')} on {info.get('host')}" if "pid" in info else "a crashed process"
            if "stage" in info:
                owner += f" (stage program pid {info['stage'].get('pid')})"
            logger.warning("lock %s was held by %s, which is gone; releasing it", key, owner)
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)
