# make run    - set up, then run the whole study (CONFIG=..., CORES=...)
# make test   - set up, then run the test suite
# make report - set up, run (or finish) the study, then build results/report.html
# make bench  - student-training speed: pipeline vs an official-style loop (BENCH_EPOCHS=..., BENCH_CONTEND=2); make bench-gpu on CUDA
VENV ?= .venv
CONFIG ?= config/config.yaml
CORES ?= all
PYTHON ?= python3
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

BIN := $(VENV)/bin
STAMP := $(VENV)/.elf-setup-done

.PHONY: setup data run dry-run test lint report clean-results slurm-deps browser-deps bench bench-gpu

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
	@$(BIN)/python -m elf_pipeline.config.files $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@echo; cat results/report/summary.md

report: setup
	@$(BIN)/python -m elf_pipeline.config.files $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --configfile $(CONFIG) --report results/report.html
	@echo "wrote results/report.html (tables: results/report/summary.md)"

dry-run: setup
	@$(BIN)/python -m elf_pipeline.config.files $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) -n

# tests/test_slurm.py starts a private SLURM cluster; as root with apt-get this installs Debian's
# packages when missing (a failed install fails `make test`, and so does a test that finds SLURM
# missing there); elsewhere it cannot install, does nothing, and that test module is skipped with the reason.
slurm-deps:
	@bash tests/slurm/install_slurm.sh

# tests/test_report_browser.py opens the HTML report in headless Chromium; as root with apt-get this
# installs Debian's chromium when missing (the test fails there without it), elsewhere it does nothing
# and that test is skipped. tests/conftest.py (can_install_test_dependencies) makes the same decision.
browser-deps:
	@if ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Chromium for tests/test_report_browser.py (apt-get install chromium)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "note: chromium missing and not installable here (not root or no apt-get); tests/test_report_browser.py is skipped"; \
		fi; \
	fi

# Two pytest workers (TEST_WORKERS=0: one process); each test module runs on one worker, so its
# module-scoped fixtures (a SLURM cluster, a finished study) are built once. Then the numerically
# sensitive tests (marker float_path) run again on other CPU kernel paths: ATen's default (no SIMD
# dispatch) with oneDNN limited to SSE4.1, and AVX2, so that a result that holds on one CPU's float
# path only fails on any machine (one process each, collecting only the modules that use the marker).
TEST_WORKERS ?= 2
FLOAT_PATHS ?= default:SSE41 avx2:AVX2
test: setup slurm-deps browser-deps
	$(BIN)/python -m pytest -q -rs $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
	@for path in $(FLOAT_PATHS); do \
		echo "float_path tests with ATEN_CPU_CAPABILITY=$${path%%:*} ONEDNN_MAX_CPU_ISA=$${path##*:}"; \
		ATEN_CPU_CAPABILITY=$${path%%:*} ONEDNN_MAX_CPU_ISA=$${path##*:} $(BIN)/python -m pytest -q -rs -m float_path \
			$$(grep -l float_path tests/test_*.py) || exit 1; \
	done

lint: setup
	$(BIN)/ruff check elf_pipeline tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

# Benchmark: ConvNet and ResNet18 at IPC 10 on Fashion-MNIST, 5 seeds: the official-style loop, the fp32 pipeline
# and, where the CPU computes bfloat16 natively (AMX, AVX512-BF16), the bf16 pipeline; table on stdout, JSON in
# results/bench/. BENCH_ARGS="--precisions fp32 bf16" forces the bf16 rows on any CPU (emulated: slow).
# BENCH_CONTEND=N repeats it beside N one-thread training jobs (shared cores); BENCH_THREADS=1 measures
# with one torch thread, as the workflow's jobs run.
BENCH_EPOCHS ?= 2
BENCH_ARGS ?=
BENCH_CONTEND ?= 0
BENCH_THREADS ?=
bench: setup
	$(BIN)/python -m elf_pipeline $(if $(BENCH_THREADS),--threads $(BENCH_THREADS)) bench --device cpu --epochs $(BENCH_EPOCHS) --contend $(BENCH_CONTEND) --out results/bench/bench-cpu.json $(BENCH_ARGS)

# The same on one GPU with the GPU options (vectorised seeds replayed as CUDA graphs, bfloat16 autocast), full test set, < 8 minutes.
# torch.compile is opt-in (BENCH_GPU_OPTIONS="--vectorize true --precisions bf16 --compile true"): its compile time counts against the pipeline.
BENCH_GPU_EPOCHS ?= 300
BENCH_GPU_OPTIONS ?= --vectorize true --precisions bf16 --compile false
bench-gpu: setup
	$(BIN)/python -m elf_pipeline bench --device cuda --epochs $(BENCH_GPU_EPOCHS) --test-limit 0 $(BENCH_GPU_OPTIONS) --out results/bench/bench-gpu.json $(BENCH_ARGS)

clean-results:
	rm -rf results/*/ .snakemake
