def student_features(wildcards):
    """What a student reads of its teacher: the stored features (ELF's cached targets) and/or the
    checkpoint (online ELF targets, KD logits, relabelling)."""
    if not elf_config.uses_teacher(config, wildcards.evaluation):
        return []
    teacher = elf_config.teacher_name(config, wildcards.evaluation, wildcards.arch)
    files = []
    if elf_config.uses_teacher_features(config, wildcards.evaluation):
        files.append(f"{RESULTS}/{wildcards.dataset}/features/{wildcards.method}/ipc{wildcards.ipc}/{teacher}.h5")
    if elf_config.uses_teacher_checkpoint(config, wildcards.evaluation):
        files.append(f"{RESULTS}/{wildcards.dataset}/teachers/{teacher}/model.pt")
    return files


def student_teacher_args(wildcards, input):
    flags = {".h5": "--features", ".pt": "--teacher-model"}
    return " ".join(f"{flags[Path(path).suffix]} {path}" for path in input.features)


def student_identity(wildcards):
    """The names a student's rows carry (dataset, method, IPC, evaluation, teacher)."""
    return {
        "dataset": wildcards.dataset,
        "method": wildcards.method,
        "ipc": int(wildcards.ipc),
        "evaluation": wildcards.evaluation,
        "teacher": elf_config.teacher_name(config, wildcards.evaluation, wildcards.arch),
    }


def student_choice(wildcards):
    """A student's choice.json where its values are selected (else nothing)."""
    if not elf_config.applied_select_keys(config, wildcards.evaluation, wildcards.arch):
        return []
    return [f"{select_folder(select_identity(wildcards))}/choice.json"]


rule students:
    """Train one architecture under one evaluation on a synthetic set, all seeds; one row per seed."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
        features=student_features,
        choice=student_choice,
        code=stage_sources("students"),
    output:
        f"{RESULTS}/{{dataset}}/students/{{method}}/ipc{{ipc}}/{{arch}}/{{evaluation}}.parquet",
    log:
        f"{LOGS}/{{dataset}}/students/{{method}}_ipc{{ipc}}_{{arch}}_{{evaluation}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/students/{{method}}_ipc{{ipc}}_{{arch}}_{{evaluation}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.student_settings(config, w.evaluation, w.arch, student_identity(w))),
        features=student_teacher_args,
        choice=lambda w, input: " ".join(f"--choice {path}" for path in input.choice),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} students --data {{input.data:q}} --synset {{input.synset:q}} {{params.features}} {{params.choice}} "
        "--settings {params.settings:q} {params.device} --out {output:q} > {log:q} 2>&1"
