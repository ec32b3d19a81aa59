"""DS3231 battery-backed real-time clock over I2C: read and set UTC seconds.

Owns the chip's register map as far as time goes: seconds..year at 0x00-0x06 in BCD,
24-hour mode, the century bit in the month register, and the oscillator-stop flag
(OSF, bit 7 of status register 0x0F), which the chip sets when its oscillator stopped
(coin cell flat or removed): then the time it holds is not to be believed, and `read`
says None. The chip keeps UTC here (no time zone, no DST: cpos.localtime does that).

    rtc = DS3231(i2c)          # machine.I2C, or anything with readfrom_mem_into/writeto_mem
    t = rtc.read()             # UTC s, or None (oscillator stopped, or registers not a date)
    rtc.write(t)               # sets the time and clears OSF

Why our own module: micropython-lib has no DS3231 driver; the registries' maintained one
(adafruit-circuitpython-ds3231) needs CircuitPython's busio and adafruit_register, and
neither it nor the small GitHub drivers checks OSF before trusting the time. Two
preallocated buffers; a read is two I2C transactions. Runs on both runtimes.
"""
from cpos.compat import const
from cpos.localtime import civil_from_days, days_from_civil

ADDR = const(0x68)
_TIME = const(0x00)
_STATUS = const(0x0F)
_OSF = const(0x80)


def _bcd(b):
    return (b >> 4) * 10 + (b & 0x0F)


def _tobcd(n):
    return ((n // 10) << 4) | (n % 10)


class DS3231:
    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self._regs = bytearray(7)
        self._st = bytearray(1)

    def read(self):
        """UTC seconds the chip holds, or None when its oscillator stopped since it was last
        set (OSF) or its registers hold no valid date. OSError if the chip does not answer."""
        st = self._st
        self.i2c.readfrom_mem_into(self.addr, _STATUS, st)
        if st[0] & _OSF:
            return None
        r = self._regs
        self.i2c.readfrom_mem_into(self.addr, _TIME, r)
        sec, mi = _bcd(r[0] & 0x7F), _bcd(r[1] & 0x7F)
        h = r[2]
        if h & 0x40:  # 12-hour mode (never set by us): bit 5 is PM
            hour = _bcd(h & 0x1F) % 12 + (12 if h & 0x20 else 0)
        else:
            hour = _bcd(h & 0x3F)
        day, month = _bcd(r[4] & 0x3F), _bcd(r[5] & 0x1F)
        year = 2000 + _bcd(r[6]) + (100 if r[5] & 0x80 else 0)
        if sec > 59 or mi > 59 or hour > 23 or not 1 <= month <= 12 or not 1 <= day <= 31:
            return None
        days = days_from_civil(year, month, day)
        if civil_from_days(days)[1] != month:  # e.g. 31 April
            return None
        return days * 86400 + hour * 3600 + mi * 60 + sec

    def write(self, t):
        """Set the chip to UTC second `t` (2000..2199) and clear OSF."""
        days, s = divmod(t, 86400)
        y, m, d = civil_from_days(days)
        if not 2000 <= y <= 2199:
            raise ValueError("DS3231 holds years 2000..2199")
        r = self._regs
        r[0] = _tobcd(s % 60)
        r[1] = _tobcd((s // 60) % 60)
        r[2] = _tobcd(s // 3600)  # 24-hour mode
        r[3] = (days + 3) % 7 + 1  # day of week 1..7, Monday 1 (not used by us)
        r[4] = _tobcd(d)
        r[5] = _tobcd(m) | (0x80 if y >= 2100 else 0)
        r[6] = _tobcd(y % 100)
        self.i2c.writeto_mem(self.addr, _TIME, r)
        st = self._st
        self.i2c.readfrom_mem_into(self.addr, _STATUS, st)
        st[0] &= ~_OSF & 0xFF
        self.i2c.writeto_mem(self.addr, _STATUS, st)
