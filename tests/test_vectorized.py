import copy

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SYN_IPC

from elf_pipeline.config import ConfigError, validate_schema
from elf_pipeline.config.checks import check_config
from elf_pipeline.engine.elf import ElfLoss, Evaluation, fit_students
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.training import TrainConfig, build_seeded, seeded_generator
from elf_pipeline.engine.vectorized import (
    choose_trainer,
    evaluate_vectorized,
    train_vectorized,
    vectorization_blocker,
    vectorize_setting,
)
from elf_pipeline.models import build
from elf_pipeline.stages.students import train_students

CLASSES = 4
SIZE = 16
ELF = Evaluation(loss_mode="front_rear_task", feature_loss="ce")
CPU = torch.device("cpu")


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(24, 1, SIZE, SIZE, generator=gen)
    labels = torch.arange(24) % CLASSES
    test_images = torch.randn(40, 1, SIZE, SIZE, generator=gen)
    test_labels = torch.arange(40) % CLASSES
    target = torch.randn(24, 16, 2, 2, generator=gen)  # 16 teacher channels vs 8 student channels: adapters
    return images, labels, test_images, test_labels, target


def _fit(vectorize: str, dsa: bool, arch: str = "convnet-w8", seeds=(0, 1, 2), epochs: int = 3):
    images, labels, test_images, test_labels, target = _data()
    config = TrainConfig.from_dict({"epochs": epochs, "batch_size": 16, "dsa": dsa, "eval_batch_size": 16})
    return fit_students(arch, ELF, config, images, labels, test_images, test_labels, list(seeds), CLASSES,
                        target=target, vectorize=vectorize)


def _seed_modules(seed: int, arch: str = "convnet-w8"):
    images, _, _, _, target = _data()
    model = build_seeded(lambda: build(arch, 1, CLASSES, SIZE), seed)
    with torch.no_grad():
        shape = tuple(model.eval().front(images[:1]).shape[1:])
    model.train()
    return model, build_seeded(lambda: ElfLoss(ELF, target, shape), seed + 1)


# --------------------------------------------------------------------------- same protocol as the loop

@pytest.mark.parametrize("arch", ["convnet-w8", "convnet-w8-gn"])  # instance norm (GroupNorm(C, C)) and GroupNorm(4, C)
@pytest.mark.parametrize("dsa", [False, True])
def test_vectorized_trainer_follows_the_loop_seed_by_seed(arch, dsa):
    loop, vectorized = _fit("false", dsa, arch), _fit("true", dsa, arch)
    assert loop.trainer == "loop" and vectorized.trainer == "vectorized"
    for a, b in zip(loop.seeds, vectorized.seeds, strict=True):
        assert a.seed == b.seed
        # the first batch is computed before any update: same loss up to float rounding, and with DSA
        # on, the same augmentation (each seed draws from its own generator in the loop's order)
        assert b.history[0] == pytest.approx(a.history[0], abs=1e-5)
        assert b.history == pytest.approx(a.history, abs=1e-4)  # later epochs: not bitwise, within tolerance
        assert abs(a.test_acc - b.test_acc) <= 1 / 40 + 1e-9
        assert (a.student_layer, a.student_shape, a.adapted) == (b.student_layer, b.student_shape, b.adapted)
    histories = [tuple(r.history) for r in vectorized.seeds]
    assert len(set(histories)) == len(histories)  # seeds differ from each other


def test_a_seed_does_not_depend_on_the_other_seeds():
    images, labels, _, _, _ = _data()
    config = TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "dsa": True})

    def run(second_seed: int):
        (m0, o0), (m1, o1) = _seed_modules(0), _seed_modules(second_seed)
        result = train_vectorized([m0, m1], [o0, o1], images, labels, config,
                                  [seeded_generator(0), seeded_generator(second_seed)])
        return result.histories, m0, m1

    histories_a, first_a, second_a = run(1)
    histories_b, first_b, second_b = run(7)
    assert histories_a[0] == pytest.approx(histories_b[0], abs=1e-6)
    for p, q in zip(first_a.parameters(), first_b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert histories_a[1] != pytest.approx(histories_b[1], abs=1e-4)
    assert any(not torch.allclose(p, q) for p, q in zip(second_a.parameters(), second_b.parameters(), strict=True))


def test_trained_parameters_are_written_back_and_evaluate_like_the_loop():
    images, labels, test_images, test_labels, _ = _data()
    config = TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "dsa": False})
    pairs = [_seed_modules(seed) for seed in (3, 4)]
    before = [p.detach().clone() for p in pairs[0][0].parameters()]
    train_vectorized([m for m, _ in pairs], [o for _, o in pairs], images, labels, config,
                     [seeded_generator(3), seeded_generator(4)])
    assert any(not torch.equal(a, b) for a, b in zip(before, pairs[0][0].parameters(), strict=True))
    models = [m for m, _ in pairs]
    together = evaluate_vectorized(models, test_images, test_labels, batch_size=16)
    one_by_one = [evaluate(model, test_images, test_labels, batch_size=16) for model in models]
    assert together == pytest.approx(one_by_one, abs=1 / 40 + 1e-9)
    assert all(model.training for model in models)  # mode restored


def test_amp_runs_the_vectorized_step_in_bfloat16_on_cpu():
    fit = _fit("true", dsa=True, seeds=(0, 1), epochs=2)
    images, labels, test_images, test_labels, target = _data()
    config = TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "dsa": True, "eval_batch_size": 16})
    amp = fit_students("convnet-w8", ELF, config, images, labels, test_images, test_labels, [0, 1], CLASSES,
                       target=target, vectorize="true", precision="bf16")
    assert amp.trainer == "vectorized"
    for a, b in zip(fit.seeds, amp.seeds, strict=True):
        assert b.history[0] == pytest.approx(a.history[0], rel=0.05)  # bfloat16: close, not equal
        assert b.history[0] != a.history[0]


# --------------------------------------------------------------------------- choosing the trainer

def test_choose_trainer():
    model, objective = _seed_modules(0)
    bn = build("convnet-w8-bn", 1, CLASSES, SIZE)
    assert choose_trainer("true", [model, objective], CPU, 3)[0] == "vectorized"
    assert choose_trainer(True, [model, objective], CPU, 3)[0] == "vectorized"
    assert choose_trainer("false", [model, objective], CPU, 3) == ("loop", "vectorize_seeds is false")
    assert choose_trainer("auto", [model, objective], CPU, 3)[0] == "loop"  # CPU: the loop is as fast
    assert choose_trainer("auto", [model, objective], torch.device("cuda"), 3)[0] == "vectorized"
    assert choose_trainer("true", [model, objective], CPU, 1) == ("loop", "a single seed")
    trainer, why = choose_trainer("true", [bn], CPU, 3)
    assert trainer == "loop" and "batch norm" in why
    assert vectorization_blocker(model, objective) is None
    assert "batch norm" in vectorization_blocker(bn)
    assert "dropout" in vectorization_blocker(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)))
    assert [vectorize_setting(v) for v in ("auto", "TRUE", False, True)] == ["auto", "true", "false", "true"]
    with pytest.raises(ValueError, match="vectorize_seeds must be one of"):
        vectorize_setting("sometimes")
    with pytest.raises(ValueError, match="cannot vectorise"):
        train_vectorized([bn, bn], [torch.nn.Identity(), torch.nn.Identity()], torch.zeros(2, 1, SIZE, SIZE),
                         torch.zeros(2, dtype=torch.long), TrainConfig(epochs=1), [seeded_generator(0)] * 2)


def test_batch_norm_models_fall_back_to_the_loop():
    fit = _fit("true", dsa=False, arch="convnet-w8-bn", seeds=(0, 1), epochs=1)
    assert fit.trainer == "loop" and "batch norm" in fit.reason
    assert [r.seed for r in fit.seeds] == [0, 1] and all(0 <= r.test_acc <= 1 for r in fit.seeds)


# --------------------------------------------------------------------------- the pipeline stage

def test_student_rows_record_trainer_and_memory(digits_h5, synset_h5, features_h5, tmp_path):
    evaluation = {"loss_mode": "front_rear_task", "feature_loss": "ce"}
    identity = {"dataset": "digits", "method": "random", "ipc": SYN_IPC, "teacher": "tiny", "evaluation": "elf"}
    train = {"epochs": 2, "batch_size": 8, "eval_batch_size": 128, "dsa": True}
    frames = {}
    for setting in (True, False):
        frames[setting] = train_students(digits_h5, synset_h5, features_h5, "convnet-w4", evaluation,
                                         {**train, "vectorize_seeds": setting}, [0, 1], tmp_path / f"{setting}.parquet",
                                         identity, device="cpu")
    vectorized, loop = frames[True], frames[False]
    assert list(vectorized["trainer"]) == ["vectorized"] * 2 and list(loop["trainer"]) == ["loop"] * 2
    for frame in (vectorized, loop):
        assert (frame["peak_memory_mb"] > 10).all()
        assert frame["device_peak_memory_mb"].isna().all()  # CPU
        assert (frame["test_seconds"] > 0).all() and (frame["train_seconds"] > 0).all()
    # the trainer is not part of the protocol: same config hash, no protocol column for it
    assert vectorized["config_hash"].iloc[0] == loop["config_hash"].iloc[0]
    default = train_students(digits_h5, synset_h5, features_h5, "convnet-w4", evaluation, train, [0],
                             tmp_path / "default.parquet", identity, device="cpu")
    assert default["config_hash"].iloc[0] == loop["config_hash"].iloc[0] and default["trainer"].iloc[0] == "loop"
    assert default["test_acc"].iloc[0] == loop["test_acc"].iloc[0]  # auto on CPU = the loop, same numbers
    assert not any("vectorize" in column for column in vectorized.columns)
    pd.testing.assert_series_equal(vectorized["test_acc"], loop["test_acc"], atol=2 / 359 + 1e-9, check_exact=False)


def test_config_accepts_vectorize_seeds_for_students_only():
    with open(REPO / "config" / "config.yaml") as handle:
        config = yaml.safe_load(handle)
    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    for value in ("auto", True, False):
        ok = copy.deepcopy(config)
        ok["students"]["train"]["vectorize_seeds"] = value
        validate_schema(ok, schema)
        check_config(ok)
    bad = copy.deepcopy(config)
    bad["students"]["train"]["vectorize_seeds"] = "sometimes"
    with pytest.raises(ConfigError, match="vectorize_seeds"):
        validate_schema(bad, schema)
    teacher = copy.deepcopy(config)
    name = next(iter(teacher["teachers"]))
    teacher["teachers"][name]["train"]["vectorize_seeds"] = True
    validate_schema(teacher, schema)
    with pytest.raises(ConfigError, match=f"teachers.{name}.train.vectorize_seeds"):
        check_config(teacher)


def test_a_failing_compiler_falls_back_to_eager_with_a_note(monkeypatch):
    """The CPU side of ``--compile``: a step that torch.compile cannot build still trains, eagerly."""
    def broken_compile(fn):
        def compiled(*args):
            raise RuntimeError("no compiler here\nsecond line")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = _fit("true", dsa=True, seeds=(0, 1), epochs=2)
    images, labels, test_images, test_labels, target = _data()
    config = TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "dsa": True, "eval_batch_size": 16})
    fit = fit_students("convnet-w8", ELF, config, images, labels, test_images, test_labels, [0, 1], CLASSES,
                       target=target, vectorize="true", compile=True)
    assert fit.trainer == "vectorized" and not fit.compiled
    assert fit.notes == ["torch.compile failed (RuntimeError: no compiler here); ran eagerly"]
    assert [r.history for r in fit.seeds] == [r.history for r in eager.seeds]


def test_vectorized_divergence_names_its_epoch_although_losses_sync_in_blocks(monkeypatch):
    """Losses reach the host every SYNC_EPOCHS epochs; a run that turns NaN still stops with the
    epoch it happened in, and a finite run keeps one history entry per epoch."""
    import elf_pipeline.engine.vectorized as vectorized
    from elf_pipeline.engine.training import TrainingDiverged

    monkeypatch.setattr(vectorized, "SYNC_EPOCHS", 4)
    images, labels, _, _, _ = _data()
    config = TrainConfig.from_dict({"epochs": 6, "batch_size": 16, "dsa": False})
    pairs = [_seed_modules(seed) for seed in (0, 1)]
    run = train_vectorized([m for m, _ in pairs], [o for _, o in pairs], images, labels, config,
                           [seeded_generator(s) for s in (0, 1)])
    assert [len(history) for history in run.histories] == [6, 6]

    poisoned = images.clone()
    calls = {"n": 0}
    original = vectorized._forward_backward

    def nan_from_epoch_3(step, params, x, y, index, device, amp):
        calls["n"] += 1
        if calls["n"] >= 5:  # 2 batches per epoch: epoch 3 starts at the 5th step
            x = x * float("nan")
        return original(step, params, x, y, index, device, amp)

    monkeypatch.setattr(vectorized, "_forward_backward", nan_from_epoch_3)
    pairs = [_seed_modules(seed) for seed in (0, 1)]
    with pytest.raises(TrainingDiverged, match="in epoch 3 "):
        train_vectorized([m for m, _ in pairs], [o for _, o in pairs], poisoned, labels, config,
                         [seeded_generator(s) for s in (0, 1)])


@pytest.mark.parametrize("setting, device, compile, n, batch, expected", [
    ("auto", "cpu", False, 100, 256, False),     # CUDA graphs exist on CUDA only
    ("true", "cpu", False, 100, 256, False),
    ("auto", "cuda", False, 100, 256, True),     # one batch per epoch
    ("auto", "cuda", False, 512, 256, True),     # equal batches
    ("auto", "cuda", False, 500, 256, False),    # a short last batch would need a second graph
    ("auto", "cuda", True, 100, 256, False),     # torch.compile manages its own graphs
    ("false", "cuda", False, 100, 256, False),
])
def test_cuda_graphs_setting(setting, device, compile, n, batch, expected):
    from elf_pipeline.engine.vectorized import graphs_setting

    use, why = graphs_setting(setting, torch.device(device), compile, n, batch)
    assert use is expected and why
    with pytest.raises(ValueError, match="cuda_graphs"):
        graphs_setting("sometimes", torch.device(device), compile, n, batch)
