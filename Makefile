# The two set-up commands of the README. Both create .venv if missing.
PY      := .venv/bin/python
# On CPU-only machines only this pair imports (CUDA builds that run on CPU).
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := .venv/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,wandb]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	.venv/bin/harness run table2 --preset tiny --cluster local
	.venv/bin/harness report table2

# Independent tests on both cores (pytest-xdist); the Slurm tests share one cluster: serial.
test: lint
	$(PY) -m pytest -q -n 2 -m "not slurm" tests
	$(PY) -m pytest -q -m slurm tests

# ruff (lint + format) and the import-linter layer contracts of pyproject.toml.
lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

clean:
	rm -rf results build
