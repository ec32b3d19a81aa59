"""ESP32-WROOM-32 DevKit with a PN532 on HSU (UART2), reset pin wired.

Wiring (docs/technician.md): PN532 TXD -> GPIO16 (RX2), RXD -> GPIO17 (TX2),
RSTPDN -> GPIO4, VCC 3V3, GND; PN532 mode switches to HSU (both off).
Green LED GPIO25, red LED GPIO26 (each with 330 ohm), buzzer GPIO27 (passive).
"""
from esp32_board import Esp32Board

PINS = {
    "pn532": {"link": "uart", "uart": 2, "tx": 17, "rx": 16, "baud": 115200, "reset": 4},
    "feedback": {"led_green": 25, "led_red": 26, "buzzer": 27},
}

_board = Esp32Board("esp32_uart", PINS)
NAME = _board.NAME
now = _board.now
config_path = _board.config_path
block_device = _board.block_device
pn532_link = _board.pn532_link
outputs = _board.outputs
watchdog = _board.watchdog
log = _board.log
restart = _board.restart
maintenance_requested = _board.maintenance_requested
