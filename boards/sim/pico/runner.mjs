// The emulated Raspberry Pi Pico: the unmodified MicroPython UF2 (already in the flash
// file) running in rp2040js, with what rp2040js 1.4.1 lacks added here (FIELD-NOTES,
// "The real Pico port in an emulated RP2040"):
//   - flash erase/program, by hooking the boot ROM's flash_range_erase ('RE') and
//     flash_range_program ('RP'), written through to the flash file at once (NOR rules:
//     erase -> 0xFF, program ANDs bits), so a power cut keeps exactly the finished ops;
//   - USB CDC pacing (an OUT read is answered only when host bytes exist, one in flight);
//   - emulated time never ahead of wall time (WFI/WFE would otherwise skip to the next
//     alarm, and device-side timeouts would expire at once);
//   - I2C devices answering both the I2C peripheral (event per byte) and bit-banged
//     pins (the rp2 port's scan() sends zero-length writes in software), NACKs that end
//     the transfer with EIO as on a chip;
//   - the button on GP15 (a pull-up: high while released);
//   - machine.reset() (the watchdog): reported, and the host starts a new chip.
//
// The parts themselves (SSD1306 panel, DS3231 clock) live in the host process
// (keyfob.sim.pico), which talks to this one over stdin/stdout in frames:
//   [type: 1 byte][length: 2 bytes LE][payload]
// host -> chip: 'u' USB bytes from the host; 'g' [level] button pin; 'p' [ms u32] press
//   for ms of emulated time; 'a' [addr...] I2C addresses present; 'b' [bytes] answer to
//   a read start; 'o' power off (exit).
// chip -> host: 'U' USB bytes to the host; 'W' [addr][ms u32][bytes] one I2C write
//   transaction; 'R' [addr] a read transaction starts (the chip waits for 'b');
//   'E' [addr][n] it ended after n bytes; 'Q' [ms u32][busy per mille u16][flash ops u32]
//   every 20 ms of emulated time; 'D' [ms u32] a timed press went down; 'P' it let go; 'F' [ms u32][op][offset u32]
//   [count u32] a flash op done; 'C' the host's USB stack has configured the CDC port; 'Z' the watchdog reset the chip; 'X' [op index] the power
//   was cut at a flash op (--cut-after-ops).
//
// Usage: node runner.mjs --bootrom ROM --flash FLASH.bin [--cut-after-ops N]
//        [--cut-erase-done 0|1] [--op-log FILE]
// --op-log appends every flash op as it is done: [op u8][offset u32][count u32], then for a
// program its count bytes: a test rebuilds the flash as a cut after any op would leave it.
import fs from 'node:fs';
import { RP2040, USBCDC } from 'rp2040js';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);

const FLASH_SIZE = 2 * 1024 * 1024; // the Pico's W25Q16
const SECTOR = 4096;
const PAGE = 256;
const CYCLE_NS = 8; // 125 MHz
const WINDOW_NS = 20e6; // idle reports every 20 ms of emulated time
const PIN_SDA = 4;
const PIN_SCL = 5;
const PIN_BUTTON = 15;
const I2C_TX_EMPTY = 1 << 4;

const mcu = new RP2040();
mcu.logger = { debug() {}, info() {}, warn() {}, error(name, msg) { process.stderr.write(`${name}: ${msg}\n`); } };
const rom = fs.readFileSync(args.bootrom);
mcu.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.length / 4));

const flashFd = fs.openSync(args.flash, 'r+');
fs.readSync(flashFd, mcu.flash, 0, FLASH_SIZE, 0);

// -- frames to and from the host ----------------------------------------------------

const out = [];
let outTimer = null;
function send(type, payload = new Uint8Array(0)) {
  const head = Buffer.alloc(3);
  head[0] = type.charCodeAt(0);
  head.writeUInt16LE(payload.length, 1);
  out.push(head, Buffer.from(payload.buffer, payload.byteOffset, payload.length));
  if (outTimer === null) outTimer = setImmediate(flush);
}
function flush() {
  outTimer = null;
  if (out.length) fs.writeSync(1, Buffer.concat(out.splice(0)));
}
function flushNow() {
  if (outTimer !== null) clearImmediate(outTimer);
  flush();
}
function u32(v) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
function emuMs() {
  return Math.floor(mcu.clock.nanos / 1e6);
}

// -- flash: the boot ROM's erase and program entries --------------------------------

function romFunc(code) {
  const b = Buffer.from(mcu.bootrom.buffer);
  let at = b.readUInt16LE(0x14);
  for (;;) {
    const c = b.readUInt16LE(at);
    if (c === 0) throw new Error('boot ROM function not found');
    if (c === code) return b.readUInt16LE(at + 2) & ~1;
    at += 4;
  }
}
const ROM_ERASE = romFunc('R'.charCodeAt(0) | ('E'.charCodeAt(0) << 8));
const ROM_PROGRAM = romFunc('R'.charCodeAt(0) | ('P'.charCodeAt(0) << 8));
const cutAfter = args['cut-after-ops'] === undefined ? -1 : Number(args['cut-after-ops']);
const cutEraseDone = args['cut-erase-done'] === '1';
let flashOps = 0;
const opLog = args['op-log'] === undefined ? null : fs.openSync(args['op-log'], 'a');

function cut(opIndex) {
  flushNow();
  const b = u32(opIndex);
  fs.writeSync(1, Buffer.concat([Buffer.from([88, 4, 0]), b])); // 'X'
  fs.closeSync(flashFd);
  process.exit(0);
}

function flashOp(kind, offset, count, data) {
  const index = flashOps++;
  const cutHere = index === cutAfter;
  if (cutHere && !(kind === 0 && cutEraseDone)) cut(index); // the op never happened
  if (kind === 0) {
    mcu.flash.fill(0xff, offset, offset + count);
    fs.writeSync(flashFd, mcu.flash, offset, count, offset);
  } else {
    for (let i = 0; i < count; i++) mcu.flash[offset + i] &= data[i];
    fs.writeSync(flashFd, mcu.flash, offset, count, offset);
  }
  if (opLog !== null) {
    const head = Buffer.concat([Buffer.from([kind]), u32(offset), u32(count)]);
    fs.writeSync(opLog, kind === 0 ? head : Buffer.concat([head, Buffer.from(data)]));
  }
  if (cutHere) cut(index); // an erase that had finished when the power went
  send('F', Buffer.concat([u32(emuMs()), Buffer.from([kind]), u32(offset), u32(count)]));
}

function romCall() {
  const { core } = mcu;
  const r = core.registers;
  if (core.PC === ROM_ERASE) {
    // flash_range_erase(offset, count, block_size, block_cmd): whole 4 KB sectors
    const offset = r[0] & ~(SECTOR - 1);
    const end = Math.min(FLASH_SIZE, (r[0] + r[1] + SECTOR - 1) & ~(SECTOR - 1));
    flashOp(0, offset, end - offset);
  } else {
    // flash_range_program(offset, data, count): 256-byte pages
    const offset = r[0];
    const count = Math.min(r[2], FLASH_SIZE - offset);
    const data = new Uint8Array(count);
    for (let i = 0; i < count; i++) data[i] = mcu.readUint8(r[1] + i);
    flashOp(1, offset, count, data);
  }
  core.PC = core.LR & ~1; // return to the caller as the ROM routine would
}

// -- USB CDC, paced ------------------------------------------------------------------

const cdc = new USBCDC(mcu.usbCtrl);
const hostBytes = [];
let readWanted = 0;
mcu.usbCtrl.onEndpointRead = (endpoint, size) => {
  if (endpoint === cdc.outEndpoint) {
    readWanted = size;
    deliver();
  }
};
function deliver() {
  if (!readWanted || !hostBytes.length) return;
  const n = Math.min(readWanted, hostBytes.length);
  readWanted = 0; // one delivery in flight: the device arms the endpoint again when it has room
  mcu.usbCtrl.endpointReadDone(cdc.outEndpoint, Uint8Array.from(hostBytes.splice(0, n)));
}
cdc.onSerialData = (buf) => send('U', Uint8Array.from(buf));
cdc.onDeviceConnected = () => send('C');

// -- I2C: the peripheral (event per byte) --------------------------------------------

const present = new Set();
const i2c = mcu.i2c[0];
let txn = null; // {addr, read, bytes | data, n}
let paused = false;

function endTxn() {
  if (txn === null) return;
  if (txn.read) send('E', Buffer.from([txn.addr, txn.n]));
  else send('W', Buffer.concat([Buffer.from([txn.addr]), u32(emuMs()), Buffer.from(txn.bytes)]));
  txn = null;
}
i2c.onStart = () => {
  endTxn(); // a repeated start ends the write that set the register pointer
  i2c.completeStart();
};
i2c.onConnect = (addr, mode) => {
  if (!present.has(addr)) {
    i2c.completeConnect(false);
    i2c.setInterrupts(I2C_TX_EMPTY); // as the chip does: the SDK then sees the abort (EIO)
    return;
  }
  if (mode === 1) {
    txn = { addr, read: true, data: null, n: 0 };
    paused = true; // the part's answer comes from the host; the CPU waits for it
    send('R', Buffer.from([addr]));
  } else {
    txn = { addr, read: false, bytes: [] };
    i2c.completeConnect(true);
  }
};
i2c.onWriteByte = (value) => {
  txn.bytes.push(value);
  i2c.completeWrite(true);
};
i2c.onReadByte = () => {
  const v = txn.n < txn.data.length ? txn.data[txn.n] : 0xff;
  txn.n++;
  i2c.completeRead(v);
};
i2c.onStop = () => {
  endTxn();
  i2c.completeStop();
};

// -- I2C: the same parts on bit-banged pins (scan) -----------------------------------
// Open drain with pull-ups: a line is low while anyone drives it low. A part only
// acknowledges its address; scan() sends nothing else.

const bus = { scl: true, sda: true, state: 'idle', bits: 0, shift: 0, ackLow: false };
function driven(pin) {
  const p = mcu.gpio[pin];
  return p.outputEnable && !p.outputValue;
}
function busUpdate() {
  const scl = !driven(PIN_SCL);
  const sda = !driven(PIN_SDA) && !bus.ackLow;
  if (scl && bus.scl && sda !== bus.sda) {
    // SDA moved while SCL high: START (falling) or STOP (rising)
    bus.state = sda ? 'idle' : 'addr';
    bus.bits = 0;
    bus.shift = 0;
  } else if (scl && !bus.scl && bus.state === 'addr') {
    bus.shift = (bus.shift << 1) | (sda ? 1 : 0);
    bus.bits++;
  } else if (!scl && bus.scl) {
    if (bus.state === 'addr' && bus.bits === 8) {
      bus.state = 'ack';
      bus.ackLow = present.has(bus.shift >> 1);
    } else if (bus.state === 'ack') {
      bus.state = 'rest';
      bus.ackLow = false;
    }
  }
  bus.scl = scl;
  bus.sda = !driven(PIN_SDA) && !bus.ackLow;
  mcu.gpio[PIN_SCL].setInputValue(bus.scl);
  mcu.gpio[PIN_SDA].setInputValue(bus.sda);
}
mcu.gpio[PIN_SCL].addListener(busUpdate);
mcu.gpio[PIN_SDA].addListener(busUpdate);
busUpdate();

// -- the button ------------------------------------------------------------------------

const button = mcu.gpio[PIN_BUTTON];
button.setInputValue(true);
const release = mcu.clock.createAlarm(() => {
  button.setInputValue(true);
  send('P');
});

// -- the watchdog ------------------------------------------------------------------------

mcu.peripherals[0x40058].onWatchdogTrigger = () => {
  flushNow();
  fs.writeSync(1, Buffer.from([90, 0, 0])); // 'Z'
  fs.closeSync(flashFd);
  process.exit(0);
};

// -- frames from the host ------------------------------------------------------------

let inBuf = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  inBuf = Buffer.concat([inBuf, chunk]);
  while (inBuf.length >= 3) {
    const len = inBuf.readUInt16LE(1);
    if (inBuf.length < 3 + len) break;
    const type = String.fromCharCode(inBuf[0]);
    const body = inBuf.subarray(3, 3 + len);
    inBuf = inBuf.subarray(3 + len);
    onFrame(type, body);
  }
  kick();
});
process.stdin.on('end', () => process.exit(0)); // the host went away: no orphan chip

function onFrame(type, body) {
  switch (type) {
    case 'u':
      for (const b of body) hostBytes.push(b);
      deliver();
      break;
    case 'g':
      release.cancel();
      button.setInputValue(body[0] !== 0);
      break;
    case 'p':
      button.setInputValue(false);
      release.schedule(body.readUInt32LE(0) * 1e6);
      send('D', u32(emuMs()));
      break;
    case 'a':
      present.clear();
      for (const a of body) present.add(a);
      break;
    case 'b':
      txn.data = Uint8Array.from(body);
      paused = false;
      i2c.completeConnect(true);
      break;
    case 'o':
      flushNow();
      fs.closeSync(flashFd);
      process.exit(0);
  }
}

// -- the run loop: emulated time never runs ahead of wall time -----------------------

const { core, clock } = mcu;
core.PC = 0x10000000; // boot2 at the start of flash, as the boot ROM jumps there
core.SP = 0x20042000;
const wall0 = process.hrtime.bigint();
const nanos0 = clock.nanos;
let windowEnd = clock.nanos + WINDOW_NS;
let busy = 0;
let timer = null;

function report() {
  const permille = Math.min(1000, Math.round((busy * CYCLE_NS * 1000) / WINDOW_NS));
  const b = Buffer.alloc(10);
  b.writeUInt32LE(emuMs() >>> 0, 0);
  b.writeUInt16LE(permille, 4);
  b.writeUInt32LE(flashOps >>> 0, 6);
  send('Q', b);
  busy = 0;
  windowEnd += WINDOW_NS;
}

function run() {
  timer = null;
  if (paused) return;
  const sliceEnd = performance.now() + 10;
  const allowed = nanos0 + Number(process.hrtime.bigint() - wall0);
  let n = 0;
  while (!paused) {
    if (clock.nanos >= windowEnd) report();
    if (core.waiting) {
      const next = clock.nanosToNextAlarm;
      const target = Math.min(clock.nanos + (next > 0 ? next : WINDOW_NS), windowEnd);
      if (target > allowed) {
        if (allowed > clock.nanos) clock.tick(allowed - clock.nanos);
        timer = setTimeout(run, Math.max(1, Math.min(5, (target - allowed) / 1e6)));
        return;
      }
      clock.tick(target - clock.nanos);
    } else {
      if (core.PC === ROM_ERASE || core.PC === ROM_PROGRAM) romCall();
      const cycles = core.executeInstruction();
      busy += cycles;
      clock.tick(cycles * CYCLE_NS);
      if (++n === 2000) {
        n = 0;
        if (performance.now() > sliceEnd || clock.nanos > allowed + 2e6) break;
      }
    }
  }
  if (!paused) timer = setImmediate(run);
}
function kick() {
  if (paused) return;
  if (timer !== null) {
    clearTimeout(timer);
    clearImmediate(timer);
  }
  timer = setImmediate(run);
}
kick();
