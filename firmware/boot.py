# boot.py runs before main.py at every start, every wake-up from deep sleep too.
# The port turns Ctrl-C on right before this file's first bytecode: it goes off
# first, in a way no timing of a Ctrl-C from the USB port can get round, or a
# locked token's console opens. The VM raises a pending KeyboardInterrupt only
# at a jump (or in a sleep), and there is none before the try; kbd_intr(-1)
# stops new ones; the loop inside the try raises one that came before it (it
# survives kbd_intr(-1): left pending it would end this file, and the port then
# skips main.py and opens the REPL) where the except drops it. The except is
# bare: `except X` tests the match with a jump, one more place to raise.
# Nothing may come before this (on the ESP32, `import board` alone runs code
# from machine, esp32 and mcu.mpy).
while True:
    try:
        import micropython
        micropython.kbd_intr(-1)
        for _ in (0,):
            pass
        break
    except:  # noqa: E722
        pass
