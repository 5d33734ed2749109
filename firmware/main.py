# The token starts here (a board runs main.py after boot.py). The port turns
# Ctrl-C on again right before this file's first bytecode: off first, the way
# boot.py does it (see there why so). The app turns it on again on an open
# (unlocked) token, so mpremote can still stop it and reach the REPL.
while True:
    try:
        import micropython
        micropython.kbd_intr(-1)
        for _ in (0,):
            pass
        break
    except:  # noqa: E722
        pass
import board


def _close():
    # Ctrl-C off, one that came before dropped: as at the top of this file.
    while True:
        try:
            micropython.kbd_intr(-1)
            for _ in (0,):
                pass
            return
        except:  # noqa: E722
            pass


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
except:  # noqa: E722 - whatever ends the app; `except X` would test the match with a jump
    # Nothing (a crash: a loose OLED wire, out of memory; a Ctrl-C) may open a
    # locked token's USB console: Ctrl-C off before anything else (it was on if
    # the token was open, and it may have been locked a moment ago), then only
    # an open token goes on to the REPL (a Ctrl-C, or the crash's traceback).
    _close()
    if _locked():
        board.fail()  # never returns: a locked token restarts, closed
    raise
