"""PN532 command layer: the few commands a terminal needs, over any link.

Owns the command/response exchange (send frame, wait for ACK, wait for the response,
NACK once to have a corrupted response sent again, ACK to abort a command that did not
finish) and the commands: GetFirmwareVersion, SAMConfiguration, RFConfiguration
(RF field, timeouts, retries), InListPassiveTarget (ISO 14443-A, 106 kbps, one
target), InRelease and InDataExchange. Only the errors of `cpos.reader.frame` leave it:
`PN532Timeout`, `FrameError`, `ChipError` (all `PN532Error`); an OSError of the link
is passed on as it is (the read loop in `tap.py` counts both).

Every command ends by a deadline whatever the chip sends (`deadline_ms`); one that
does not finish is aborted and drained, so its late answer is never taken for the
next command's. Two ways to look for a card: `read_uid()`, one poll with bounded
passive activation retries (`passive_retries`: it ends in tens of ms with or without
a card), and `wait_for_card(ms)`, a pending poll the chip answers as soon as a card
enters the field (retries FF, bounded by our own deadline and an abort). Buffers
are allocated once; a UID lands in `self.uid`.
"""
from cpos.compat import const
from cpos.reader import frame as F
from cpos.uid import UID_LENGTHS, UID_MAX

CMD_GET_FIRMWARE_VERSION = const(0x02)
CMD_SAM_CONFIGURATION = const(0x14)
CMD_RF_CONFIGURATION = const(0x32)
CMD_IN_DATA_EXCHANGE = const(0x40)
CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)
CMD_IN_RELEASE = const(0x52)

RF_ITEM_FIELD = const(0x01)
RF_ITEM_TIMINGS = const(0x02)
RF_ITEM_RETRIES = const(0x05)

PN532_IC = const(0x32)
ACK_TIMEOUT_MS = const(30)  # the chip ACKs within ~1 ms of the frame's end
POLL_TIMEOUT_MS = const(250)  # InListPassiveTarget can take >100 ms with a card at the edge
SETTLE_QUIET_MS = const(3)  # after an abort: the line quiet this long means nothing more is coming
SETTLE_MAX_MS = const(20)  # ...and an abort's drain never takes longer than this
RETRY_FOREVER = const(0xFF)  # MxRtyPassiveActivation: look for a card until one answers

_ILPT_106A = b"\x01\x00"  # MaxTg 1, BrTy 106 kbps type A
_FIELD_ON = bytes((RF_ITEM_FIELD, 1))
_FIELD_OFF = bytes((RF_ITEM_FIELD, 0))
_RELEASE_ALL = b"\x00"


class PN532:
    """One PN532 on one link (`cpos.reader.link`). All I/O methods are coroutines."""

    def __init__(self, link, passive_retries=2):
        self.link = link
        self.passive_retries = passive_retries
        self.reader = F.FrameReader()
        self._tx = bytearray(F.frame_size(F.MAX_DATA))
        self._params = bytearray(3)
        self.uid = bytearray(UID_MAX)
        self.uid_len = 0
        self.sens_res = 0
        self.sel_res = 0
        self.firmware = None
        # counters of what the exchange itself recovered from
        self.nacks_sent = 0
        self.aborts = 0
        self.stray_frames = 0
        self.acked = False  # the last command was ACKed (it reached the chip)
        self._passive = -1  # MxRtyPassiveActivation as last configured (-1: unknown)
        self._selected = False  # a card was listed by wait_for_card and not yet released

    # -- the exchange ----------------------------------------------------------
    async def _send(self, buf, n):
        await self.link.write(buf, n)

    async def abort(self):
        """Abort the command in progress and drain (UM0701-02 6.2.1.3): send an ACK, then
        let whatever the chip was already sending arrive and drop it, until the line has
        been quiet for SETTLE_QUIET_MS (never longer than SETTLE_MAX_MS). A stale answer
        to the aborted command can then not be taken for the next command's answer."""
        self.aborts += 1
        await self._send(F.ACK_FRAME, len(F.ACK_FRAME))
        link, reader = self.link, self.reader
        clock = link.clock
        t0 = clock.ticks_ms()
        while True:
            left = SETTLE_MAX_MS - clock.ticks_diff(clock.ticks_ms(), t0)
            if left <= 0:
                break
            ev = await link.read_event(reader, left if left < SETTLE_QUIET_MS else SETTLE_QUIET_MS, 0)
            if ev == F.NONE:
                break
            if ev == F.FRAME:
                self.stray_frames += 1
        link.drain()
        reader.reset()

    @staticmethod
    def deadline_ms(timeout_ms):
        """The longest a `command(..., timeout_ms)` can take, whatever the chip sends:
        the ACK wait, the response wait and the drain of an abort (plus at most one
        bus read or one stream poll in flight when a limit passes)."""
        return ACK_TIMEOUT_MS + timeout_ms + SETTLE_MAX_MS

    async def command(self, cmd, params=b"", timeout_ms=100, maxlen=32):
        """Run one command; return the response's data after its code (a memoryview
        into the reader's buffer, valid until the next command).

        Ends within `deadline_ms(timeout_ms)` whatever the chip sends (ACKs, NACKs,
        stray frames or noise for ever): the ACK must come within ACK_TIMEOUT_MS of
        the write, the response within `timeout_ms` of the ACK; past either limit the
        command is aborted and drained, and PN532Timeout raised (`self.acked` says
        whether the chip had ACKed). A frame that arrives before this command's ACK
        is a leftover of an earlier command: counted in `stray_frames`, never taken.
        """
        n = F.encode_into(self._tx, F.TFI_HOST, cmd, params)
        link, reader = self.link, self.reader
        clock = link.clock
        link.drain()
        reader.reset()
        self.acked = False
        await self._send(self._tx, n)
        t0 = clock.ticks_ms()
        while True:  # the ACK
            left = ACK_TIMEOUT_MS - clock.ticks_diff(clock.ticks_ms(), t0)
            if left <= 0:
                await self.abort()  # it may have been lost on the way: make sure nothing runs
                raise F.PN532Timeout("no ACK for 0x%02x" % cmd)
            ev = await link.read_event(reader, left, 6)
            if ev == F.ACK:
                break
            if ev == F.ERROR_FRAME_EVT:
                raise F.ChipError(-1, "error frame")
            if ev == F.FRAME:
                self.stray_frames += 1  # a late answer to an earlier command
        self.acked = True
        t0 = clock.ticks_ms()
        nack_left = 1
        while True:  # the response
            left = timeout_ms - clock.ticks_diff(clock.ticks_ms(), t0)
            if left <= 0:
                await self.abort()
                raise F.PN532Timeout("no response to 0x%02x" % cmd)
            ev = await link.read_event(reader, left, maxlen)
            if ev == F.FRAME:
                data = reader.data()
                if reader.tfi == F.TFI_CHIP and len(data) >= 1 and data[0] == cmd + 1:
                    return data[1:]
                self.stray_frames += 1  # not an answer to this command
            elif ev == F.BAD_FRAME and not self._ours(reader, cmd):
                pass  # noise that passed the length check: a NACK would fetch the chip's
                # last response, which may be an earlier command's (a stale answer)
            elif ev == F.BAD_FRAME and nack_left:
                nack_left -= 1
                self.nacks_sent += 1
                await self._send(F.NACK_FRAME, len(F.NACK_FRAME))
            elif ev == F.ERROR_FRAME_EVT:
                raise F.ChipError(-1, "error frame")
            elif ev == F.BAD_FRAME:
                await self.abort()
                raise F.FrameError("corrupt response to 0x%02x" % cmd)
            # ACK, NACK, NONE: keep waiting until the limit

    @staticmethod
    def _ours(reader, cmd):
        """The last BAD_FRAME claims to be the chip's answer to `cmd`."""
        return reader.tfi == F.TFI_CHIP and reader.length >= 2 and reader.buf[reader.start + 1] == cmd + 1

    # -- commands ------------------------------------------------------------------
    async def get_firmware_version(self):
        """Return (IC, Ver, Rev, Support); IC is 0x32 for a PN532."""
        d = await self.command(CMD_GET_FIRMWARE_VERSION, b"", 50, 8)
        if len(d) < 4:
            raise F.FrameError("short firmware version")
        self.firmware = (d[0], d[1], d[2], d[3])
        return self.firmware

    async def sam_configuration(self, mode=1, timeout=0x14, irq=1):
        p = self._params
        p[0] = mode
        p[1] = timeout
        p[2] = irq
        await self.command(CMD_SAM_CONFIGURATION, p, 50, 4)

    async def rf_configuration(self, item, data):
        await self.command(CMD_RF_CONFIGURATION, bytes((item,)) + bytes(data), 50, 4)

    async def set_retries(self, passive, atr=0xFF, psl=0x01):
        """RFConfiguration item 5. `passive` FF would retry for ever: refused here."""
        if not 0 <= passive < 0xFF:
            raise ValueError("passive activation retries must be bounded (0..254)")
        self._passive = -1
        await self.rf_configuration(RF_ITEM_RETRIES, (atr, psl, passive))
        self._passive = passive

    async def set_timeouts(self, atr_res=0x0B, retry=0x0A):
        """RFConfiguration item 2: ATR_RES and InDataExchange timeouts (100 us * 2^(n-1))."""
        await self.rf_configuration(RF_ITEM_TIMINGS, (0x00, atr_res, retry))

    async def rf_field(self, on):
        await self.command(CMD_RF_CONFIGURATION, _FIELD_ON if on else _FIELD_OFF, 50, 4)

    async def begin(self):
        """Wake and configure the chip; raise a PN532Error if it is not a PN532."""
        self._passive = -1
        self._selected = False
        await self.link.wake()
        try:
            fw = await self.get_firmware_version()
        except F.PN532Timeout:
            await self.link.wake()  # a sleeping HSU chip may have eaten the first frame
            fw = await self.get_firmware_version()
        if fw[0] != PN532_IC:
            raise F.FrameError("not a PN532 (IC 0x%02x)" % fw[0])
        await self.sam_configuration()
        await self.set_retries(self.passive_retries)
        await self.set_timeouts()
        return fw

    async def in_list_passive_target(self, timeout_ms=POLL_TIMEOUT_MS):
        """Look for one ISO 14443-A card; return its UID length (0: no card).

        The UID is copied into `self.uid` (4, 7 or 10 bytes), SENS_RES and SEL_RES into
        `self.sens_res`/`self.sel_res`. A malformed answer raises FrameError.
        """
        d = await self.command(CMD_IN_LIST_PASSIVE_TARGET, _ILPT_106A, timeout_ms, 64)
        if len(d) < 1:
            raise F.FrameError("empty target list")
        if d[0] == 0:
            self.uid_len = 0
            return 0
        if d[0] > 2 or len(d) < 6:
            raise F.FrameError("bad target list")
        n = d[5]
        if n not in UID_LENGTHS or len(d) < 6 + n:
            raise F.FrameError("bad UID length %d" % n)
        self.sens_res = (d[2] << 8) | d[3]
        self.sel_res = d[4]
        uid = self.uid
        for i in range(n):
            uid[i] = d[6 + i]
        self.uid_len = n
        return n

    async def in_release(self, tg=0):
        """Release target `tg` (0: all)."""
        d = await self.command(CMD_IN_RELEASE, _RELEASE_ALL if tg == 0 else bytes((tg,)), 50, 4)
        if len(d) < 1:
            raise F.FrameError("short InRelease answer")
        if d[0] & 0x3F:
            raise F.ChipError(d[0] & 0x3F, "InRelease status")

    async def in_data_exchange(self, data, tg=1, timeout_ms=500):
        """Send `data` to target `tg`; return the card's answer (memoryview, valid
        until the next command). A non-zero status raises ChipError(status)."""
        d = await self.command(CMD_IN_DATA_EXCHANGE, bytes((tg,)) + bytes(data), timeout_ms, F.MAX_DATA)
        if len(d) < 1:
            raise F.FrameError("short InDataExchange answer")
        if d[0] & 0x3F:
            raise F.ChipError(d[0] & 0x3F, "InDataExchange status")
        return d[1:]

    async def read_uid(self):
        """One poll: list a card, then release it and switch the field off.

        Switching the field off between polls powers the card down, so the next poll
        finds it afresh whether it was left selected or halted: a card left on the
        reader answers every poll instead of every other one. Return the UID length.
        The poll's retries are bounded (`passive_retries`): it ends in tens of ms.
        """
        if self._selected:
            await self._release()
        if self._passive != self.passive_retries:
            await self.set_retries(self.passive_retries)
        n = await self.in_list_passive_target()
        if n:
            await self._release()
        return n

    async def wait_for_card(self, wait_ms):
        """A pending poll: the chip looks for a card until one answers (retries FF), and
        we wait for its answer up to `wait_ms`, then abort and drain (`abort`). Return the
        UID length, 0 when no card came. The card found stays selected, the field on:
        the answer reaches the caller without the release's two exchanges, which the
        next `read_uid` or `wait_for_card` does first. A chip that did not even ACK
        raises PN532Timeout, as any command does.
        """
        if self._selected:
            await self._release()
        if self._passive != RETRY_FOREVER:
            self._passive = -1
            await self.rf_configuration(RF_ITEM_RETRIES, (0xFF, 0x01, RETRY_FOREVER))
            self._passive = RETRY_FOREVER
        try:
            n = await self.in_list_passive_target(wait_ms)
        except F.PN532Timeout:
            if self.acked:
                return 0  # the chip took the command and no card came: aborted and drained
            raise
        self._selected = n > 0
        return n

    async def _release(self):
        self._selected = False
        await self.in_release()
        await self.rf_field(False)
