"""Real ``python -m pifr serve`` processes on a free loopback port, for the service's integration tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from tests.conftest import ROOT

ADMIN, RECO = "admin-integration-key-0001", "recognize-integration-key-0001"
KEYS = f"admin:{ADMIN},door=recognize:{RECO}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lfw_people(lfw: Path, n: int, photos: int = 1) -> List[List[Path]]:
    """The first ``n`` LFW people (alphabetical) with at least ``photos`` photos: their first ``photos``."""
    out = []
    for d in sorted(p for p in lfw.iterdir() if p.is_dir()):
        fs = sorted(d.glob("*.jpg"))
        if len(fs) >= photos:
            out.append(fs[:photos])
            if len(out) == n:
                break
    return out


class Server:
    """One server process: ``url``, ``stop()``, ``kill()`` (SIGKILL); its log in ``log``."""

    def __init__(self, gallery: str, tmp: Path, *args: str, name: str = "server", keys: Optional[str] = KEYS,
                 timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        env.pop("PIFR_API_KEYS", None)
        if keys:
            env["PIFR_API_KEYS"] = keys
        cmd = [sys.executable, "-m", "pifr", "serve", "--gallery", gallery, "--host", "127.0.0.1",
               "--port", str(self.port), "--audit-log", str(tmp / f"{name}.audit.jsonl"), *args]
        self._f = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._f, stderr=subprocess.STDOUT)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        import httpx

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout:.0f} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._f.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._f.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
