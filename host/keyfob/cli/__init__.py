"""The ``keyfob`` command line: one click group per area, thin over the library.

Commands load lazily, so that a command run once per login starts fast: ``keyfob validate``
imports only the module that defines it (not the simulator, flashing or provisioning code), and
``keyfob --help`` imports no command module at all, taking each command's one-line help from
:data:`COMMANDS`. Each area's module adds its commands in its ``register(main)``;
tests/test_cli_lazy.py holds :data:`COMMANDS` against what those modules register.

Errors have one handler, :meth:`LazyGroup.invoke`: every command raises a library error (or one of
the kinds in :mod:`keyfob.errors`) and this turns it into one line and the kind's exit code.
"""

import importlib

import click

from keyfob import __version__

#: command name -> (the module under ``keyfob.cli`` whose ``register`` adds it, its one-line help
#: as click makes it from the docstring)
COMMANDS = {
    "audit": (
        "validate",
        "Show the audit log, newest first (throttled attempts are counted in one row per user or source per "
        "minute: see the count column).",
    ),
    "backup-codes": ("validate", "Make new single-use backup codes for USER (old unused ones stop working)."),
    "deploy": (
        "provision",
        "Compile the firmware with mpy-cross, copy it with mpremote, verify every file by SHA-256 on the "
        "board, soft-reset and check that the firmware answers.",
    ),
    "devices": (
        "device",
        "List connected boards (by USB id) and running virtual tokens, and what each token says about "
        'itself (INFO: serial, mode, provisioned, locked, clock jumps, failed parts, firmware); "-" is a '
        "board that does not answer (no keyfob firmware yet, or busy).",
    ),
    "flash": ("device", "Put MicroPython on a bare ESP32 or RP2040 board (no network: bring the image)."),
    "provision": ("provision", "Give tokens a fresh seed and serial, set their clock, lock them, and save the seeds."),
    "radius": (
        "radius",
        "Answer RADIUS Access-Requests (PAP, password+code in User-Password) with Access-Accept or Access-Reject.",
    ),
    "reset": (
        "provision",
        "Factory reset: wipes the seed and settings, scrubs the token's flash, and reopens its USB console.",
    ),
    "server": ("server", "The verifier database (users, tokens, audit)."),
    "serve": ("serve", "Serve the verifier over HTTP: POST /validate/check and /admin/..."),
    "sim": ("sim", "The virtual token."),
    "time-sync": (
        "provision",
        "Set the tokens' clocks to this computer's UTC time; report the offset found and the drift the "
        "token has learned (from two syncs at least a week apart).",
    ),
    "token": (
        "token",
        "Tokens: inventory (import/export of seed files), linking to users, resync, unlock, lost, revoke, "
        "software twins.",
    ),
    "user": ("user", "Users of the verifier."),
    "validate": (
        "validate",
        "Check a login of USER: the password followed by the code in one field (PASS+CODE), or PASS CODE, "
        "or the password alone for users without 2FA.",
    ),
}


_ARGV = "keyfob.argv"


def load_module_commands(module: str) -> dict[str, click.Command]:
    """The commands that ``keyfob.cli.<module>`` registers, by name (imports that module)."""
    found = click.Group()
    importlib.import_module(f"keyfob.cli.{module}").register(found)
    return found.commands


class LazyGroup(click.Group):
    """A group whose commands come from :data:`COMMANDS`, each module imported when one of its
    commands is run (or asked for its own help)."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in COMMANDS:
            for cmd_name, cmd in load_module_commands(COMMANDS[name][0]).items():
                self.commands.setdefault(cmd_name, cmd)
        return self.commands.get(name)

    def parse_args(self, ctx, args):
        ctx.meta[_ARGV] = list(args)  # for --json on a usage error, raised before its option is read
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        """Run the command; the one place a KeyfobError (or an OSError: a port or file not there)
        becomes one line on stderr, the JSON error shape with --json, and its exit code."""
        from keyfob.cli._common import JSON_META, as_keyfob_error, emit_json, error_shape, report

        def wants_json() -> bool:
            argv = ctx.meta.get(_ARGV, [])
            return bool(ctx.meta.get(JSON_META)) or "--json" in argv[: argv.index("--") if "--" in argv else None]

        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # click's own usage errors: its message, in our JSON shape too
            if wants_json():
                emit_json(error_shape("bad-input", exc.format_message(), exc.exit_code))
            raise
        except Exception as exc:
            error = as_keyfob_error(exc)
            if error is None:
                raise
            raise click.exceptions.Exit(report(error, wants_json())) from None

    def format_commands(self, ctx, formatter) -> None:
        # click's own layout, with the short help from COMMANDS instead of importing every module
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="keyfob")
def main() -> None:
    """keyfob: firmware and host tools for a DIY OTP key-ring token."""
