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
