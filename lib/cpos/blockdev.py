"""The block-device protocol's ioctl operations, by name: one definition for every device.

MicroPython's block devices (`esp32.Partition`, `vfs` block devices) and the stand-ins
here (`cpos.blockfile.BlockFile`, `simulator.norflash.NorFlash`,
`host_tools.rescue.DumpDevice`) answer `ioctl(op, arg)` with these numbers. The journal
and the card table use BLOCK_COUNT, BLOCK_SIZE and BLOCK_ERASE; INIT, DEINIT and SYNC
return 0 on every device here.
"""
from cpos.compat import const

INIT = const(1)
DEINIT = const(2)
SYNC = const(3)
BLOCK_COUNT = const(4)  # number of blocks (erase sectors)
BLOCK_SIZE = const(5)  # bytes per block
BLOCK_ERASE = const(6)  # erase block `arg` (every byte 0xFF)
