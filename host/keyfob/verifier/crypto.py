"""Seed encryption at rest: AES-256-GCM (NIST SP 800-38D) with one key outside the database.

The key is 32 random bytes, kept in a key file created with mode 0600 (``server init``) or given
in the environment (``KEYFOB_KEY``: the key in base64; ``KEYFOB_KEY_FILE``: a path). A copy of
the database alone therefore reveals no seed.

Each seed is sealed with a fresh 96-bit nonce and the token's serial as associated data, so a
sealed seed moved to another row does not open. The database keeps one sealed known value (the
*key check*) so a wrong key is reported at open time, not at the first login.

Backup codes are hashed with HMAC-SHA256 under a subkey derived from the same key (HKDF, RFC 5869):
they are random and long, so a keyed fast hash is as strong as a slow password hash and lets a
login check them in microseconds; the database alone cannot be used to test guesses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyFileError

KEY_BYTES = 32
ENV_KEY = "KEYFOB_KEY"
ENV_KEY_FILE = "KEYFOB_KEY_FILE"
_VERSION = b"\x01"
_NONCE = 12
_CHECK_VALUE = b"keyfob-verifier-key-check"
_CHECK_AAD = b"keyfob-key-check"


def default_key_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "keyfob", "verifier.key")


def _parse_key(text: str | bytes, where: str) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(f"{where} is not a keyfob key (expected 32 bytes in base64)") from None
    text = text.strip()
    try:
        key = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{where} is not a keyfob key (expected 32 bytes in base64)")
    return key


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def read_key_file(path: str | os.PathLike) -> bytes:
    """Read a key file, refusing one that others can read (as ssh does with private keys)."""
    path = os.fspath(path)  # os.path, not pathlib: pathlib's imports cost a `keyfob validate` more than its check
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist (run `keyfob server init`)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    return _parse_key(data, f"key file {path}")


def create_key_file(path: str | os.PathLike) -> bytes:
    """Create a new random key in ``path`` with mode 0600 (never overwriting a file)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    key = os.urandom(KEY_BYTES)  # what secrets.token_bytes is
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {path} already exists") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(encode_key(key) + "\n")
    return key


def resolve_key(key_file: str | os.PathLike | None = None, *, create: bool = False) -> bytes:
    """The key from ``key_file``, else ``$KEYFOB_KEY``, else ``$KEYFOB_KEY_FILE``, else the default file.

    With ``create``, a missing key *file* is created (0600); a key from the environment is used as is.
    """
    if key_file is None:
        if os.environ.get(ENV_KEY):
            return _parse_key(os.environ[ENV_KEY], f"${ENV_KEY}")
        key_file = os.environ.get(ENV_KEY_FILE) or default_key_file()
    if create and not os.path.exists(key_file):
        return create_key_file(key_file)
    return read_key_file(key_file)


class SeedBox:
    """Seals and opens token seeds with one AES-256-GCM key. ``repr`` shows nothing of the key."""

    __slots__ = ("_aead", "_backup_key", "_session_key", "_tag_key")

    def __init__(self, key: bytes):
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise KeyFileError("the seed key must be 32 bytes")
        self._aead = AESGCM(bytes(key))
        self._backup_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyfob-backup-codes").derive(
            bytes(key)
        )
        self._tag_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyfob-name-tags").derive(
            bytes(key)
        )
        # the web pages' session-signing secret: kept as the seed key is, shared by every node
        self._session_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyfob-web-sessions").derive(
            bytes(key)
        )

    def __repr__(self) -> str:
        return "SeedBox(<key hidden>)"

    def seal(self, seed: bytes, serial: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, bytes(seed), b"keyfob-seed:" + serial.encode())

    def open(self, blob: bytes, serial: str) -> bytes:
        try:
            if blob[:1] != _VERSION:
                raise InvalidTag
            return self._aead.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], b"keyfob-seed:" + serial.encode())
        except (InvalidTag, ValueError):
            raise KeyFileError(f"the seed of token {serial} does not decrypt (wrong key?)") from None

    def key_check(self) -> bytes:
        """A sealed known value to store beside the data, so :meth:`verify_key_check` can tell a wrong key."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, _CHECK_VALUE, _CHECK_AAD)

    def verify_key_check(self, blob: bytes) -> bool:
        try:
            value = self._aead.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], _CHECK_AAD)
        except (InvalidTag, ValueError):
            return False
        return hmac.compare_digest(value, _CHECK_VALUE)

    def backup_hash(self, user_id: int, code: str) -> bytes:
        """HMAC-SHA256 of a normalised backup code, bound to the user."""
        msg = b"%d:" % user_id + code.encode("ascii")
        return hmac.new(self._backup_key, msg, hashlib.sha256).digest()

    def session_key(self) -> bytes:
        """The secret the web pages sign their session cookies with (derived from the seed key)."""
        return self._session_key

    def name_tag(self, name: str) -> str:
        """A keyed hash of a user name (32 hex digits), so throttle rows name no one: a user field
        may hold a password typed in the wrong box."""
        return hmac.new(self._tag_key, name.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:32]
