"""`keyfob devices` and `keyfob flash` against a fake esptool target, a fake RPI-RP2 drive and fake ports."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from types import SimpleNamespace

import esptool.cmds
import pytest
import serial.tools.list_ports
from click.testing import CliRunner
from esp_pylib.logger import EspLog
from esptool.util import FatalError
from keyfob.cli import main
from keyfob.device import flashing, ports

# --- image builders ---------------------------------------------------------------------------

CHIP_IDS = {"ESP32": 0, "ESP32-S2": 2, "ESP32-S3": 9, "ESP32-C3": 5, "ESP32-C6": 13, "ESP32-C2": 12}


def esp_image(chip: str, body: int = 5000, seed: int = 1) -> bytes:
    """An ESP image as MicroPython ships it: the bootloader header first (magic 0xE9, chip_id at 12)."""
    header = bytes([0xE9, 3, 0x02, 0x20]) + struct.pack("<I", 0x40080000)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<HBHH", CHIP_IDS[chip], 0, 0, 0xFFFF) + bytes(4) + b"\x01"
    assert len(header + ext) == 24
    payload = bytes((i * 7 + seed) & 0xFF for i in range(body))
    return header + ext + payload


def uf2_image(blocks: int = 6, family: int = flashing.RP2040_FAMILY, flags: int = 0x2000) -> bytes:
    out = bytearray()
    for n in range(blocks):
        data = bytes((n + i) & 0xFF for i in range(256)) + bytes(476 - 256)
        out += struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, 0x10000000 + 256 * n, 256, n, blocks, family)
        out += data + struct.pack("<I", 0x0AB16F30)
    assert len(out) == 512 * blocks
    return bytes(out)


# --- fakes --------------------------------------------------------------------------------------


class FakeEsptool:
    """Stands in for esptool.cmds: records each call, reports progress through esptool's logger."""

    def __init__(self, chip="ESP32", fail_at=None):
        self.chip = chip
        self.fail_at = fail_at
        self.calls = []

    def _maybe_fail(self, name):
        if self.fail_at == name:
            raise FatalError("%s: timed out waiting for packet header" % name)

    def detect_chip(self, port, *args, **kwargs):
        self.calls.append(("detect_chip", port))
        self._maybe_fail("detect_chip")
        calls = self.calls
        return SimpleNamespace(
            CHIP_NAME=self.chip,
            change_baud=lambda baud: calls.append(("change_baud", baud)),
            _port=SimpleNamespace(close=lambda: calls.append(("close",))),
        )

    def run_stub(self, esp, *args, **kwargs):
        self.calls.append(("run_stub",))
        return esp

    def attach_flash(self, esp, *args, **kwargs):
        self.calls.append(("attach_flash",))

    def erase_flash(self, esp, *args, **kwargs):
        self.calls.append(("erase_flash",))
        self._maybe_fail("erase_flash")

    def write_flash(self, esp, addr_data, *args, **kwargs):
        from esp_pylib.logger import log

        self.calls.append(("write_flash", [(a, bytes(d)) for a, d in addr_data]))
        log.print("esptool chatter that must not reach stdout")
        total = sum(len(d) for _, d in addr_data)
        with log.progress(total=total, unit="B") as task:  # as esptool's write_flash does
            for _ in range(0, total, 1024):
                task.update(advance=1024)
        self._maybe_fail("write_flash")

    def reset_chip(self, esp, mode="hard-reset"):
        self.calls.append(("reset_chip", mode))

    def install(self, monkeypatch):
        for name in ("detect_chip", "run_stub", "attach_flash", "erase_flash", "write_flash", "reset_chip"):
            monkeypatch.setattr(esptool.cmds, name, getattr(self, name))
        return self


def port_info(device, vid, pid, description="", serial_number=None):
    return SimpleNamespace(device=device, vid=vid, pid=pid, description=description, serial_number=serial_number)


@pytest.fixture
def usb(monkeypatch):
    """Replace pyserial's list of ports; returns the list to fill."""
    listed = []
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda *a, **k: list(listed))
    return listed


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    folder = tmp_path / "sims"
    monkeypatch.setenv(ports.SIM_REGISTRY_ENV, str(folder))
    return folder


def run(*args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args), catch_exceptions=False)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


EXPECTED_SEQUENCE = [
    "detect_chip",
    "run_stub",
    "change_baud",
    "attach_flash",
    "erase_flash",
    "write_flash",
    "reset_chip",
    "close",
]


# --- ESP32 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chip,offset", [("ESP32", 0x1000)])
def test_flash_esp32_erases_and_writes_at_the_chip_offset(tmp_path, monkeypatch, usb, chip, offset):
    image = tmp_path / "micropython.bin"
    image.write_bytes(esp_image(chip))
    fake = FakeEsptool(chip).install(monkeypatch)
    result = run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB7")
    assert result.exit_code == 0, result.output + result.stderr
    assert [c[0] for c in fake.calls] == EXPECTED_SEQUENCE
    assert fake.calls[0] == ("detect_chip", "/dev/ttyUSB7")
    assert ("write_flash", [(offset, image.read_bytes())]) in fake.calls
    assert ("reset_chip", "hard-reset") in fake.calls
    assert "Flashed MicroPython onto the %s on /dev/ttyUSB7 at 0x%X" % (chip, offset) in result.stdout
    assert "chatter" not in result.stdout


def test_full_flash_dump_is_written_at_zero(tmp_path, monkeypatch, usb):
    image = tmp_path / "dump.bin"
    image.write_bytes(b"\xff" * 0x1000 + esp_image("ESP32"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    result = run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0")
    assert result.exit_code == 0, result.stderr
    assert ("write_flash", [(0x0, image.read_bytes())]) in fake.calls


def test_flash_esp32_finds_the_only_board(tmp_path, monkeypatch, usb):
    usb[:] = [
        port_info("/dev/ttyS0", None, None),
        port_info("/dev/ttyACM3", 0x303A, 0x1001, "USB JTAG/serial"),
    ]
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    result = run("flash", "--board", "esp32", "--image", str(image))
    assert result.exit_code == 0, result.stderr
    assert fake.calls[0] == ("detect_chip", "/dev/ttyACM3")


def test_flash_esp32_uses_the_image_in_firmware_images(tmp_path, monkeypatch, usb):
    (tmp_path / "firmware-images").mkdir()
    image = tmp_path / "firmware-images" / "ESP32_GENERIC-v1.24.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    result = run("flash", "--board", "esp32", "--port", "/dev/ttyUSB0", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert ("write_flash", [(0x1000, image.read_bytes())]) in fake.calls


def test_library_reports_progress_and_keeps_esptool_quiet(tmp_path, capsys):
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32", body=10_000))
    fake = FakeEsptool("ESP32")
    seen = []
    before = EspLog.instance
    result = flashing.flash_esp32("/dev/ttyACM0", image, cmds=fake, devices=[], progress=lambda *a: seen.append(a))
    assert EspLog.instance is before
    assert capsys.readouterr().out == ""
    size = image.stat().st_size
    assert result == flashing.FlashResult("esp32", "/dev/ttyACM0", "ESP32", 0x1000, size)
    writes = [(d, t) for s, d, t in seen if s == "write"]
    assert (1024, size) in writes and (2048, size) in writes  # from esptool's own progress bar
    assert writes[-1] == (size, size)
    assert [s for s, _, _ in seen].index("erase") < [s for s, _, _ in seen].index("write")


def test_esptool_failure_is_one_line_and_closes_the_port(tmp_path, monkeypatch, usb):
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32", fail_at="write_flash").install(monkeypatch)
    result = run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0")
    line = one_error_line(result)
    assert "failed while writing" in line and "timed out" in line
    assert fake.calls[-1] == ("close",)
    assert ("reset_chip", "hard-reset") not in fake.calls


# --- wrong board --------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", ["ESP32-S2", "ESP32-S3", "ESP32-C3", "ESP32-C6"])
def test_images_for_the_newer_esp32_chips_are_refused_before_touching_the_board(tmp_path, monkeypatch, usb, chip):
    # boards/esp32 is the classic ESP32's: GPIO21/22/27 and ext0 wake-up, which these chips lack.
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image(chip))
    fake = FakeEsptool(chip).install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0"))
    assert f"built for {chip}" in line and "classic ESP32" in line and "not supported" in line
    assert fake.calls == []


@pytest.mark.parametrize("chip", ["ESP32-S2", "ESP32-S3", "ESP32-C3", "ESP32-C6"])
def test_a_newer_esp32_chip_on_the_port_is_refused_before_erasing(tmp_path, monkeypatch, usb, chip):
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool(chip).install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0"))
    assert f"is an {chip}" in line and "classic ESP32" in line and "not supported" in line
    assert [c[0] for c in fake.calls] == ["detect_chip", "close"]


def test_unsupported_chip_image_is_wrong_board(tmp_path, monkeypatch, usb):
    image = tmp_path / "c2.bin"
    image.write_bytes(esp_image("ESP32-C2"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0"))
    assert "ESP32-C2" in line and "does not support" in line
    assert fake.calls == []


def test_esp32_flash_on_an_rp2040_port_is_wrong_board(tmp_path, monkeypatch, usb):
    usb[:] = [port_info("/dev/ttyACM0", 0x2E8A, 0x0005, "Board in FS mode")]
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyACM0"))
    assert "RP2040" in line and "--board rp2040" in line
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image)))
    assert "only an RP2040 on /dev/ttyACM0" in line
    assert fake.calls == []


def test_uf2_for_rp2350_is_wrong_board(tmp_path):
    image = tmp_path / "pico2.uf2"
    image.write_bytes(uf2_image(family=0xE48BFF59))
    drive = fake_drive(tmp_path)
    line = one_error_line(run("flash", "--board", "rp2040", "--image", str(image), "--drive", str(drive)))
    assert "RP2350" in line and "RPI_PICO" in line
    assert sorted(p.name for p in drive.iterdir()) == ["INFO_UF2.TXT"]


def test_uf2_drive_of_another_chip_is_wrong_board(tmp_path):
    image = tmp_path / "pico.uf2"
    image.write_bytes(uf2_image())
    drive = fake_drive(tmp_path, board_id="RP2350")
    line = one_error_line(run("flash", "--board", "rp2040", "--image", str(image), "--drive", str(drive)))
    assert "RP2350" in line and "not an RP2040" in line
    assert not (drive / "pico.uf2").exists()


def test_unknown_board_is_refused():
    result = run("flash", "--board", "stm32", "--image", "x.bin")
    assert result.exit_code != 0 and "stm32" in result.stderr


# --- missing image / wrong image type ----------------------------------------------------------


def test_missing_image_says_where_to_put_one(tmp_path, monkeypatch, usb):
    fake = FakeEsptool("ESP32").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(tmp_path / "nope.bin"), "--port", "x"))
    assert "does not exist" in line and "firmware-images/" in line and "micropython.org/download/ESP32_GENERIC" in line
    line = one_error_line(run("flash", "--board", "rp2040", cwd=tmp_path))
    assert "firmware-images/" in line and "micropython.org/download/RPI_PICO" in line and "--image" in line
    assert fake.calls == []


@pytest.mark.parametrize(
    "board,name,content,words",
    [
        ("esp32", "pico.uf2", uf2_image(), ["UF2", ".bin"]),
        ("esp32", "random.bin", b"\x00" * 4096, ["0xE9", ".bin"]),
        ("esp32", "fw.elf", esp_image("ESP32"), ["not a .bin"]),
        ("rp2040", "fw.bin", esp_image("ESP32"), ["ESP32 .bin", ".uf2"]),
        ("rp2040", "short.uf2", uf2_image()[:-100], ["512-byte"]),
        ("rp2040", "bad.uf2", uf2_image()[:1536] + b"\0" * 4 + uf2_image()[1540:], ["block 3", "magic"]),
        ("rp2040", "empty.uf2", b"", ["empty"]),
    ],
)
def test_wrong_image_type(tmp_path, monkeypatch, usb, board, name, content, words):
    fake = FakeEsptool("ESP32").install(monkeypatch)
    image = tmp_path / name
    image.write_bytes(content)
    drive = fake_drive(tmp_path)
    extra = ["--port", "/dev/ttyUSB0"] if board == "esp32" else ["--drive", str(drive)]
    line = one_error_line(run("flash", "--board", board, "--image", str(image), *extra))
    for w in words:
        assert w in line
    assert fake.calls == []
    assert sorted(p.name for p in drive.iterdir()) == ["INFO_UF2.TXT"]


# --- no device ----------------------------------------------------------------------------------


def test_no_esp32_connected(tmp_path, monkeypatch, usb):
    usb[:] = [port_info("/dev/ttyS0", None, None), port_info("/dev/ttyACM9", 0x1234, 0x5678)]
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image)))
    assert "no ESP32 board found" in line
    assert fake.calls == []


def test_no_bootloader_answers(tmp_path, monkeypatch, usb):
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    fake = FakeEsptool("ESP32", fail_at="detect_chip").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image), "--port", "/dev/ttyUSB0"))
    assert "no ESP32 bootloader answered on /dev/ttyUSB0" in line and "BOOT" in line
    assert [c[0] for c in fake.calls] == ["detect_chip"]


def test_several_candidate_ports_need_port(tmp_path, monkeypatch, usb):
    usb[:] = [port_info("/dev/ttyUSB0", 0x10C4, 0xEA60), port_info("/dev/ttyUSB1", 0x1A86, 0x7523)]
    image = tmp_path / "fw.bin"
    image.write_bytes(esp_image("ESP32"))
    FakeEsptool("ESP32").install(monkeypatch)
    line = one_error_line(run("flash", "--board", "esp32", "--image", str(image)))
    assert "/dev/ttyUSB0, /dev/ttyUSB1" in line and "--port" in line


def test_no_rpi_rp2_drive_explains_bootsel(tmp_path):
    image = tmp_path / "pico.uf2"
    image.write_bytes(uf2_image())
    empty = tmp_path / "media"
    empty.mkdir()
    line = one_error_line(run("flash", "--board", "rp2040", "--image", str(image), "--drive", str(empty)))
    assert "no RPI-RP2 drive found" in line and "hold its BOOTSEL button while plugging" in line


# --- RP2040 -------------------------------------------------------------------------------------


def fake_drive(tmp_path, board_id="RPI-RP2"):
    drive = tmp_path / "RPI-RP2"
    drive.mkdir(exist_ok=True)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: %s\n" % board_id)
    return drive


def test_flash_rp2040_copies_the_uf2_and_waits_for_the_reboot(tmp_path, monkeypatch):
    image = tmp_path / "RPI_PICO-v1.24.uf2"
    image.write_bytes(uf2_image(blocks=300))
    drive = fake_drive(tmp_path)
    not_ours = tmp_path / "USBSTICK"
    not_ours.mkdir()
    seen_at_reboot = []

    def board_reboots(seconds):
        # The host is waiting: the ROM has the whole file, reboots, and the drive goes away.
        seen_at_reboot.append((drive / image.name).read_bytes())
        (drive / "INFO_UF2.TXT").unlink()

    monkeypatch.setattr(flashing, "_sleep", board_reboots)
    result = run("flash", "--board", "rp2040", "--image", str(image), "--drive", str(not_ours), "--drive", str(drive))
    assert result.exit_code == 0, result.stderr
    assert seen_at_reboot == [image.read_bytes()]
    assert "Flashed MicroPython onto the RP2040 on %s" % drive in result.stdout


def test_flash_rp2040_library_progress(tmp_path, monkeypatch):
    image = tmp_path / "fw.uf2"
    image.write_bytes(uf2_image(blocks=200))
    drive = fake_drive(tmp_path)
    monkeypatch.setattr(flashing, "_sleep", lambda s: (drive / "INFO_UF2.TXT").unlink())
    seen = []
    result = flashing.flash_rp2040(image, mount_points=[drive], progress=lambda *a: seen.append(a), chunk=32768)
    size = 200 * 512
    assert result == flashing.FlashResult("rp2040", str(drive), "RP2040", 0, size)
    assert [a for a in seen if a[0] == "copy"] == [
        ("copy", 0, size),
        ("copy", 32768, size),
        ("copy", 65536, size),
        ("copy", 98304, size),
        ("copy", size, size),
    ]
    assert seen[-1] == ("reboot", 1, 1)
    assert (drive / "fw.uf2").read_bytes() == image.read_bytes()


def test_drive_that_stays_is_an_error(tmp_path):
    image = tmp_path / "fw.uf2"
    image.write_bytes(uf2_image())
    drive = fake_drive(tmp_path)
    line = one_error_line(
        run("flash", "--board", "rp2040", "--image", str(image), "--drive", str(drive), "--timeout", "0")
    )
    assert "still there" in line
    assert (drive / "fw.uf2").read_bytes() == image.read_bytes()


def test_two_rpi_rp2_drives_are_ambiguous(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "INFO_UF2.TXT").write_text("Board-ID: RPI-RP2\n")
    with pytest.raises(flashing.FlashError, match="several RPI-RP2 drives"):
        flashing.find_rp2_drive([a, b])


def test_uf2_without_family_flags_is_accepted(tmp_path):
    # Old-style UF2 (no family id) is valid for the RP2040 boot ROM; blocks of only another family are not.
    path = tmp_path / "old.uf2"
    path.write_bytes(uf2_image(flags=0))
    assert flashing.check_uf2_image(path) == path.read_bytes()
    path.write_bytes(uf2_image(family=flashing.RP2_ABSOLUTE_FAMILY))
    with pytest.raises(flashing.WrongBoardError, match="no RP2040 blocks"):
        flashing.check_uf2_image(path)


# --- devices ------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_devices_lists_boards_and_live_sims_only(tmp_path, usb, registry):
    usb[:] = [
        port_info("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART", "0001"),
        port_info("/dev/ttyACM1", 0x303A, 0x1001, "USB JTAG/serial debug unit", "F4:12:FA"),
        port_info("/dev/ttyACM0", 0x2E8A, 0x0005, "Board in FS mode", "E66038B7"),
        port_info("/dev/ttyUSB1", 0x1A86, 0x55D4, "USB Single Serial"),
        port_info("/dev/ttyUSB2", 0x0403, 0x6001, "FT232R USB UART"),
        port_info("/dev/ttyUSB3", 0x1A86, 0x7523, "USB2.0-Serial"),
        port_info("/dev/ttyACM5", 0x2341, 0x0043, "Arduino Uno"),  # not ours
        port_info("/dev/ttyS0", None, None, "n/a"),
    ]
    live = ports.register_sim("/dev/pts/42", os.getpid(), tmp_path / "tok1")
    stale = ports.register_sim("/dev/pts/43", dead_pid(), tmp_path / "tok2")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        ports.register_sim("/dev/pts/44", zombie.pid, tmp_path / "tok3")
        (registry / "broken.json").write_text("{not json")
        result = run("devices", "--json")
    finally:
        zombie.wait()
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(d["port"], d["kind"], d["usb_id"]) for d in listed] == [
        ("/dev/ttyACM0", "rp2040", "2E8A:0005"),
        ("/dev/ttyACM1", "esp32", "303A:1001"),
        ("/dev/ttyUSB0", "usb-serial", "10C4:EA60"),
        ("/dev/ttyUSB1", "usb-serial", "1A86:55D4"),
        ("/dev/ttyUSB2", "usb-serial", "0403:6001"),
        ("/dev/ttyUSB3", "usb-serial", "1A86:7523"),
        ("/dev/pts/42", "sim", ""),
    ]
    sim = listed[-1]
    assert sim["process_id"] == os.getpid() and sim["workdir"] == str(tmp_path / "tok1")
    assert listed[2]["serial_number"] == "0001" and listed[2]["description"] == "CP2102 USB to UART"
    assert stale.exists()  # ignored, not deleted by a listing

    table = run("devices")
    assert table.exit_code == 0
    for port in ("/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0", "/dev/pts/42"):
        assert port in table.stdout
    assert "/dev/ttyACM5" not in table.stdout and "/dev/pts/43" not in table.stdout
    assert "/dev/pts/44" not in table.stdout

    ports.unregister_sim(live)
    ports.unregister_sim(live)  # twice is fine
    assert [d["port"] for d in json.loads(run("devices", "--json").stdout)][-1] == "/dev/ttyUSB3"


def test_no_devices(usb):
    result = run("devices")
    assert result.exit_code == 0 and "No boards" in result.stdout
    assert json.loads(run("devices", "--json").stdout) == []


def test_registry_location(monkeypatch, tmp_path):
    monkeypatch.delenv(ports.SIM_REGISTRY_ENV)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert ports.sim_registry_dir() == tmp_path / "run" / "keyfob" / "sims"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ports.sim_registry_dir() == tmp_path / "home" / ".cache" / "keyfob" / "sims"
    path = ports.register_sim("/dev/pts/7", os.getpid(), "/w")
    assert path.parent == tmp_path / "home" / ".cache" / "keyfob" / "sims"
    assert json.loads(path.read_text()) == {"port": "/dev/pts/7", "pid": os.getpid(), "workdir": "/w"}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert [d.port for d in ports.list_sims()] == ["/dev/pts/7"]
