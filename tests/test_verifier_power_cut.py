"""What the verifier answered survives a power cut, not only a killed process.

A killed process leaves its writes in the kernel's page cache, which reaches the disk anyway; an
OS crash or a power cut loses whatever was not synced. So the cut here is of the disk: the
verifier's database lives on an ext4 file system of its own, on a loop device over an image file
in this test's folder, mounted so that ext4 writes nothing back on its own during a test (journal
commits every ``commit=600`` s; the kernel's dirty-page writeback waits 30 s). A cut copies the
image as it is that moment, which holds exactly what reached the "disk", and mounts the copy,
which replays ext4's journal as the boot after a cut would. The copy's database is then checked
the way an attacker would use the cut: the code accepted before it is tried again.

Needs root and loop devices; skipped with one line where a loop mount cannot be made. Without
the verifier's syncs these tests fail, though not always: a sync of the whole machine (another
test's ``os.sync()``) or a checkpoint's in the moment before a cut would save the commit.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pyotp
import pytest
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.apikeys import ApiKeys

from bench.servers import keyfob_serve

SEED_A, SEED_B = bytes(range(31, 51)), bytes(range(61, 81))
PW = "power cut password"
SERIAL_A, SERIAL_B = make_serial(5501), make_serial(5502)
IMAGE_MB = 16


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


class Disk:
    """An ext4 file system on a loop device over ``wd/disk.img``, mounted at :attr:`root`."""

    def __init__(self, wd: Path):
        self._wd, self._mounts, self._cuts = wd, [], itertools.count(1)
        self._image = wd / "disk.img"
        with open(self._image, "wb") as f:
            f.truncate(IMAGE_MB << 20)
        _run("mkfs.ext4", "-q", "-F", str(self._image))
        self.root = self._mount(self._image, wd / "disk", "loop,commit=600")

    def _mount(self, image: Path, at: Path, options: str) -> Path:
        at.mkdir()
        _run("mount", "-o", options, str(image), str(at))
        self._mounts.append(at)
        return at

    def cut(self) -> Path:
        """The power is cut now: a copy of the disk as it is, mounted as the next boot would."""
        n = next(self._cuts)
        copy = self._wd / f"cut{n}.img"
        shutil.copyfile(self._image, copy)
        return self._mount(copy, self._wd / f"cut{n}", "loop")

    def close(self) -> None:
        for at in reversed(self._mounts):
            subprocess.run(["umount", str(at)], capture_output=True, timeout=60)
        for image in self._wd.glob("*.img"):
            image.unlink()  # 16 MB each, in a folder pytest keeps


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("power-cut tests: need root and mkfs.ext4, to mount a file system on a loop device")
    try:
        d = Disk(tmp_path)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        pytest.skip(f"power-cut tests: cannot mount a loop device here ({str(detail).strip()})")
    try:
        yield d
    finally:
        d.close()


def _database(root: Path, key_file: Path) -> tuple[Path, dict]:
    """ann and bob, each with a linked HOTP token (counter 0 used), and two API keys; on disk."""
    db = root / "v.db"
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        v.import_records(
            [TokenRecord(SERIAL_A, "hotp", "sha1", 6, SEED_A), TokenRecord(SERIAL_B, "hotp", "sha1", 6, SEED_B)]
        )
        for user, serial, seed in (("ann", SERIAL_A, SEED_A), ("bob", SERIAL_B, SEED_B)):
            v.add_user(user, PW)
            assert v.link(user, serial, _hotp(seed).at(0)).accepted
        keys = ApiKeys(v)
        api = {"web": keys.add("web", "validate")[1], "ops": keys.add("ops", "admin")[1]}
    os.sync()  # the set-up is on disk: what a cut may lose is only what follows
    return db, api


def _hotp(seed: bytes) -> pyotp.HOTP:
    return pyotp.HOTP(base64.b32encode(seed).decode())


def _after_the_cut(db: Path, key_file: Path) -> tuple[bool, bool, str]:
    """On the database as the boot after the cut finds it: whether ann's code 1 (accepted before
    the cut) is accepted again, whether her code 2 is (the database still works), and bob's
    token's state."""
    with Verifier.open(db, key_file=key_file) as v:
        again = v.verify("ann", PW + _hotp(SEED_A).at(1)).accepted
        fresh = v.verify("ann", PW + _hotp(SEED_A).at(2)).accepted
        return again, fresh, v.token(SERIAL_B).state


def test_a_servers_accept_and_revoke_survive_a_power_cut(disk, tmp_path):
    """``keyfob serve`` on the disk: an admin revokes bob's token (a cut right after it, on a copy),
    then ann logs in (code 1), and the power is cut at once. After the boot, ann's code 1 is a
    replay (refused), and bob's token is still revoked (after either cut). (Before the store
    synced its log, both came back undone: with ``synchronous=NORMAL`` a commit reached the disk
    only at the next checkpoint.)"""
    key_file = tmp_path / "v.key"
    db, api = _database(disk.root, key_file)
    with keyfob_serve(db, key_file, tmp_path / "serve.log") as base, httpx.Client(base_url=base, timeout=30) as c:
        # the revoke first (a later sync of the log would carry an earlier commit too), and a cut
        # right after it: the admin path's commit is on disk by itself
        r = c.post(f"/admin/tokens/{SERIAL_B}/revoke", headers={"Authorization": f"Bearer {api['ops']}"})
        assert r.status_code == 200, r.text
        after_revoke = disk.cut()
        r = c.post(
            "/validate/check",
            json={"user": "ann", "pass": PW + _hotp(SEED_A).at(1)},
            headers={"Authorization": f"Bearer {api['web']}"},
        )
        assert r.status_code == 200 and r.json()["result"]["value"] is True, r.text
        after = disk.cut()  # the server still runs: nothing it does at its stop can help
    # after the first cut ann's code 1 was never used: accepted there, on that copy
    assert _after_the_cut(after_revoke / "v.db", key_file) == (True, True, "revoked")
    assert _after_the_cut(after / "v.db", key_file) == (False, True, "revoked")


def test_a_library_accept_on_a_servers_store_survives_a_power_cut(disk, tmp_path):
    """The same through the library on a server's store (``serving=True``: what ``keyfob radius``
    and the PostgreSQL-less threads use), the cut made while the verifier is still open."""
    key_file = tmp_path / "v.key"
    db, _ = _database(disk.root, key_file)
    with Verifier.open(db, key_file=key_file, serving=True) as v:
        v.revoke(SERIAL_B)
        assert v.verify("ann", PW + _hotp(SEED_A).at(1)).accepted
        after = disk.cut()
    assert _after_the_cut(after / "v.db", key_file) == (False, True, "revoked")


def test_a_one_shot_accept_survives_a_power_cut_while_a_server_holds_the_database(disk, tmp_path):
    """``keyfob validate``'s store (one-shot) while a server has the same file open: its last
    connection's checkpoint at exit does not run (the server's connections are still open), so its
    own commit must be on disk when it answers."""
    key_file = tmp_path / "v.key"
    db, _ = _database(disk.root, key_file)
    with Verifier.open(db, key_file=key_file, serving=True) as server:
        server.token(SERIAL_A)  # the server's connections are open
        with Verifier.open(db, key_file=key_file) as v:
            v.revoke(SERIAL_B)
            assert v.verify("ann", PW + _hotp(SEED_A).at(1)).accepted
        after = disk.cut()
    assert _after_the_cut(after / "v.db", key_file) == (False, True, "revoked")
