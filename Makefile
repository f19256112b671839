# make run    - set up, then run the whole study (CONFIG=..., CORES=...)
# make test   - set up, then run the test suite
VENV ?= .venv
CONFIG ?= config/config.yaml
CORES ?= all
PYTHON ?= python3
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

BIN := $(VENV)/bin
STAMP := $(VENV)/.elf-setup-done

.PHONY: setup data run dry-run test lint report clean-results

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when running as root on Debian and it is missing.
data:
	@if [ ! -e $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi
	@[ -e $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || echo "note: Fashion-MNIST not found in $(FMNIST_DIR); the default config needs it (apt-get install dataset-fashion-mnist)"

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@echo; cat results/report/summary.md

dry-run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) -n

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check elf_pipeline tests
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results/*/ .snakemake
