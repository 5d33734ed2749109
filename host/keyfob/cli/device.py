"""``keyfob devices`` and ``keyfob flash``: find boards and put MicroPython on them."""

from __future__ import annotations

import click

from keyfob.device import flashing, ports
from keyfob.errors import BadInput

from ._common import console, emit_json, json_option


@click.command("devices")
@json_option
@click.option("--no-sims", is_flag=True, help="Leave out running virtual tokens.")
@click.option("--no-info", is_flag=True, help="Do not ask the devices for INFO (USB ids only).")
def devices(as_json: bool, no_sims: bool, no_info: bool) -> None:
    """List connected boards (by USB id) and running virtual tokens, and what each token says
    about itself (INFO: serial, mode, provisioned, locked, clock jumps, failed parts, firmware);
    "-" is a board that does not answer (no keyfob firmware yet, or busy)."""
    from keyfob.device import survey

    found = ports.list_devices(include_sims=not no_sims)
    rows = [(d, None) for d in found] if no_info else survey.survey(found)
    if as_json:
        out = []
        for d, info in rows:
            item = d.to_dict()
            if not no_info:
                item["info"] = survey.info_dict(info)
            out.append(item)
        emit_json(out)
        return
    if not found:
        click.echo("No boards or virtual tokens found.")
        return
    from rich.table import Table

    table = Table("Port", "Kind", "USB id", "Description", "Token", "Mode", "State", "Jumps", "Firmware")
    for d, info in rows:
        desc = d.description
        if d.is_virtual:
            desc = "%s (pid %d)" % (desc, d.process_id)
        if info is None:
            token = mode = state = jumps = firmware = "-"
        else:
            # Clock jumps a locked token took because its clock was lost: each one is worth a look.
            jumps = str(info.jumps)
            token = info.serial or "(none)"
            mode = f"{info.mode}/{info.algorithm}/{info.digits}" if info.provisioned else "-"
            state = ("locked" if info.locked else "open") if info.provisioned else "not provisioned"
            if info.faults:
                state += "; failed: " + ", ".join(info.faults)
            firmware = f"{info.firmware} ({info.board})"
        table.add_row(d.port, d.kind, d.usb_id, desc, token, mode, state, jumps, firmware)
    console().print(table)


_STAGE_LABELS = {
    "connect": "Connecting",
    "erase": "Erasing flash",
    "write": "Writing",
    "copy": "Copying UF2",
    "reboot": "Waiting for reboot",
}


class _Bar:
    """Feeds the library's ``progress(stage, done, total)`` into one rich progress bar."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = progress.add_task("Starting", total=1)

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.progress.update(
            self.task, description=_STAGE_LABELS.get(stage, stage), completed=done, total=max(total, 1)
        )


@click.command("flash")
@click.option("--board", type=click.Choice(flashing.BOARDS), required=True, help="Board family.")
@click.option(
    "--image",
    type=click.Path(dir_okay=True),
    default=None,
    help="MicroPython image (.bin for esp32, .uf2 for rp2040); default: the one in firmware-images/.",
)
@click.option("--port", default=None, help="ESP32 serial port (default: the one connected board).")
@click.option(
    "--drive",
    "drives",
    multiple=True,
    type=click.Path(file_okay=False),
    help="RP2040: folder where the RPI-RP2 drive is mounted (default: the usual places).",
)
@click.option("--timeout", default=30.0, show_default=True, help="RP2040: seconds to wait for the reboot.")
@json_option
def flash(
    board: str, image: str | None, port: str | None, drives: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Put MicroPython on a bare ESP32 or RP2040 board (no network: bring the image).

    \b
    ESP32: plug the board in; esptool resets it into its bootloader (if not, hold BOOT
    while pressing EN/RESET). The image is written at 0x1000. Only the classic ESP32 is supported:
    S2/S3/C3/C6 images and chips are refused (other pins, no ext0 wake-up).
    RP2040: hold the BOOTSEL button while plugging in the USB cable, then let go; a drive
    named RPI-RP2 appears and the .uf2 is copied onto it.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    if port is not None and board == "rp2040":
        raise BadInput("--port is for ESP32 boards; an RP2040 is flashed through its RPI-RP2 drive")
    if drives and board == "esp32":
        raise BadInput("--drive is for RP2040 boards; an ESP32 is flashed through --port")
    path = image if image is not None else flashing.find_image(board)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        bar = _Bar(progress)
        if board == "esp32":
            result = flashing.flash_esp32(port, path, progress=bar)
        else:
            result = flashing.flash_rp2040(path, mount_points=list(drives) or None, timeout=timeout, progress=bar)
    if as_json:
        emit_json(
            {
                "board": result.board,
                "chip": result.chip,
                "target": result.target,
                "offset": result.offset if result.board == "esp32" else None,
                "size": result.size,
            }
        )
        return
    where = " at 0x%X" % result.offset if result.board == "esp32" else ""
    click.echo("Flashed MicroPython onto the %s on %s%s (%d bytes)." % (result.chip, result.target, where, result.size))


def register(main: click.Group) -> None:
    main.add_command(devices)
    main.add_command(flash)
