# boot.py runs before main.py at every start. Ctrl-C stays off until the app has
# read the store: a locked token's USB console must not open even for the
# moment between power-up and the app's first look at its lock flag.
import board

board.kbd_intr(False)
