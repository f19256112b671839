"""The precision setting: resolution from the device and the CPU's flags, bfloat16 networks with
float32 losses and optimiser state, the same accuracy band as float32, and the record every row,
checkpoint and features file keeps of how it was computed."""

from __future__ import annotations

import statistics

import h5py
import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, REPO, SYN_IPC, TEACHER_ARCH

from elf_pipeline.artifacts.checkpoint import load_checkpoint
from elf_pipeline.cli import build_parser
from elf_pipeline.engine import precision as precision_module
from elf_pipeline.engine.compiled_step import CompiledLoss
from elf_pipeline.engine.elf import ElfLoss, Evaluation, prefers_channels_last
from elf_pipeline.engine.losses import feature_loss, kd_divergence, task_loss
from elf_pipeline.engine.precision import Numerics, autocast, cpu_has_native_bf16, resolve_compile, resolve_precision
from elf_pipeline.engine.training import TrainConfig, seeded_generator, train
from elf_pipeline.infra.errors import InputError
from elf_pipeline.models import build
from elf_pipeline.stages.students import train_students
from elf_pipeline.stages.teachers import train_teacher

CPU = torch.device("cpu")
AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
AVX2 = frozenset({"avx2", "fma"})


# --------------------------------------------------------------------------- resolving the setting

@pytest.mark.parametrize(("flags", "expected"), [(AMX, "bf16"), (frozenset({"avx512_bf16"}), "bf16"), (AVX2, "fp32")])
def test_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch, flags, expected):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision_module, "cpu_info", lambda: ("test CPU", flags))
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # explicit wins


def test_a_kernel_limit_below_avx512_bf16_makes_auto_float32(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_info", lambda: ("test CPU", AMX))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_native_bf16() and resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert resolve_precision("auto", CPU) == "bf16"


def test_cpu_info_reads_the_first_cpu(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test Xeon\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    model, flags = precision_module.cpu_info.__wrapped__(str(cpuinfo))
    assert model == "Test Xeon" and flags == {"fpu", "avx2", "amx_bf16"}


def test_bad_settings_fail_naming_the_value():
    with pytest.raises(InputError, match="precision 'fp16': must be one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InputError, match="compile 'sometimes'"):
        resolve_compile("sometimes", CPU, "fp32")
    with pytest.raises(InputError, match="not resolved"):
        autocast(CPU, "auto")


def test_compile_auto_only_for_bfloat16_on_a_cpu():
    assert resolve_compile("auto", CPU, "bf16") and not resolve_compile("auto", CPU, "fp32")
    assert not resolve_compile("auto", torch.device("cuda"), "bf16")
    assert resolve_compile(True, CPU, "fp32") and not resolve_compile("false", CPU, "bf16")
    numerics = Numerics.resolve("bf16", "auto", CPU)
    assert (numerics.precision, numerics.setting, numerics.compile) == ("bf16", "bf16", True)
    protocol = Numerics.resolve("fp32", "false", CPU).protocol()
    assert protocol["precision"] == "fp32" and protocol["cpu_model"] and protocol["cpu_capability"]


# --------------------------------------------------------------------------- what runs in which dtype

def test_bf16_runs_the_network_in_bfloat16_and_the_losses_in_float32():
    model = build("convnet-w8", 1, NUM_CLASSES, 16)
    x, y = torch.randn(4, 1, 16, 16), torch.arange(4)
    with autocast(CPU, "bf16"):
        features = model.front(x)
        logits = model.rear(features)
        assert features.dtype == logits.dtype == torch.bfloat16
        assert task_loss(logits, y).dtype == torch.float32
        assert feature_loss("ce", features, features.float().relu()).dtype == torch.float32
        assert kd_divergence(logits, logits.detach(), 4.0).dtype == torch.float32
        objective = ElfLoss(Evaluation(loss_mode="front_rear_task"), torch.rand(4, 8, 2, 2), (8, 2, 2))
        assert objective(model, x, y, torch.arange(4)).dtype == torch.float32
    with autocast(CPU, "fp32"):
        assert model(x).dtype == torch.float32


def test_bf16_training_runs_the_network_in_bfloat16_and_keeps_the_weights_float32():
    model = build("convnet-w8", 1, NUM_CLASSES, 16)
    seen: list[torch.dtype] = []
    model.stages["block1"].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    images, labels = torch.randn(20, 1, 16, 16), torch.arange(20) % NUM_CLASSES
    config = TrainConfig(epochs=3, batch_size=10, dsa=None, lr_decay_at=0.0)
    history = train(model, images, labels, config, seeded_generator(0), precision="bf16")
    assert set(seen) == {torch.bfloat16}  # the network ran in bfloat16 ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... the weights stayed float32
    assert len(history) == 3 and history[-1] < history[0]


def test_bf16_students_reach_the_float32_accuracy_band(digits_h5, tmp_path):
    """The same teacher recipe as the ``trained_teacher`` fixture, three seeds each. Measured: float32
    0.733, 0.733, 0.752 and bfloat16 0.733, 0.733, 0.755 (seeds 0-2); the band allows 0.06 between the
    means, the seed spread of this recipe (0.70 to 0.75 over seeds 0-3)."""
    accuracy = {}
    for numerics in ("fp32", "bf16"):
        runs = [train_teacher(digits_h5, tmp_path / f"{numerics}{seed}.pt", tmp_path / f"{numerics}{seed}.json",
                              TEACHER_ARCH, {"epochs": 30, "batch_size": 25, "dsa": False}, seed=seed, device="cpu",
                              precision=numerics, compile="false") for seed in range(3)]
        assert {run["precision"] for run in runs} == {numerics}
        accuracy[numerics] = statistics.fmean(run["test_acc"] for run in runs)
    assert accuracy["fp32"] > 0.5  # far above chance (0.1): the recipe learns
    assert abs(accuracy["bf16"] - accuracy["fp32"]) < 0.06


# --------------------------------------------------------------------------- the record

def test_student_rows_teacher_checkpoints_and_features_record_the_precision(digits_h5, synset_h5, features_h5,
                                                                            teacher_pt, tmp_path):
    identity = {"dataset": "digits", "method": "random", "ipc": SYN_IPC, "teacher": "tiny", "evaluation": "elf"}
    frame = train_students(digits_h5, synset_h5, features_h5, "convnet-w8", {"loss_mode": "front_rear_task"},
                           {"epochs": 1, "batch_size": 8, "dsa": False}, [0], tmp_path / "s.parquet", identity,
                           device="cpu", precision="bf16", compile="false")
    row = frame.iloc[0]
    assert (row["precision"], row["precision_setting"], bool(row["compiled"])) == ("bf16", "bf16", False)
    assert row["cpu_model"] and row["cpu_capability"] and isinstance(row["cpu_flags"], str)
    auto = train_students(digits_h5, synset_h5, None, "convnet-w8", {"loss_mode": "task"},
                          {"epochs": 1, "batch_size": 8, "dsa": False}, [0], tmp_path / "a.parquet",
                          {**identity, "evaluation": "baseline"}, device="cpu", precision="auto",
                          compile="false").iloc[0]
    assert auto["precision_setting"] == "auto" and auto["precision"] == resolve_precision("auto", CPU)
    assert load_checkpoint(teacher_pt)["precision"] == "fp32"  # a stage called from Python: float32 by default

    from elf_pipeline.stages.features import extract_features

    out = tmp_path / "f.h5"
    extract_features(synset_h5, teacher_pt, out, device="cpu", precision="bf16")
    with h5py.File(out, "r") as h5, h5py.File(features_h5, "r") as reference:
        for name in reference["layers"]:
            stored = h5["layers"][name]
            assert stored.dtype == "float32"  # stored in float32 whatever the teacher ran in
            # bfloat16 keeps 8 mantissa bits: the features agree with float32 to ~1 %, not bit for bit
            assert torch.allclose(torch.from_numpy(stored[:]), torch.from_numpy(reference["layers"][name][:]),
                                  rtol=0.05, atol=0.05)
        assert "bf16" in h5.attrs["config"]


def test_every_network_stage_takes_precision_and_the_workflow_passes_it():
    parser = build_parser()
    stages = {"distill": ["--data", "d", "--out", "o"], "experts": ["--data", "d", "--out", "o"],
              "teachers": ["--data", "d", "--out-model", "m", "--out-history", "h"],
              "features": ["--synset", "s", "--teacher", "t", "--out", "o"],
              "students": ["--data", "d", "--synset", "s", "--out", "o"], "reference": ["--data", "d", "--out", "o"],
              "expert-teacher": ["--expert", "e", "--data", "d", "--out", "o"]}
    for stage, args in stages.items():
        assert parser.parse_args([stage, *args, "--precision", "bf16"]).precision == "bf16"
        assert parser.parse_args([stage, *args]).precision == "auto"
    rules = "\n".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk")).split("\nrule ")
    running = [rule for rule in rules if any(f"{{PYTHON}} {stage} " in rule or f"{{{{PYTHON}}}} {stage} " in rule
                                             for stage in stages)]
    assert len(running) >= len(stages)
    for rule in running:  # every job that runs a network gets the study's device, precision (and compile) flags
        assert "device=RUN_ARGS" in rule or "device=TRAIN_RUN_ARGS" in rule, rule.splitlines()[0]


# --------------------------------------------------------------------------- compile and memory format

def test_a_compiler_failure_runs_eagerly_with_a_note(monkeypatch):
    def broken(fn):
        def call(*args):
            raise RuntimeError("inductor: no C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    images, labels = torch.randn(12, 1, 16, 16), torch.arange(12) % NUM_CLASSES
    config = TrainConfig(epochs=2, batch_size=6, dsa=None, lr_decay_at=0.0)
    eager_model = build("convnet-w8", 1, NUM_CLASSES, 16)
    compiled_model = build("convnet-w8", 1, NUM_CLASSES, 16)
    compiled_model.load_state_dict(eager_model.state_dict())
    eager = train(eager_model, images, labels, config, seeded_generator(0))
    notes: list[str] = []
    fallen_back = train(compiled_model, images, labels, config, seeded_generator(0), compile=True, notes=notes)
    assert notes == ["torch.compile failed (RuntimeError: inductor: no C++ compiler); ran eagerly"]
    assert fallen_back == eager  # the failed attempt changed nothing


def test_compiled_training_follows_the_eager_one():
    """A real inductor compile (gcc) of the ELF objective: the same batches and updates as eager
    training, so the loss histories agree up to float rounding of the fused kernels."""
    images, labels = torch.randn(12, 1, 16, 16), torch.arange(12) % NUM_CLASSES
    features = torch.rand(12, 8, 2, 2)
    config = TrainConfig(epochs=3, batch_size=6, dsa=None, lr_decay_at=0.0)
    histories = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = build("convnet-w8", 1, NUM_CLASSES, 16)
        objective = ElfLoss(Evaluation(loss_mode="front_rear_task"), features, (8, 2, 2))
        notes: list[str] = []
        histories.append(train(model, images, labels, config, seeded_generator(0), loss_fn=objective, compile=compile,
                               notes=notes))
        assert notes == []  # compiled without falling back
    assert CompiledLoss(objective, True, []).compiled and not CompiledLoss(objective, False, []).compiled
    assert histories[1] == pytest.approx(histories[0], rel=1e-4)


def test_channels_last_except_for_group_norm_models_on_a_cpu():
    assert not prefers_channels_last(build("convnet-w8", 1, NUM_CLASSES, 16), CPU)  # GroupNorm(C, C)
    assert prefers_channels_last(build("convnet-w8-bn", 1, NUM_CLASSES, 16), CPU)
    assert prefers_channels_last(build("convnet-w8", 1, NUM_CLASSES, 16), torch.device("cuda"))


def test_cross_entropy_of_bfloat16_logits_is_computed_in_float32():
    logits = torch.randn(64, NUM_CLASSES) * 20
    labels = torch.randint(0, NUM_CLASSES, (64,))
    exact = F.cross_entropy(logits.double(), labels)
    assert torch.allclose(task_loss(logits.bfloat16(), labels).double(), exact, rtol=0.02)
    assert task_loss(logits.bfloat16(), labels).dtype == torch.float32


def test_float64_losses_stay_float64():
    """Losses lift bfloat16 to float32 and leave float32 and float64 alone (a float64 check of a
    gradient stays float64)."""
    logits, labels = torch.randn(8, NUM_CLASSES, dtype=torch.float64), torch.arange(8) % NUM_CLASSES
    assert task_loss(logits, labels).dtype == torch.float64
    assert feature_loss("l2", logits, logits.flip(0)).dtype == torch.float64
    assert precision_module.full_precision(logits.bfloat16()).dtype == torch.float32
