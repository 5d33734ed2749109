"""Start-up of the command line (issue 11, "Fast enough to be called per login"): commands load
lazily, so ``keyfob --help`` imports no command module and ``keyfob validate`` only its own, and a
database whose schema is current is opened without Alembic. The help still lists every command with
its short help, the same as the modules that define them register. (The times themselves are in
``make bench``.)"""

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from keyfob.cli import COMMANDS, LazyGroup, load_module_commands, main
from keyfob.otp import HotpKey
from keyfob.records import TokenRecord
from keyfob.serials import make_serial

SEED = bytes(range(30, 50))
HEAVY = (
    "sqlalchemy",
    "alembic",
    "rich",
    "argon2",
    "keyfob.verifier",
    "keyfob.sim",
    "keyfob.provision",
    "keyfob.deploy",
)


def _registered() -> dict[str, tuple[str, click.Command]]:
    """Every command each module of COMMANDS registers: name -> (module, command)."""
    out = {}
    for module in sorted({m for m, _ in COMMANDS.values()}):
        for name, cmd in load_module_commands(module).items():
            assert name not in out, f"{name} registered by {out[name][0]} and {module}"
            out[name] = (module, cmd)
    return out


def test_the_registry_names_each_command_its_module_and_its_help():
    registered = _registered()
    assert sorted(registered) == sorted(COMMANDS)
    for name, (module, cmd) in registered.items():
        assert COMMANDS[name] == (module, cmd.get_short_help_str(limit=10_000)), name


def _commands_section(group: click.Group) -> str:
    ctx = click.Context(group, info_name="keyfob")
    formatter = ctx.make_formatter()
    group.format_commands(ctx, formatter)
    return formatter.getvalue()


def test_help_lists_what_the_modules_register():
    eager = click.Group("keyfob")
    for module in {m for m, _ in COMMANDS.values()}:
        for cmd in load_module_commands(module).values():
            eager.add_command(cmd)
    lazy = LazyGroup("keyfob")  # a fresh group: nothing loaded yet
    assert _commands_section(lazy) == _commands_section(eager)
    assert _commands_section(main) == _commands_section(eager)
    # every group's own help lists each of its commands
    for name, cmd in eager.commands.items():
        if isinstance(cmd, click.Group):
            text = CliRunner().invoke(main, [name, "--help"]).output
            for sub in cmd.commands:
                assert f"  {sub} " in text, (name, sub)


def _loaded_after(argv: list[str], env=None) -> tuple[int, list[str]]:
    """Run ``keyfob ARGV`` in a fresh interpreter; its exit code and the heavy or command modules
    it imported."""
    code = (
        "import json, sys\n"
        "from keyfob.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code or 0\n"
        f"heavy = {HEAVY!r}\n"
        "mods = sorted(m for m in sys.modules if m.startswith('keyfob.cli.') or m.split('.')[0] in heavy"
        " or any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print(json.dumps([rc, mods]), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    rc, mods = json.loads(proc.stderr.strip().splitlines()[-1])
    return rc, mods


def test_help_imports_no_command_module():
    rc, mods = _loaded_after(["--help"])
    assert rc == 0
    assert mods == []


@pytest.fixture
def login_db(tmp_path, monkeypatch):
    """A verifier database with user alice and a linked HOTP token (counter 1 next)."""
    from keyfob.verifier import Verifier

    env = {
        "KEYFOB_DB": str(tmp_path / "v.db"),
        "KEYFOB_KEY_FILE": str(tmp_path / "v.key"),
        "KEYFOB_ARGON2_PROFILE": "fast",
    }
    for k, val in env.items():
        monkeypatch.setenv(k, val)
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    serial = make_serial(4242)
    with Verifier.init(env["KEYFOB_DB"], key_file=env["KEYFOB_KEY_FILE"]) as v:
        v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
        v.add_user("alice", "alice password")
        assert v.link("alice", serial, HotpKey(SEED).code(0)).accepted
    return serial


def test_validate_imports_only_its_module_and_no_sqlalchemy_alembic_or_argon2(login_db):
    rc, mods = _loaded_after(["validate", "--code-only", "alice", HotpKey(SEED).code(1)], env=dict(os.environ))
    assert rc == 0  # accepted: the real check ran
    cli_mods = {m for m in mods if m.startswith("keyfob.cli.")}
    assert cli_mods == {"keyfob.cli._common", "keyfob.cli.server", "keyfob.cli.validate"}
    assert "keyfob.verifier" in mods
    # a current SQLite database is opened and the login checked on the stdlib's sqlite3: no
    # SQLAlchemy, no Alembic, no rich, no Argon2 (no password is checked)
    for absent in ("sqlalchemy", "alembic", "rich", "argon2", "keyfob.sim", "keyfob.provision", "keyfob.deploy"):
        assert absent not in mods, absent
    # the code was used up: the same code again is refused
    rc, _ = _loaded_after(["validate", "--code-only", "alice", HotpKey(SEED).code(1)], env=dict(os.environ))
    assert rc == 1


def test_validate_with_a_password_imports_no_sqlalchemy_either(login_db):
    rc, mods = _loaded_after(["validate", "alice", "alice password" + HotpKey(SEED).code(1)], env=dict(os.environ))
    assert rc == 0
    assert "argon2" in mods  # the password is checked
    for absent in ("sqlalchemy", "alembic", "rich"):
        assert absent not in mods, absent


def test_the_head_revision_read_without_alembic_is_alembics():
    from alembic.script import ScriptDirectory
    from keyfob.verifier import db

    assert db.head_revision() == ScriptDirectory.from_config(db._alembic_config(None)).get_current_head()
