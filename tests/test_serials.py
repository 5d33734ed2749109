"""Serial numbers: the Damm check digit, the forgiving normalisation of typed keyfob serials, and
the inventory's rule (:func:`accept_serial`) for keyfob and other vendors' serials."""

import random
import secrets

import pytest
from keyfob import serials
from keyfob.serials import (
    BODY_DIGITS,
    PREFIX,
    SERIAL_MAX,
    SerialError,
    accept_serial,
    check_digit,
    is_valid_serial,
    make_serial,
    normalize_serial,
)

DIGITS = "0123456789"


def random_serials(n, seed=20240607):
    rng = random.Random(seed)  # reproducible; a failure names the serial
    return [make_serial(rng.randrange(10**BODY_DIGITS)) for _ in range(n)] + [
        make_serial(0),
        make_serial(10**BODY_DIGITS - 1),
    ]


def digit_part(serial):
    return serial[len(PREFIX) :]


def test_damm_known_value_and_make_serial_shape():
    # The worked example of Damm's algorithm: 572 gets check digit 4, and 5724 checks to 0.
    assert check_digit("572") == 4
    assert check_digit("5724") == 0
    s = make_serial(12345)
    assert s == PREFIX + "00012345" + str(check_digit("00012345"))
    assert check_digit(digit_part(s)) == 0
    assert len(s) == len(PREFIX) + BODY_DIGITS + 1
    for bad in (-1, 10**BODY_DIGITS):
        with pytest.raises(SerialError):
            make_serial(bad)


def test_damm_table_detects_all_single_errors_and_adjacent_swaps_from_any_state():
    """The property behind the check digit, for every intermediate state: each row of the table is
    a permutation (so one changed digit changes the state) and the table is weakly totally
    anti-symmetric (so swapping two different adjacent digits changes the state). Each column is a
    permutation too, so two different states stay different through the digits that follow and
    the final state is not 0: every such error, anywhere in a serial of any length, is caught."""
    t = serials._DAMM
    for state in range(10):
        assert sorted(t[state]) == list(range(10))
        assert sorted(t[r][state] for r in range(10)) == list(range(10))
        for a in range(10):
            for b in range(10):
                if a != b:
                    assert t[t[state][a]][b] != t[t[state][b]][a], (state, a, b)


def test_every_single_digit_error_is_caught_in_many_serials():
    checked = 0
    for s in random_serials(1000):
        assert normalize_serial(s) == s
        digits = digit_part(s)
        for pos in range(len(digits)):  # the body digits and the check digit itself
            for d in DIGITS:
                if d == digits[pos]:
                    continue
                typo = PREFIX + digits[:pos] + d + digits[pos + 1 :]
                with pytest.raises(SerialError, match="check digit"):
                    normalize_serial(typo)
                assert not is_valid_serial(typo)
                checked += 1
    assert checked == 1002 * (BODY_DIGITS + 1) * 9


def test_every_adjacent_transposition_is_caught_in_many_serials():
    checked = 0
    for s in random_serials(1000):
        digits = digit_part(s)
        for pos in range(len(digits) - 1):  # including the swap of the last body digit and the check
            a, b = digits[pos], digits[pos + 1]
            if a == b:
                continue
            swapped = PREFIX + digits[:pos] + b + a + digits[pos + 2 :]
            with pytest.raises(SerialError, match="check digit"):
                accept_serial(swapped)
            checked += 1
    assert checked > 1000 * BODY_DIGITS * 0.8  # most neighbours differ; make sure the loop ran


def test_typing_is_forgiven_case_spaces_dashes_fullwidth():
    s = make_serial(31415926)
    d = digit_part(s)
    typed = [
        s.lower(),
        " " + s + "\n",
        "kf " + d[:4] + " " + d[4:],
        "KF-" + d[:3] + "-" + d[3:6] + "-" + d[6:],
        "k f\t" + d,
        "K-F" + d,
        "\uff2b\uff26" + "".join(chr(0xFF10 + int(c)) for c in d),  # full-width letters and digits
    ]
    for t in typed:
        assert normalize_serial(t) == s, t
        assert accept_serial(t) == s, t


def test_keyfob_serials_are_ascii_digits_only():
    s = make_serial(2718281)
    arabic_indic = PREFIX + "".join(chr(0x0660 + int(c)) for c in digit_part(s))
    for bad in (arabic_indic, s + "0", s[:-1], PREFIX, PREFIX + "1234567a8", s + "x"):
        with pytest.raises(SerialError, match="not a keyfob serial"):
            normalize_serial(bad)
        with pytest.raises(SerialError):
            accept_serial(bad)


def test_vendor_serials_are_kept_as_given():
    for foreign in ("987654321", "2600123456789", "283599", "mo-1", "FT:C200/0001", "a" * SERIAL_MAX):
        assert accept_serial(foreign) == foreign
        assert accept_serial(f" \t{foreign}\n") == foreign  # only the surroundings are stripped
    assert accept_serial("yk-0007") != accept_serial("YK-0007")  # case is the vendor's


def test_anything_reading_kf_is_held_to_the_check_digit():
    """A mistyped keyfob serial must not slip in as some other vendor's serial."""
    s = make_serial(4711)
    wrong = s[:-1] + str((int(s[-1]) + 1) % 10)
    for t in (wrong, wrong.lower(), "K-F" + digit_part(wrong), "kf-7", "KF", "Kf:123"):
        with pytest.raises(SerialError):
            accept_serial(t)


def test_refused_serials_get_one_short_line_that_does_not_repeat_them():
    seedish = secrets.token_hex(20)
    long_one = secrets.token_hex(SERIAL_MAX // 2 + 1)
    cases = [
        "",
        "   ",
        long_one,
        seedish[:20] + " " + seedish[20:],
        "tab\t" + seedish,
        "nul\x00" + seedish,
        "bell\x07" + seedish,
        "line\nbreak" + seedish,
        "zero\u200bwidth" + seedish,
        "KF" + seedish[:9],
        "KF" + "0" * 8 + "9" + seedish,
        None,
        12345678,
    ]
    for bad in cases:
        with pytest.raises(SerialError) as exc:
            accept_serial(bad)
        msg = str(exc.value)
        assert msg and "\n" not in msg and len(msg) <= 100, msg
        if isinstance(bad, str):
            assert seedish not in msg and seedish[:20] not in msg and seedish[20:] not in msg
            assert long_one not in msg
    assert str(SERIAL_MAX) in _message(long_one)
    assert "whitespace" in _message("two words")


def _message(text):
    with pytest.raises(SerialError) as exc:
        accept_serial(text)
    return str(exc.value)


def test_the_verifier_uses_the_same_rule(tmp_path):
    from keyfob.records import TokenRecord
    from keyfob.verifier import BadInput, Policy, Verifier
    from keyfob.verifier import accept_serial as exported

    assert exported is accept_serial
    s = make_serial(99)
    v = Verifier.init(tmp_path / "v.db", key=b"K" * 32, policy=Policy(password_profile="fast"))
    try:
        recs = [
            TokenRecord(" " + s.lower() + " ", "hotp", "sha1", 6, secrets.token_bytes(20)),
            TokenRecord("FT:C200/0001", "hotp", "sha1", 6, secrets.token_bytes(20)),
        ]
        assert v.import_records(recs) == [s, "FT:C200/0001"]
        assert v.token(" " + s.lower() + " ").serial == s
        assert v.token("FT:C200/0001").serial == "FT:C200/0001"
        with pytest.raises(BadInput, match="check digit"):
            v.token(s[:-1] + str((int(s[-1]) + 5) % 10))
    finally:
        v.close()


def test_serials_are_ascii_so_a_lookalike_cannot_pass_for_a_keyfob_serial():
    assert accept_serial("KF000000013") == "KF000000013"
    for lookalike in ("КF000000013", "ÄÖ-1"):  # a Cyrillic К; umlauts
        with pytest.raises(SerialError, match="ASCII"):
            accept_serial(lookalike)
