"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace (a later block may use
names an earlier one defined), in a fresh temporary working directory, on the
CPU backend set up by the root conftest.py. Shell commands and sample output
belong in ```bash / ``` blocks, which are not run. Methods a snippet registers
are removed from the registry afterwards so other tests never see them. The
working directories share one ``.cache`` (the model cache is keyed by a
manifest hash, so sharing it only saves retraining the same small models).
"""

import pathlib
import re
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A fence may be indented (a block inside a list item); the closing fence has
# the same indentation.
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)

# The whole documentation must stay cheap enough to run on every test run.
# Measured in CPU seconds of this process (all threads), which other load on
# the machine does not inflate the way it inflates wall-clock time. (90 s
# since the Blend + A-AMU pages: four papers' worth of runnable examples.)
CPU_BUDGET_S = 90.0
_cpu_seconds: dict[str, float] = {}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``[(line number, dedented source)]`` of the ```python blocks in ``text``."""
    blocks = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("body")) + 1
        blocks.append((line, textwrap.dedent(m.group("body"))))
    return blocks


def test_block_extraction():
    text = (
        "a\n```python\nx = 1\n```\n- item\n\n  ```python\n  y = x\n  ```\n"
        "```bash\nls\n```\n"
    )
    assert python_blocks(text) == [(3, "x = 1\n"), (8, "y = x\n")]


def test_docs_exist():
    names = {p.name for p in DOC_FILES}
    for required in (
        "README.md",
        "architecture.md",
        "adding_a_method.md",
        "adding_a_driver.md",
        "metrics.md",
    ):
        assert required in names


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("docs_cache")


CODE_FILES = [p for p in DOC_FILES if python_blocks(p.read_text())]


def test_readme_and_architecture_have_code():
    assert {p.name for p in CODE_FILES} >= {"README.md", "architecture.md"}


@pytest.mark.parametrize("path", CODE_FILES, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch, shared_cache):
    from jaxunlearn.methods import _base

    blocks = python_blocks(path.read_text())
    (tmp_path / ".cache").symlink_to(shared_cache, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    registry = dict(_base._REGISTRY)
    namespace = {"__name__": f"docs_{path.stem}"}
    t0 = time.process_time()
    try:
        for line, source in blocks:
            code = compile(source, f"{path.name}:{line}", "exec")
            exec(code, namespace)  # noqa: S102 - running our own documentation
    finally:
        _base._REGISTRY.clear()
        _base._REGISTRY.update(registry)
        _cpu_seconds[path.name] = time.process_time() - t0
    assert sum(_cpu_seconds.values()) < CPU_BUDGET_S, _cpu_seconds
