"""The CPython world around the real firmware: emulated silicon, backend, scenarios."""
