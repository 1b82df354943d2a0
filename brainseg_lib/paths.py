"""Every folder the project uses, named in one place.

Folders resolve from the package location (the project root is the parent of
``brainseg_lib/``) or from environment variables, never from the working
directory, so notebooks run by papermill and tests in a temp folder see the
same paths.

Environment variables:
  BRAINSEG_DATA     the Br35H folder (default: <root>/data/br35h)
  BRAINSEG_EXTERNAL the external TCGA-LGG FLAIR test set (default: <root>/data/lgg_external)
  BRAINSEG_FIGSHARE the second external set, Figshare T1 contrast-enhanced slices
                    (default: <root>/data/figshare_external)
  BRAINSEG_CACHE    preprocessed-array cache (default: <root>/.cache)
  BRAINSEG_RESULTS  figures, tables, metrics, runs (default: <root>/results);
                    run_all.sh points it at a staging folder while it runs.
  BRAINSEG_RUNS     run folders: history, logs, checkpoints (default: <results>/runs)
  BRAINSEG_SWEEP    seed x split x loss sweep (default: <root>/results/sweep)
  BRAINSEG_SPLITS   split manifests (default: <root>/splits)
  BRAINSEG_LEVERS   lever trials that chose the cpu profile (default: <root>/results/levers)
  BRAINSEG_RELEASE_LEVERS  lever trials that choose the released model
                    (default: <root>/results/release_levers)
  BRAINSEG_GPU_RUN  the paper profile's committed GPU run, a Table I row (default: <root>/results/paper)
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REFERENCES_DIR = PROJECT_ROOT / "references"
PAPER_TABLE1_CSV = REFERENCES_DIR / "khadra2026_table1.csv"
BR35H_CHECKSUMS = REFERENCES_DIR / "br35h.sha256"   # every file of the dataset (fetch-data)
LGG_EXTERNAL_SLICES = REFERENCES_DIR / "lgg_external.csv"   # the external set (build-external)


def _from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    if not value:
        return default
    try:
        p = Path(value).expanduser()
    except RuntimeError:          # ~user of an unknown user: kept as written, like the shell
        p = Path(value)
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def data_dir() -> Path:
    """The Br35H root (the folder holding ``Br35H-Mask-RCNN/``, ``yes/``, ``no/``)."""
    return _from_env("BRAINSEG_DATA", PROJECT_ROOT / "data" / "br35h")


def external_dir() -> Path:
    """The external validation set (``dev/``, ``test/``, ``manifest.csv``)."""
    return _from_env("BRAINSEG_EXTERNAL", PROJECT_ROOT / "data" / "lgg_external")


def external_volumes_dir() -> Path:
    """The external set's ``test`` patients as whole NIfTI volumes (``<external>/volumes``)."""
    return external_dir() / "volumes"


def figshare_dir() -> Path:
    """The second external set, Figshare T1 contrast-enhanced slices (``dev/``, ``test/``,
    ``manifest.csv``)."""
    return _from_env("BRAINSEG_FIGSHARE", PROJECT_ROOT / "data" / "figshare_external")


def cache_dir() -> Path:
    return _from_env("BRAINSEG_CACHE", PROJECT_ROOT / ".cache")


def results_dir() -> Path:
    return _from_env("BRAINSEG_RESULTS", PROJECT_ROOT / "results")


def runs_dir() -> Path:
    """Run folders (history.csv, train_log.txt, *.pt); checkpoints are git-ignored."""
    return _from_env("BRAINSEG_RUNS", results_dir() / "runs")


def sweep_dir() -> Path:
    """Seed/split/loss sweep runs (``python -m brainseg_lib sweep``); not replaced by run_all.sh."""
    return _from_env("BRAINSEG_SWEEP", PROJECT_ROOT / "results" / "sweep")


def splits_dir() -> Path:
    """Split manifests (grouped split, healthy-scan split); committed with the project."""
    return _from_env("BRAINSEG_SPLITS", PROJECT_ROOT / "splits")


def levers_dir() -> Path:
    """Lever trials that chose the cpu profile (``python -m brainseg_lib levers``); not
    replaced by run_all.sh."""
    return _from_env("BRAINSEG_LEVERS", PROJECT_ROOT / "results" / "levers")


def release_levers_dir() -> Path:
    """Lever trials that choose the released model (``python -m brainseg_lib release-levers``;
    params/release_levers.yaml); not replaced by run_all.sh."""
    return _from_env("BRAINSEG_RELEASE_LEVERS", PROJECT_ROOT / "results" / "release_levers")


def figures_dir() -> Path:
    """results/figures (created on first use)."""
    return ensure(results_dir() / "figures")


def tables_dir() -> Path:
    """results/tables (created on first use)."""
    return ensure(results_dir() / "tables")


def metrics_dir() -> Path:
    """results/metrics (created on first use)."""
    return ensure(results_dir() / "metrics")


def models_dir() -> Path:
    """results/models: the released model, its checksum, model card and ONNX export."""
    return results_dir() / "models"


RELEASED_NAME = "brainseg-cpu.pt"   # the released model's file name, in results/models/


def committed_released_model() -> Path:
    """The released model as committed with the project (``results/models/brainseg-cpu.pt`` under
    the project root, whatever ``BRAINSEG_RESULTS`` says): what a scratch run scores."""
    return PROJECT_ROOT / "results" / "models" / RELEASED_NAME


def released_model() -> Path:
    """The released model, ``results/models/brainseg-cpu.pt`` (``BRAINSEG_MODEL`` overrides)."""
    return _from_env("BRAINSEG_MODEL", models_dir() / RELEASED_NAME)


def benchmarks_dir() -> Path:
    """results/benchmarks: ``bench`` JSON files."""
    return results_dir() / "benchmarks"


def timings_dir() -> Path:
    """results/timings: wall time of each ``run_all.sh`` notebook."""
    return results_dir() / "timings"


def report_dir() -> Path:
    """results/report: the HTML report of the executed study."""
    return results_dir() / "report"


def executed_dir() -> Path:
    return results_dir() / "executed"


def ensure(path: Path) -> Path:
    """Create ``path`` (a folder) if needed and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def env_override(**values: str | Path | None):
    """Set (or, with None, unset) environment variables for the block, then restore them:
    how a run points the folders above at a staging folder for a while."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_pythonpath() -> str:
    """PYTHONPATH for the notebook kernels a run starts: this checkout first, so that they
    import the same ``brainseg_lib`` (and read the same ``params/``) as the process that
    injects their parameters, whatever environment's install the kernel finds otherwise."""
    rest = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(PROJECT_ROOT)] + ([rest] if rest else []))


def smoke_results_dir() -> Path:
    """results/smoke: where the smoke profile's pipeline check writes (git-ignored)."""
    return profile_results_dir("smoke")


STUDY_PROFILE = "cpu"   # the study's own profile: results/ itself, and the released model
GPU_PROFILE = "paper"   # the paper's configuration: its committed GPU run, results/paper


def profile_results_dir(profile: str) -> Path:
    """Where a profile's results go, for ``./run_all.sh <profile>`` and ``train --profile``
    alike: ``results/`` for the study's profile (cpu), ``results/<profile>/`` for any other
    (smoke, git-ignored; paper, the GPU run, committed), so a second profile never replaces
    the study's figures, metrics, report or released model. Callers check the name first
    (``names.check_name``, as ``run_all.destination`` does): a profile never names a path."""
    return results_dir() if profile == STUDY_PROFILE else results_dir() / profile


def is_scratch_profile(profile) -> bool:
    """Whether runs of ``profile`` are scratch: every profile but the study's (cpu) and the
    paper's GPU run (paper), e.g. smoke. Their results live in ``profile_results_dir``, and the
    study's Table I, headline and README leave them out wherever they are found."""
    return profile not in (STUDY_PROFILE, GPU_PROFILE)


def sweep_dir_for(profile: str) -> Path:
    """Where the sweep of ``profile`` writes: ``sweep_dir()`` (``results/sweep``) for the
    study's profiles, ``results/<profile>/sweep`` for a scratch one (smoke), as
    ``./run_all.sh smoke`` and ``sweep --profile smoke`` both do."""
    return profile_results_dir(profile) / "sweep" if is_scratch_profile(profile) else sweep_dir()


def gpu_run_dir() -> Path:
    """The paper profile's GPU run as committed (``results/paper``), read by the study's Table I
    even while ``run_all.sh cpu`` points ``BRAINSEG_RESULTS`` at its staging folder
    (``BRAINSEG_GPU_RUN`` overrides)."""
    return _from_env("BRAINSEG_GPU_RUN", PROJECT_ROOT / "results" / "paper")


def readme() -> Path:
    """The project's README.md (its generated sections are rewritten by ``update-readme``)."""
    return PROJECT_ROOT / "README.md"


def display_path(p) -> str:
    """A path as the user will find it: ``results/...`` for anything under the results
    folder (also while run_all.sh stages results elsewhere), else project-relative."""
    p = Path(p).resolve()
    for base, label in ((results_dir().resolve(), "results"), (PROJECT_ROOT, "")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return str(Path(label) / rel) if label else str(rel)
    return str(p)


def resolve_recorded(path: str | Path) -> Path:
    """Turn a path recorded in a results JSON (``results/...`` or project-relative)
    back into a file path, honouring BRAINSEG_RESULTS."""
    p = Path(path)
    if p.is_absolute():
        return p
    if p.parts and p.parts[0] == "results":
        return results_dir().joinpath(*p.parts[1:])
    return PROJECT_ROOT / p
