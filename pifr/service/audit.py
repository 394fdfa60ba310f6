"""The audit log: one JSON line per decision or gallery change, rotated by size.

A line holds the time (UTC, ISO 8601), the request id, the key's *name* (never the key), the
subject, score, threshold, decision and face count. Probe images are kept only when a folder is
given (``--keep-probes``), named by request id; the line then lists their files.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

_counter = iter(range(1, 1 << 62))
_counter_lock = threading.Lock()


class AuditLog:
    """Appends records to ``path``; at ``max_bytes`` the file rotates (``path.1`` … ``path.<backups>``).

    Rotation is per process: servers sharing a gallery should each have their own ``--audit-log``.
    """

    def __init__(self, path: Any, max_bytes: int = 50 << 20, backups: int = 5, keep_probes: Optional[Any] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _counter_lock:
            n = next(_counter)
        # A private logger per instance (tests make several apps in one process).
        self._log = logging.getLogger(f"pifr.service.audit.{n}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=int(max_bytes), backupCount=int(backups),
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._log.addHandler(self._handler)
        self.keep_probes = Path(keep_probes) if keep_probes else None
        if self.keep_probes:
            self.keep_probes.mkdir(parents=True, exist_ok=True)

    def keep(self, request_id: str, images: Sequence[bytes], kinds: Sequence[str]) -> List[str]:
        """Write the probe images (only with ``keep_probes``); returns their file names."""
        if not self.keep_probes:
            return []
        names = []
        for i, (data, ext) in enumerate(zip(images, kinds)):
            name = f"{request_id}-{i}.{ext}"
            (self.keep_probes / name).write_bytes(data)
            names.append(name)
        return names

    def write(self, event: str, request_id: str, key: str, **fields: Any) -> Dict[str, Any]:
        """Append one record; returns it."""
        now = time.time()
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
               "event": event, "request_id": request_id, "key": key, **fields}
        self._log.info(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        return rec

    def close(self) -> None:
        self._log.removeHandler(self._handler)
        self._handler.close()
