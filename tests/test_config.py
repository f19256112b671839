import copy
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

import elf_pipeline.config.methods
import elf_pipeline.engine.losses
import elf_pipeline.stages.data
import elf_pipeline.stages.distill
from elf_pipeline.config import (
    DATA_SOURCES,
    FEATURE_LOSSES,
    LOSS_MODES,
    METHODS,
    ConfigError,
    evaluation_config,
    merged,
    method_config,
    student_jobs,
    student_train_config,
    uses_teacher,
    validate_schema,
)
from elf_pipeline.config.checks import check_config

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
CONFIGS = sorted(path.name for path in (REPO / "config").glob("*.yaml")) + sorted(
    f"tests/configs/{path.name}" for path in (REPO / "tests" / "configs").glob("*.yaml"))


def _load(name: str) -> dict:
    with open(REPO / name if "/" in name else REPO / "config" / name) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def default_config() -> dict:
    return _load("config.yaml")


def validate(config: dict) -> None:
    """What the workflow does while parsing: the schema, then the semantic checks."""
    validate_schema(config, SCHEMA)
    check_config(config)


def _mutated(config: dict, change) -> dict:
    config = copy.deepcopy(config)
    change(config)
    return config


def _expect(config: dict, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config)
    message = str(info.value)
    assert message.startswith("config key ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    validate(_load(name))


@pytest.mark.parametrize("constant, stage", [
    (METHODS, lambda: elf_pipeline.config.methods.METHODS),
    (METHODS, lambda: elf_pipeline.config.methods.SETTINGS),
    (LOSS_MODES, lambda: elf_pipeline.engine.losses.LOSS_MODES),
    (FEATURE_LOSSES, lambda: elf_pipeline.engine.losses.FEATURE_LOSSES),
    (DATA_SOURCES, lambda: elf_pipeline.stages.data.SOURCES),
], ids=["METHODS", "METHOD_SETTINGS", "LOSS_MODES", "FEATURE_LOSSES", "DATA_SOURCES"])
def test_constants_are_in_sync_with_the_stage_modules(constant, stage):
    assert constant == tuple(stage())


def test_schema_enums_are_the_vocabulary():
    from elf_pipeline.config import vocab

    with open(SCHEMA) as handle:
        schema = yaml.safe_load(handle)
    evaluation = schema["properties"]["evaluations"]["additionalProperties"]["properties"]
    assert tuple(evaluation["loss_mode"]["enum"]) == tuple(vocab.LOSS_MODES) == LOSS_MODES
    assert tuple(evaluation["feature_loss"]["enum"]) == vocab.FEATURE_LOSSES == FEATURE_LOSSES
    assert tuple(evaluation["teacher_targets"]["enum"]) == vocab.TEACHER_TARGETS
    assert tuple(evaluation["adapter"]["enum"]) == vocab.ADAPTER_FORMS
    named = schema["$defs"]["method"]["properties"]["normalization"]["oneOf"][0]  # or {published: <code>}, {mean, std}
    assert tuple(named["enum"]) == vocab.IMPORT_NORMALIZATIONS


def test_stage_modules_use_the_vocabulary():
    from elf_pipeline.config import vocab
    from elf_pipeline.engine import elf, losses
    from elf_pipeline.stages.distill import imported

    assert elf.ADAPTER_FORMS is vocab.ADAPTER_FORMS and elf.TEACHER_TARGETS is vocab.TEACHER_TARGETS
    assert losses.LOSS_MODES is vocab.LOSS_MODES and imported.NORMALIZATIONS is vocab.IMPORT_NORMALIZATIONS


def test_unknown_top_level_key(default_config):
    config = _mutated(default_config, lambda c: c.update(studnets={"archs": ["convnet"]}))
    _expect(config, "studnets", "unknown key", "students")


def test_unknown_nested_key(default_config):
    config = _mutated(default_config, lambda c: c["students"]["train"].update(epoch=5))
    _expect(config, "students.train.epoch", "unknown key")
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(lamda_front=2.0))
    _expect(config, "evaluations.elf.lamda_front", "unknown key")


def test_wrong_type(default_config):
    config = _mutated(default_config, lambda c: c["students"]["train"].update(epochs="ten"))
    _expect(config, "students.train.epochs", "'ten'")


def test_zero_epochs(default_config):
    config = _mutated(default_config, lambda c: c["students"]["train"].update(epochs=0))
    _expect(config, "students.train.epochs")
    teacher = next(iter(default_config["teachers"]))
    config = _mutated(default_config, lambda c: c["teachers"][teacher]["train"].update(epochs=0))
    _expect(config, f"teachers.{teacher}.train.epochs")


def test_ipc_zero_and_duplicate_ipc(default_config):
    config = _mutated(default_config, lambda c: c["distillation"].update(ipc=[1, 0]))
    _expect(config, "distillation.ipc")
    config = _mutated(default_config, lambda c: c["distillation"].update(ipc=[1, 10, 1]))
    _expect(config, "distillation.ipc", "unique")


def test_unknown_student_arch(default_config):
    config = _mutated(default_config, lambda c: c["students"]["archs"].append("resnet19"))
    index = len(default_config["students"]["archs"])
    _expect(config, f"students.archs[{index}]", "'resnet19'")


def test_unknown_teacher_and_distillation_arch(default_config):
    teacher = next(iter(default_config["teachers"]))
    config = _mutated(default_config, lambda c: c["teachers"][teacher].update(arch="convnet-w0"))
    _expect(config, f"teachers.{teacher}.arch", "'convnet-w0'")
    config = _mutated(default_config, lambda c: c["distillation"]["methods"]["dm"].update(model="no_such_net"))
    _expect(config, "distillation.methods.dm.model", "'no_such_net'")


def test_unknown_method(default_config):
    config = _mutated(default_config, lambda c: c["distillation"]["methods"].update(no_such_method={}))
    _expect(config, "distillation.methods.no_such_method", "unknown method")


def test_unknown_dataset_source(default_config):
    name = next(iter(default_config["datasets"]))
    config = _mutated(default_config, lambda c: c["datasets"][name].update(source="no_such_dataset"))
    _expect(config, f"datasets.{name}.source", "'no_such_dataset'")


def test_evaluation_with_unknown_teacher(default_config):
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(teacher="convnet-w1024"))
    _expect(config, "evaluations.elf.teacher", "'convnet-w1024'")


def test_evaluation_needing_a_teacher_without_one(default_config):
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].pop("teacher"))
    _expect(config, "evaluations.elf.teacher", "needs a teacher")


def test_task_evaluation_needs_no_teacher(default_config):
    config = _mutated(default_config, lambda c: c["evaluations"].update(plain={"loss_mode": "task"}))
    validate(config)
    assert not uses_teacher(config, "plain") and uses_teacher(config, "elf")


def test_duplicate_seeds(default_config):
    config = _mutated(default_config, lambda c: c["students"].update(seeds=[0, 1, 0]))
    _expect(config, "students.seeds", "unique")


def test_checkpoint_epoch_beyond_epochs(default_config):
    teacher = next(iter(default_config["teachers"]))
    epochs = default_config["teachers"][teacher]["train"]["epochs"]
    config = _mutated(default_config, lambda c: c["teachers"][teacher].update(checkpoint_epoch=epochs + 1))
    _expect(config, f"teachers.{teacher}.checkpoint_epoch", str(epochs + 1))
    config = _mutated(default_config, lambda c: c["teachers"][teacher].update(checkpoint_epoch=epochs))
    validate(config)


def test_unknown_loss_mode_and_feature_loss(default_config):
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(loss_mode="front"))
    _expect(config, "evaluations.elf.loss_mode")
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(feature_loss="kl"))
    _expect(config, "evaluations.elf.feature_loss")


def test_merged_is_recursive_and_does_not_alias():
    base = {"a": 1, "nested": {"x": 1, "y": [1, 2]}}
    out = merged(base, {"nested": {"y": [3]}, "b": 2})
    assert out == {"a": 1, "b": 2, "nested": {"x": 1, "y": [3]}}
    out["nested"]["x"] = 99
    assert base["nested"]["x"] == 1
    assert merged(base, None) == base


def test_method_config_layers_method_ipc_and_dataset_overrides(default_config):
    config = copy.deepcopy(default_config)
    dataset = next(iter(config["datasets"]))
    config["distillation"]["methods"]["dm"]["by_ipc"] = {10: {"iterations": 7}, "1": {"batch_real": 3}}
    config["datasets"][dataset]["distillation"] = {"dm": {"lr_img": 0.1}}
    at_10 = method_config(config, dataset, "dm", 10)
    at_1 = method_config(config, dataset, "dm", 1)
    base = default_config["distillation"]["methods"]["dm"]
    assert at_10["iterations"] == 7 and at_10["batch_real"] == base["batch_real"]
    assert at_1["batch_real"] == 3 and at_1["iterations"] == base["iterations"]
    assert at_1["lr_img"] == at_10["lr_img"] == 0.1
    assert "by_ipc" not in at_10
    assert method_config(config, dataset, "random", 1) == {}


def test_evaluation_and_student_train_config(default_config):
    config = copy.deepcopy(default_config)
    config["evaluations"]["elf"]["train"] = {"epochs": 3}
    assert "train" not in evaluation_config(config, "elf")
    assert evaluation_config(config, "elf")["loss_mode"] == "front_rear_task"
    train = student_train_config(config, "elf")
    assert train["epochs"] == 3 and train["lr"] == default_config["students"]["train"]["lr"]
    assert student_train_config(config, "baseline") == default_config["students"]["train"]


def test_train_by_arch_sits_between_the_students_and_the_evaluations_train(default_config):
    from elf_pipeline.config import student_settings

    config = copy.deepcopy(default_config)
    config["students"]["train_by_arch"] = {"vgg11": {"lr": 0.005, "momentum": 0.5}}
    config["evaluations"]["elf"]["train"] = {"momentum": 0.8}
    validate(config)
    base = default_config["students"]["train"]
    assert student_train_config(config, "baseline", "vgg11") == {**base, "lr": 0.005, "momentum": 0.5}
    assert student_train_config(config, "elf", "vgg11") == {**base, "lr": 0.005, "momentum": 0.8}  # evaluation wins
    assert student_train_config(config, "baseline", "convnet") == base
    # the per-job settings (what decides a rerun) change for that architecture only
    identity = {"dataset": "fashion_mnist", "method": "dm", "ipc": 10}
    for arch in default_config["students"]["archs"]:
        before = student_settings(default_config, "baseline", arch, identity)
        after = student_settings(config, "baseline", arch, identity)
        assert (before != after) == (arch == "vgg11"), arch
    assert after["train"]["lr"] == base["lr"]
    assert student_settings(config, "elf", "vgg11", identity)["train"]["lr"] == 0.005


@pytest.mark.parametrize("by_arch, fragments", [
    ({"resnet50": {"lr": 0.005}}, ("students.train_by_arch.resnet50", "not a student architecture")),
    ({"vgg11": {"lr_decay_at": 0.99}}, ("students.train_by_arch.vgg11.lr_decay_at", "never")),
    ({"vgg11": {"lr": -1}}, ("students.train_by_arch.vgg11.lr",)),
    ({"vgg11": {"epoch": 3}}, ("students.train_by_arch.vgg11.epoch", "unknown key")),
])
def test_bad_train_by_arch_names_the_key(default_config, by_arch, fragments):
    _expect(_mutated(default_config, lambda c: c["students"].update(train_by_arch=by_arch)), *fragments)


def test_a_norm_pair_with_different_per_architecture_training_is_refused():
    config = _load("tests/configs/study-smoke.yaml")
    own, instance = next(iter(config["studies"]["norm"]["pairs"].items()))
    config["students"]["train_by_arch"] = {own: {"lr": 0.005}}
    _expect(config, f"studies.norm.pairs.{own}", f"{own} and {instance}", "students.train_by_arch")
    config["students"]["train_by_arch"] = {own: {"lr": 0.005}, instance: {"lr": 0.005}}
    validate(config)  # the same block on both sides: the pair still measures the normalisation alone


def test_an_evaluation_schedule_clash_names_the_per_architecture_block(default_config):
    config = _mutated(default_config, lambda c: (c["students"].update(train_by_arch={"vgg11": {"epochs": 2}}),
                                                 c["evaluations"]["elf"].update(train={"lr_decay_at": 0.5})))
    config["students"]["train_by_arch"]["vgg11"]["lr_decay_at"] = 0.4  # valid on its own: decays after epoch 1 of 2
    validate(config)
    config["evaluations"]["elf"]["train"] = {"lr_decay_at": 0.6}  # epoch 2 of 2 for vgg11 only: never
    _expect(config, "evaluations.elf.train.lr_decay_at", "for vgg11, with students.train_by_arch.vgg11")


def test_student_jobs_cover_the_grid(default_config):
    jobs = student_jobs(default_config)
    # every evaluation runs for every method its `methods` names (default: all of them)
    pairs = sum(len(block.get("methods") or default_config["distillation"]["methods"])
                for block in default_config["evaluations"].values())
    assert pairs < len(default_config["evaluations"]) * len(default_config["distillation"]["methods"])  # elf: dm only
    expected = (len(default_config["datasets"]) * pairs * len(default_config["distillation"]["ipc"])
                * len(default_config["students"]["archs"]))
    assert len(jobs) == expected
    assert len({tuple(sorted(job.items())) for job in jobs}) == expected


def test_config_module_imports_no_torch():
    code = "import sys, elf_pipeline.config; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def smoke_config() -> dict:
    return _load("tests/configs/smoke.yaml")


def test_students_evaluations_limit_the_main_jobs(smoke_config):
    assert {job["evaluation"] for job in student_jobs(smoke_config)} == set(smoke_config["evaluations"])
    config = _mutated(smoke_config, lambda c: c["evaluations"].update(elf_l2={**c["evaluations"]["elf"], "feature_loss": "l2"}))
    config["students"]["evaluations"] = ["elf", "baseline"]
    validate(config)
    jobs = student_jobs(config)
    assert {job["evaluation"] for job in jobs} == {"baseline", "elf"}
    assert len(jobs) == len(student_jobs(smoke_config))
    config["students"]["evaluations"] = ["elf_l2"]
    assert {(job["arch"], job["evaluation"]) for job in student_jobs(config)} == {
        (arch, "elf_l2") for arch in config["students"]["archs"]}


@pytest.mark.parametrize("evaluations, fragments", [
    (["baseline", "elf_l2"], ["config key students.evaluations[1]: unknown evaluation 'elf_l2' (configured: baseline, elf)"]),
    ([], ["config key students.evaluations"]),
    (["elf", "elf"], ["config key students.evaluations", "non-unique"]),
    ("elf", ["config key students.evaluations", "not of type 'array'"]),
])
def test_bad_students_evaluations_name_the_key(smoke_config, evaluations, fragments):
    _expect(_mutated(smoke_config, lambda c: c["students"].update(evaluations=evaluations)), *fragments)


def test_study_ablation_config_names_the_key():
    config = _load("tests/configs/study-smoke.yaml")
    config["studies"]["ablation"] = {"archs": ["convnet-bn"], "evaluations": ["baseline", "elf"]}
    validate(config)
    _expect(_mutated(config, lambda c: c["studies"]["ablation"]["evaluations"].append("elf_cos")),
            "config key studies.ablation.evaluations[2]: unknown evaluation 'elf_cos' (configured: baseline, elf)")
    _expect(_mutated(config, lambda c: c["studies"]["ablation"].update(arch=["vgg11"])), "config key studies.ablation.arch", "unknown key")


def test_ablation_config_shares_the_default_recipe():
    """config/ablation.yaml ablates ELF on the data, synthetic set, teacher and student protocol of
    config/elf-claim.yaml (the default study at the full CPU budget): the shared blocks must stay
    equal, or the ablation measures something else."""
    default, ablation = _load("elf-claim.yaml"), _load("ablation.yaml")
    assert ablation["datasets"] == default["datasets"]
    # the ablation's strong teacher is elf-claim's teacher; its 20,000-image teacher is the default study's
    assert ablation["teachers"]["convnet_full"] == default["teachers"]["convnet"]
    assert ablation["teachers"]["convnet"] == _load("config.yaml")["teachers"]["convnet"]
    assert ablation["distillation"]["methods"]["dm"] == default["distillation"]["methods"]["dm"]
    assert ablation["students"]["train"] == default["students"]["train"]
    assert ablation["evaluations"]["baseline"] == default["evaluations"]["baseline"]
    def loss(block):
        return (block["loss_mode"], block["feature_loss"], block.get("lambda_front", 1.0), block.get("lambda_rear", 1.0),
                block.get("adapter", "pair"))

    assert loss(ablation["evaluations"]["elf"]) == loss(default["evaluations"]["elf"])
    assert ablation["results_dir"] != default.get("results_dir", "results")
    # the default study is the same question on a smaller budget: same data source, set and teacher
    small = _load("config.yaml")
    assert small["distillation"] == default["distillation"]
    assert small["evaluations"] == default["evaluations"]


def test_cpu_ablation_config_shares_the_default_study_recipe():
    """config/ablation-cpu.yaml is the ablation on the 30-minute default's data, synthetic set, teacher
    and student protocol (config/config.yaml), so its cells explain the default's figures."""
    default, ablation = _load("config.yaml"), _load("ablation-cpu.yaml")
    assert ablation["datasets"] == default["datasets"]
    assert ablation["teachers"] == default["teachers"]
    assert ablation["distillation"]["methods"]["dm"] == default["distillation"]["methods"]["dm"]
    assert ablation["students"]["train"] == default["students"]["train"]
    # the default's students, and ResNet18, which the default leaves out for time
    assert set(ablation["studies"]["ablation"]["archs"]) <= set(default["students"]["archs"]) | {"resnet18"}
    assert ablation["evaluations"]["baseline"] == default["evaluations"]["baseline"]
    elf, ablated = default["evaluations"]["elf"], ablation["evaluations"]["elf"]
    for key in ("loss_mode", "feature_loss", "adapter"):
        assert ablated[key] == elf[key], key
    assert {elf["teacher"][arch] for arch in ablation["studies"]["ablation"]["archs"]
            if arch in elf["teacher"]} | {elf["teacher"]["default"]} == {ablated["teacher"]}
    # the full grid's evaluations, except the strong teacher the default recipe does not train
    full = _load("ablation.yaml")["studies"]["ablation"]["evaluations"]
    assert ablation["studies"]["ablation"]["evaluations"] == [name for name in full if name != "elf_strong"]
    assert ablation["results_dir"] not in (default.get("results_dir", "results"), _load("ablation.yaml")["results_dir"])


@pytest.mark.parametrize("change, key", [
    (lambda c: c["distillation"]["methods"]["dm"].update(syn_steps=10), "distillation.methods.dm.syn_steps"),
    (lambda c: c["distillation"]["methods"]["dm"].update(by_ipc={10: {"outer_loop": 5}}),
     "distillation.methods.dm.by_ipc.10.outer_loop"),
    (lambda c: c["distillation"]["methods"]["random"].update(iterations=5), "distillation.methods.random.iterations"),
    (lambda c: c["datasets"]["fashion_mnist"].update(distillation={"dm": {"lr_teacher": 0.01}}),
     "datasets.fashion_mnist.distillation.dm.lr_teacher"),
])
def test_a_key_the_method_does_not_take_is_named(default_config, change, key):
    message = _expect(_mutated(default_config, change), key)
    assert "takes no" in message


@pytest.mark.parametrize("method", METHODS)
def test_method_settings_match_the_functions_keyword_parameters(method):
    """The settings dataclass is the definition; each method function takes exactly its keys with the same defaults."""
    import dataclasses
    import inspect

    from elf_pipeline.config.methods import METHODS as REGISTRY
    from elf_pipeline.config.methods import SETTINGS, method_keys
    from elf_pipeline.stages.distill import method_function

    function = method_function(method, REGISTRY[method].signature_of)
    parameters = inspect.signature(function).parameters
    supplied = {"images", "labels", "num_classes", "ipc", "seed", "device", "resume", "experts", "data", "precision"}
    assert method_keys(method) == set(parameters) - supplied
    for field in dataclasses.fields(SETTINGS[method]):
        assert field.default == parameters[field.name].default, (method, field.name)


def test_a_dm_block_with_syn_steps_names_the_key_and_the_method(default_config):
    from elf_pipeline.config.methods import parse_settings
    from elf_pipeline.infra.errors import InputError

    with pytest.raises(InputError) as info:
        parse_settings("dm", {"iterations": 1, "syn_steps": 3})
    assert str(info.value).startswith("method dm takes no 'syn_steps'") and "\n" not in str(info.value)
    config = _mutated(default_config, lambda c: c["distillation"]["methods"]["dm"].update(syn_steps=3))
    _expect(config, "distillation.methods.dm.syn_steps", "method dm takes no syn_steps")


def test_run_distill_refuses_a_key_its_method_does_not_take(digits_h5, tmp_path):
    from elf_pipeline.infra.errors import InputError
    from elf_pipeline.stages.distill import run_distill

    with pytest.raises(InputError, match="method dm takes no 'syn_steps'"):
        run_distill(digits_h5, tmp_path / "s.h5", "dm", 1, {"iterations": 1, "syn_steps": 3}, device="cpu")
    assert not (tmp_path / "s.h5").exists()


def test_a_schema_default_is_what_the_stage_sees(default_config, monkeypatch):
    """Changing nothing but a default in the schema changes the block the rule passes (and so reruns the job)."""
    from elf_pipeline import config as config_module
    from elf_pipeline.config import schema

    teacher = next(iter(default_config["teachers"]))
    before = config_module.teacher_settings(default_config, teacher)
    assert before["max_in_memory_gb"] == 4.0 and "max_in_memory_gb" not in default_config["teachers"][teacher]
    edited = copy.deepcopy(schema.load_schema())
    teachers = edited["properties"]["teachers"]["additionalProperties"]["properties"]
    teachers["max_in_memory_gb"]["default"] = 1.5
    edited["properties"]["experts"]["properties"]["epochs"]["default"] = 7
    edited["properties"]["reference"]["properties"]["full"]["properties"]["epochs"]["default"] = 11
    monkeypatch.setattr(schema, "load_schema", lambda path=schema.SCHEMA_PATH: edited)
    after = config_module.teacher_settings(default_config, teacher)
    assert after == {**before, "max_in_memory_gb": 1.5}
    assert config_module.expert_settings({**default_config, "experts": {}}, 0)["epochs"] == 7
    assert config_module.full_train_config({k: v for k, v in default_config.items() if k != "reference"})["epochs"] == 11


def test_the_schema_is_the_only_place_of_the_defaults():
    """No module repeats a default the schema gives (the stages read them from elf_pipeline.config.schema)."""
    from elf_pipeline.config import schema

    assert schema.default("teachers", "*", "max_in_memory_gb") == schema.default("experts", "max_in_memory_gb") == 4.0
    assert schema.defaults("reference") == {"enabled": True, "full": {"epochs": 30, "train_limit": None, "seeds": [0]}}
    for path in (REPO / "elf_pipeline").rglob("*.py"):
        text = path.read_text()
        assert "REFERENCE_DEFAULTS" not in text and "EXPERT_DEFAULTS" not in text, path
        if path.name not in ("evaluation.py",):  # the real-data helpers keep a keyword default for direct calls
            assert "max_in_memory_gb: float = 4.0" not in text, path


def test_evaluation_methods_restrict_its_jobs(default_config):
    config = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(methods=["dm"]))
    validate(config)
    jobs = {(job["method"], job["evaluation"]) for job in student_jobs(config)}
    assert ("dm", "elf") in jobs and ("random", "baseline") in jobs and ("random", "elf") not in jobs
    # which methods an evaluation runs for is not part of what a student trains with (no rerun)
    assert "methods" not in evaluation_config(config, "elf", "convnet")
    bad = _mutated(default_config, lambda c: c["evaluations"]["elf"].update(methods=["dm", "mtt"]))
    _expect(bad, "evaluations.elf.methods[1]", "unknown method 'mtt'")
