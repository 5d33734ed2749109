"""The wheel works on its own (issue 14, "Packaging"): built from a copy of the checkout, installed
into a fresh venv, and run from a temporary folder, keyfob finds the firmware and the board layers
in the package (``keyfob/_payload``), not in any checkout: ``keyfob deploy`` onto a virtual token,
``keyfob sim start``/``press`` and ``keyfob provision --count 1``.

Cost: one wheel build (pip, with setuptools fetched into its isolated build environment) and one
venv for the whole module. The venv gets the wheel alone (``--no-deps``); its dependencies are the
ones already installed for the tests, reached through a ``.pth`` line naming that site-packages
(installing them again from the index takes over a minute). A ``.pth`` *line* adds the folder to
``sys.path`` but runs none of the ``.pth`` files in it, so the editable install's hook that points
at the checkout stays off; the first test proves keyfob and its payload come from the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

CHECKOUT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "host", "firmware", "boards")
SKIP = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", "*.mpy", "*.egg-info", "build")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        p = CHECKOUT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=SKIP)
        else:
            shutil.copy2(p, src / name)
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("keyfob-*.whl")
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    ).resolve()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_deps.pth").write_text("".join(d + "\n" for d in sorted(deps)))
    home = base / "home"
    home.mkdir()
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYFOB_", "XDG_", "PYTHON"))}
    env.update(
        HOME=str(home),
        KEYFOB_SIM_REGISTRY=str(base / "registry"),
        # the venv's scripts first; the dependencies' own launchers (micropython) after everything
        PATH=os.pathsep.join([str(env_dir / "bin"), os.environ.get("PATH", ""), str(Path(sys.executable).parent)]),
    )
    return {"deps": deps, "py": py, "keyfob": env_dir / "bin" / "keyfob", "env": env, "work": work, "site": site}


def _run(v, *args, check=True, timeout=240):
    proc = subprocess.run(
        [str(v["keyfob"]), *map(str, args)],
        cwd=v["work"],
        env=v["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, f"keyfob {' '.join(map(str, args))}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_keyfob_and_its_payload_come_from_the_venv(venv):
    code = (
        "import json, sys, keyfob\n"
        "from keyfob import payload\n"
        "print(json.dumps([keyfob.__file__, str(payload.root()), payload.checkout(), sys.path]))"
    )
    out = subprocess.check_output([venv["py"], "-c", code], cwd=venv["work"], env=venv["env"], text=True)
    file, root, checkout, path = json.loads(out)
    assert Path(file).is_relative_to(venv["site"])
    assert Path(root) == venv["site"] / "keyfob" / "_payload"
    assert checkout is None
    # nothing of the checkout on the path but the dependencies' site-packages (its .venv)
    inside = {str(Path(p).resolve()) for p in path if p and Path(p).resolve().is_relative_to(CHECKOUT)}
    assert inside <= {str(Path(d).resolve()) for d in venv["deps"]}
    assert (Path(root) / "firmware" / "main.py").is_file()
    assert (Path(root) / "boards" / "sim" / "hw" / "ssd1306_emu.py").is_file()
    assert not (Path(root) / "boards" / "sim" / "pico" / "node_modules").exists()


def test_the_web_pages_templates_and_stylesheet_are_in_the_wheel(venv):
    code = (
        "from keyfob.web import STATIC, frame\n"
        "print(frame._ENV.get_template('signin.html').filename)\n"
        "print(len((STATIC / 'style.css').read_text()))"
    )
    out = subprocess.check_output([venv["py"], "-c", code], cwd=venv["work"], env=venv["env"], text=True).split()
    assert out[0] == str(venv["site"] / "keyfob" / "web" / "templates" / "signin.html")
    assert int(out[1]) > 1000


def test_deploy_onto_a_virtual_token_then_press(venv):
    wd = venv["work"] / "tok"
    started = json.loads(_run(venv, "sim", "start", "--workdir", wd, "--json").stdout)
    try:
        _run(venv, "deploy", "--port", started["port"], "--board", "sim")
        shown = _run(venv, "sim", "press", "--workdir", wd).stdout
        assert "text: Not / provisioned" in shown  # the deployed firmware answers the button
    finally:
        _run(venv, "sim", "stop", "--workdir", wd, check=False)


def test_provision_one_virtual_token(venv):
    proc = _run(venv, "provision", "--count", "1", "--out", "out")
    assert "Provisioned 1 token(s) and locked them" in proc.stdout
    out = venv["work"] / "out"
    assert len(list(out.glob("*.pskc"))) == 1
    assert (venv["env"]["HOME"] + "/.config/keyfob/transport.key") in proc.stdout  # created in the temp home


def test_the_pico_tier_says_what_it_needs(venv):
    code = "from keyfob.sim import pico\ntry:\n    pico.check_runner()\nexcept Exception as e:\n    print(e)\n"
    out = subprocess.check_output([venv["py"], "-c", code], cwd=venv["work"], env=venv["env"], text=True)
    folder = venv["site"] / "keyfob" / "_payload" / "boards" / "sim" / "pico"
    assert out.strip() == f"rp2040js is not installed in {folder} (run: npm ci --prefix {folder})"
