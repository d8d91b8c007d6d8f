#!/usr/bin/env python
"""Write a wheelhouse of everything this project needs besides torch / torchvision, for one target.

    python tools/make_bundle.py --out bundle                          # for this Python (needs PyPI)
    python tools/make_bundle.py --out bundle --target cp312-manylinux_2_28_x86_64 \\
        --have tools/bundle_have/cuda_image_py312.txt                 # for a machine without network

then, on the target, with the folder copied there (no network needed):

    python -m pip install --no-index --find-links bundle -r bundle/requirements.txt

What goes in: the project's own wheel (`gmmseg`), detectron2's Python code as a pure wheel
(tools/make_detectron2_wheel.py: no `_C`, any Python), and every requirement of requirements.txt
but torch, torchvision and ruff (the formatter), with numpy and OpenCV uncapped, resolved with all their
dependencies for the target by pip. Left out: torch, torchvision and whatever the target already
has. `--have FILE` says what that is: the target's `python -m pip list --format=freeze` (lines
`name==version`; a bare `name` means "some version") or `-` for nothing but torch; without
`--target` it defaults to what this Python has. A package the target has at a named version is
resolved at exactly that version (a placeholder wheel stands in for it while pip resolves, so even
a local build such as `torch==2.11.0+cu130` needs no download), so the bundle fits what is there
and installing it upgrades nothing; a bare name is left out at whatever version pip picked.

`--target cpXY-PLATFORM` names the Python (cp312) and the platform tag, e.g.
manylinux_2_28_x86_64 = a Linux with glibc >= 2.28 (then every manylinux tag up to that glibc is
accepted). The bundle's folder gets requirements.txt (the roots, with the project's specifiers;
pip checks the packages the target already has against them) and README.txt (the target, the
install command, the wheels and their sizes). `--max-mb` makes an oversized bundle an error.
Sizes measured are in docs/GPU.md.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from urllib.parse import urlparse
from urllib.request import url2pathname

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "requirements.txt")
DETECTRON2_TOOL = os.path.join(ROOT, "tools", "make_detectron2_wheel.py")
DETECTRON2_REQUIREMENT = "sal-detectron2==0.7.2"
# Never bundled: the user's own (their CUDA build decides), and the dev-only formatter.
USERS_OWN = ("torch", "torchvision")
NOT_FOR_RUNNING = ("ruff",)
# Caps of requirements.txt for `make venv` only: the PyPI detectron2 wheel requires numpy<2, and
# OpenCV 5 is built for numpy 2. Without that wheel both run with numpy 2 (make test311).
UNCAPPED = {"numpy": "<2", "opencv-python-headless": "<5"}
# Published as source only; each is pure Python and is built into a py3-none-any wheel here.
SOURCE_ONLY = ("fvcore==0.1.5.post20221221", "iopath==0.1.10", "antlr4-python3-runtime==4.9.3")
_TARGET = re.compile(r"^cp3(\d+)-((?:many)?linux\w*|macosx\w*|win\w*)$")
_MANYLINUX = re.compile(r"^manylinux_2_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def bundle_requirements(text: str) -> list:
    """requirements.txt's lines for a Python that has its own torch: no torch, torchvision or ruff,
    and without the caps that only the `make venv` environment needs (UNCAPPED)."""
    from packaging.requirements import Requirement

    out = []
    for line in text.splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        req = Requirement(spec)
        name = canonical(req.name)
        if name in USERS_OWN or name in NOT_FOR_RUNNING:
            continue
        if name in UNCAPPED:
            req.specifier = type(req.specifier)(
                ",".join(str(s) for s in req.specifier if str(s) != UNCAPPED[name])
            )
        out.append(str(req))
    return out


def parse_target(target: str) -> tuple:
    """'cp312-manylinux_2_28_x86_64' -> ('3.12', [every platform tag such a machine accepts])."""
    m = _TARGET.match(target)
    if not m:
        raise ValueError(
            f"--target {target!r}: expected cp3XY-PLATFORM, e.g. cp312-manylinux_2_28_x86_64"
        )
    python, platform = f"3.{m.group(1)}", m.group(2)
    legacy = re.match(r"^(manylinux2014|manylinux2010|manylinux1)_(\w+)$", platform)
    many = _MANYLINUX.match(platform)
    if legacy:
        glibc, arch = _LEGACY_MANYLINUX[legacy.group(1)], legacy.group(2)
    elif many:
        glibc, arch = int(many.group(1)), many.group(2)
    else:
        return python, [platform]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    tags += [f"{name}_{arch}" for name, minor in _LEGACY_MANYLINUX.items() if minor <= glibc]
    return python, tags


def parse_have(text: str, source: str) -> dict:
    """`pip list --format=freeze` / `pip freeze` text -> {canonical name: version or None}."""
    from packaging.version import InvalidVersion, Version

    have = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(
                f"{source}:{n}: {line!r}: use `pip list --format=freeze`, which names every package"
            )
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:(==|@)\s*(\S+))?$", line)
        if not m:
            raise ValueError(
                f"{source}:{n}: {line!r} is not `name`, `name==version` or `name @ url`"
            )
        version = m.group(3) if m.group(2) == "==" else None
        if version is not None:
            try:
                Version(version)
            except InvalidVersion:
                version = None
        have[canonical(m.group(1))] = version
    return have


def this_pythons_packages() -> dict:
    """{canonical name: version} of every distribution this Python can import."""
    from importlib.metadata import distributions

    return {canonical(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def select(report: dict, roots: list, stop: set, environment: dict) -> dict:
    """The items of pip's install report reachable from `roots` (requirement strings) without
    passing through a name in `stop`: {canonical name: report item}. Markers are evaluated in
    `environment` (packaging's marker variables of the target) with each item's extras."""
    from packaging.requirements import Requirement

    items = {canonical(i["metadata"]["name"]): i for i in report["install"]}
    chosen, todo = {}, [Requirement(r) for r in roots]
    extras_done = {}
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in stop:
            continue
        if name not in items:
            raise ValueError(
                f"pip's resolution has no {req.name} (needed as {req}); cannot bundle it"
            )
        extras = set(req.extras)
        if name in chosen and extras <= extras_done[name]:
            continue
        chosen[name] = items[name]
        extras_done[name] = extras_done.get(name, set()) | extras
        for dep in items[name]["metadata"].get("requires_dist") or []:
            dreq = Requirement(dep)
            applies = dreq.marker is None or any(
                dreq.marker.evaluate({**environment, "extra": e})
                for e in ({""} | extras_done[name])
            )
            if applies:
                todo.append(dreq)
    return chosen


def target_environment(python: str, platforms: list) -> dict:
    """packaging's marker variables for CPython `python` on the first of `platforms`."""
    from packaging.markers import default_environment

    env = dict(default_environment())
    env.update(
        python_version=python, python_full_version=f"{python}.0", implementation_name="cpython"
    )
    env["platform_python_implementation"] = "CPython"
    plat = platforms[0]
    if "linux" in plat:
        env.update(sys_platform="linux", platform_system="Linux", os_name="posix")
    elif plat.startswith("macosx"):
        env.update(sys_platform="darwin", platform_system="Darwin", os_name="posix")
    elif plat.startswith("win"):
        env.update(sys_platform="win32", platform_system="Windows", os_name="nt")
    arch = {"amd64": "AMD64", "win32": "x86", "arm64": "arm64"}.get(plat.split("_", 1)[-1].lower())
    m = re.search(r"(x86_64|aarch64|i686|ppc64le|s390x|arm64|universal2)$", plat)
    env["platform_machine"] = arch or (m.group(1) if m else env["platform_machine"])
    return env


def write_placeholder_wheel(folder: str, name: str, version: str) -> None:
    """An empty wheel named `name` at `version` (no files, no requirements): what pip resolves
    against for a package the target already has."""
    stem = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    dist_info = f"{stem}.dist-info"
    files = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: make_bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(os.path.join(folder, f"{stem}-py3-none-any.whl"), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(
            f"{dist_info}/RECORD",
            "".join(f"{p},,\n" for p in list(files) + [f"{dist_info}/RECORD"]),
        )


def run(cmd: list) -> None:
    """Run `cmd`, quietly; its output's end in the error when it fails."""
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stdout[-6000:]}"
        )


def pip(*args) -> None:
    run([sys.executable, "-m", "pip", *args])


def build_local_wheels(folder: str, have: dict) -> list:
    """Build the wheels PyPI does not have for any Python (the project, pure detectron2, the
    source-only packages) into `folder`; the requirements that pin them."""
    pinned = []
    # setuptools builds the project in <checkout>/build: removed again unless it was there before
    # (it would hold a second copy of the package beside the source)
    build_dir = os.path.join(ROOT, "build")
    had_build_dir = os.path.exists(build_dir)
    try:
        pip("wheel", "--no-deps", "--quiet", "--wheel-dir", folder, ROOT)
    finally:
        if not had_build_dir:
            shutil.rmtree(build_dir, ignore_errors=True)
    (project,) = glob.glob(os.path.join(folder, "gmmseg-*.whl"))
    pinned.append(f"gmmseg=={os.path.basename(project).split('-')[1]}")
    if not {"detectron2", "sal-detectron2"} & set(have):
        run([sys.executable, DETECTRON2_TOOL, "--out", folder])
        pinned.append(DETECTRON2_REQUIREMENT)
    source_only = [r for r in SOURCE_ONLY if canonical(r.split("==")[0]) not in have]
    if source_only:
        pip("wheel", "--no-deps", "--quiet", "--wheel-dir", folder, *source_only)
    impure = [
        os.path.basename(p)
        for p in glob.glob(os.path.join(folder, "*.whl"))
        if not p.endswith(("-none-any.whl"))
    ]
    if impure:
        raise RuntimeError(f"built wheels that are not pure Python: {impure}")
    return pinned


def make_bundle(out: str, target: str = None, have: dict = None, max_mb: float = None) -> dict:
    """Write the bundle into `out` (emptied first if it holds an earlier bundle); a summary dict."""
    if target:
        python, platforms = parse_target(target)
        target_flags = ["--python-version", python, "--implementation", "cp"]
        for p in platforms:
            target_flags += ["--platform", p]
        environment = target_environment(python, platforms)
    else:
        python, target_flags = "%d.%d" % sys.version_info[:2], []
        from packaging.markers import default_environment

        environment = dict(default_environment())
        target = f"this Python ({sys.executable}, {python})"
    have = dict(this_pythons_packages() if have is None else have)
    for name in USERS_OWN:
        have.setdefault(name, None)
    if (
        os.path.exists(out)
        and os.listdir(out)
        and not os.path.exists(os.path.join(out, "README.txt"))
    ):
        raise ValueError(
            f"--out {out}: exists and is not a bundle (no README.txt); give an empty folder"
        )
    final, out = out, os.path.normpath(out) + ".partial"  # written here, renamed when complete
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    with tempfile.TemporaryDirectory() as tmp:
        local, placeholders = os.path.join(tmp, "local"), os.path.join(tmp, "placeholders")
        os.makedirs(local)
        os.makedirs(placeholders)
        with open(REQUIREMENTS) as f:
            roots = build_local_wheels(local, have) + bundle_requirements(f.read())
        constraints = []
        for name, version in sorted(have.items()):
            if version is not None:
                write_placeholder_wheel(placeholders, name, version)
                constraints.append(f"{name}=={version}")
        for fname, lines in (("roots.txt", roots), ("constraints.txt", constraints)):
            with open(os.path.join(tmp, fname), "w") as f:
                f.write("".join(line + "\n" for line in lines))
        report_path = os.path.join(tmp, "report.json")
        pip(
            "install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:", "--report", report_path,
            *target_flags, "--find-links", local, "--find-links", placeholders,
            "-c", os.path.join(tmp, "constraints.txt"), "-r", os.path.join(tmp, "roots.txt"),
        )  # fmt: skip
        with open(report_path) as f:
            report = json.load(f)
        chosen = select(report, roots, set(have), environment)

        remote = []
        for _, item in sorted(chosen.items()):
            url = item["download_info"]["url"]
            if url.startswith("file://"):
                shutil.copy(url2pathname(urlparse(url).path), out)
            else:
                remote.append(f"{item['metadata']['name']}=={item['metadata']['version']}")
        if remote:
            pip(
                "download",
                "--no-deps",
                "--quiet",
                "--only-binary=:all:",
                *target_flags,
                "--dest",
                out,
                *remote,
            )

    wheels = sorted(glob.glob(os.path.join(out, "*.whl")))
    if len(wheels) != len(chosen):
        raise RuntimeError(
            f"{out}: {len(wheels)} wheels for {len(chosen)} packages chosen: {sorted(chosen)}"
        )
    sizes = {os.path.basename(w): os.path.getsize(w) for w in wheels}
    total_mb = sum(sizes.values()) / 2**20
    with open(os.path.join(out, "requirements.txt"), "w") as f:
        f.write("".join(r + "\n" for r in roots))
    with open(os.path.join(out, "README.txt"), "w") as f:
        f.write(
            f"GMMSeg bundle for {target}: {len(wheels)} wheels, {total_mb:.1f} MB (tools/make_bundle.py).\n"
        )
        f.write("Left out: torch, torchvision and what the target already has:\n  ")
        f.write(
            ", ".join(sorted(have))
            + "\n\nInstall, from the folder above this one (no network needed):\n"
        )
        f.write(f"  python -m pip install --no-index --find-links {os.path.basename(final)} ")
        f.write(f"-r {os.path.basename(final)}/requirements.txt\n\nWheels (MB):\n")
        f.write("".join(f"  {size / 2**20:7.2f}  {name}\n" for name, size in sorted(sizes.items())))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(out, final)
    summary = {"target": target, "wheels": len(wheels), "total_mb": total_mb, "sizes": sizes}
    if max_mb is not None and total_mb > max_mb:
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
        raise RuntimeError(
            f"{final}: {total_mb:.1f} MB > --max-mb {max_mb}; the largest: "
            + ", ".join(f"{n} {s / 2**20:.1f} MB" for n, s in biggest)
            + " (list what the target has with --have)"
        )
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, help="the bundle's folder (an earlier bundle there is replaced)"
    )
    parser.add_argument(
        "--target", help="cpXY-PLATFORM, e.g. cp312-manylinux_2_28_x86_64 (default: this Python)"
    )
    parser.add_argument(
        "--have",
        help="the target's `pip list --format=freeze` (a file; `-`: only torch); default: this Python's "
        "packages without --target, only torch with it",
    )
    parser.add_argument(
        "--max-mb", type=float, help="fail when the wheels take more than this many MB"
    )
    args = parser.parse_args(argv)
    try:
        import packaging  # noqa: F401
    except ImportError:
        parser.error(
            f"needs the `packaging` module in {sys.executable}: python -m pip install packaging"
        )
    if args.have == "-":
        have = {}
    elif args.have:
        if not os.path.isfile(args.have):
            parser.error(f"--have {args.have}: no such file")
        with open(args.have) as f:
            have = parse_have(f.read(), args.have)
    else:
        have = {} if args.target else None
    try:
        summary = make_bundle(args.out, args.target, have, args.max_mb)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.out}: {summary['wheels']} wheels, {summary['total_mb']:.1f} MB for {summary['target']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
