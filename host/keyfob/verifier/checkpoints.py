"""WAL checkpoints off the login path, for a server's store on a SQLite file.

A checkpoint copies the write-ahead log's pages into the database file and syncs both. SQLite
runs one inside the COMMIT that takes the log past ``wal_autocheckpoint`` pages: here that took
25-40 ms on the disk, and the login whose commit it was waited for it, with every writer queued
behind it (docs/bench.md: one in every ~1,200 logins at 1,000/s, enough to set the p99). A server
runs for hours, so its store turns its connections' own checkpoints off (the login path's and
the admin calls' SQLAlchemy ones alike) and runs them from a thread of its own (:class:`Checkpointer`):

- a PASSIVE checkpoint every :data:`EVERY_COMMITS` commits, and once a second while idle: it
  copies what no reader still needs and never blocks a reader or a writer;
- a RESTART once the log holds :data:`RESTART_PAGES` pages all the same (under steady load a
  writer appends while PASSIVE copies, so the log never empties and would grow without end), and
  only when that PASSIVE caught up to within :data:`RESTART_GAP_PAGES`: a reader on an old
  snapshot (a long admin read) holds PASSIVE back, and a RESTART would then hold new writers back
  for its whole wait, round after round. A RESTART holds writers back while it copies the last
  pages, syncs, and waits for the readers of the old log (at most :data:`RESTART_WAIT_MS`); the
  next writer starts the log from its beginning again.

A one-shot process (``keyfob validate``) keeps SQLite's own checkpoints: it commits once or twice,
and the last connection to close checkpoints the log anyway.
"""

from __future__ import annotations

import sqlite3
import threading

#: commits of this store between two PASSIVE checkpoints (~4 pages a commit: ~2,000 pages)
EVERY_COMMITS = 500
#: the log's size, in pages, at which the checkpoint is a RESTART (SQLite's default bound is 1,000;
#: the login path's connections had 10,000, see :func:`.db.sqlite_pragmas`)
RESTART_PAGES = 10_000
#: how long a RESTART may hold new writers back waiting for readers (it gives up, and tries again
#: at the next round, rather than stall logins behind a long admin read)
RESTART_WAIT_MS = 50
#: a RESTART only after a PASSIVE that left at most this many pages uncopied
RESTART_GAP_PAGES = 200
IDLE_S = 1.0


class Checkpointer:
    """The thread that checkpoints the SQLite file at ``path`` for one store. The store calls
    :meth:`committed` after each of its commits and :meth:`close` when it closes."""

    def __init__(self, path: str):
        # opened here, so that a failure fails the store's opening rather than the thread (which
        # would leave the log growing with nobody to checkpoint it)
        self._raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._raw.execute("PRAGMA wal_autocheckpoint=0")
            self._raw.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        except BaseException:
            self._raw.close()
            raise
        self._due = threading.Event()
        self._stopping = False
        self._commits = 0
        self.rounds = 0  # checkpoints run (for tests and the curious)
        self.restarts = 0
        self._thread = threading.Thread(target=self._run, name="keyfob-checkpoints", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """One more commit (called under the store's writers' turn, so never two at once)."""
        self._commits += 1
        if self._commits % EVERY_COMMITS == 0:
            self._due.set()

    def _run(self) -> None:
        raw, last_error = self._raw, None
        try:
            while not self._stopping:
                self._due.wait(IDLE_S)
                self._due.clear()
                if self._stopping:
                    return
                try:
                    self._round(raw)
                    last_error = None
                except Exception as exc:  # noqa: BLE001 - the thread must outlive any one round
                    if str(exc) != last_error:  # once, not every round
                        from .core import log

                        log.info("WAL checkpoint failed (tried again each round): %s", exc)
                        last_error = str(exc)
        finally:
            raw.close()

    def _round(self, raw: sqlite3.Connection) -> None:
        _busy, log, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.rounds += 1
        if log >= RESTART_PAGES and log - done <= RESTART_GAP_PAGES:
            if raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0:
                self.restarts += 1

    def close(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join(5)
