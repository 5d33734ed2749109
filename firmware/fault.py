# fault.py: what the app does when an I2C part stops answering after boot
# (loaded only then, to keep the press path's heap free). The token goes on
# without the part and says what failed, on the console and in INFO
# 'faults'; it never restarts for it (a locked token would loop for ever).


def report(app, part, err):
    if part not in app.faults:
        app.faults.append(part)
    print('keyfob: fault:', part, 'not answering on I2C (%r); still answering USB' % (err,))


def i2c_error(app, err, no_panel):
    # An OSError out of an event: rescan the bus to name the part that left.
    try:
        present = app.board.i2c.scan()
    except OSError:
        present = ()
    ui = app.ui
    clock = app.clock
    if not isinstance(ui.oled, no_panel) and app.oled_addr not in present:
        ui.oled = no_panel()
        ui.is_on = False
        app.step_shown = -1
        report(app, 'oled', err)
    elif clock.ds3231 is not None and clock.ds3231.addr not in present:
        clock.failed = True
        report(app, 'ds3231', err)
    else:
        report(app, 'i2c', err)
