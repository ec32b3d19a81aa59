"""A PN532 chip emulator that speaks the chip's byte protocol (CPython).

Owns the chip core only: host frames in, ACK and response frames out, with the
chip's state (configuration, RF field, the listed target), the cards in the field
(placed and removed on a schedule), reply timing near the datasheet's, and fault
injection. It is written separately from the driver in `lib/cpos/` (own frame
parser and encoder) so that the two do not share mistakes; adafruit's driver is the
independent judge of its fidelity (tests/test_pn532_adafruit.py).

Carriers (how bytes reach it) are in `simulator/pn532_carriers.py`: a TCP server for
the firmware on the unix port, and in-process fake UART / I2C / SPI bus objects for
adafruit's driver and ours.

Time comes from an injectable clock (`VirtualClock` for fast deterministic tests,
`RealClock` for a live process). The core is lazy: whatever happened between two
host interactions (a card arriving, activation attempts, a reply becoming ready) is
worked out from the clock when the host next looks.

Behaviour modelled (and its sources):
* Frames, ACK/NACK, error frame: UM0701-02 section 6.2. A host ACK aborts the
  command in progress, a host NACK makes the chip send its last response again, a
  frame with a bad checksum is ignored (no ACK). A new command replaces one still
  running (adafruit's driver relies on that after a timed-out poll).
* Commands: GetFirmwareVersion (IC 32, Ver 1, Rev 6, Support 7), SAMConfiguration,
  RFConfiguration (items 1 field, 2 timings, 5 retries, others accepted),
  InListPassiveTarget (MaxTg 1..2, BrTy 0 only), InRelease, InDataExchange.
  Anything else, or bad parameters: the application-level error frame.
* InListPassiveTarget retries MxRtyPassiveActivation times (FF, the power-on
  default, for ever) and answers NbTg=0 when they are used up.
* Cards follow ISO 14443-3 states: a card answers REQA only when IDLE; a selected
  (ACTIVE) card that sees REQA falls back to IDLE without answering, a released card
  is HALTed. So a card left selected on the reader answers every other poll (the
  field "flicker"), and switching the RF field off powers it down (IDLE again).
* After a reset (power, reset pin, injected) the chip forgets its configuration
  and, on HSU, sleeps until it receives the 0x55 wake-up byte.

Timing (microseconds; estimates from the datasheet's figures, see docs/pn532.md):
ACK 500 after the frame's last byte; simple commands answer 1000 after the ACK;
RF field on 5000 (ISO 14443 guard time) before the first REQA; one activation
attempt without a card 2500; selecting a card 3000/4500/6000 for 4/7/10-byte UIDs
(+2000 for RATS/ATS); UART bytes take 10 bits at the configured baud.
"""
import collections
import random
import threading
import time

FW_VERSION = b"\x32\x01\x06\x07"

T_ACK = 500
T_SIMPLE = 1000
T_FIELD_ON = 5000
T_ATTEMPT = 2500
T_SELECT = {4: 3000, 7: 4500, 10: 6000}
T_ATS = 2000
T_SLOW = 120000
T_BOOT = 2000
T_FORGET = 10_000_000  # superseded schedule entries this much older than the time asked about are dropped
T_HSU_WAKE = 1000  # after the 0x55 byte, the HSU needs this long before it takes bytes (assumed: see docs/pn532.md)

IDLE, ACTIVE, HALT = "idle", "active", "halt"

FAULTS = ("bad_dcs", "bad_lcs", "truncate", "lose_ack", "noise", "garbage", "slow", "drop_response")


class VirtualClock:
    """Simulated time: sleeping advances it at once (tests run fast and repeatably)."""

    def __init__(self, start_us=0):
        self.us = start_us

    def now_us(self):
        return self.us

    def advance_us(self, d):
        self.us += int(d)

    sleep_us = advance_us

    # the driver-side clock interface (cpos.reader.link.SystemClock)
    def ticks_ms(self):
        return self.us // 1000

    def ticks_diff(self, a, b):
        return a - b

    async def sleep_ms(self, ms):
        import asyncio

        self.us += int(ms * 1000)
        await asyncio.sleep(0)


class RealClock:
    """Wall-clock time for a live emulator (TCP server, adafruit's blocking driver)."""

    def __init__(self):
        self._t0 = time.monotonic_ns()

    def now_us(self):
        return (time.monotonic_ns() - self._t0) // 1000

    def sleep_us(self, d):
        if d > 0:
            time.sleep(d / 1e6)

    advance_us = sleep_us

    def us_at(self, monotonic_s):
        """This clock's µs at a `time.monotonic()` reading (for benchmarks)."""
        return (monotonic_s * 1e9 - self._t0) / 1000


class Card:
    """An ISO 14443-A card: UID, SENS_RES (ATQA), SEL_RES (SAK), optional ATS and an
    optional `exchange(data) -> bytes` for InDataExchange."""

    def __init__(self, uid, sens_res=None, sel_res=None, ats=b"", exchange=None, keys=None):
        uid = bytes(uid)
        self.keys = keys  # MIFARE Classic: {sector: (key A, key B)}; auth with another key fails
        if len(uid) not in (4, 7, 10):
            raise ValueError("UID must be 4, 7 or 10 bytes")
        self.uid = uid
        size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(uid)]
        self.sens_res = sens_res if sens_res is not None else (0x0004 | size_bits)
        self.sel_res = sel_res if sel_res is not None else (0x08 if len(uid) == 4 else 0x00)
        self.ats = bytes(ats)
        self.exchange = exchange


def chip_frame(payload):
    """Encode TFI+data as the chip sends it (normal or extended frame)."""
    n = len(payload)
    if n <= 255:
        head = bytes((0, 0, 0xFF, n, (-n) & 0xFF))
    else:
        hi, lo = n >> 8, n & 0xFF
        head = bytes((0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF))
    return head + bytes(payload) + bytes(((-sum(payload)) & 0xFF, 0))


ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"


class PN532Emu:
    """The chip core. Carriers call `host_write`, and read with `uart_read` /
    `frame_ready` + `take_frame`. Control: `place_card`, `remove_card`, `script`,
    `inject`, `reset`, `set_reset_pin`. All methods take `self.lock`."""

    def __init__(self, clock=None, interface="uart", baud=115200, seed=1):
        self.clock = clock or VirtualClock()
        self.interface = interface
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        if interface == "uart":
            self.byte_us = 10e6 / baud
        elif interface == "i2c":
            self.byte_us = 9e6 / 400000
        else:
            self.byte_us = 8e6 / 1000000
        self._events = []  # (t_us, seq, card or None) sorted; None = removal
        self._seq = 0
        self._presentation = None  # (seq, card) of the card in the field now
        self._card_state = IDLE
        self._out = []  # [t_ready_us, bytes, pos]
        self._in = bytearray()
        self.faults = {}
        self.mute_until_reset = False
        self.in_reset = False
        self._boot_until = 0
        # counters the tests read
        self.commands = []  # command codes received, in order
        # the latest cards listed: (µs when the answer's last byte is on the host's wire
        # (UART) or ready to be read (I2C/SPI), UID), for benchmarks
        self.listed = collections.deque(maxlen=4096)
        self.resets = 0
        self.acks_sent = 0
        self.aborted = 0
        self.nacks_received = 0
        self.bad_host_frames = 0
        self._power_on()

    # -- state ----------------------------------------------------------------------
    def _power_on(self):
        self.retries = [0xFF, 0x01, 0xFF]  # MxRtyATR, MxRtyPSL, MxRtyPassiveActivation
        self.timings = [0x00, 0x0B, 0x0A]
        self.field_on = False
        self.field_on_at = 0
        self.sam_mode = None
        self.target = None  # the card listed as target 1
        self._pending = None  # command still running: dict
        self._last_response = None
        self._out = []
        self._in = bytearray()
        self._tx_free = 0
        self._rx_free = 0  # host bytes on the UART line: the next arrives after the previous
        self._awake_at = 0  # HSU: bytes before this time are lost (the chip is waking up)
        self._sleep_after = None  # PowerDown answered: sleep once it has been read out
        self.asleep = True  # LowVbat start mode: asleep until woken, RF off until SAMConfiguration
        self.power_downs = 0

    def now(self):
        return self.clock.now_us()

    # -- schedule ------------------------------------------------------------------
    def _at(self, at_us):
        return self.now() if at_us is None else int(at_us)

    def place_card(self, card, at_us=None):
        """Put a card (Card or UID bytes) in the field at `at_us` (default: now)."""
        if not isinstance(card, Card):
            card = Card(card)
        with self.lock:
            self._seq += 1
            self._events.append((self._at(at_us), self._seq, card))
            self._events.sort(key=lambda e: (e[0], e[1]))
        return card

    def remove_card(self, at_us=None):
        with self.lock:
            self._seq += 1
            self._events.append((self._at(at_us), self._seq, None))
            self._events.sort(key=lambda e: (e[0], e[1]))

    def script(self, steps):
        """`steps`: [(ms_from_now, "place", uid_or_card) | (ms_from_now, "remove")]."""
        base = self.now()
        for st in steps:
            if st[1] == "place":
                self.place_card(st[2], base + int(st[0] * 1000))
            elif st[1] == "remove":
                self.remove_card(base + int(st[0] * 1000))
            else:
                raise ValueError("unknown step %r" % (st,))

    def card_at(self, t):
        """(seq, card) of the presentation in the field at time t, or None."""
        cur = None
        last = -1
        for i, ev in enumerate(self._events):
            if ev[0] > t:
                break
            cur = None if ev[2] is None else (ev[1], ev[2])
            last = i
        if last > 32:
            # a long run: entries superseded long ago are never asked about again (the RF
            # looks at now or a moment before), and scanning them would cost each attempt
            k, cut = 0, t - T_FORGET
            while k < last and self._events[k][0] < cut:
                k += 1
            del self._events[:k]
        return cur

    def _card_for_rf(self, t):
        """The card the RF sees at t, with its ISO 14443 state updated for a new
        presentation or a field that was off."""
        pres = self.card_at(t)
        if pres is None:
            self._presentation = None
            return None
        if self._presentation is None or self._presentation[0] != pres[0]:
            self._presentation = pres
            self._card_state = IDLE
        return pres[1]

    # -- faults --------------------------------------------------------------------
    def inject(self, kind, count=1):
        """Arm a fault for the next `count` occasions (see FAULTS), or act now:
        "reset" (the chip resets itself), "mute" (stops answering until a reset pin
        pulse or power cycle: the I2C lock-up seen in the field)."""
        with self.lock:
            if kind == "reset":
                self.reset()
            elif kind == "mute":
                self.mute_until_reset = True
                self._out = []
                self._pending = None
            elif kind in FAULTS:
                self.faults[kind] = self.faults.get(kind, 0) + count
            else:
                raise ValueError("unknown fault %r" % kind)

    def _take_fault(self, kind):
        n = self.faults.get(kind, 0)
        if n:
            self.faults[kind] = n - 1
            return True
        return False

    def reset(self):
        """The chip resets (power glitch or reset line): configuration lost."""
        with self.lock:
            self.resets += 1
            self.mute_until_reset = False
            self._power_on()
            self._boot_until = self.now() + T_BOOT

    def set_reset_pin(self, level):
        """RSTPD_N: low holds the chip in reset, the rising edge reboots it."""
        with self.lock:
            if not level:
                self.in_reset = True
                self._out = []
                self._pending = None
            elif self.in_reset:
                self.in_reset = False
                self.reset()

    def wake_by_select(self):
        """SPI: NSS going low wakes a sleeping chip; that transaction's bytes are lost.
        Returns True if it was asleep."""
        with self.lock:
            self._advance()
            if self.asleep:
                self.asleep = False
                return True
            return False

    def _dead(self):
        return self.in_reset or self.mute_until_reset or self.now() < self._boot_until

    # -- output queue ------------------------------------------------------------
    def _emit(self, t, data, response=False):
        if response:
            self._last_response = data
            if self._take_fault("drop_response"):
                return
            if self._take_fault("garbage"):
                data = bytes(self.rng.randrange(256) for _ in range(len(data)))
            if self._take_fault("bad_dcs"):
                data = data[:-2] + bytes(((data[-2] + 1) & 0xFF,)) + data[-1:]
            if self._take_fault("bad_lcs"):
                data = data[:4] + bytes(((data[4] + 1) & 0xFF,)) + data[5:]
            if self._take_fault("truncate"):
                data = data[: len(data) // 2]
            if self._take_fault("noise"):
                data = bytes(self.rng.randrange(1, 256) for _ in range(8)) + data
        if self.interface == "uart":
            t = max(t, self._tx_free)
            self._tx_free = t + len(data) * self.byte_us
        self._out.append([t, data, 0])

    def _advance(self):
        now = self.now()
        # HSU: once its answer is on the wire; I2C/SPI: once the host has read it out
        if self._sleep_after is not None and now >= self._sleep_after and (self.interface == "uart" or not self._out):
            self._sleep_after = None
            self.asleep = True
            self.field_on = False
            self._presentation = None
            self.target = None
            self.power_downs += 1
        p = self._pending
        if p is None:
            return
        if p["cmd"] == 0x4A:
            self._advance_poll(p, now)
        elif p["ready"] <= now:
            self._pending = None
            self._emit(p["ready"], p["frame"], True)

    def _advance_poll(self, p, now):
        while self._pending is p and p["next"] <= now:
            t = p["next"]
            card = self._card_for_rf(t)
            answered = False
            if card is not None:
                if self._card_state == IDLE:
                    answered = True
                elif self._card_state == ACTIVE:
                    self._card_state = IDLE  # REQA is not for an ACTIVE card: it falls back
            if answered:
                self._card_state = ACTIVE
                self.target = card
                t_done = t + T_SELECT[len(card.uid)] + (T_ATS if card.ats else 0)
                if self._take_fault("slow"):
                    t_done += T_SLOW
                body = bytes((0xD5, 0x4B, 1, 1)) + card.sens_res.to_bytes(2, "big") + bytes(
                    (card.sel_res, len(card.uid))) + card.uid + card.ats
                self._pending = None
                self._emit(t_done, chip_frame(body), True)
                self.listed.append((self._tx_free if self.interface == "uart" else t_done, card.uid))
                return
            p["tries"] += 1
            if self.retries[2] != 0xFF and p["tries"] > self.retries[2]:
                self._pending = None
                self.target = None
                self._emit(t + T_ATTEMPT, chip_frame(b"\xd5\x4b\x00"), True)
                return
            p["next"] = t + T_ATTEMPT

    # -- host side -------------------------------------------------------------------
    def host_write(self, data):
        """Bytes from the host (a whole write; UART/TCP may split it anywhere)."""
        with self.lock:
            self._advance()
            if self._dead():
                return
            data = bytes(data)
            if self.interface != "uart":
                self.asleep = False  # I2C: its address wakes it (SPI: see wake_by_select)
                self._in += data
                self._parse_host(self.now())
                return
            # HSU: bytes follow each other on the line; asleep, only 0x55 wakes the chip,
            # and what arrives in the next T_HSU_WAKE is lost
            t0 = max(self.now(), self._rx_free)
            self._rx_free = t0 + len(data) * self.byte_us
            if self.asleep:
                k = data.find(b"\x55")
                if k < 0:
                    return
                self.asleep = False
                self._awake_at = t0 + (k + 1) * self.byte_us + T_HSU_WAKE
            if t0 < self._awake_at:
                lost = int((self._awake_at - t0) / self.byte_us + 0.999)
                data = data[lost:]
            self._in += data
            if len(self._in) > 1024:
                del self._in[:-300]
            self._parse_host(self._rx_free)

    def _parse_host(self, t_end):
        buf = self._in
        while True:
            i = buf.find(b"\x00\xff")
            if i < 0:
                del buf[: max(0, len(buf) - 1)]
                return
            if len(buf) < i + 4:
                del buf[:i]
                return
            ln, lcs = buf[i + 2], buf[i + 3]
            if ln == 0 and lcs == 0xFF:  # host ACK: abort
                del buf[: i + 4]
                if self._pending is not None:
                    self.aborted += 1
                self._pending = None
                self._out = [o for o in self._out if o[0] <= self.now()]
                continue
            if ln == 0xFF and lcs == 0:  # host NACK: send the last response again
                del buf[: i + 4]
                self.nacks_received += 1
                if self._last_response is not None:
                    self._emit(t_end + T_ACK, self._last_response)
                continue
            if ln == 0xFF and lcs == 0xFF:
                if len(buf) < i + 7:
                    del buf[:i]
                    return
                ln = (buf[i + 4] << 8) | buf[i + 5]
                ok = (buf[i + 4] + buf[i + 5] + buf[i + 6]) & 0xFF == 0
                hdr = 7
            else:
                ok = (ln + lcs) & 0xFF == 0
                hdr = 4
            if not ok or ln < 2:
                self.bad_host_frames += 1
                del buf[: i + 1]
                continue
            if len(buf) < i + hdr + ln + 1:
                del buf[:i]
                return
            body = bytes(buf[i + hdr: i + hdr + ln])
            dcs = buf[i + hdr + ln]
            del buf[: i + hdr + ln + 1]
            if (sum(body) + dcs) & 0xFF or body[0] != 0xD4:
                self.bad_host_frames += 1  # the chip ignores it: no ACK
                continue
            self._command(body[1], body[2:], t_end)

    def _command(self, cmd, params, t):
        self.commands.append(cmd)
        self._pending = None  # a new command replaces one still running
        self._out = [o for o in self._out if o[0] <= self.now()]
        t_ack = t + T_ACK
        if self._take_fault("lose_ack"):
            pass
        else:
            self.acks_sent += 1
            self._emit(t_ack, ACK)
        t_ans = t_ack + T_SIMPLE
        r = None
        if cmd == 0x02:
            r = b"\xd5\x03" + FW_VERSION
        elif cmd == 0x14 and 1 <= len(params) <= 3 and 1 <= params[0] <= 4:
            self.sam_mode = params[0]
            r = b"\xd5\x15"
        elif cmd == 0x32 and len(params) >= 1:
            r = self._rf_configuration(params[0], params[1:])
        elif self.sam_mode is None and cmd in (0x40, 0x4A, 0x52):
            r = None  # LowVbat start mode: RF is off until SAMConfiguration (AN10609 "Low battery")
        elif cmd == 0x4A and len(params) >= 2 and 1 <= params[0] <= 2 and params[1] == 0:
            t0 = t_ack
            if not self.field_on:
                self.field_on = True
                self._presentation = None  # cards in the field power up: IDLE
                t0 += T_FIELD_ON
            self.target = None
            self._pending = {"cmd": 0x4A, "next": t0, "tries": 0}
            self._advance()
            return
        elif cmd == 0x52 and len(params) == 1:
            status = 0
            if self.target is not None and params[0] in (0, 1):
                if self._presentation is not None and self._presentation[1] is self.target:
                    self._card_state = HALT
                self.target = None
            elif params[0] not in (0, 1):
                status = 0x27
            r = bytes((0xD5, 0x53, status))
        elif cmd == 0x16 and 1 <= len(params) <= 2:
            # PowerDown (WakeUpEnable, [GenerateIRQ]): answer status 0, then sleep until a
            # wake-up source it allows (HSU 0x55, I2C address, SPI chip select) acts
            self._pending = {"cmd": cmd, "ready": t_ans, "frame": chip_frame(b"\xd5\x17\x00")}
            self._sleep_after = t_ans + len(chip_frame(b"\xd5\x17\x00")) * self.byte_us
            self._wake_enable = params[0]
            self._advance()
            return
        elif cmd == 0x40 and len(params) >= 1:
            r = self._data_exchange(params[0], params[1:], t_ack)
            t_ans = t_ack + T_SIMPLE + 100 * len(params)
        if r is None:
            self._emit(t_ans, ERROR, True)
            return
        self._pending = {"cmd": cmd, "ready": t_ans, "frame": chip_frame(r)}
        self._advance()

    def _rf_configuration(self, item, data):
        if item == 0x01 and len(data) == 1:
            on = bool(data[0] & 1)
            if not on:
                self._presentation = None  # cards lose power
                self.target = None
            self.field_on = on
        elif item == 0x02 and len(data) == 3:
            self.timings = list(data)
        elif item == 0x05 and len(data) == 3:
            self.retries = list(data)
        elif item in (0x04, 0x0A, 0x0B, 0x0C, 0x0D) and data:
            pass
        else:
            return None
        return b"\xd5\x33"

    def _data_exchange(self, tg, data, t):
        card = self._card_for_rf(t)
        if self.target is None or tg != 1:
            status, answer = 0x27, b""
        elif card is not self.target or self._card_state != ACTIVE:
            status, answer = 0x01, b""  # the card left: it does not answer
        elif card.keys is not None and len(data) >= 8 and data[0] in (0x60, 0x61):
            # MIFARE Classic authentication (key type, block, 6-byte key, UID): a wrong key
            # is error 0x14 (UM0701-02 table 16), and the card drops out of the session
            keys = card.keys.get(data[1] // 4)
            if keys is not None and bytes(data[2:8]) == keys[data[0] - 0x60]:
                status, answer = 0x00, b""
            else:
                status, answer = 0x14, b""
                self._card_state = IDLE
                self.target = None
        elif card.exchange is None:
            status, answer = 0x01, b""
        else:
            status, answer = 0x00, bytes(card.exchange(bytes(data)))
        return bytes((0xD5, 0x41, status)) + answer

    # -- carrier side ------------------------------------------------------------
    def uart_available(self):
        """Bytes the host UART has received by now (not yet read)."""
        with self.lock:
            self._advance()
            now = self.now()
            n = 0
            for o in self._out:
                if o[0] > now:
                    break
                got = min(len(o[1]), int((now - o[0]) / self.byte_us) + 1) - o[2]
                n += max(0, got)
                if o[2] + got < len(o[1]):
                    break
            return n

    def uart_read(self, n):
        with self.lock:
            self._advance()
            now = self.now()
            out = bytearray()
            while self._out and len(out) < n:
                o = self._out[0]
                if o[0] > now:
                    break
                arrived = min(len(o[1]), int((now - o[0]) / self.byte_us) + 1)
                k = min(arrived - o[2], n - len(out))
                if k <= 0:
                    break
                out += o[1][o[2]:o[2] + k]
                o[2] += k
                if o[2] >= len(o[1]):
                    self._out.pop(0)
                else:
                    break
            return bytes(out)

    def uart_drop_received(self):
        self.uart_read(1 << 20)

    def frame_ready(self):
        """I2C/SPI: is a frame (ACK or response) waiting? (the ready/status bit)"""
        with self.lock:
            self._advance()
            if self._dead():
                return False
            return bool(self._out) and self._out[0][0] <= self.now()

    def take_frame(self):
        with self.lock:
            if self.frame_ready():
                return self._out.pop(0)[1]
            return b""
