"""Logins' commits on disk before they are answered, with one sync of the log shared by many.

SQLite in WAL mode with ``synchronous=FULL`` syncs the write-ahead log inside every COMMIT, while
the commit still holds the file's one write lock: on this machine's disk a sync (0.2-0.4 ms)
takes as long as a login's whole transaction, and every writer of every process waits behind it
(two processes validating on one file: 1,931/s so, 2,413/s with the sync after the lock,
docs/bench.md). With ``synchronous=NORMAL`` the log is synced only at checkpoints, so a commit
made just before an OS crash or a power cut could be rolled back: an accepted code accepted once
more, a lockout undone.

So the login path's connections keep NORMAL, and their store syncs the log itself, after the
COMMIT, out of the lock (:class:`LogSync`): a writer asks for a sync once its commit is done and
waits for it before anything is answered on the strength of it. In a server's store one thread
syncs the log for every commit asked for since its last round, so at 1,000 logins/s a round
covers the commits of all the logins that finished while the one before it ran (and an event
loop waits for it without blocking); a one-shot process's store syncs in the writer's own
thread. Either way two processes on one file no longer take turns on each other's syncs.

Why a sync of the ``-wal`` file is enough: once a commit has returned, its pages are in the log
file; SQLite reuses the log from its start only after a checkpoint has copied every page of it
into the database file and synced that file (a checkpoint syncs it unless the connection that
runs it has ``synchronous=OFF``; keyfob's never do, and nothing else should open the file while
a server runs). So at the moment of our sync, a commit's pages are either still in the log,
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
    one sync for every commit asked for since the last (``shared``), or in each caller's thread.

    The log is held open from its first sync on: Linux reports a failed write-back to each file
    description open at the time, and to one opened later perhaps not at all (another one, e.g.
    the checkpoint thread's, may have taken the report). After a failed sync, the kernel has
    dropped the pages it could not write and marked them clean, so a later sync that succeeds
    proves nothing about them: every later sync fails too, until the process is restarted
    (PostgreSQL answers the same way) and SQLite's recovery reads the log from the disk again."""

    def __init__(self, path: str, *, shared: bool = True):
        # SQLite puts the log beside the real file, not beside a symlink to it
        real = os.path.realpath(path)
        self._wal, self._dir = real + "-wal", os.path.dirname(real)
        self._cond = threading.Condition()  # the asks, and the thread's wait for them
        self._io = threading.Lock()  # one sync at a time (the thread's, or a caller's); the fields below
        self._asked: list[concurrent.futures.Future] = []
        self._stopping = False
        self._fd = None  # the log, once opened: (descriptor, (device, inode))
        self._broken = None  # why every sync fails from now on
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
            if self._thread is not None and not self._stopping and self._broken is None:
                self._asked.append(done)
                self._cond.notify()
                return done
        done.set_running_or_notify_cancel()
        with self._io:
            error = self._sync_once()
            if self._stopping:
                self._release()  # nobody closes it after close()
        self._settle([done], error)
        return done

    def sync(self) -> None:
        """:meth:`ask` and wait for it (a thread's writer)."""
        self.ask().result()

    def _run(self) -> None:
        batch: list = []
        try:
            while True:
                with self._cond:
                    while not self._asked and not self._stopping:
                        self._cond.wait()
                    if not self._asked:
                        return  # stopping, and nobody waits
                    batch, self._asked = self._asked, []
                # a waiter gone (an event loop's request cancelled) needs no answer
                batch = [f for f in batch if f.set_running_or_notify_cancel()]
                with self._io:  # not under _cond: a writer asks for the next round meanwhile
                    error = self._sync_once()
                self._settle(batch, error)
                batch = []
        except BaseException as exc:  # noqa: BLE001 - a bug; told to the waiters and logged
            # never a waiter left without an answer: they and every later one are told
            with self._cond:
                self._broken = self._broken or f"the log's sync stopped ({type(exc).__name__}: {exc})"
                left, self._asked = batch + self._asked, []
            self._settle([f for f in left if not f.done()], self._broken)
            from .core import log

            log.error("the database log's sync thread stopped: %s", self._broken)

    @staticmethod
    def _settle(batch, error: str | None) -> None:
        for done in batch:
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(DatabaseError(f"cannot sync the database's log to disk: {error}"))

    def _sync_once(self) -> str | None:
        """Sync the log as it is now (under ``_io``); the error to give every waiter, if any."""
        self.rounds += 1
        if self._broken is not None:
            return self._broken
        try:
            fd = self._log_fd()
            if fd is not None:
                _datasync(fd)
        except OSError as exc:
            self._broken = f"{exc.strerror or exc} (every sync fails until the server is restarted)"
            return self._broken
        return None

    def _log_fd(self) -> int | None:
        """The log, held open; opened again if SQLite made a new file of it (after all its
        connections closed), whose directory entry is then synced too. None if there is no log:
        SQLite removed it after a checkpoint that synced the database file."""
        try:
            st = os.stat(self._wal)
        except FileNotFoundError:
            return None
        if self._fd is not None and self._fd[1] == (st.st_dev, st.st_ino):
            return self._fd[0]
        fd = os.open(self._wal, os.O_RDONLY)
        try:
            dfd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd[0])
        st = os.fstat(fd)
        self._fd = (fd, (st.st_dev, st.st_ino))
        return fd

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd[0])
            self._fd = None

    def close(self) -> None:
        """Sync what is still asked for, stop the thread, and let the log go (a sync asked for
        later is made in its caller)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)
        with self._io:
            self._release()
