"""simulator/virtual_device.py speaks a board's REPL: checked byte-level and with the real mpremote.

The technician CLI's tests rely on it (tests/test_technician_cli.py); these check the
REPL itself as a board's USB port would behave: friendly prompt, raw REPL framing,
Ctrl-C interrupting running code, Ctrl-D soft reset running boot.py again, raw-paste
flow control, and mpremote's file commands landing in the device's folder.
"""
import hashlib
import os
import subprocess
import sys
import time

import pytest
import serial

from host_tools.bundle import tool
from test_technician_cli import VirtualTerminal


@pytest.fixture
def vt(tmp_path):
    v = VirtualTerminal(tmp_path / "dev")
    yield v
    v.close()


def _read_until(s, ending, timeout=10):
    buf = b""
    end = time.time() + timeout
    while time.time() < end and not buf.endswith(ending):
        buf += s.read(1)
    assert buf.endswith(ending), buf
    return buf


def test_friendly_and_raw_repl_with_interrupt_and_soft_reset(vt):
    with open(os.path.join(vt.fs, "boot.py"), "w") as f:
        f.write("print('booting')\nbooted = 1\n")
    with serial.Serial(vt.port, 115200, timeout=1) as s:
        s.write(b"\r\x02")
        _read_until(s, b">>> ")
        s.write(b"6*7\r")
        assert b"42\r\n>>> " in _read_until(s, b"42\r\n>>> ")
        s.write(b"\r\x01")
        _read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
        s.write(b"x = 5\nprint(x + 1)\x04")
        assert _read_until(s, b">") == b"OK6\r\n\x04\x04>"
        s.write(b"while True:\n  x += 1\x04")
        assert s.read(2) == b"OK"
        time.sleep(0.3)
        s.write(b"\x03")
        out = _read_until(s, b"\x04>")
        assert out.startswith(b"\x04") and b"KeyboardInterrupt" in out
        s.write(b"print(x > 5)\x04")  # state survives an interrupt, as on a board
        assert _read_until(s, b">") == b"OKTrue\r\n\x04\x04>"
        s.write(b"\x04")  # soft reset: a fresh interpreter, boot.py again
        out = _read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
        assert out.startswith(b"OK\r\nMPY: soft reboot\r\nbooting\r\n")
        s.write(b"print('x' in globals(), booted)\x04")
        assert _read_until(s, b">") == b"OKFalse 1\r\n\x04\x04>"
        s.write(b"1/0\x04")
        out = _read_until(s, b"\x04>")
        assert out.startswith(b"OK\x04Traceback") and b"ZeroDivisionError" in out and out.endswith(b"\x04>")


def test_raw_paste_flow_control(vt):
    code = b"total = 0\n" + b"total += 1\n" * 200 + b"print(total)"  # several windows
    with serial.Serial(vt.port, 115200, timeout=2) as s:
        s.write(b"\r\x01")
        _read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
        s.write(b"\x05A\x01")
        assert s.read(2) == b"R\x01"
        window = int.from_bytes(s.read(2), "little")
        sent = 0
        credit = window
        while sent < len(code):
            if credit == 0:
                assert s.read(1) == b"\x01"
                credit += window
            n = min(credit, len(code) - sent)
            s.write(code[sent:sent + n])
            sent += n
            credit -= n
        s.write(b"\x04")
        out = _read_until(s, b"\x04>")
        assert out.lstrip(b"\x01") == b"\x04200\r\n\x04\x04>"


def test_mpremote_file_commands_land_in_the_device_folder(vt, tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5000))
    mpr = tool("mpremote")
    p = subprocess.run([mpr, "connect", vt.port, "fs", "mkdir", ":/d", "+", "fs", "cp", str(src), ":/d/data.bin",
                        "+", "fs", "sha256sum", ":/d/data.bin", "+", "fs", "ls", ":/d"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert digest in p.stdout and "5000 data.bin" in p.stdout
    assert open(os.path.join(vt.fs, "d", "data.bin"), "rb").read() == src.read_bytes()
    back = tmp_path / "back.bin"
    p = subprocess.run([mpr, "connect", vt.port, "fs", "cp", ":/d/data.bin", str(back), "+", "fs", "rm", ":/d/data.bin",
                        "+", "exec", "import os; print(os.listdir('/d'), os.getcwd())"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert back.read_bytes() == src.read_bytes() and "[] /" in p.stdout
    # paths cannot leave the device's folder
    p = subprocess.run([mpr, "connect", vt.port, "exec", "print(sorted(__import__('os').listdir('/../..')))"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "['d']" in p.stdout


def test_a_relative_folder_works(tmp_path):
    """Started as docs/technician.md says (`python -m simulator.virtual_device dev`), with a
    folder relative to the current one: mpremote reaches it and files land in dev/fs."""
    from host_tools.bundle import ROOT

    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "simulator.virtual_device", "dev"], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        p = subprocess.run([tool("mpremote"), "connect", line.split()[1], "exec",
                            "open('/hello.txt', 'w').write('hi'); import os; print(os.listdir('/'))"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "['hello.txt']" in p.stdout
        assert open(tmp_path / "dev" / "fs" / "hello.txt").read() == "hi"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_the_technician_guide_starts_with_the_virtual_device_and_its_steps_work(tmp_path):
    """docs/technician.md's first section and first runnable step start the virtual device;
    the commands of its second block (CPOS_PORT, build, deploy, status) then work as written."""
    import re
    import shlex
    from host_tools.bundle import ROOT

    text = open(os.path.join(ROOT, "docs", "technician.md")).read()
    assert re.findall(r"^## (.*)$", text, re.M)[0] == "Without hardware: start the virtual device"
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    start = shlex.split(blocks[0].split("#")[0])
    assert start[1:4] == ["-m", "simulator.virtual_device", "vdev"], blocks[0]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable] + start[1:], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        steps = blocks[1].strip().splitlines()
        assert steps[0] == "export CPOS_PORT=/dev/pts/N"
        env["CPOS_PORT"] = line.split()[1]
        out = ""
        for step in steps[1:]:
            args = shlex.split(step)
            assert args[0] == "cpos"
            p = subprocess.run([tool("cpos")] + args[1:], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                               timeout=300)
            assert p.returncode == 0, (step, p.stderr)
            out = p.stdout
        assert "board esp32_uart" in out and "version" in out  # the status of the deployed virtual terminal
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
