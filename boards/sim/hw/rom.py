# The virtual token's "ROM": what a port's frozen _boot.py and main loop do at
# power-on, for the MicroPython unix port run as `micropython -i rom.py`.
#
# Mount the virtual flash (KEYFOB_SIM_FLASH) at /flash and chdir there, set
# sys.path like a board ('' = /flash, then the emulated silicon), bring up the
# parts (bus.silicon(): I2C devices, button, control link), run boot.py and
# main.py from the flash (main.py is skipped with KEYFOB_SIM_NOMAIN=1, as after a
# soft reset from the raw REPL), print their exceptions as a board does, and
# leave the REPL to `-i`.


def _boot():
    import os
    import sys

    hw = __file__.rsplit('/', 1)[0] if '/' in __file__ else '.'
    if not hw.startswith('/'):
        hw = os.getcwd() + '/' + hw
    sys.path[:] = ['', '.frozen', '/flash', '/flash/lib', hw]

    image = os.getenv('KEYFOB_SIM_FLASH')
    if image:
        import flash
        try:
            flash.mount(image, '/flash')
            os.chdir('/flash')
        except Exception as e:  # a board boots to the REPL without its filesystem
            print('sim: flash not mounted:')
            sys.print_exception(e)

    import bus
    bus.silicon()

    import gc
    gc.collect()  # the firmware starts on a clean heap (the sim's own parts take ~35 KB of it)

    g = globals()
    for name in ('boot.py', 'main.py'):
        if name == 'main.py' and os.getenv('KEYFOB_SIM_NOMAIN') == '1':
            continue
        try:
            os.stat(name)
        except OSError:
            continue
        try:
            execfile(name, g)
        except (Exception, KeyboardInterrupt) as e:
            sys.print_exception(e)


_boot()
del _boot
