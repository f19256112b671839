# A failed run leaves the study as it was (elf_pipeline/infra/safekeeping.py): before any job starts, the
# existing outputs of the planned jobs are hard-linked aside with their metadata records; after a
# failure every output that Snakemake deleted is linked back with its old record.
from snakemake.persistence import MetadataRecord

from elf_pipeline.infra import safekeeping  # noqa: E402  (torch-free)

KEEP_DIR = f"{RESULTS}/.kept"
# The config files of the study in results_dir (written when a run starts): a run of another config
# over it is named before any job runs.
STUDY_STAMP = Path(RESULTS) / ".study-config"
CONFIG_FILES = "\n".join(
    os.path.relpath(path) if Path(path).absolute().is_relative_to(Path.cwd()) else str(path)
    for path in (workflow.overwrite_configfiles or ["config/config.yaml"])
)

if Path(RESULTS).exists() and not Path(RESULTS).is_dir():
    raise WorkflowError(f"config key results_dir: {RESULTS} is a file, not a folder")
if STUDY_STAMP.is_file() and STUDY_STAMP.read_text().strip() != CONFIG_FILES:
    print(
        f"warning: results_dir {RESULTS} holds the study of config {', '.join(STUDY_STAMP.read_text().split())}, "
        f"this run uses {', '.join(CONFIG_FILES.split())}: they share (and overwrite) each other's results "
        "(give each config its own results_dir)",
        file=sys.stderr,
    )


def _read_record(path):
    record = workflow.persistence._read_record(path)
    return None if record is None else dict(record.items())


def _write_record(path, record):
    persistence = workflow.persistence
    persistence._clear_cache()
    if record is None:
        persistence._delete_record(path)
    else:
        persistence._write_record(path, MetadataRecord.model_validate(record))
    persistence._unmark_incomplete(path)


# A corrupt intermediate (a truncated data.h5, synset.h5, features file, Parquet table) is named
# before any job runs: the jobs after it fail naming it too, and keep their outputs; deleting it
# rebuilds it. Checked by the main process only (a cluster job parses the workflow again).
CORRUPT = (
    safekeeping.unreadable_outputs(RESULTS, KEEP_DIR, lambda path: any(rule.is_producer(path) for rule in workflow.rules))
    if workflow.is_main_process
    else {}
)
for path, reason in CORRUPT.items():
    print(f"warning: {path}: {reason}; the jobs that read it fail: delete it to rebuild it", file=sys.stderr)


onstart:
    Path(RESULTS).mkdir(parents=True, exist_ok=True)
    STUDY_STAMP.write_text(CONFIG_FILES + "\n")
    safekeeping.put_aside(
        (str(f) for job in workflow.dag.needrun_jobs() for f in job.output), KEEP_DIR, _read_record, _write_record
    )


onsuccess:
    safekeeping.discard(KEEP_DIR)


onerror:
    restored = safekeeping.restore(KEEP_DIR, _write_record)
    if restored:
        print(
            f"elf: the failed run's jobs left their previous outputs in place ({len(restored)} restored): "
            + ", ".join(restored),
            file=sys.stderr,
        )
