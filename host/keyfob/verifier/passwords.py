"""Password hashing with Argon2id (RFC 9106) through ``argon2-cffi``.

The ``default`` profile is argon2-cffi's own (RFC 9106 "low memory" recommendation: t=3, m=64 MiB,
p=4). The ``fast`` profile is Argon2id at its least cost (t=1, m=8 KiB, p=1: 0.03 ms a verify;
1 MiB took 0.5 ms, more than the rest of a login). It exists only so that test suites and the
benchmarks of everything around the hash are quick; it is chosen by the ``password_profile``
policy setting or, for the command line only, by ``KEYFOB_ARGON2_PROFILE=fast`` (a test-only
switch, never for a real server). The parameters live in each hash, so hashes made with either
profile verify under both.
"""

from __future__ import annotations

import functools
import os

from .errors import BadInput

PROFILES = ("default", "fast")
ENV_PROFILE = "KEYFOB_ARGON2_PROFILE"
MIN_LENGTH = 8
MAX_LENGTH = 1024
#: fixed hashes (of a phrase no one types) with each profile's parameters: an unknown user's
#: attempt is verified against one, so it costs what a known user's does
_DUMMY = {
    "default": "$argon2id$v=19$m=65536,t=3,p=4$DmvYLO4qIm/0pz0zeJqg2Q$8K4+v5fitU8Vemmxoyta2Ib0KYNMvN0qXYParfmJHJE",
    "fast": "$argon2id$v=19$m=8,t=1,p=1$JcTOqD317FVzyyktUhGfpg$8SOi8ruz/Pz4Ha08pzrrQT+WtzpTm7/dhqFrToOjtOs",
}


def profile_from_env(default: str = "default") -> str:
    value = os.environ.get(ENV_PROFILE, default)
    if value not in PROFILES:
        raise BadInput(f"${ENV_PROFILE} must be one of {', '.join(PROFILES)}")
    return value


def check_new_password(password: str) -> None:
    """Reject unusable new passwords (length only; the message never repeats the password)."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise BadInput(f"a password must have {MIN_LENGTH} to {MAX_LENGTH} characters")
    if any(ch in "\r\n\0" for ch in password):
        raise BadInput("a password must not contain line breaks or NUL")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # bytes the command line could not decode come in as lone surrogates
        raise BadInput("a password must be valid UTF-8") from None


class Passwords:
    """Hash and verify passwords. ``verify`` returns a bool and never raises on a wrong password."""

    def __init__(self, profile: str = "default"):
        if profile not in PROFILES:
            raise BadInput(f"password profile must be one of {', '.join(PROFILES)}")
        self.profile = profile

    @functools.cached_property
    def _ph(self):
        # argon2-cffi is loaded at the first hash or verify: a code-only check never needs it
        from argon2 import PasswordHasher

        if self.profile == "fast":
            return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        return PasswordHasher()

    def hash(self, password: str) -> str:
        check_new_password(password)
        return self._ph.hash(password)

    def verify(self, hashed: str, password: str) -> bool:
        # argon2-cffi compares the derived tag in constant time (libargon2's argon2_verify).
        ph = self._ph
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        try:
            return ph.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    @property
    def dummy_hash(self) -> str:
        """The profile's fixed hash (of a phrase no one types): a login verifies an unknown user's
        password against it, so that unknown and known users take the same time."""
        return _DUMMY[self.profile]

    def needs_rehash(self, hashed: str) -> bool:
        return self._ph.check_needs_rehash(hashed)
