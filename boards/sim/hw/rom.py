# The virtual token's "ROM": what a port's frozen _boot.py and main loop do at
# power-on (ports/rp2/main.c, ports/esp32/main.c, shared/runtime/pyexec.c), for
# the MicroPython unix port run as `micropython -i rom.py`.
#
# Like _boot.py, with Ctrl-C off: mount the virtual flash (KEYFOB_SIM_FLASH) at
# /flash and chdir there, set sys.path like a board ('' = /flash, then the
# emulated silicon), bring up the parts (bus.silicon(): I2C devices, button,
# control link). Then boot.py and main.py from the flash, each as the port's
# parse_compile_execute runs a file: compile it, turn Ctrl-C on (whatever the
# previous file left it at), run it, turn Ctrl-C off, and raise a
# KeyboardInterrupt still pending then as the file's own. An exception ending a
# file is printed as a board prints it; one ending boot.py skips main.py, as
# does KEYFOB_SIM_NOMAIN=1 (a soft reset from the raw REPL). Then the REPL of
# `-i`. console.py says how Ctrl-C reaches the firmware between any two bytecodes.


def _rom():
    import os
    import sys

    hw = __file__.rsplit('/', 1)[0] if '/' in __file__ else '.'
    if not hw.startswith('/'):
        hw = os.getcwd() + '/' + hw
    sys.path[:] = ['', '.frozen', '/flash', '/flash/lib', hw]

    import console
    con = console.console()  # Ctrl-C off, as while a port's frozen _boot.py runs
    con.install()

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

    import pending

    def check():
        # Where the VM raises a pending KeyboardInterrupt (a jump), and the sim one
        # it held (pending.py).
        for _ in (0,):
            pending.take()

    def drop():
        # Ctrl-C off; a KeyboardInterrupt still pending is dropped (mp_handle_pending(..._CLEAR_...)).
        try:
            con.off()
        except:  # noqa: E722
            pass
        pending.held = False

    def run(name, g):
        # -> True when the file ran to its end. Ctrl-C on right before the file's
        # first bytecode, off right after its last (no jump between: C code on a
        # port); con.off() raises one that was pending (console.py).
        try:
            with open(name) as f:
                code = compile(f.read(), name, 'exec')
            g['__file__'] = name
            con.on()
            exec(code, g)
            con.off()
            check()
            return True
        except:  # noqa: E722 - bare: `except X` checks for a pending interrupt first
            drop()
            try:
                raise
            except SystemExit:
                raise  # the process ends (a board soft-reboots)
            except BaseException as e:
                sys.print_exception(e)
            return False

    g = globals()
    ok = True
    try:
        for name in ('boot.py', 'main.py'):
            if name == 'main.py' and (not ok or os.getenv('KEYFOB_SIM_NOMAIN') == '1'):
                break
            try:
                os.stat(name)
            except OSError:
                continue  # no file is a file that ran to its end
            ok = run(name, g)
    finally:
        con.release()  # the REPL of -i reads Ctrl-C itself


_rom()
del _rom
