# Freeze manifest for the esp32_i2c board. Build a MicroPython image with it:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/cpos/boards/esp32_i2c/manifest.py
# (docs/technician.md). Relative paths resolve from this file's folder. Frozen
# modules run from flash and cost no heap for their code; boot.py and main.py stay
# on the filesystem so a deploy can switch versions.
include("$(PORT_DIR)/boards/manifest.py")
package("cpos", base_path="../../lib")  # cpos and every subpackage under it (reader/, cards/, net/, pos/, mdb/)
module("esp32_board.py", base_path="../esp32")
module("board.py")
module("app.py", base_path="../../firmware")
require("ssd1306")  # micropython-lib's OLED driver, from the MicroPython tree's lib/micropython-lib
