"""Every chapter's exercise solutions pass their own self-checks, and a notebook stub is reported, not failed."""

import importlib

import pytest

MODULES = [
    "bytecourse.primer.solutions",
    "bytecourse.sag.solutions",
    "bytecourse.adjointdpm.solutions",
    "bytecourse.vistallama.solutions",
    "bytecourse.boximator.solutions",
    "bytecourse.dreamtalk.solutions",
    "bytecourse.metaprompts.solutions",
    "bytecourse.cosa.solutions",
    "bytecourse.pixellm.solutions",
    "bytecourse.magicanimate.solutions",
    "bytecourse.magicvideo.solutions",
]
CASES = [(m, name) for m in MODULES for name in sorted(importlib.import_module(m).EXERCISES)]


@pytest.mark.parametrize("module,name", CASES, ids=[f"{m.split('.')[-2]}-{n}" for m, n in CASES])
def test_every_solution_passes_its_self_check(module, name):
    check, solution = importlib.import_module(module).EXERCISES[name]
    ok, err = check(solution)
    assert ok, (module, name, err)


@pytest.mark.parametrize("module", MODULES)
def test_stub_is_reported_not_attempted(module):
    def stub(*args):
        raise NotImplementedError

    for check, _ in importlib.import_module(module).EXERCISES.values():
        assert check(stub)[0] is False
