"""code.hash and requirements.lock: one computation, set on every run_function run."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import yaml

from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.codehash import fingerprint, requirements_lock
from tickrun.functions.runs.db.lineage import CODE_HASH_LABELS, REQUIREMENTS_LOCK_LABELS
from tickrun.functions.runs.job_handler import load_callable
from tickrun.functions.runs.runner import resolve_handler
from tickrun.hub.catalogue import BUNDLED_ROOT

STEP = """
def step(context, x=1):
    context.log_result("y", x * 2)
"""


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def write_job(folder: Path, source: str = STEP, requirements: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.py"
    path.write_text(source)
    if requirements is not None:
        spec = {"metadata": {"name": "job"}, "spec": {"requirements": requirements}}
        (folder / "function.yaml").write_text(yaml.safe_dump(spec))
    return path


def test_a_files_hash_is_its_bytes_and_its_requirements_are_locked_to_installed_versions(
    tmp_path: Path,
) -> None:
    path = write_job(tmp_path / "fn", requirements=["PyYAML>=6", "no-such-package-tickrun<2"])
    fp = fingerprint(load_callable(f"{path}:step"))
    assert fp is not None
    assert fp.code_hash == sha(path.read_bytes())
    assert fp.requirements == ("PyYAML>=6", "no-such-package-tickrun<2")
    lines = sorted(
        [f"pyyaml=={metadata.version('PyYAML')}", "no-such-package-tickrun (not installed)"]
    )
    assert fp.requirements_lock == sha("\n".join(lines))
    assert requirements_lock(["no-such-package-tickrun<2", "PyYAML>=6"]) == fp.requirements_lock


def test_no_function_yaml_locks_no_requirements(tmp_path: Path) -> None:
    path = write_job(tmp_path / "bare")
    fp = fingerprint(load_callable(f"{path}:step"))
    assert fp is not None and fp.requirements == () and fp.requirements_lock == sha("")


def test_a_hub_item_versions_hash_covers_all_its_files(tmp_path: Path) -> None:
    target = resolve_handler("hub://auto_trainer:1.1.0#train")
    fp = fingerprint(target.fn)
    assert fp is not None
    folder = BUNDLED_ROOT / "auto_trainer" / "v1_1_0"
    assert Path(fp.source) == folder
    item = yaml.safe_load((folder / "item.yaml").read_text())
    assert list(fp.requirements) == item["requirements"]
    # Recomputed here: every file of the version by relative path, caches skipped.
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    assert fp.code_hash == h.hexdigest()
    assert {"estimator.py", "item.yaml", "auto_trainer.py"} <= {p.name for p in files}
    other = fingerprint(resolve_handler("hub://backtest:1.1.0").fn)
    assert other is not None and other.code_hash != fp.code_hash


def test_an_items_helper_module_changes_its_hash(tmp_path: Path) -> None:
    item = tmp_path / "items" / "mini" / "v1_0_0"
    item.mkdir(parents=True)
    (item / "item.yaml").write_text("name: mini\nversion: 1.0.0\nrequirements: [pandas>=2]\n")
    (item / "helper.py").write_text("K = 1\n")
    (item / "mini.py").write_text(STEP)
    fn = load_callable(f"{item / 'mini.py'}:step")
    before = fingerprint(fn)
    (item / "helper.py").write_text("K = 2\n")
    after = fingerprint(fn)
    assert before is not None and after is not None
    assert before.code_hash != after.code_hash
    assert after.requirements_lock == sha(f"pandas=={metadata.version('pandas')}")


def test_every_run_carries_the_labels_the_lineage_reads(
    tmp_path: Path, settings: TrackingSettings, db: SqlRunDB
) -> None:
    path = write_job(tmp_path / "labelled", requirements=["pandas"])
    run = run_function(f"{path}:step", params={"x": 3}, settings=settings)
    labels = db.get_run(run.uid).labels
    assert labels[CODE_HASH_LABELS[0]] == sha(path.read_bytes())
    assert labels[REQUIREMENTS_LOCK_LABELS[0]] == sha(f"pandas=={metadata.version('pandas')}")
    # A sweep's parent too; a caller's own label wins.
    sweep = run_function(
        f"{path}:step",
        hyperparams={"x": [1, 2]},
        selector="max.y",
        labels={"code.hash": "given"},
        settings=settings,
        progress=False,
    )
    assert db.get_run(sweep.uid).labels["code.hash"] == "given"
    assert db.get_run(sweep.uid).labels["requirements.lock"] == labels["requirements.lock"]
