"""The ``keyfob`` command line: one click group per area, thin over the library."""

import click

from keyfob import __version__


@click.group()
@click.version_option(__version__, prog_name="keyfob")
def main() -> None:
    """keyfob: firmware and host tools for a DIY OTP key-ring token."""


def _register() -> None:
    # Each area lives in its own module and adds its group/commands here.
    import importlib

    for name in ("sim", "server", "serve", "user", "token", "validate", "device", "provision", "radius"):
        try:
            mod = importlib.import_module(f"keyfob.cli.{name}")
        except ModuleNotFoundError as exc:  # area not written yet
            if exc.name != f"keyfob.cli.{name}":
                raise
            continue
        mod.register(main)


_register()
