"""Trusted time (cpos.timekeeper, cpos.sntp, cpos.ds3231, purchase flag bit3), on both runtimes.

The keeper is driven by a raw clock the test moves by hand (as an ESP32's RTC counts from
2000-01-01 after a power-on) and a log that records its lines, so every decision about
time can be checked by what it says and at which level.
"""
from cpos import log, purchase, reasons, rules
from cpos import timekeeper as tk
from cpos.ds3231 import DS3231
from cpos import sntp
from checks import raises

T = 1764068400  # 2025-11-25 11:00 UTC
POWER_ON = 946684800  # 2000-01-01: an ESP32's clock after a power-on


class Raw:
    """The board's clock: counts seconds; `set` is the board's set_time."""

    def __init__(self, t):
        self.t = t
        self.sets = 0

    def __call__(self):
        return self.t

    def set(self, t):
        self.t = t
        self.sets += 1


def keeper(raw=None, step_s=120, ahead_s=86400, set_raw=True):
    raw = raw or Raw(POWER_ON)
    lines = []
    k = tk.TimeKeeper(raw, log.Log(lines.append), step_s, ahead_s, raw.set if set_raw else None)
    return k, raw, lines


def test_unknown_after_power_on_the_time_in_use_is_the_floor_and_grows_with_the_board_clock():
    k, raw, lines = keeper()
    assert not k.known and k.now() == tk.BUILD_FLOOR
    k.raise_floor(T, "journal")
    assert k.now() == T and k.floor() == T
    raw.t += 30  # 30 s of uptime: the true time is at least the floor + 30 s
    assert k.now() == T + 30 and not k.known
    k.raise_floor(T - 100, "journal")  # an older time never lowers the floor
    assert k.floor() == T + 30
    st = k.status()
    assert st["time_known"] is False and st["time_source"] is None and st["time_floor_from"] == "journal"


def test_a_source_behind_the_floor_is_refused_at_the_security_level_and_changes_nothing():
    k, raw, lines = keeper()
    k.raise_floor(T, "journal")
    assert not k.offer(tk.SNTP, T - 3600)
    assert not k.known and k.now() == T and raw.sets == 0
    assert lines[-1].startswith("S time: refused sntp time %d is 3600 s behind the floor %d (journal)" % (T - 3600, T))
    assert not k.offer(tk.RTC, T - 1)  # the RTC too, but it is a fault, not an attack: W
    assert lines[-1].startswith("W time: refused rtc")
    assert not k.offer(tk.BACKEND, T - 1)  # not even the backend may take the time below the floor
    assert k.refused == [1, 1, 1, 0] and not k.known


def test_a_first_source_sets_the_clock_and_later_ones_may_move_it_only_within_the_step():
    k, raw, lines = keeper()
    k.raise_floor(T - 3000, "journal")
    assert k.offer(tk.SNTP, T + 600, 12)
    assert k.known and k.now() == T + 600 and k.source == tk.SNTP and raw.t == T + 600
    assert "set by sntp to %d" % (T + 600) in lines[-1]
    raw.t += 60
    assert k.offer(tk.SNTP, T + 660 + 100)  # drift within 120 s: steered
    assert k.now() == T + 760
    assert not k.offer(tk.SNTP, T + 760 + 121)  # a forward jump past the bound: refused
    assert k.now() == T + 760 and lines[-1].startswith("S time: refused sntp time")
    assert "+121 s, more than 120 s" in lines[-1]
    assert not k.offer(tk.SNTP, T + 760 - 3000)  # backwards, above the floor but past the step
    assert k.now() == T + 760
    assert k.offer(tk.BACKEND, T + 760 - 3000)  # the signed backend may step back, to the floor
    assert k.now() == T - 2240 and k.source == tk.BACKEND and k.floor() == T - 2240
    assert k.offer(tk.BACKEND, T + 7200)  # ... and any amount forward
    assert k.now() == T + 7200 and k.floor() == T + 7200
    assert not k.offer(tk.BACKEND, T + 7200 - 30)  # but never below the floor it set
    assert k.now() == T + 7200


def test_an_unknown_time_is_not_set_far_ahead_of_a_journal_floor_except_by_the_backend():
    k, raw, lines = keeper(ahead_s=86400)
    k.raise_floor(T, "journal")
    assert not k.offer(tk.SNTP, T + 86401)
    assert "ahead of the floor" in lines[-1] and lines[-1].startswith("S ")
    assert not k.known
    assert k.offer(tk.BACKEND, T + 5 * 86400)
    assert k.known and k.now() == T + 5 * 86400
    fresh, _, _ = keeper(ahead_s=86400)  # the build date alone bounds nothing ahead
    assert fresh.offer(tk.SNTP, T + 400 * 86400)


def test_a_less_trusted_source_checks_but_does_not_steer_a_fresh_better_time():
    k, raw, lines = keeper()
    assert k.offer(tk.BACKEND, T)
    assert k.offer(tk.RTC, T + 50)  # within the step: agrees, but the backend's time stays
    assert k.now() == T and k.source == tk.BACKEND and k.offset[tk.RTC] == 50
    assert "rtc agrees within +50 s; backend keeps the time" in lines[-1]
    raw.t += 3601  # an hour without the backend: the RTC may steer again
    assert k.offer(tk.RTC, T + 3601 + 5)
    assert k.now() == T + 3606 and k.source == tk.RTC


def test_status_reports_each_sources_offset_and_age():
    k, raw, lines = keeper()
    k.offer(tk.SNTP, T)
    raw.t += 40
    k.offer(tk.RTC, T + 40 - 3)
    raw.t += 20
    st = k.status()
    assert st["time_known"] and st["time_source"] == "sntp"
    assert st["time_sources"]["sntp"] == {"offset": T - tk.BUILD_FLOOR, "age": 60, "accepted": 1, "refused": 0}
    assert st["time_sources"]["rtc"] == {"offset": -3, "age": 20, "accepted": 1, "refused": 0}
    assert "backend" not in st["time_sources"]


def test_the_time_never_goes_below_the_floor_even_if_the_board_clock_steps_back():
    k, raw, lines = keeper(set_raw=False)
    k.offer(tk.BACKEND, T)
    raw.t -= 500  # someone set the board's clock back behind the keeper's back
    assert k.now() == T  # the floor (the backend's time) holds


def test_untimed_policy_refuses_limited_till_purchases_and_everything_without_an_allowance():
    till = rules.Profile(rules.PLACE_SCHOOL, rules.TILL)
    vend = rules.Profile(rules.PLACE_SCHOOL, rules.VENDING)
    free = rules.CardRecord()
    limited = rules.CardRecord()
    limited.limits[rules.slot(rules.PLACE_SCHOOL, 1)] = 5000  # a weekly school limit
    club_only = rules.CardRecord()
    club_only.limits[rules.slot(rules.PLACE_CLUB, 0)] = 2000  # a limit elsewhere does not matter here
    A, CNS = reasons.APPROVED, reasons.CLOCK_NOT_SET
    assert tk.untimed_reason(A, limited, till, True) == CNS
    assert tk.untimed_reason(reasons.DAY_LIMIT, limited, till, True) == CNS  # a window judged at the floor
    assert tk.untimed_reason(A, limited, vend, True) == A  # no limits at a vending machine
    assert tk.untimed_reason(A, free, till, True) == A
    assert tk.untimed_reason(A, club_only, till, True) == A
    assert tk.untimed_reason(A, free, till, False) == CNS  # no offline allowance to bound it by
    assert tk.untimed_reason(reasons.BLOCKED, limited, till, True) == reasons.BLOCKED  # time-free refusals stand
    assert tk.untimed_reason(reasons.INSUFFICIENT_FUNDS, free, till, False) == reasons.INSUFFICIENT_FUNDS


def test_clock_not_set_has_its_own_name_and_texts():
    from cpos import texts

    assert reasons.name(reasons.CLOCK_NOT_SET) == "clock_not_set"
    assert texts.english(reasons.CLOCK_NOT_SET) == "Terminal clock not set"
    assert texts.danish(reasons.CLOCK_NOT_SET) == "Terminalens ur er ikke indstillet"


def test_a_record_made_while_the_time_is_unknown_carries_flags_bit3():
    buf = bytearray(purchase.SIZE)
    args = (7, T, b"\x04\x11\x22\x33", 1, 500, 0, 1, 9, "1x Te", 9500, reasons.APPROVED, False)
    purchase.encode_into(buf, *args, untimed=True)
    assert buf[1] == 0x08 | 0x02 | (4 << 4), "flags %02x" % buf[1]
    d = purchase.decode(buf)
    assert d["time_unknown"] is True and d["t"] == T and d["seq"] == 7
    purchase.encode_into(buf, *args)
    assert buf[1] & 0x08 == 0 and "time_unknown" not in purchase.decode(buf)


# -- SNTP codec ------------------------------------------------------------------------------

NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def answer(secs, frac=0, first=0x24, stratum=2, echo=NONCE):
    b = bytearray(48)
    b[0], b[1] = first, stratum
    b[24:32] = echo
    n = secs + sntp.NTP_DELTA
    for i in range(4):
        b[40 + i] = (n >> (24 - 8 * i)) & 0xFF
        b[44 + i] = (frac >> (24 - 8 * i)) & 0xFF
    return b


def test_sntp_request_and_answer_checks():
    req = sntp.request(NONCE)
    assert len(req) == 48 and req[0] == 0x23 and bytes(req[40:48]) == NONCE and not any(req[1:40])
    assert sntp.parse(answer(T, 0x80000000), NONCE) == (T, 500)
    raises(sntp.SNTPError, sntp.parse, answer(T, echo=b"\0" * 8), NONCE)  # not an answer to us
    raises(sntp.SNTPError, sntp.parse, answer(T, stratum=0), NONCE)  # kiss-o'-death
    raises(sntp.SNTPError, sntp.parse, answer(T, first=0xE4), NONCE)  # leap 3: not synchronised
    raises(sntp.SNTPError, sntp.parse, answer(T, first=0x23), NONCE)  # a client's packet
    raises(sntp.SNTPError, sntp.parse, answer(T)[:47], NONCE)


# -- DS3231 driver -----------------------------------------------------------------------------

class Bus:
    """A DS3231's 19 registers on a fake I2C bus."""

    def __init__(self):
        self.regs = bytearray(19)
        self.regs[0x0F] = 0x80  # OSF set: a chip fresh from its first power-up

    def readfrom_mem_into(self, addr, reg, buf):
        assert addr == 0x68
        buf[:] = self.regs[reg:reg + len(buf)]

    def writeto_mem(self, addr, reg, buf):
        assert addr == 0x68
        self.regs[reg:reg + len(buf)] = buf


def test_ds3231_registers_round_trip_and_a_stopped_oscillator_means_no_time():
    bus = Bus()
    rtc = DS3231(bus)
    assert rtc.read() is None  # OSF: never set, or the coin cell was out
    rtc.write(T)  # 2025-11-25 11:00:00 UTC, a Tuesday
    assert bytes(bus.regs[0:7]) == b"\x00\x00\x11\x02\x25\x11\x25", bytes(bus.regs[0:7])
    assert bus.regs[0x0F] & 0x80 == 0
    assert rtc.read() == T
    rtc.write(951782400 + 86399)  # 2000-02-29 23:59:59: a leap day
    assert bytes(bus.regs[0:7]) == b"\x59\x59\x23\x02\x29\x02\x00" and rtc.read() == 951782400 + 86399
    bus.regs[0x0F] |= 0x80  # the oscillator stopped
    assert rtc.read() is None
    bus.regs[0x0F] = 0
    bus.regs[5] = 0x13  # month 13: no date
    assert rtc.read() is None
    bus.regs[5], bus.regs[4] = 0x04, 0x31  # 31 April
    assert rtc.read() is None
    bus.regs[4], bus.regs[2] = 0x30, 0x40 | 0x20 | 0x11  # 12-hour mode, 11 PM
    assert rtc.read() % 86400 == 23 * 3600 + 59 * 60 + 59


def test_while_unknown_an_rtc_waits_for_the_due_sntp_answer_and_two_that_disagree_are_both_refused():
    k, raw, lines = keeper(ahead_s=30 * 86400)
    k.raise_floor(T, "journal")
    k.sntp_due = True
    assert k.offer(tk.RTC, T + 100)  # held, not refused
    assert not k.known and "held until a second source agrees (an SNTP answer is due)" in lines[-1]
    assert not k.offer(tk.SNTP, T + 100 + 86400)  # a lie of a day: they disagree, neither is believed
    assert not k.known and k.refused[tk.SNTP] == 1 and k.refused[tk.RTC] == 1
    assert lines[-1].startswith("S time: refused sntp time") and "disagree by 86400 s" in lines[-1]
    k.sntp_done()
    assert not k.known  # the RTC's time was dropped with the lie


def test_an_rtc_held_for_sntp_sets_the_time_when_sntp_agrees_or_stays_silent():
    k, raw, lines = keeper()
    k.raise_floor(T, "journal")
    k.sntp_due = True
    k.offer(tk.RTC, T + 100)
    raw.t += 2
    assert k.offer(tk.SNTP, T + 103) and k.known and k.now() == T + 103 and k.source == tk.SNTP
    k2, raw2, lines2 = keeper()
    k2.raise_floor(T, "journal")
    k2.sntp_due = True
    k2.offer(tk.RTC, T + 100)
    raw2.t += 3
    k2.sntp_done()  # SNTP silent: the RTC alone is believed
    assert k2.known and k2.now() == T + 103 and k2.source == tk.RTC


def test_sntp_alone_is_not_believed_where_it_may_not_be_and_a_second_source_confirms_it():
    k, raw, lines = keeper()
    k.alone[tk.SNTP] = False  # a terminal with the signed downlink
    assert k.offer(tk.SNTP, T)  # held
    assert not k.known and "alone it is not believed here" in lines[-1]
    raw.t += 10
    assert k.offer(tk.RTC, T + 12)
    assert k.known and k.now() == T + 12


def test_a_backend_answer_that_took_too_long_to_arrive_is_refused_and_elapsed_ignores_the_keepers_own_steps():
    k, raw, lines = keeper()
    at = k.elapsed()
    assert k.offer(tk.BACKEND, T, 40)  # the board clock is set from 2000 to T: not time that passed
    raw.t += 5
    assert k.elapsed() - at == 5
    # an answer the network held for an hour (or asked before the world moved on): its time is an hour old
    raw.t += 3600
    assert not k.offer(tk.BACKEND, T + 5, (k.elapsed() - at) * 1000)
    assert k.now() == T + 3605 and k.refused[tk.BACKEND] == 1
    assert lines[-1].startswith("W time: refused a backend time %d that took 3605000 ms to arrive" % (T + 5))
    assert k.offer(tk.BACKEND, T + 3606, tk.MAX_RTT_MS)  # a slow but fresh answer still sets it
    assert k.now() == T + 3606


def test_waiting_is_true_only_while_the_time_is_unknown_and_a_first_time_is_due():
    k, raw, lines = keeper()
    assert not k.waiting()  # nothing expected
    k.expect(60000)
    assert k.waiting()
    assert k.offer(tk.BACKEND, T, 40)
    assert not k.waiting()
    k2, _, _ = keeper()
    k2.expect(-1)  # the expected while is over: an offline terminal decides by its policy
    assert not k2.waiting() and not k2.waiting()
