"""``keyfob deploy``, ``keyfob provision``, ``keyfob time-sync`` and ``keyfob reset``: a thin layer
over :mod:`keyfob.deploy`, :mod:`keyfob.provision` and :class:`keyfob.device.client.TokenClient`.

Errors go to the CLI's one handler (exit codes as in the README). Seeds are printed only with
``--show-secret``.
"""

from __future__ import annotations

import click

from keyfob import deploy as fwdeploy
from keyfob import errors
from keyfob import provision as prov
from keyfob.device.client import Refused, TokenClient
from keyfob.errors import BadInput, Failed, Unavailable
from keyfob.formats._common import encode_base32
from keyfob.params import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD, KEYFOB
from keyfob.serials import make_serial

from ._common import as_keyfob_error, console, emit_json, error_shape, json_option, read_secret


def _words(values) -> list[str]:
    """Numbers as click choices (typed as text)."""
    return [str(v) for v in values]


#: Default pre-shared key file for seed files (override with $KEYFOB_TRANSPORT_KEY_FILE or --key-file).
KEY_FILE_ENV = prov.KEY_FILE_ENV
default_key_file = prov.default_key_file

_STAGES = ("info", "provision", "settime", "lock", "check")
_STAGE_TEXT = {
    "info": "asking INFO",
    "provision": "writing the seed",
    "settime": "setting the clock",
    "lock": "locking",
    "check": "checking",
    "saved": "saved",
    "failed": "failed",
}
_DEPLOY_TEXT = {
    "probe": "Asking the board",
    "build": "Compiling (mpy-cross)",
    "copy": "Copying files",
    "verify": "Verifying SHA-256 on the board",
    "reset": "Soft reset",
    "check": "Waiting for the firmware",
}


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console(stderr=True),
        transient=True,
    )


def _all_ports() -> list[str]:
    from keyfob.device import ports

    return [d.port for d in ports.list_devices()]


def _one_port(port: str | None) -> str:
    if port:
        return port
    found = _all_ports()
    if not found:
        raise Unavailable("no token found: connect one (keyfob devices lists them) or give --port")
    if len(found) > 1:
        raise BadInput(f"{len(found)} devices found ({', '.join(found)}): choose one with --port")
    return found[0]


def _board_for(port: str, board: str | None) -> str | None:
    if board is not None:
        return board
    from keyfob.device import ports

    for d in ports.list_devices():
        if d.port == port and d.kind in fwdeploy.BOARDS:
            return d.kind
    return None  # the library asks the firmware (INFO), or says to name it


# --------------------------------------------------------------------------- deploy


@click.command("deploy")
@click.option("--port", default=None, help="Serial port of the board (default: the one connected).")
@click.option(
    "--board",
    type=click.Choice(fwdeploy.BOARDS),
    default=None,
    help="Board family (default: from the USB id, or what the running firmware reports).",
)
@json_option
def deploy_cmd(port: str | None, board: str | None, as_json: bool) -> None:
    """Compile the firmware with mpy-cross, copy it with mpremote, verify every file by SHA-256 on
    the board, soft-reset and check that the firmware answers. A locked token is refused: factory-reset
    it first."""
    port = _one_port(port)
    with _progress() as bar:
        task = bar.add_task("Starting", total=1)

        def cb(stage: str, done: int, total: int) -> None:
            bar.update(task, description=_DEPLOY_TEXT.get(stage, stage), completed=done, total=max(total, 1))

        result = fwdeploy.deploy(port, _board_for(port, board), progress=cb)
    info = result.info
    if as_json:
        emit_json(
            {
                "port": result.port,
                "board": result.board,
                "files": dict(result.files),
                "firmware": info.firmware,
                "provisioned": info.provisioned,
                "serial": info.serial or None,
            }
        )
        return
    state = f"provisioned as {info.serial}" if info.provisioned else "not provisioned yet"
    click.echo(
        f"Deployed {len(result.files)} files to {result.port} ({result.board}), each verified by SHA-256; "
        f"firmware {info.firmware} answers, {state}."
    )


# --------------------------------------------------------------------------- provision


def _protection(key_file: str | None, passphrase_stdin: bool, plain: bool) -> prov.Protection:
    chosen = [
        n for n, v in (("--key-file", key_file), ("--passphrase-stdin", passphrase_stdin), ("--plain", plain)) if v
    ]
    if len(chosen) > 1:
        raise BadInput(f"give only one of {', '.join(chosen)}")
    if plain:
        return prov.Protection.plain()
    if passphrase_stdin:
        return prov.Protection.from_passphrase(read_secret("Passphrase", from_stdin=True))
    return prov.Protection.from_key_file(key_file or default_key_file())


@click.command("provision")
@click.option(
    "--port",
    "ports",
    multiple=True,
    help="Token port (repeat for several). Default: every connected token, or --count virtual ones.",
)
@click.option("--mode", type=click.Choice(KEYFOB.modes), default="hotp", show_default=True)
@click.option("--algorithm", type=click.Choice(KEYFOB.algorithms), default=DEFAULT_ALGORITHM, show_default=True)
@click.option("--digits", type=click.Choice(_words(KEYFOB.digits)), default=str(DEFAULT_DIGITS), show_default=True)
@click.option(
    "--period",
    type=click.Choice(_words(KEYFOB.periods)),
    default=str(DEFAULT_PERIOD),
    show_default=True,
    help="TOTP time step in seconds.",
)
@click.option(
    "--serial",
    default=None,
    help="Serial of the (first) token; the rest follow on. Default: the next free one in --out.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 1000),
    default=None,
    help="Without --port: start this many virtual tokens in OUT/sims/ and provision them.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="provisioned",
    show_default=True,
    help="Folder for the seed file, the manifest and the serial ledger.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pre-shared AES key (hex) that encrypts the seed file; created (0600) if missing. "
    f"Default: ${KEY_FILE_ENV} or ~/.config/keyfob/transport.key.",
)
@click.option("--passphrase-stdin", is_flag=True, help="Encrypt the seed file with a passphrase read from stdin.")
@click.option("--plain", is_flag=True, help="Write the seeds in the clear (not recommended).")
@click.option("--no-lock", is_flag=True, help="Leave the USB console open (development only).")
@click.option("--show-secret", is_flag=True, help="Print each seed (base32): for a software twin or debugging.")
@json_option
def provision_cmd(
    ports,
    mode,
    algorithm,
    digits,
    period,
    serial,
    count,
    out_dir,
    key_file,
    passphrase_stdin,
    plain,
    no_lock,
    show_secret,
    as_json,
) -> None:
    """Give tokens a fresh seed and serial, set their clock, lock them, and save the seeds.

    \b
    Each token: INFO (a provisioned token is refused) -> PROVISION -> key check value compared
    -> SETTIME -> LOCK -> INFO check. The seeds go into one PSKC file (RFC 6030) in --out,
    encrypted with the key file (default) or a passphrase, and a manifest (JSON + CSV, no seeds).
    A token that fails does not stop the others; every finished token's seed is saved.
    """
    sims: list = []
    try:
        protection = _protection(key_file, passphrase_stdin, plain)
        out = prov.OutputDir(out_dir)
        out.ensure()
        if ports and count is not None and count != len(ports):
            raise BadInput(f"--count {count} does not match the {len(ports)} --port given")
        serials = None
        if ports:
            targets = list(ports)
        elif count is not None:
            # Settings first (a bad one must not spend serials), then serials, then the tokens.
            prov.new_record(make_serial(1), mode, algorithm, int(digits), int(period))
            serials = out.allocate(count, first=serial)
            with _progress() as bar:
                task = bar.add_task("Starting virtual tokens (deploying firmware)", total=count)
                sims = prov.start_virtual_tokens(
                    out.path / "sims", serials, progress=lambda done, total: bar.update(task, completed=done)
                )
            targets = [t.port for t in sims]
        else:
            found = _all_ports()
            if not found:
                raise Unavailable("no token found: connect one, give --port, or use --count N for virtual tokens")
            targets, skipped = prov.ready_tokens(found)
            if not targets:
                why = "; ".join(f"{port} {reason}" for port, reason in skipped)
                raise Unavailable(f"no unprovisioned token among the {len(found)} device(s) found ({why})")
            for port, why in skipped:
                click.echo(f"Skipped {port}: {why}", err=True)
        n = len(targets)
        with _progress() as bar:
            task = bar.add_task("Provisioning", total=n * len(_STAGES))

            def cb(i: int, total: int, port: str, stage: str) -> None:
                if stage in ("saved", "failed"):
                    bar.update(
                        task,
                        completed=(i + 1) * len(_STAGES),
                        description=f"Provisioning {i + 1}/{total}: {port} {_STAGE_TEXT[stage]}",
                    )
                else:
                    bar.update(
                        task,
                        completed=i * len(_STAGES) + _STAGES.index(stage),
                        description=f"Provisioning {i + 1}/{total}: {port} {_STAGE_TEXT[stage]}",
                    )

            result = prov.provision_batch(
                targets,
                out,
                protection,
                mode=mode,
                algorithm=algorithm,
                digits=int(digits),
                period=int(period),
                serial=serial,
                serials=serials,
                lock=not no_lock,
                progress=cb,
            )
    finally:
        for tok in sims:  # switched off; their flash images stay in OUT/sims/<serial>/
            try:
                tok.power_off()
            except Exception:  # noqa: BLE001 - close() below kills it anyway
                pass
            tok.close()

    sims_dir = (out.path / "sims") if count and not ports else None
    if as_json:
        emit_json(_result_dict(result, protection, show_secret, sims_dir))
    else:
        _report(result, protection, show_secret, sims_dir=sims_dir)
    _report_failures(result)
    if not result.ok:  # each failure said above, one line per token; the highest code (README)
        raise SystemExit(max([errors.kind_of(err).exit_code for _, _, err in result.failed], default=Failed.exit_code))


def _error_shape(err) -> dict:
    kind = errors.kind_of(err)
    return error_shape(kind.kind, str(err), kind.exit_code)


def _result_dict(result: prov.BatchResult, protection: prov.Protection, show_secret: bool, sims_dir) -> dict:
    def done(p) -> dict:
        item = {"port": p.port, "serial": p.record.serial, "locked": p.info.locked}
        if show_secret:
            item["secret"] = encode_base32(p.record.secret)
        return item

    return {
        "provisioned": [done(p) for p in result.done],
        "seed_file": str(result.seed_file) if result.seed_file else None,
        "protection": protection.describe(),
        "key_file_created": str(protection.key_file) if protection.key_file_created else None,
        "manifest": str(result.manifest),
        "sims": str(sims_dir) if sims_dir is not None and result.done else None,
        "failed": [
            {"port": port, "serial": serial, **_error_shape(err), "seed_on_token": err.seed_on_token}
            for port, serial, err in result.failed
        ],
        "not_attempted": [{"port": port, "serial": serial} for port, serial in result.not_attempted],
    }


def _report(result: prov.BatchResult, protection: prov.Protection, show_secret: bool, sims_dir) -> None:
    if result.done:
        serials = [p.record.serial for p in result.done]
        locked = all(p.info.locked for p in result.done)
        click.echo(
            f"Provisioned {len(serials)} token(s){' and locked them' if locked else ' (NOT locked)'}: "
            + ", ".join(serials)
        )
        click.echo(f"Seed file: {result.seed_file} (PSKC, {protection.describe()})")
        if protection.key_file_created:
            click.echo(
                f"Created the key file {protection.key_file} (mode 0600): the seed file cannot be "
                "read without it; keep it apart from the seed file"
            )
    click.echo(f"Manifest: {result.manifest} and {result.manifest_csv.name}")
    if sims_dir is not None and result.done:
        click.echo(f"Virtual tokens (flash images): {sims_dir}")
    if show_secret:
        for p in result.done:
            click.echo(f"secret {p.record.serial} {encode_base32(p.record.secret)}")


def _report_failures(result: prov.BatchResult) -> None:
    for _port, serial, err in result.failed:
        advice = ""
        if err.seed_on_token:
            advice = " [its seed is on the token but not in the seed file: factory-reset it]"
        elif err.seed_on_token is None:
            advice = " [unknown whether the token took the seed: check with keyfob devices / reset it]"
        click.echo(f"Error: {serial} not provisioned: {err}{advice}", err=True)
    for port, serial in result.not_attempted:
        click.echo(f"Error: {port} not attempted ({serial} unused)", err=True)


# --------------------------------------------------------------------------- time-sync


def _signed(n: int | float, unit: str) -> str:
    return f"{n:+g} {unit}"


@click.command("time-sync")
@click.option("--port", "ports", multiple=True, help="Token port (repeat for several; default: every connected token).")
@json_option
def time_sync_cmd(ports, as_json) -> None:
    """Set the tokens' clocks to this computer's UTC time; report the offset found and the drift the
        token has learned (from two syncs at least a week apart). A locked token refuses a correction
    larger than its clock can drift since the last sync (docs/protocol.md section 5)."""
    targets = list(ports) or _all_ports()
    if not targets:
        raise Unavailable("no token found: connect one or give --port")
    worst = 0  # the exit code: the highest of the ports' failures (README, "Exit codes")
    rows = []
    for port in targets:
        try:
            with TokenClient(port) as client:
                sync = client.settime()
                info = client.info()
        except Exception as exc:  # each port on its own line; the others are still synced
            error = as_keyfob_error(exc)
            if error is None:
                raise
            worst = max(worst, errors.kind_of(error).exit_code)
            rows.append({"port": port, **_error_shape(error)})
            click.echo(f"Error: {port}: {error}", err=True)
            continue
        rows.append(
            {
                "port": port,
                "serial": info.serial or None,
                "offset": sync.offset,
                "set": sync.set,
                "jump": sync.jump,
                "jumps": sync.jumps,
                "elapsed": sync.elapsed,
                "drift_ppm": sync.drift_ppm,
                "learned": sync.learned,
            }
        )
        if as_json:
            continue
        if sync.offset is None:
            found = "clock was not running (lost); now set"
            if sync.jump:
                found += f" (clock jump {sync.jumps} of this locked token)"
        elif not sync.set:
            found = f"clock was {_signed(sync.offset, 's')} off: in sync, left as it was"
        else:
            ahead = "ahead" if sync.offset > 0 else "behind" if sync.offset < 0 else "exact"
            found = f"clock was {_signed(sync.offset, 's')} off ({ahead}); now set"
        if sync.learned:
            drift = f"learned drift {_signed(sync.drift_ppm, 'ppm')} over {sync.elapsed / 86400:.1f} days"
        else:
            drift = f"drift in use {_signed(sync.drift_ppm, 'ppm')}"
            if sync.elapsed is not None and sync.elapsed < 7 * 86400:
                drift += " (syncs less than a week apart teach nothing)"
        click.echo(f"{port} {info.serial or '(unprovisioned)'}: {found}; {drift}")
    if as_json:
        emit_json(rows)
    if worst:
        raise SystemExit(worst)


# --------------------------------------------------------------------------- reset


@click.command("reset")
@click.option("--port", default=None, help="Token port (default: the one connected).")
@json_option
def reset_cmd(port: str | None, as_json: bool) -> None:
    """Factory reset: wipes the seed and settings, scrubs the token's flash, and reopens its USB
    console. Needs the token's button: pressed within 10 s and held through its 5 s countdown."""
    port = _one_port(port)
    click.echo(
        f"Token at {port}: press its button within 10 s and hold it through the 5 s countdown on its "
        "screen (let go to cancel). Then keep it powered until this says done.",
        err=True,
    )
    text = {
        "wait": "Waiting for the button (s)",
        "hold": "Hold the button (s)",
        "scrub": "Scrubbing flash (bytes)",
        "release": "Done: let go of the button (s)",
    }
    try:
        with TokenClient(port) as client, _progress() as bar:
            task = bar.add_task(text["wait"], total=10)

            def show(p) -> None:
                bar.update(task, description=text.get(p.step, p.step), completed=p.done, total=max(p.total, 1))

            client.reset(progress=show)
    except Refused as exc:
        if exc.reason == "presence":
            raise errors.Refused("the button was not pressed within 10 s: nothing was reset") from None
        if exc.reason == "cancelled":
            raise errors.Refused("the button was let go before the countdown ended: nothing was reset") from None
        raise
    if as_json:
        emit_json({"port": port, "reset": True})
        return
    click.echo(f"Token at {port} wiped and its flash scrub complete: no seed, USB console open again.")


def register(main: click.Group) -> None:
    main.add_command(deploy_cmd)
    main.add_command(provision_cmd)
    main.add_command(time_sync_cmd)
    main.add_command(reset_cmd)
