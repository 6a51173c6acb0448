"""Project hygiene: dependencies agree, notebooks are clean and follow the skeleton, layering holds."""

import ast
import json
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SUBSTRATE = [
    "worlds",
    "oracle",
    "diffusion",
    "viz",
    "widgets",
    "text.py",
    "checkpoints.py",
    "device.py",
    "evaluation.py",
]
TECHNIQUES = [
    "sag",
    "adjointdpm",
    "metaprompts",
    "boximator",
    "magicanimate",
    "magicvideo",
    "dreamtalk",
    "cosa",
    "vistallama",
    "pixellm",
]


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r): r for r in py["dependencies"] + py["optional-dependencies"]["dev"]}
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    assert set(pins) == set(declared), f"only in one file: {set(pins) ^ set(declared)}"
    from packaging.specifiers import SpecifierSet

    for name, req in declared.items():
        spec = SpecifierSet(req[len(name) :].strip())
        assert spec.contains(pins[name], prereleases=True), f"environment.yml pins {name}=={pins[name]}, outside {req}"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_clean(nb):
    d = json.loads(nb.read_text())
    for cell in d["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "commit notebooks without outputs"
    assert "widgets" not in d.get("metadata", {}), "commit notebooks without widget state"


SKELETON = [
    "What you will learn",
    "Prerequisites",
    "Notation",
    "Idea",
    "Build it",
    "Train",
    "Explore",
    "Paper vs. toy",
    "Exercises",
    "Summary",
    "References",
]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_chapter_skeleton(nb):
    d = json.loads(nb.read_text())
    headings = [
        line
        for c in d["cells"]
        if c["cell_type"] == "markdown"
        for line in "".join(c["source"]).splitlines()
        if line.startswith("#")
    ]
    positions = []
    for section in SKELETON:
        hits = [i for i, h in enumerate(headings) if re.search(rf"\b{re.escape(section)}(?![\w])", h, re.I)]
        assert hits, f"{nb.name} lacks a '{section}' heading"
        positions.append(hits[0])
    assert positions == sorted(positions), f"{nb.name}: sections out of order"
    tagged = [c for c in d["cells"] if "widget" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) >= 1, "the main widget's cell must carry the 'widget' tag"
    code = "\n".join("".join(c["source"]) for c in d["cells"] if c["cell_type"] == "code")
    assert not re.search(r"^\s*class \w+\(.*(nn\.Module|torch\.nn)", code, re.M), "no model code in notebooks"
    exercises = sum(
        "".join(c["source"]).lstrip().startswith("### Exercise") for c in d["cells"] if c["cell_type"] == "markdown"
    )
    assert exercises >= 3


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            mods.add("." * node.level + base)
            mods |= {"." * node.level + (base + "." if base else "") + a.name for a in node.names}
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
    return mods


def test_substrate_never_imports_a_technique():
    pkg = ROOT / "bytecourse"
    for entry in SUBSTRATE:
        for f in [pkg / entry] if entry.endswith(".py") else (pkg / entry).rglob("*.py"):
            for mod in _imports(f):
                parts = mod.replace("bytecourse.", ".").lstrip(".").split(".")
                assert not any(p in TECHNIQUES for p in parts), f"{f.relative_to(ROOT)} imports {mod}"


def test_readme_names_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    fenced = block.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in fenced.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    test_cmd = commands[1].split("  # ")[0].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.split("&&")[-1].strip().split(" -p ")[0] in ci
