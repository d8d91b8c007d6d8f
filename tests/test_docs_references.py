"""The docs name only things that exist: in README.md, docs/*.md and the READMEs of datasets/,
benchmarks/ and studies/,

- every config file `configs/....yaml`,
- every script `tools/....py` / `benchmarks/....py` / `studies/....py` (as in `python tools/train_net.py`),
- every project source file `gmmseg/....py` and test file `tests/....py`,
- every Markdown file named or linked (`docs/DISTRIBUTED.md`, `(RESULTS.md#...)`), relative to the
  repository or to the document's folder,
- every config key `MODEL.*`, `SOLVER.*`, `INPUT.*`, `DATASETS.*`, `DATALOADER.*`, `TEST.*` (in
  the full config: detectron2's keys + add_gmmseg_config),
- every override written to be pasted (a `KEY VALUE ...` span in backticks or double quotes):
  its keys are full names (`MEAN_MOMENTUM 0.99` fails when pasted; `MODEL.GMM.MEAN_MOMENTUM 0.99`
  works); top-level keys such as `SEED` are whole names already.

Brace lists are expanded (`mask2former_{R50,swin_base}_gmm.yaml` is two files, `MODEL.GMM.{A,B}`
two keys); a path with a placeholder (`<dataset>`, `*`) must match at least one file. A key may
name a whole node (`MODEL.GMM`). Each failure is reported with its file and line.
"""

import glob
import os
import re
import warnings

import pytest
from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "datasets/README.md", "benchmarks/README.md", "studies/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)

_PATH_CHARS = r"[\w*<>{},.-]"
FILE_PATTERNS = {
    "config": re.compile(rf"(?<![\w/.-])(configs/(?:{_PATH_CHARS}+/)*{_PATH_CHARS}+\.yaml)"),
    "script": re.compile(
        rf"(?<![\w/.-])((?:tools|benchmarks|studies)/(?:{_PATH_CHARS}+/)*{_PATH_CHARS}+\.py)"
    ),
    "source": re.compile(
        rf"(?<![\w.-])((?:projects/GMMSeg/)?gmmseg/(?:{_PATH_CHARS}+/)*{_PATH_CHARS}+\.py)"
    ),
    "test": re.compile(rf"(?<![\w/.-])(tests/{_PATH_CHARS}+\.py)"),
    "document": re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)(?![\w])"),
}
KEY_PATTERN = re.compile(
    r"(?<![\w.])(?:cfg\.)?((?:MODEL|SOLVER|INPUT|DATASETS|DATALOADER|TEST)"
    r"(?:\.(?:[A-Z0-9_]+|\{[A-Z0-9_, ]+\}))+)(?![a-z])"
)
OVERRIDE_SPAN = re.compile(r"`([^`]+)`|\"([^\"]+)\"")
_BARE_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")

# Known failures to tolerate temporarily, {document: {failure message}}; none today. Entries that
# no longer occur only warn.
TEMPORARILY_ALLOWED = {}


def expand_braces(text):
    """'a{b,c}d' -> ['abd', 'acd'], recursively."""
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [
        x
        for alt in m.group(1).split(",")
        for x in expand_braces(text[: m.start()] + alt.strip() + text[m.end() :])
    ]


def _file_exists(rel_path, kind, doc="README.md"):
    path = os.path.join(ROOT, rel_path)
    if kind == "document":
        return any(
            os.path.isfile(os.path.join(ROOT, folder, rel_path))
            for folder in ("", os.path.dirname(doc))
        )
    if kind == "source" and not rel_path.startswith("projects/"):
        path = os.path.join(ROOT, "projects", "GMMSeg", rel_path)
    if re.search(r"[*<]", path):
        return bool(glob.glob(re.sub(r"<[^>]*>", "*", path)))
    return os.path.isfile(path)


@pytest.fixture(scope="module")
def full_config():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    return cfg


def _key_exists(cfg, key):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def problems_of(doc, cfg):
    found = []
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        for kind, pattern in FILE_PATTERNS.items():
            for ref in pattern.findall(line):
                for path in expand_braces(ref):
                    if not _file_exists(path, kind, doc):
                        found.append((number, f"{kind} {path} does not exist"))
        for ref in KEY_PATTERN.findall(line):
            for key in expand_braces(ref):
                if not _key_exists(cfg, key):
                    found.append((number, f"config key {key} does not exist"))
        for span in OVERRIDE_SPAN.findall(line):
            for key in bare_override_keys(" ".join(span)):
                if key not in cfg:
                    found.append(
                        (
                            number,
                            f"override {key} lacks its section ({' or '.join(full_names(cfg, key)) or 'no such key'})",
                        )
                    )
    return found


def full_names(cfg, leaf, prefix=""):
    """Every full key of the config whose last part is `leaf`."""
    names = []
    for k, v in cfg.items():
        if hasattr(v, "keys"):
            names += full_names(v, leaf, f"{prefix}{k}.")
        elif k == leaf:
            names.append(prefix + k)
    return names


def bare_override_keys(span):
    """The keys of `span` if it reads as KEY VALUE pairs whose keys are all upper-case names
    without a dot (what merge_from_list would reject unless they are top-level keys); else []."""
    tokens = span.split()
    if len(tokens) < 2 or len(tokens) % 2:
        return []
    keys = tokens[0::2]
    return keys if all(_BARE_KEY.match(k) for k in keys) else []


def test_the_docs_are_found():
    assert "docs/MODEL_ZOO.md" in DOCS and "docs/DISTRIBUTED.md" in DOCS


@pytest.mark.parametrize("doc", DOCS)
def test_doc_names_only_existing_files_and_keys(doc, full_config):
    allowed = TEMPORARILY_ALLOWED.get(doc, set())
    found = problems_of(doc, full_config)
    unexpected = [f"{doc}:{n}: {what}" for n, what in found if what not in allowed]
    assert not unexpected, "\n".join(unexpected)
    stale = allowed - {what for _, what in found}
    if stale:
        warnings.warn(
            f"{doc}: TEMPORARILY_ALLOWED entries that no longer occur (remove them): {sorted(stale)}",
            stacklevel=2,
        )


def test_the_checker_catches_what_it_should(full_config):
    assert expand_braces("configs/{a,b}/x_{c,d}.yaml") == [
        "configs/a/x_c.yaml",
        "configs/a/x_d.yaml",
        "configs/b/x_c.yaml",
        "configs/b/x_d.yaml",
    ]
    assert _key_exists(full_config, "MODEL.GMM.MEMORY_DTYPE") and _key_exists(
        full_config, "MODEL.GMM"
    )
    assert not _key_exists(full_config, "MODEL.GMM.NO_SUCH_KEY")
    assert _file_exists("tools/prepare_<dataset>.py", "script") and not _file_exists(
        "tools/nope.py", "script"
    )
    assert FILE_PATTERNS["script"].findall("`python studies/seed_study.py --seeds 1`") == [
        "studies/seed_study.py"
    ]
    assert not _file_exists("benchmarks/seed_study.py", "script")  # moved to studies/
    assert _file_exists("DISTRIBUTED.md", "document", "docs/MODEL_ZOO.md") and not _file_exists(
        "METHOD.md", "document"
    )
    assert bare_override_keys("MEAN_MOMENTUM 0.99 PUSH_CORRECT_ONLY False") == [
        "MEAN_MOMENTUM",
        "PUSH_CORRECT_ONLY",
    ]
    assert bare_override_keys("MODEL.GMM.MEAN_MOMENTUM 0.99") == [] and bare_override_keys(
        "SEED 3"
    ) == ["SEED"]
    assert "SEED" in full_config and "MEAN_MOMENTUM" not in full_config
    assert full_names(full_config, "MEAN_MOMENTUM") == ["MODEL.GMM.MEAN_MOMENTUM"]
