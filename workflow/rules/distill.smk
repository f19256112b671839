def distill_sources(wildcards):
    """The distill stage's files without the other methods' modules: a job depends on its own method's
    module only (config/methods.py registers which module implements each method)."""
    others = distill_methods.other_method_modules(wildcards.method)
    return stage_sources("distill", exclude=others)


def expert_files(dataset):
    """Every expert trajectory file of the configured experts block (one job each)."""
    experts = elf_config.experts_config(config)
    return [f"{RESULTS}/{dataset}/experts/{experts['arch']}/expert_{k}.h5" for k in range(experts["num_experts"])]


def distill_experts(wildcards):
    """The expert trajectories a distillation job matches: only MTT has any."""
    return expert_files(wildcards.dataset) if elf_config.uses_experts(wildcards.method) else []


def distill_imports(wildcards):
    """The files method import reads (so replacing one reruns its synthetic set and everything after)."""
    return elf_config.import_files(config, wildcards.dataset, wildcards.method, int(wildcards.ipc))


rule distill:
    """data.h5 -> synthetic set (synset.h5) for one method and IPC."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        experts=distill_experts,
        imported=distill_imports,
        code=distill_sources,
    output:
        f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
    log:
        f"{LOGS}/{{dataset}}/distill/{{method}}_ipc{{ipc}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/distill/{{method}}_ipc{{ipc}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.distill_settings(config, w.dataset, w.method, int(w.ipc))),
        experts=lambda w, input: f"--experts {input.experts}" if input.experts else "",
        device=RUN_ARGS,
    shell:
        f"{PYTHON} distill --data {{input.data:q}} --settings {{params.settings:q}} {{params.experts}} "
        "{params.device} --out {output:q} > {log:q} 2>&1"
