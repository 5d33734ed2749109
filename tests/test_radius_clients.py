"""The clients file of ``keyfob radius`` and its command line errors: one clear line, exit 2, the
secret never repeated (no server process: fast)."""

import ipaddress
import socket

import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.radius import ClientsError, load_clients
from keyfob.radius.clients import parse_clients

SECRET = "s3cret-that-is-long-enough"


def test_the_most_specific_network_wins_and_strangers_are_unknown():
    clients = parse_clients(
        f'[[client]]\naddress = "10.0.0.0/8"\nsecret = "{SECRET}-a"\n'
        f'[[client]]\naddress = "10.1.2.3"\nsecret = "{SECRET}-b"\nallow_missing_message_authenticator = true\n'
        f'[[client]]\naddress = "fd00::/64"\nsecret = "{SECRET}-c"\n'
    )
    assert clients.find("10.1.2.3").secret == f"{SECRET}-b".encode()
    assert clients.find("10.1.2.3").allow_missing_message_authenticator
    assert clients.find("10.9.9.9").secret == f"{SECRET}-a".encode()
    assert not clients.find("10.9.9.9").allow_missing_message_authenticator
    assert clients.find("::ffff:10.9.9.9").network == ipaddress.ip_network("10.0.0.0/8")  # dual-stack socket
    assert clients.find("fd00::1").secret == f"{SECRET}-c".encode()
    for stranger in ("11.0.0.1", "fd01::1", "not an address", ""):
        assert clients.find(stranger) is None
    assert SECRET not in repr(clients.find("10.1.2.3"))


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "no [[client]]"),
        ("client = 3", "no [[client]]"),
        ("[[client]]\naddress = 'x'\n", "not an address"),
        (f"[[client]]\naddress = '10.0.0.1/8'\nsecret = '{SECRET}'\n", "not an address"),  # host bits set
        ("[[client]]\naddress = '10.0.0.1'\nsecret = 'short'\n", "16 to 128 bytes"),
        ("[[client]]\naddress = '10.0.0.1'\nsecret = '" + "x" * 129 + "'\n", "16 to 128 bytes"),
        (f"[[client]]\nsecret = '{SECRET}'\n", "`address`"),
        (f"[[client]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\nallow = true\n", "unknown key"),
        (f"[[client]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\nallow_missing_message_authenticator = 1\n", "true"),
        (f"[[client]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\n" * 2, "listed twice"),
        (f"[[client]]\naddress = '10.0.0.1'\nsecret = '{SECRET}\n", "not valid TOML"),  # unterminated
        (f"servers = 1\n[[client]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\n", "unknown key"),
    ],
)
def test_a_bad_clients_file_is_one_line_without_the_secret(text, words):
    with pytest.raises(ClientsError) as exc:
        parse_clients(text)
    msg = str(exc.value)
    assert words in msg and "\n" not in msg
    assert SECRET not in msg and "x" * 20 not in msg


def test_the_command_refuses_a_readable_or_bad_clients_file_in_one_line(tmp_path):
    f = tmp_path / "clients.toml"
    f.write_text(f"[[client]]\naddress = '127.0.0.1'\nsecret = '{SECRET}'\n")
    f.chmod(0o644)
    with pytest.raises(ClientsError, match="others can read it"):
        load_clients(f)
    cases = [
        (f, "others can read it"),
        (tmp_path / "missing.toml", "cannot read the clients file"),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[[client]]\naddress = '127.0.0.1'\nsecret = '{SECRET}\n")
    bad.chmod(0o600)
    cases.append((bad, "not valid TOML"))
    for path, words in cases:
        r = CliRunner().invoke(main, ["radius", "--port", "0", "--db", str(tmp_path / "v.db"), "--clients", str(path)])
        assert r.exit_code == 2, r.output
        assert words in r.output and SECRET not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_a_port_in_use_is_one_line(tmp_path):
    from keyfob.verifier import Policy, Verifier

    Verifier.init(tmp_path / "v.db", key_file=tmp_path / "v.key", policy=Policy(password_profile="fast")).close()
    f = tmp_path / "clients.toml"
    f.write_text(f"[[client]]\naddress = '127.0.0.1'\nsecret = '{SECRET}'\n")
    f.chmod(0o600)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        args = ["radius", "--port", port, "--db", tmp_path / "v.db", "--key-file", tmp_path / "v.key", "--clients", f]
        r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 3  # unavailable
    assert r.output.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
