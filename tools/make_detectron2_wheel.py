#!/usr/bin/env python
"""Write detectron2's Python code as a pure wheel that installs on any CPython >= 3.8 (no `_C`).

    python tools/make_detectron2_wheel.py --out wheels/        # downloads sal-detectron2 0.7.2 (PyPI)
    python tools/make_detectron2_wheel.py --out wheels/ --source sal_detectron2-0.7.2-cp310-none-any.whl

detectron2's PyPI build, `sal-detectron2==0.7.2` (upstream detectron2 with its compiled `_C`), is
tagged for CPython 3.10 only and its metadata caps numpy below 2. This project calls none of
`_C`'s operators (deformable convolution, ROIAlignRotated, box IoU of rotated boxes, COCO's fast
evaluation: semantic segmentation needs none of them), and detectron2 imports `_C` only where
those operators live, behind an ImportError guard. So its Python code runs on any Python, and
with numpy 2 (the suite passes there: `make venv311`). This tool takes that wheel and writes

    <out>/sal_detectron2-0.7.2+pure-py3-none-any.whl

with `detectron2/_C*.so` left out, the `numpy<2` requirement lifted to `numpy`, the version given
the local label `+pure` (so `pip list` shows which build is installed; `sal-detectron2==0.7.2`
still matches it), tagged `py3-none-any` and with a new RECORD. Anything else compiled in the
source wheel stops the tool with the file's name: then the result would not be pure. The output
is the same bytes for the same source wheel.
"""

import argparse
import base64
import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile

SOURCE_REQUIREMENT = "sal-detectron2==0.7.2"
LOCAL_LABEL = "pure"
COMPILED_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
_COMPILED_C = re.compile(r"^detectron2/_C(\.[\w.-]+)?\.(so|pyd)$")
_NUMPY_CAP = re.compile(r"^Requires-Dist: numpy\s*\(?<\s*2\)?\s*$", re.MULTILINE)


def download_source_wheel(dest: str) -> str:
    """pip-download sal-detectron2 0.7.2 (the cp310 wheel, any platform) into `dest`; its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.10",
    ]
    subprocess.run(cmd + ["--dest", dest, SOURCE_REQUIREMENT], check=True)
    found = glob.glob(os.path.join(dest, "sal_detectron2-*.whl"))
    if len(found) != 1:
        raise RuntimeError(
            f"pip download {SOURCE_REQUIREMENT} into {dest} left {found}, expected one wheel"
        )
    return found[0]


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _rewrite_metadata(text: str, version: str, source: str) -> str:
    if not re.search(r"^Name: sal-detectron2$", text, re.MULTILINE):
        raise ValueError(f"{source}: METADATA does not name sal-detectron2")
    text, n_version = re.subn(
        r"^Version: .*$", f"Version: {version}", text, count=1, flags=re.MULTILINE
    )
    if n_version != 1:
        raise ValueError(f"{source}: METADATA has no Version line")
    return _NUMPY_CAP.sub("Requires-Dist: numpy", text)


def _rewrite_wheel_file(text: str) -> str:
    lines = [
        ln
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith(("Tag:", "Root-Is-Purelib:"))
    ]
    return "\n".join(lines + ["Root-Is-Purelib: true", "Tag: py3-none-any"]) + "\n"


def make_pure_wheel(source: str, out_dir: str) -> str:
    """Write the pure wheel of `source` (a sal-detectron2 wheel) into `out_dir`; its path."""
    with zipfile.ZipFile(source) as zin:
        infos = zin.infolist()
        dist_infos = sorted(
            {
                i.filename.split("/")[0]
                for i in infos
                if i.filename.split("/")[0].endswith(".dist-info")
            }
        )
        if len(dist_infos) != 1:
            raise ValueError(f"{source}: expected one .dist-info folder, found {dist_infos}")
        old_dist_info = dist_infos[0]
        old_version = old_dist_info[: -len(".dist-info")].split("-", 1)[1]
        version = f"{old_version.split('+')[0]}+{LOCAL_LABEL}"
        new_dist_info = f"sal_detectron2-{version}.dist-info"
        compiled = [i.filename for i in infos if i.filename.endswith(COMPILED_SUFFIXES)]
        unexpected = [f for f in compiled if not _COMPILED_C.match(f)]
        if unexpected:
            raise ValueError(
                f"{source}: compiled files besides detectron2's _C: {unexpected}; the wheel would not be pure"
            )
        if not compiled:
            raise ValueError(
                f"{source}: no detectron2/_C extension found; is this the sal-detectron2 wheel?"
            )

        entries = []  # (ZipInfo, bytes) in the source's order, the dist-info's RECORD last
        for info in infos:
            name = info.filename
            if name in compiled or name.endswith("/") or name == f"{old_dist_info}/RECORD":
                continue
            data = zin.read(info)
            if name.startswith(old_dist_info + "/"):
                base = name[len(old_dist_info) + 1 :]
                name = f"{new_dist_info}/{base}"
                if base == "METADATA":
                    data = _rewrite_metadata(data.decode("utf-8"), version, source).encode("utf-8")
                elif base == "WHEEL":
                    data = _rewrite_wheel_file(data.decode("utf-8")).encode("utf-8")
            new_info = zipfile.ZipInfo(name, date_time=info.date_time)
            new_info.external_attr = info.external_attr
            new_info.compress_type = zipfile.ZIP_DEFLATED
            entries.append((new_info, data))
    record_name = f"{new_dist_info}/RECORD"
    record = (
        "\n".join([_record_line(i.filename, d) for i, d in entries] + [f"{record_name},,"]) + "\n"
    )
    record_info = zipfile.ZipInfo(record_name, date_time=entries[-1][0].date_time)
    record_info.external_attr = 0o644 << 16
    record_info.compress_type = zipfile.ZIP_DEFLATED
    entries.append((record_info, record.encode("utf-8")))

    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"sal_detectron2-{version}-py3-none-any.whl")
    tmp = out + ".partial"
    with zipfile.ZipFile(tmp, "w") as zout:
        for info, data in entries:
            zout.writestr(info, data)
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, help="folder to write the wheel into (created if missing)"
    )
    parser.add_argument(
        "--source", help=f"a {SOURCE_REQUIREMENT} wheel already on disk (default: pip-download it)"
    )
    args = parser.parse_args(argv)
    if args.source:
        if not os.path.isfile(args.source):
            parser.error(f"--source {args.source}: no such file")
        out = make_pure_wheel(args.source, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = make_pure_wheel(download_source_wheel(tmp), args.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
