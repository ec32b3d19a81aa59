"""Entry point: load the configuration, run the app, restart it if anything fails.

Thin on purpose. A configuration error stops here with one line naming the field
(the technician fixes config.json; the watchdog is never started, so the REPL stays
reachable). Any other failure (a task that raised or ended) is logged and the app
starts over from journal recovery through board.restart(): machine.reset() on an
ESP32; on the unix board the process exits (status 70) and the simulator boots it again.
"""
import asyncio
import time

import board
from cpos import config, log as logmod

_RESTART_PAUSE_MS = 1000


def main():
    sink = board.log
    if hasattr(board, "log_path"):  # boards with a filesystem keep a log for `cpos logs`
        from cpos import devlog

        sink = devlog.FileSink(board.log, board.log_path(), board.now)
    log = logmod.Log(sink)
    if hasattr(board, "maintenance_requested") and board.maintenance_requested():
        log.info("maintenance mode: app not started (release BOOT and reset to run)")
        return
    try:
        cfg = config.load(board.config_path())
    except config.ConfigError as e:
        log.error(str(e))
        if hasattr(board, "event"):
            board.event("config_error", message=str(e))
        return
    from app import App

    while True:
        try:
            app = App(board, cfg, log)
            app.recover()
            failed = asyncio.run(app.run())
            log.error("app stopped: task %s failed; restarting" % failed)
        except Exception as e:  # noqa: BLE001 - start over rather than die
            log.error("app failed", e)
        time.sleep(_RESTART_PAUSE_MS / 1000)
        board.restart()  # machine.reset() on a chip; a fresh process on the unix board
        asyncio.new_event_loop()


main()
