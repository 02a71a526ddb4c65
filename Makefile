# The two set-up commands of the README. Both create .venv if missing.
PY      := .venv/bin/python
# On CPU-only machines only this pair imports (CUDA builds that run on CPU).
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := .venv/.installed
D2STAMP := .venv/.detectron2
# detectron2 (Table 6's ViTDet) is not on PyPI: built from source at a pinned commit, after torch
# (its setup.py imports torch, hence --no-build-isolation). CI points this at a vendored archive
# of the same commit (.ci/run); anything pip installs from works (a git URL, a tarball, a folder).
# Only Table 6 needs it: `make demo` (Table 2) never builds it, `make detection` and `make test`
# do (≈ 3 minutes of compiling here).
DETECTRON2 ?= git+https://github.com/facebookresearch/detectron2.git@02b5c4e295e990042a714712c21dc79b731e8833

.PHONY: demo test test-fast lint venv detection clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,wandb]'
	touch $(STAMP)

# A venv that has it already (built before this target existed) is not built again.
$(D2STAMP): $(STAMP)
	$(PY) -c 'import detectron2' 2>/dev/null || \
		$(PY) -m pip install -q --no-build-isolation '$(DETECTRON2)'
	touch $(D2STAMP)

detection: $(D2STAMP)

venv: $(STAMP) $(D2STAMP)

demo: $(STAMP)
	.venv/bin/harness run table2 --preset tiny --cluster local
	.venv/bin/harness report table2

# The edit loop: every test not marked `slow` (end-to-end runs, paper shapes, subprocess
# clusters) or `slurm`, on both cores; under 3 minutes here.
test-fast: lint
	$(PY) -m pytest -q -n 2 -m "not slurm and not slow" tests

# Everything. Independent tests on both cores (pytest-xdist); the Slurm tests share one
# cluster: serial.
test: lint $(D2STAMP)
	$(PY) -m pytest -q -n 2 -m "not slurm" tests
	$(PY) -m pytest -q -m slurm tests

# ruff (lint + format) and the import-linter layer contracts of pyproject.toml.
lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

clean:
	rm -rf results build
