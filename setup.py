"""The wheel's build hook: the package carries the firmware and the board layers.

``firmware/`` and ``boards/`` stay at the top of the checkout (the only sources); building the wheel
copies them into the package as ``keyfob/_payload/`` (without the Pico runner's node_modules), where
:func:`keyfob.payload.root` finds them once installed. An editable install copies nothing: it uses
the checkout's folders. All other metadata is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PAYLOAD = ("firmware", "boards")
LEAVE_OUT = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", "*.mpy")


class BuildPyWithPayload(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib) / "keyfob" / "_payload"
        for name in PAYLOAD:
            if (dest / name).exists():
                shutil.rmtree(dest / name)  # a stale copy from an earlier build
            shutil.copytree(HERE / name, dest / name, ignore=LEAVE_OUT)


setup(cmdclass={"build_py": BuildPyWithPayload})
