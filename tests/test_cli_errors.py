"""One error model (issue 14): every library error is a KeyfobError of one kind, every command has
--json, and every command's failure path exits with the code the README's table gives its kind,
with one line on stderr and the one JSON error shape on stdout. The table is read from README.md
itself, so code and documentation cannot drift apart."""

import importlib
import json
import pkgutil
import re
import sys
from pathlib import Path

import click
import keyfob
import pytest
from click.testing import CliRunner
from keyfob.cli import COMMANDS, load_module_commands, main
from keyfob.errors import KINDS, KeyfobError, kind_of

README = Path(__file__).resolve().parents[1] / "README.md"
SERIAL = "ACME0001"  # another vendor's serial: taken as it is
URI = f"otpauth://hotp/{SERIAL}?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0"


def readme_exit_codes() -> dict[str, int]:
    """kind -> exit code, from the table under "Exit codes and errors" in README.md."""
    text = README.read_text(encoding="utf-8").split("## Exit codes and errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([a-z-]+) \|", text, re.MULTILINE)
    assert rows, "no exit-code table in README.md"
    return {kind: int(code) for code, kind in rows}


def test_the_readme_table_is_the_one_the_library_uses():
    assert readme_exit_codes() == {"done": 0, **{k.kind: k.exit_code for k in KINDS}}


def _library_exceptions() -> list[type]:
    for info in pkgutil.walk_packages(keyfob.__path__, "keyfob."):
        if not info.name.startswith("keyfob.verifier.migrations"):  # alembic's scripts: no errors of ours
            importlib.import_module(info.name)
    found = []
    for name, module in list(sys.modules.items()):
        if name == "keyfob" or name.startswith("keyfob."):
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == name:
                    found.append(obj)
    return found


def test_every_library_error_is_a_keyfob_error_of_at_most_one_kind():
    classes = _library_exceptions()
    assert len(classes) > 30
    for cls in classes:
        if cls.__name__.startswith("_"):  # private control flow inside one module, never raised out of it
            continue
        assert issubclass(cls, KeyfobError), f"{cls.__module__}.{cls.__name__} is not a KeyfobError"
        kinds = [k for k in KINDS if issubclass(cls, k)]
        assert len(kinds) <= 1, f"{cls.__name__} is of several kinds: {kinds}"
        # what the handler reports (kind_of) is what the class says of itself
        assert (cls.kind, cls.exit_code) == (kind_of(cls).kind, kind_of(cls).exit_code), cls


def _tree() -> dict[tuple[str, ...], click.Command]:
    """Every command that runs something (leaves, and groups that run without a subcommand)."""
    out = {}

    def walk(path, cmd):
        if not isinstance(cmd, click.Group) or cmd.invoke_without_command:
            out[path] = cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk((*path, name), sub)

    for module in sorted({m for m, _ in COMMANDS.values()}):
        for name, cmd in load_module_commands(module).items():
            walk((name,), cmd)
    return out


def test_every_command_has_json():
    tree = _tree()
    assert len(tree) > 40
    missing = [" ".join(p) for p, cmd in tree.items() if not any("--json" in p.opts for p in cmd.params)]
    assert not missing, f"commands without --json: {missing}"


@pytest.fixture(scope="module")
def verifier_env(tmp_path_factory):
    """A database with user alice (password alone) and one unassigned HOTP token; the env a runner
    needs for it."""
    tmp = tmp_path_factory.mktemp("errors")
    env = {
        "KEYFOB_DB": str(tmp / "v.db"),
        "KEYFOB_KEY_FILE": str(tmp / "v.key"),
        "KEYFOB_KEY": None,
        "KEYFOB_ARGON2_PROFILE": "fast",
    }
    runner = CliRunner(env=env)
    for args, stdin in (
        (["server", "init"], None),
        (["user", "add", "alice", "--no-2fa", "--password-stdin"], "alice's password\n"),
        (["token", "import", URI], None),
    ):
        r = runner.invoke(main, args, input=stdin)
        assert r.exit_code == 0, r.output
    return tmp, env


def _cases(tmp: Path) -> list[tuple[tuple[str, ...], list[str], str]]:
    """(command path, its arguments, the kind of failure) for every command: as cheap a failure as
    it has (bad input, a missing database, port or virtual token, a refusal)."""
    nodb = ["--db", str(tmp / "missing.db")]
    no_port = ["--port", str(tmp / "no-such-port")]
    no_sim = ["--workdir", str(tmp / "no-sim")]
    return [
        (("audit",), nodb, "unavailable"),
        (("audit", "prune"), nodb, "unavailable"),
        (("backup-codes",), ["nobody"], "bad-input"),
        (("deploy",), no_port, "unavailable"),
        (("devices",), ["--no-such-option"], "bad-input"),
        (("flash",), ["--board", "rp2040", "--port", "x"], "bad-input"),
        (("provision",), [*no_port, "--plain", "--out", str(tmp / "prov")], "failed"),
        (("radius",), ["--clients", str(tmp / "missing.toml")], "bad-input"),
        (("reset",), no_port, "unavailable"),
        (("server", "init"), ["--max-fail", "0", "--db", str(tmp / "other.db")], "bad-input"),
        (("server", "config"), nodb, "unavailable"),
        (("server", "api-key", "add"), ["--name", "web", "--scope", "admin", *nodb], "unavailable"),
        (("server", "api-key", "list"), nodb, "unavailable"),
        (("server", "api-key", "revoke"), ["nokey"], "bad-input"),
        (("serve",), nodb, "unavailable"),
        (("sim", "run"), ["--board", "pico", "--heapsize", "64K"], "bad-input"),
        (("sim", "start"), ["--bare", *no_sim], "bad-input"),
        (("sim", "press"), no_sim, "unavailable"),
        (("sim", "hold"), no_sim, "unavailable"),
        (("sim", "release"), no_sim, "unavailable"),
        (("sim", "screen"), no_sim, "unavailable"),
        (("sim", "power"), ["on", *no_sim], "unavailable"),
        (("sim", "stop"), no_sim, "unavailable"),
        (("time-sync",), no_port, "unavailable"),
        (("token", "import"), [str(tmp / "missing.pskc")], "bad-input"),
        (("token", "export"), ["--out", str(tmp / "out.pskc")], "bad-input"),
        (("token", "twin"), [SERIAL], "bad-input"),
        (("token", "list"), nodb, "unavailable"),
        (("token", "link"), ["alice", SERIAL, "000000"], "refused"),
        (("token", "resync"), [SERIAL, "000000", "111111"], "refused"),
        (("token", "unlink"), [SERIAL], "refused"),
        (("token", "unlock"), ["NOSUCH1"], "bad-input"),
        (("token", "revoke"), [SERIAL, *nodb], "unavailable"),
        (("token", "disable"), ["NOSUCH1"], "bad-input"),
        (("token", "enable"), ["NOSUCH1", *nodb], "unavailable"),
        (("token", "reset-drift"), ["NOSUCH1"], "bad-input"),
        (("token", "lost"), [SERIAL], "refused"),
        (("user", "add"), ["alice"], "refused"),
        (("user", "help-desk"), ["nobody"], "bad-input"),
        (("user", "list"), nodb, "unavailable"),
        (("user", "passwd"), ["nobody"], "bad-input"),
        (("user", "disable-2fa"), ["nobody"], "bad-input"),
        (("user", "enable-2fa"), ["alice", *nodb], "unavailable"),
        (("validate",), ["alice", "wrong password"], "refused"),
    ]


def test_the_cases_cover_every_command(tmp_path):
    assert sorted(p for p, _, _ in _cases(tmp_path)) == sorted(_tree())


def test_each_command_fails_with_the_readme_exit_code_one_line_and_the_json_shape(verifier_env):
    tmp, env = verifier_env
    codes = readme_exit_codes()
    runner = CliRunner(env=env)
    for path, args, kind in _cases(tmp):
        shown = " ".join(path)
        r = runner.invoke(main, [*path, *args, "--json"], catch_exceptions=False)
        assert r.exit_code == codes[kind], (shown, r.exit_code, r.output)
        answer = json.loads(r.stdout)
        if path in (("validate",), ("token", "link"), ("token", "resync")):
            # a refused login or code is an answer, not an error: the same for every cause
            assert answer["accepted"] is False, shown
            continue
        # the commands that go through several tokens say each one's failure in the same shape
        errors = {"time-sync": lambda a: a[0], "provision": lambda a: a["failed"][0]}.get(path[0], lambda a: a)(answer)
        assert set(errors) >= {"error", "exit"} and errors["exit"] == codes[kind], (shown, answer)
        assert errors["error"]["kind"] == kind and errors["error"]["message"], (shown, answer)
        lines = r.stderr.strip().splitlines()
        if path[0] in ("time-sync", "provision"):  # "Error: PORT: ..." per token
            assert len(lines) == 1 and lines[0].startswith("Error: ") and str(tmp) in lines[0], (shown, r.stderr)
        elif kind != "bad-input" or path[0] not in ("devices", "server"):  # click's usage errors add usage lines
            # one error line, the last (reset says first what to do with the button)
            said = [line for line in lines if line.startswith("error")]
            assert said == lines[-1:] == ["error: " + errors["error"]["message"]], (shown, r.stderr)
