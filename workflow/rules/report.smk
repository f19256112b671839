rule report:
    """All student rows -> runs.parquet and the Markdown summary."""
    input:
        runs=student_parquets(),
        code=SOURCES["report"],
    output:
        runs=f"{RESULTS}/report/runs.parquet",
        summary=f"{RESULTS}/report/summary.md",
    log:
        f"{LOGS}/report.log",
    conda:
        ENV
    threads: 1
    shell:
        f"{PYTHON} report --runs {{output.runs:q}} --summary {{output.summary:q}} {{input.runs:q}} > {{log:q}} 2>&1"
