"""``keyfob radius`` against real clients: FreeRADIUS's radclient and pyrad (issue 12, RADIUS).

One server process for the module; each test logs in as a user of its own. The attacks are sent
the way an attacker would: unsigned, mis-signed, with the wrong secret, replayed, truncated, garbage.
"""

import hashlib
import os
import select
import shutil
import socket
import struct
import subprocess

import pytest
import radius_env as renv
from pyrad import packet as rp
from radius_env import OLD_SECRET, SECRET, password

NO_ANSWER_WAIT = 1.0  # seconds a test waits to see that nothing comes back


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = renv.start(tmp_path_factory.mktemp("radius"))
    yield env
    log = renv.stop(env)
    assert "Traceback" not in log and "failed" not in log, log
    for s in (SECRET, OLD_SECRET):
        assert s not in log


# --- a pyrad client on a plain UDP socket (so the source address and the bytes are ours) ------------


def request(user, text, secret=SECRET, *, signed=True, station=None) -> rp.AuthPacket:
    pkt = rp.AuthPacket(code=rp.AccessRequest, secret=secret.encode(), id=int.from_bytes(os.urandom(1)))
    pkt.authenticator = pkt.CreateAuthenticator()
    pkt[1] = [user.encode()]
    pkt[2] = [pkt.PwCrypt(text)]
    if station is not None:
        pkt[31] = [station.encode()]
    if signed:
        pkt.add_message_authenticator()
    return pkt


def send(data: bytes, port: int, src="127.0.0.1", sock=None, wait=10.0) -> bytes | None:
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((src, 0))
    try:
        sock.sendto(data, ("127.0.0.1", port))
        sock.settimeout(wait)
        try:
            return sock.recv(8192)
        except TimeoutError:
            return None
    finally:
        if own:
            sock.close()


def silent(port: int, *datagrams, src="127.0.0.1") -> bool:
    """Send each datagram from a socket of its own; True if none is answered within one wait."""
    socks = []
    try:
        for data in datagrams:
            sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sk)
            sk.bind((src, 0))
            sk.sendto(data, ("127.0.0.1", port))
        ready, _, _ = select.select(socks, [], [], NO_ANSWER_WAIT)
        return not ready
    finally:
        for sk in socks:
            sk.close()


def decide(pkt: rp.AuthPacket, port: int, src="127.0.0.1", secret=SECRET) -> str:
    """Send a request; check the answer is authentic (Response Authenticator and a
    Message-Authenticator, first) and return "accept" or "reject"."""
    raw = send(pkt.RequestPacket(), port, src)
    assert raw is not None, "no answer"
    return check_reply(pkt, raw, secret)


def check_reply(pkt, raw, secret=SECRET) -> str:
    reply = rp.AuthPacket(packet=raw, secret=secret.encode())
    assert pkt.VerifyReply(reply, raw, enforce_ma=True)
    assert raw[20] == 80, "Message-Authenticator is the first attribute (Blast-RADIUS)"
    assert reply.verify_message_authenticator(original_authenticator=pkt.authenticator, original_code=pkt.code)
    return {rp.AccessAccept: "accept", rp.AccessReject: "reject"}[reply.code]


# --- pyrad as the client -------------------------------------------------------------------------


def test_pyrad_accept_reject_and_replay(srv):
    code = srv.code("u0")
    assert decide(request("u0", password(0) + "000000"), srv.port) == "reject"  # wrong code
    assert decide(request("u0", "not the pass" + code), srv.port) == "reject"  # wrong password
    assert decide(request("u0", password(0) + code), srv.port) == "accept"
    assert decide(request("u0", password(0) + code), srv.port) == "reject"  # replay, a new request
    assert decide(request("nobody", password(0) + srv.code("u0")), srv.port) == "reject"
    assert decide(request("u0", password(0) + srv.code("u0")), srv.port) == "accept"  # not locked


def test_one_code_sent_in_many_requests_at_once_is_accepted_once(srv):
    code = srv.code("u9")
    pkts = [request("u9", password(9) + code) for _ in range(20)]  # new identifier, authenticator each
    socks = []
    try:
        for _ in pkts:
            sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sk)
            sk.bind(("127.0.0.1", 0))
        for sk, p in zip(socks, pkts):
            sk.sendto(p.RequestPacket(), ("127.0.0.1", srv.port))
        answers = []
        for sk, p in zip(socks, pkts):
            sk.settimeout(30)
            answers.append(check_reply(p, sk.recv(8192)))
    finally:
        for sk in socks:
            sk.close()
    assert sorted(answers) == ["accept"] + ["reject"] * 19


def test_a_retransmission_gets_the_same_answer_and_no_second_check(srv):
    before = srv.validations("u1")
    pkt = request("u1", password(1) + srv.code("u1"))
    raw = pkt.RequestPacket()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        first = send(raw, srv.port, sock=s)
        again = send(raw, srv.port, sock=s)  # same source port, identifier and authenticator
    assert first is not None and again == first
    assert check_reply(pkt, first) == "accept"
    assert srv.validations("u1") == before + 1  # one login checked, not two


def test_no_answer_for_a_wrong_secret_unsigned_or_mis_signed_request(srv):
    code = srv.code("u2")
    good = password(2) + code
    before = srv.validations("u2")
    flipped_ma = bytearray(request("u2", good).RequestPacket())
    flipped_ma[-1] ^= 1
    flipped_pw = bytearray(request("u2", good).RequestPacket())
    flipped_pw[-20] ^= 1  # inside the User-Password, after the Message-Authenticator pyrad puts first
    assert silent(
        srv.port,
        request("u2", good, "not-the-secret-0000").RequestPacket(),  # no secret, or a NAS with another one
        request("u2", good, signed=False).RequestPacket(),  # unsigned (Blast-RADIUS: dropped, not rejected)
        bytes(flipped_ma),  # one bit of the Message-Authenticator flipped
        bytes(flipped_pw),  # one bit of a signed attribute flipped
    )
    # an address that is not a client, with the right secret
    assert silent(srv.port, request("u2", good).RequestPacket(), src="127.0.0.3")
    # none of them reached the verifier: the code is still good
    assert srv.validations("u2") == before
    assert decide(request("u2", good), srv.port) == "accept"


def test_a_client_allowed_to_omit_the_message_authenticator(srv):
    code = srv.code("u3")
    pkt = request("u3", password(3) + "123456", OLD_SECRET, signed=False)
    assert decide(pkt, srv.port, "127.0.0.2", OLD_SECRET) == "reject"
    pkt = request("u3", password(3) + code, OLD_SECRET, signed=False)
    assert decide(pkt, srv.port, "127.0.0.2", OLD_SECRET) == "accept"
    # signed requests from it are still checked: a wrong signature gets no answer
    raw = bytearray(request("u3", password(3) + srv.code("u3"), OLD_SECRET).RequestPacket())
    raw[-1] ^= 1
    assert silent(srv.port, bytes(raw), src="127.0.0.2")
    # unsigned, it cannot tell a wrong secret: the password unhides to garbage, and is rejected
    code = srv.code("u3")
    raw = send(request("u3", password(3) + code, SECRET, signed=False).RequestPacket(), srv.port, "127.0.0.2")
    assert raw is not None and raw[0] == rp.AccessReject
    assert decide(request("u3", password(3) + code, OLD_SECRET), srv.port, "127.0.0.2", OLD_SECRET) == "accept"


def _signed(user, text) -> bytes:
    return request(user, text).RequestPacket()


def _resign(raw: bytes) -> bytes:
    """Recompute the Message-Authenticator of a hand-edited request (an insider with the secret)."""
    import hmac

    at = raw.index(bytes([80, 18]), 20)
    zeroed = raw[: at + 2] + bytes(16) + raw[at + 18 :]
    mac = hmac.new(SECRET.encode(), zeroed, hashlib.md5).digest()
    return raw[: at + 2] + mac + raw[at + 18 :]


def _hdr(code, ident, length, auth=b"A" * 16):
    return struct.pack("!BBH", code, ident, length) + auth


def malformed() -> list[bytes]:
    good = _signed("u4", password(4) + "999999")
    ma = bytes([80, 18]) + bytes(16)
    cases = [
        b"",
        b"\x01",
        good[:19],  # shorter than a header
        _hdr(1, 1, 19),  # Length below 20
        _hdr(1, 1, 4096) + ma,  # Length past the datagram
        good[: len(good) - 5],  # truncated: Length says more than arrived
        os.urandom(4096),
        os.urandom(5000),  # larger than a RADIUS packet
        _hdr(1, 2, 22) + b"\x01\x00",  # attribute of length 0
        _hdr(1, 3, 23) + b"\x01\x01\x00",  # attribute of length 1
        _hdr(1, 4, 25) + b"\x01\x09abc",  # attribute past the packet
        _hdr(4, 5, 20 + 18) + ma,  # an Accounting-Request
        _hdr(12, 6, 20 + 18) + ma,  # Status-Server
    ]
    # signed but not a sane PAP request: an insider's client (or a buggy NAS) with the secret
    pw16 = bytes([2, 18]) + bytes(16)
    name = bytes([1, 4]) + b"u4"
    for attrs in (
        ma + ma + name + pw16,  # two Message-Authenticators
        ma + name,  # no User-Password
        ma + pw16,  # no User-Name
        ma + name + name + pw16,  # two User-Names
        ma + name + bytes([2, 17]) + bytes(15),  # User-Password not a multiple of 16
        ma + name + bytes([2, 2]),  # empty User-Password
        ma + name + bytes([2, 146]) + bytes(144),  # User-Password past 128
        ma + bytes([1, 4]) + b"\xff\xfe" + pw16,  # a User-Name that is not UTF-8
    ):
        cases.append(_resign(_hdr(1, 7, 20 + len(attrs), os.urandom(16)) + attrs))
    cases.append(bytes([80, 17]).join([_hdr(1, 8, 20 + 17), bytes(15)]))  # Message-Authenticator too short
    return cases


def test_malformed_and_truncated_packets_get_no_answer_and_the_server_keeps_answering(srv):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        junk.bind(("127.0.0.1", 0))
        for data in malformed():
            junk.sendto(data, ("127.0.0.1", srv.port))
        code = srv.code("u4")
        assert decide(request("u4", password(4) + code), srv.port) == "accept"
        junk.settimeout(NO_ANSWER_WAIT)
        answers = []
        try:
            while True:
                answers.append(junk.recv(8192))
        except TimeoutError:
            pass
    # a reject is fine only for the signed, well-formed but non-UTF-8 name (the verifier refused it)
    for raw in answers:
        assert raw[0] == rp.AccessReject
    assert len(answers) <= 1
    assert srv.proc.poll() is None


def test_a_calling_station_id_is_the_source_the_verifier_throttles(srv):
    # one guesser behind the NAS (its own Calling-Station-Id) floods wrong passwords for many
    # names; the NAS itself is not put in back-off, so another user's login through it succeeds
    for n in range(15):
        assert decide(request(f"x{n}", "guess 123456", station="10.9.9.9"), srv.port) == "reject"
    assert decide(request("u5", password(5) + srv.code("u5"), station="10.1.1.1"), srv.port) == "accept"
    with renv.Verifier.open(srv.db, key_file=srv.key_file, password_profile="fast") as v:
        sources = {r.source for r in v.audit(action="validate", limit=1000)}
    assert "10.9.9.9" in sources


# --- FreeRADIUS's radclient as the client -----------------------------------------------------------

RADCLIENT = shutil.which("radclient")
need_radclient = pytest.mark.skipif(RADCLIENT is None, reason="radclient not installed (Debian freeradius-utils)")


def radclient(srv, user, text, secret=SECRET, signed=True) -> str:
    return radclients(srv, [(user, text, secret, signed)])[0]


def radclients(srv, asks) -> list[str]:
    """Run one radclient per (user, text, secret, signed) at once; their answers in order."""
    procs = []
    for user, text, secret, signed in asks:
        attrs = f'User-Name = "{user}", User-Password = "{text}"' + (", Message-Authenticator = 0x00" if signed else "")
        cmd = [RADCLIENT, "-r", "1", "-t", str(NO_ANSWER_WAIT), f"127.0.0.1:{srv.port}", "auth", secret]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write(attrs)
        p.stdin.close()
        procs.append(p)
    return [_outcome(p, p.stdout.read(), p.stderr.read()) for p in procs]


def _outcome(p, out, err) -> str:
    r = subprocess.CompletedProcess(p.args, p.wait(timeout=30), out, err)
    if "Received Access-Accept" in r.stdout:
        assert r.returncode == 0
        return "accept"
    if "Received Access-Reject" in r.stdout:
        return "reject"
    assert "Received" not in r.stdout and r.returncode != 0, r.stdout + r.stderr
    return "no answer"


@need_radclient
def test_radclient_accept_reject_replay(srv):
    code = srv.code("u6")
    assert radclient(srv, "u6", password(6) + "000000") == "reject"
    assert radclient(srv, "u6", password(6) + code) == "accept"
    assert radclient(srv, "u6", password(6) + code) == "reject"  # replayed code
    assert radclient(srv, "u6", password(6) + srv.code("u6")) == "accept"


@need_radclient
def test_radclient_wrong_secret_and_unsigned_get_no_answer(srv):
    code = srv.code("u7")
    asks = [("u7", password(7) + code, "wrong-secret-wrong-1", True), ("u7", password(7) + code, SECRET, False)]
    assert radclients(srv, asks) == ["no answer", "no answer"]
    assert radclient(srv, "u7", password(7) + code) == "accept"  # neither used the code


# --- a Linux login through pam_radius_auth --------------------------------------------------------


def test_pam_radius_auth_login_with_password_and_code(srv, tmp_path):
    why = renv.pam_skip_reason("pam_radius_auth.so")
    if why:
        pytest.skip(why)
    # Debian 12's pam_radius_auth 2.0 sends no Message-Authenticator: it is the old NAS at
    # 127.0.0.2 (its source_ip field), the client allowed to omit it
    conf = tmp_path / "pam_radius_auth.conf"
    conf.write_text(f"127.0.0.1:{srv.port} {OLD_SECRET} 3 127.0.0.2\n")
    conf.chmod(0o600)
    code = srv.code("u8")
    with renv.PamService(f"pam_radius_auth.so conf={conf}") as service:
        assert not renv.pamtester(service, "u8", password(8) + "000000")  # wrong code
        assert not renv.pamtester(service, "u8", "wrong" + code)  # wrong password
        assert renv.pamtester(service, "u8", password(8) + code)
        assert not renv.pamtester(service, "u8", password(8) + code)  # the same code again
        assert renv.pamtester(service, "u8", password(8) + srv.code("u8"))
    assert not (renv.PAM_DIR / service).exists()
