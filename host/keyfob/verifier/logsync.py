"""A server's commits on disk before they are answered, with one sync of the log shared by many.

SQLite in WAL mode with ``synchronous=FULL`` syncs the write-ahead log inside every COMMIT, while
the commit still holds the file's one write lock: on this machine's disk that about doubled the
time the lock is held by a login's transaction (docs/bench.md), and every writer of every worker
waits behind it. With ``synchronous=NORMAL`` the log is synced only at checkpoints, so a commit
made just before an OS crash or a power cut could be rolled back: an accepted code accepted once
more, a lockout undone.

So the login path's connections keep NORMAL, and their store syncs the log itself, after the
COMMIT, out of the lock (:class:`LogSync`): a writer asks for a sync once its commit is done and
waits for it before its outcome is used. In a server's store one thread syncs the log for every
commit asked for since its last round, so at 1,000 logins/s a round covers the commits of all
the logins that finished while the one before it ran (and an event loop waits for it without
blocking); a one-shot process's store syncs in the writer's own thread. Either way two processes
on one file no longer take turns on each other's syncs.

Why a sync of the ``-wal`` file is enough: once a commit has returned, its pages are in the log
file; SQLite reuses the log from its start only after a checkpoint has copied every page of it
into the database file and synced that file (SQLite's checkpoints sync the file unless
synchronous is OFF). So at the moment of our sync, a commit's pages are either still in the log,
which the sync puts on disk with the header and frames before them, or already in the database
file on disk. The log's directory entry is synced once per log file, when it is new.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

from .errors import DatabaseError

_datasync = getattr(os, "fdatasync", os.fsync)  # the log's data and size; its times do not matter


class LogSync:
    """Syncs the SQLite file ``path``'s write-ahead log for one store: on a thread of its own,
    one sync for every commit asked for since the last (``shared``), or in each caller's thread."""

    def __init__(self, path: str, *, shared: bool = True):
        self._wal = path + "-wal"
        self._dir = os.path.dirname(os.path.abspath(path))
        self._cond = threading.Condition()
        self._asked: list[concurrent.futures.Future] = []
        self._stopping = False
        self._synced_inode = None  # the log file whose directory entry is on disk
        self.rounds = 0  # syncs run (for tests and the curious)
        self._thread = None
        if shared:
            self._thread = threading.Thread(target=self._run, name="keyfob-logsync", daemon=True)
            self._thread.start()

    def ask(self) -> concurrent.futures.Future:
        """A sync of every commit made so far (call it after your COMMIT returned): done once they
        are on disk, or failed with :class:`DatabaseError`. Without the thread (not ``shared``, or
        after :meth:`close`): synced here before it returns."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._thread is not None and not self._stopping:
                self._asked.append(done)
                self._cond.notify()
                return done
        done.set_running_or_notify_cancel()
        self._settle([done], self._sync_once())
        return done

    def sync(self) -> None:
        """:meth:`ask` and wait for it (a thread's writer)."""
        self.ask().result()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._asked and not self._stopping:
                    self._cond.wait()
                if not self._asked:
                    return  # stopping, and nobody waits
                batch, self._asked = self._asked, []
            # a waiter gone (an event loop's request cancelled) needs no answer
            batch = [f for f in batch if f.set_running_or_notify_cancel()]
            self._settle(batch, self._sync_once())

    @staticmethod
    def _settle(batch, error: DatabaseError | None) -> None:
        for done in batch:
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def _sync_once(self) -> DatabaseError | None:
        """Sync the log as it is now; the error to give every waiter if that failed."""
        try:
            try:
                fd = os.open(self._wal, os.O_RDONLY)
            except FileNotFoundError:
                return None  # no log: SQLite removed it after a checkpoint that synced the database file
            try:
                _datasync(fd)
                inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            if inode != self._synced_inode:
                dfd = os.open(self._dir, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                self._synced_inode = inode
        except OSError as exc:
            # once a sync failed, what the kernel still holds of the log is not known to reach the
            # disk: the waiters are told, and the next round tries again from scratch
            self._synced_inode = None
            return DatabaseError(f"cannot sync the database's log to disk: {exc.strerror or exc}")
        finally:
            self.rounds += 1
        return None

    def close(self) -> None:
        """Sync what is still asked for, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)
