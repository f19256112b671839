def student_parquets():
    return [
        f"{RESULTS}/{job['dataset']}/students/{job['method']}/ipc{job['ipc']}/{job['arch']}/{job['evaluation']}.parquet"
        for job in elf_config.student_jobs(config)
    ]


def choice_files():
    """Every choice.json of the study (the report's Selection table)."""
    return [f"{select_folder(job)}/choice.json" for job in elf_config.select_jobs(config)]


def reference_parquets():
    """The full-real-data reference results (empty when reference.enabled is false)."""
    return [f"{RESULTS}/{job['dataset']}/reference/{job['arch']}.parquet" for job in elf_config.reference_jobs(config)]


def used_teachers():
    """The trained teachers (keys of teachers) the evaluations use; distillation-model teachers are
    not trained here."""
    return [name for name in elf_config.used_teacher_names(config) if name in config["teachers"]]


def distill_arch_args():
    return " ".join(f"{method}={elf_config.distill_arch(config, method)}" for method in config["distillation"]["methods"])


def benchmark_files():
    """The benchmark file of every heavy job of this study (those missing, e.g. of jobs cached from
    an older run, are skipped by the report). Patterns come from the rules themselves."""
    study = config["distillation"]
    patterns = {
        name: str(getattr(rules, name).benchmark)
        for name in ("distill", "experts", "teachers", "students", "reference")
        if hasattr(rules, name)
    }
    files = []
    for dataset in config["datasets"]:
        for method in study["methods"]:
            files += [patterns["distill"].format(dataset=dataset, method=method, ipc=ipc) for ipc in study["ipc"]]
        if "experts" in patterns and any(elf_config.uses_experts(m) for m in study["methods"]):
            experts = elf_config.experts_config(config)
            files += [
                patterns["experts"].format(dataset=dataset, expert_arch=experts["arch"], index=k)
                for k in range(experts["num_experts"])
            ]
        files += [patterns["teachers"].format(dataset=dataset, teacher=teacher) for teacher in used_teachers()]
    files += [patterns["students"].format(**job) for job in elf_config.student_jobs(config)]
    if "reference" in patterns:
        files += [patterns["reference"].format(**job) for job in elf_config.reference_jobs(config)]
    return files


rule report:
    """All student rows -> runs.parquet, the reference rows, the Markdown summary and its HTML twin."""
    input:
        runs=student_parquets(),
        full=reference_parquets(),
        extra=lambda w: EXTRA_REPORT_TABLES,
        selections=choice_files(),
        schema=local_path(REPO / "workflow" / "schemas" / "runs.schema.yaml"),
        code=stage_sources("report"),
    output:
        runs=f"{RESULTS}/report/runs.parquet",
        reference=f"{RESULTS}/report/reference.parquet",
        ddranking=f"{RESULTS}/report/ddranking.parquet",
        summary=f"{RESULTS}/report/summary.md",
        html=report(f"{RESULTS}/report/summary.html", caption="../report/summary.rst", category="Tables"),
    log:
        f"{LOGS}/report.log",
    conda:
        ENV
    threads: 1
    params:
        benchmarks=lambda w: benchmark_files(),
        distill_archs=distill_arch_args(),
    shell:
        f"{PYTHON} report --runs {{output.runs:q}} --summary {{output.summary:q}} --html {{output.html:q}} "
        "--reference-out {output.reference:q} --ddranking-out {output.ddranking:q} {input.runs:q} --full {input.full:q} --extra {input.extra:q} "
        "--selections {input.selections:q} --benchmarks {params.benchmarks:q} --distill-arch {params.distill_archs} > {log:q} 2>&1"


def figure_targets():
    """Every report figure of the study."""
    targets = []
    for dataset in config["datasets"]:
        targets += [f"{RESULTS}/report/figures/{dataset}/accuracy.png", f"{RESULTS}/report/figures/{dataset}/gap_closed.png"]
        targets += [
            f"{RESULTS}/report/figures/{dataset}/synsets/{method}_ipc{ipc}.png"
            for method in config["distillation"]["methods"]
            for ipc in config["distillation"]["ipc"]
        ]
        targets += [f"{RESULTS}/report/figures/{dataset}/teachers/{teacher}.png" for teacher in used_teachers()]
    return targets


rule report_results:
    """Accuracy bars (baseline vs ELF per architecture) and gap closed, per dataset."""
    input:
        runs=rules.report.output.runs,
        reference=rules.report.output.reference,
        code=stage_sources("report-results"),
    output:
        accuracy=report(
            f"{RESULTS}/report/figures/{{dataset}}/accuracy.png",
            caption="../report/accuracy.rst",
            category="Accuracy",
            subcategory="{dataset}",
        ),
        gap=report(
            f"{RESULTS}/report/figures/{{dataset}}/gap_closed.png",
            caption="../report/gap_closed.rst",
            category="Gap closed",
            subcategory="{dataset}",
        ),
    log:
        f"{LOGS}/{{dataset}}/report/results.log",
    conda:
        ENV
    threads: 1
    params:
        distill_archs=distill_arch_args(),
    shell:
        f"{PYTHON} report-results --runs {{input.runs:q}} --reference {{input.reference:q}} --dataset {{wildcards.dataset}} "
        "--distill-arch {params.distill_archs} --out-accuracy {output.accuracy:q} --out-gap {output.gap:q} > {log:q} 2>&1"


rule report_synset:
    """The images of one synthetic set as a class grid, de-normalised with the dataset statistics."""
    input:
        synset=f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=stage_sources("report-synset"),
    output:
        report(
            f"{RESULTS}/report/figures/{{dataset}}/synsets/{{method}}_ipc{{ipc}}.png",
            caption="../report/synset.rst",
            category="Synthetic images",
            subcategory="{dataset}",
            labels={"method": "{method}", "IPC": "{ipc}"},
        ),
    log:
        f"{LOGS}/{{dataset}}/report/synset_{{method}}_ipc{{ipc}}.log",
    conda:
        ENV
    threads: 1
    shell:
        f"{PYTHON} report-synset --synset {{input.synset:q}} --data {{input.data:q}} --out {{output:q}} > {{log:q}} 2>&1"


rule report_teacher:
    """A teacher's training loss and test accuracy per epoch."""
    input:
        history=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/history.json",
        code=stage_sources("report-teacher"),
    output:
        report(
            f"{RESULTS}/report/figures/{{dataset}}/teachers/{{teacher}}.png",
            caption="../report/teacher.rst",
            category="Teachers",
            subcategory="{dataset}",
            labels={"teacher": "{teacher}"},
        ),
    log:
        f"{LOGS}/{{dataset}}/report/teacher_{{teacher}}.log",
    conda:
        ENV
    threads: 1
    params:
        title=lambda w: f"{w.dataset}: teacher {w.teacher} ({config['teachers'][w.teacher]['arch']})",
    shell:
        f"{PYTHON} report-teacher --history {{input.history:q}} --title {{params.title:q}} --out {{output:q}} > {{log:q}} 2>&1"
