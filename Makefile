# CPOS Terminal. `make test` and `make demo` do all set-up themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench soak clean broker browser

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	sh scripts/ensure-mosquitto.sh
	sh scripts/ensure-chromium.sh
	touch $@

## broker: the mosquitto Debian package (the uplink tests start their own broker from it)
broker:
	@sh scripts/ensure-mosquitto.sh

## browser: Debian's chromium and chromium-driver (a test opens the simulator's report.html headless)
browser:
	@sh scripts/ensure-chromium.sh

## test: the whole suite, both runtimes (MicroPython unix port and CPython)
test: $(STAMP) broker browser
	$(PY) -m pytest -n 2 -m 'not soak'

## demo: the main job: a lunch rush on three simulated terminals running the real firmware, uploading to a broker and
## ledger; keeps its site folder (ledger, logs, report.html) in demo-site/
demo: $(STAMP) broker
	$(PY) -m simulator run scenarios/lunch_rush.json --site-dir demo-site

## bench: benchmarks that print figures (not part of the test suite)
bench: $(STAMP) broker
	$(PY) bench/run_all.py

## soak: long sweeps (exhaustive power cuts, long fuzzing)
soak: $(STAMP) broker
	CPOS_SOAK=1 $(PY) -m pytest -m soak

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-site
