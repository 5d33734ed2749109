"""A virtual token that lives on its own, driven from the shell (``keyfob sim start`` and the
commands after it) or from a user's own integration tests.

One background process per workdir holds the token (a :class:`~keyfob.sim.VirtualToken` or a
:class:`~keyfob.sim.pico.PicoToken`), so its USB port stays the same pseudo-terminal for the
token's whole life there, across flashing and power cycles. It writes ``workdir/sim.json``
(``board``, ``port``, ``drive``, ``workdir``, ``pid``, ``control``) once the token is up, and
answers one JSON request per line on the unix socket named by ``control``:

``{"cmd": "press", "ms": 80}``, ``hold``, ``release``, ``screen``, ``power`` (``"on": true|false``,
``"hold": bool``), ``status``, ``stop`` -> ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from keyfob.sim.control import SimError

STATE_FILE = "sim.json"
BOARDS = ("unix", "pico")


def state_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir).resolve() / STATE_FILE


def read_state(workdir: str | os.PathLike) -> dict | None:
    """The running token's sim.json, or None when no live daemon owns ``workdir``."""
    try:
        state = json.loads(state_path(workdir).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def request(workdir: str | os.PathLike, cmd: str, timeout: float = 120.0, **args) -> dict:
    """One request to the daemon of ``workdir``; raises :class:`SimError` with its error."""
    state = read_state(workdir)
    if state is None:
        raise SimError(f"no virtual token is running in {Path(workdir).resolve()} (keyfob sim start)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(state["control"])
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise SimError(f"the virtual token's daemon did not answer: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise SimError("the virtual token's daemon gave no answer") from None
    if not reply.get("ok"):
        raise SimError(reply.get("error") or "refused")
    return reply


def make_token(board: str, workdir: Path, bare: bool = False, oled_addr: int = 0x3C):
    if board == "pico":
        from keyfob.sim.pico import PicoToken

        return PicoToken(workdir, bare=bare, oled_addr=oled_addr, register=True)
    if bare:
        raise SimError("--bare is a Pico with no MicroPython yet: use it with --board pico")
    if oled_addr != 0x3C:
        raise SimError("the unix tier's panel answers at 0x3C")
    from keyfob.sim import VirtualToken

    return VirtualToken(workdir, register=True)


def screen_reply(tok) -> dict:
    from keyfob.sim.textread import text_lines

    screen = tok.screen()
    return {
        "on": screen.on,
        "kind": screen.kind(),
        "code": screen.digits(),
        "text": text_lines(screen) if screen.kind() == "text" else [],
        "pixels": screen.pixels.hex(),
        "art": screen.quadrant_art(),
    }


def settle(tok) -> None:
    """Give a token that just powered on the time to reach its idle loop, so that what the user
    sends next (mpremote's Ctrl-C) is not spent on a boot that has Ctrl-C off. A token with no
    keyfob firmware never says idle on the unix tier: then this gives up after a few seconds."""
    try:
        tok.wait_idle(2 if tok.board == "unix" else 20)
    except SimError:
        pass


class Daemon:
    def __init__(self, tok, board: str, workdir: Path):
        self.tok = tok
        self.board = board
        self.workdir = workdir
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._tmp = tempfile.mkdtemp(prefix="kfsimd-")
        self.control = os.path.join(self._tmp, "ctl.sock")

    def state(self) -> dict:
        drive = getattr(self.tok, "drive", None)
        shown = drive is not None and self.tok.in_bootsel
        return {
            "board": self.board,
            "port": self.tok.port,
            "drive": str(drive) if shown else None,
            "workdir": str(self.workdir),
            "pid": os.getpid(),
            "control": self.control,
            "on": self.tok.is_running or bool(shown),
        }

    def write_state(self) -> None:
        path = state_path(self.workdir)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        os.replace(tmp, path)

    def handle(self, req: dict) -> dict:
        tok = self.tok
        cmd = req.get("cmd")
        patience = getattr(tok, "patience", 1)
        if cmd == "status":
            return self.state()
        if cmd == "stop":
            self.done.set()
            return {}
        if cmd == "screen":
            return screen_reply(tok)
        if cmd == "press":
            tok.press(int(req.get("ms") or 80), timeout=10 * patience)
            tok.wait_idle(10 * patience)
            return screen_reply(tok)
        if cmd == "hold":
            tok.hold()
            return {}
        if cmd == "release":
            tok.release()
            tok.wait_idle(10 * patience)
            return screen_reply(tok)
        if cmd == "power":
            if req.get("on"):
                tok.power_on(hold=bool(req.get("hold")))
                settle(tok)
            else:
                tok.power_off()
            self.write_state()
            return self.state()
        raise SimError(f"unknown request {cmd!r}")

    def serve(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.control)
        os.chmod(self.control, 0o600)
        srv.listen(8)
        srv.settimeout(0.5)
        self.write_state()
        try:
            while not self.done.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    self._refresh()
                    continue
                threading.Thread(target=self._client, args=(conn,), daemon=True).start()
        finally:
            srv.close()

    def _refresh(self) -> None:
        # The BOOTSEL drive comes and goes (a UF2 copied onto it): keep sim.json true.
        try:
            if json.loads(state_path(self.workdir).read_text()) != self.state():
                self.write_state()
        except (OSError, ValueError):
            self.write_state()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            try:
                with self._lock:  # one request at a time: a press, then the next
                    reply = {"ok": True, **self.handle(json.loads(data))}
            except (SimError, ValueError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        # after the request in flight, if any: one that powers on must not start a chip once closed
        with self._lock:
            try:
                self.tok.power_off()
            finally:
                self.tok.close()
                for p in (state_path(self.workdir), Path(self.control)):
                    try:
                        p.unlink()
                    except OSError:
                        pass
                os.rmdir(self._tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m keyfob.sim.daemon")
    ap.add_argument("--board", choices=BOARDS, default="unix")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--oled-addr", type=lambda v: int(v, 0), default=0x3C)
    args = ap.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tok = make_token(args.board, workdir, args.bare, args.oled_addr)
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon(tok, args.board, workdir)
    try:
        if not tok.state_path.exists():
            tok.set_clock(time.time())  # a fresh coin cell set to now, as the kit arrives
        tok.power_on()
        if not getattr(tok, "in_bootsel", False):
            settle(tok)
        daemon.serve()
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
