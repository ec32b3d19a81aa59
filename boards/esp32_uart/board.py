"""ESP32-WROOM-32 DevKit with a PN532 on HSU (UART2), reset pin wired.

Wiring (docs/technician.md): PN532 TXD -> GPIO16 (RX2), RXD -> GPIO17 (TX2),
RSTPDN -> GPIO4, VCC 3V3, GND; PN532 mode switches to HSU (both off).
MDB: UART1 TX GPIO32 / RX GPIO35 through an opto-isolated MDB interface (docs/technician.md).
Green LED GPIO25, red LED GPIO26 (each with 330 ohm), buzzer GPIO27 (passive).
OLED 128x64 (SSD1306; an SH1106 with "chip": "sh1106" in the config's feedback.display), on I2C bus 0:
SDA -> GPIO21, SCL -> GPIO22, address 0x3C, VCC 3V3, GND. Without one: "display": "none"
in the config's feedback section, and the texts go to the console.
"""
from esp32_board import Esp32Board

PINS = {
    "pn532": {"link": "uart", "uart": 2, "tx": 17, "rx": 16, "baud": 115200, "reset": 4},
    # MDB (vending machine bus) through an opto-isolated interface, never straight to a GPIO:
    # UART1 TX on GPIO32 and RX on GPIO35 (input only) drive its LED side / read its transistor (docs/technician.md "MDB wiring")
    "mdb": {"link": "uart", "uart": 1, "tx": 32, "rx": 35},
    "feedback": {"led_green": 25, "led_red": 26, "buzzer": 27,
                 "display": {"chip": "ssd1306", "i2c": 0, "scl": 22, "sda": 21, "addr": 0x3C, "freq": 400000}},
}

Esp32Board("esp32_uart", PINS).install(globals())
