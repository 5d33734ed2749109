# The token starts here (a board runs main.py after boot.py).
import board


def _locked():
    try:
        import store
        return store.Store().locked
    except Exception:  # noqa: the store cannot be read: stay closed
        return True


try:
    import app
    app.run(board.make())
except Exception:  # noqa: KeyboardInterrupt (an unlocked token) still reaches the REPL
    # A crash (a loose OLED wire, out of memory) must not open a locked token's
    # USB console: only an unlocked token falls through to the REPL, to debug.
    if _locked():
        board.fail()  # never returns
    raise
