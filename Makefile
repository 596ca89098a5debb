# Two commands on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system demo test bench clean

# System packages the project needs: ffmpeg (decode/encode/probe) and espeak-ng (test speech).
system:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg espeak-ng )

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

setup: system $(VENV)/.installed

demo: setup
	$(PY) -m pipeline.demo --out demo_out

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/bench_build.py --videos 32 --out bench_out

clean:
	rm -rf demo_out bench_out .pytest_cache
