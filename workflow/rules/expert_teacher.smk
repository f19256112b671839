# teacher: {source: distillation} -- the distillation model itself as the ELF teacher. Only MTT keeps
# its distillation models (the experts); teacher `distillation-expert<k>[-epoch<e>]` is expert k
# after epoch e (default: its last), written as an ordinary teacher checkpoint.
ruleorder: expert_teacher > teachers


rule expert_teacher:
    """An MTT expert (a network of the distillation architecture trained on the real data) as teacher."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        expert=distillation_expert,
        code=stage_sources("expert-teacher"),
    output:
        f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/model.pt",
    log:
        f"{LOGS}/{{dataset}}/teachers/{{teacher}}.log",
    wildcard_constraints:
        teacher=_choices(elf_config.distillation_teachers(config)) or "(?!)",
    conda:
        ENV
    threads: 1
    params:
        settings=lambda w: as_json({"epoch": expert_of(w.teacher)[1]}),
        device=RUN_ARGS,
    shell:
        f"{PYTHON} expert-teacher --expert {{input.expert:q}} --data {{input.data:q}} --settings {{params.settings:q}} "
        "{params.device} --out {output:q} > {log:q} 2>&1"
