"""Writers of one SQLite file take turns at a lock file (``FILE-writer``, flock) before ``BEGIN
IMMEDIATE``, so they wait in a short poll of our own rather than in SQLite's busy handler, which
sleeps 1, 2, 5, ... up to 100 ms between tries: under a burst of logins from several threads and
workers, most of a login's time was that sleep. SQLite's own lock stays what decides; the turn is a
queue in front of it, bounded by the same lock wait."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time

from .errors import DatabaseBusy


class WriterTurn:
    def __init__(self, db_path: str, wait: float):
        self._path = db_path + "-writer"
        self._wait = wait
        self._here = threading.Lock()  # threads of this process: a flock is per open file, not per thread
        self._fd: int | None = None

    @contextlib.contextmanager
    def turn(self):
        deadline = time.monotonic() + self._wait
        if not self._here.acquire(timeout=self._wait):
            raise DatabaseBusy(f"the database is locked by another process (waited {self._wait:g} s); try again")
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            pause = 0.00005
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DatabaseBusy(
                            f"the database is locked by another process (waited {self._wait:g} s); try again"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.0005)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._here.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
