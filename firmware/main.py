# The token starts here (a board runs main.py after boot.py).
import board


def _locked():
    try:
        import store
        return store.Store().locked
    except Exception:  # noqa: the store cannot be read: stay closed
        return True


def _options():
    # An optional config.py next to the firmware, e.g.
    #   OPTIONS = {'off_after_ms': 15000, 'sleep_after_ms': 30000}
    # (display off, deep sleep; copy it before provisioning locks the token).
    try:
        import config
    except ImportError:
        return {}
    return config.OPTIONS


try:
    import app
    app.run(board.make(), **_options())
except Exception:  # noqa: KeyboardInterrupt (an unlocked token) still reaches the REPL
    # A crash (a loose OLED wire, out of memory) must not open a locked token's
    # USB console: only an unlocked token falls through to the REPL, to debug.
    if _locked():
        board.fail()  # never returns
    raise
