"""The README's sample outputs are what docs/make_docs.py makes from a fresh run."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_docs", ROOT / "docs" / "make_docs.py")
make_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_docs)

README = (ROOT / "README.md").read_text()


def test_replace_block_rewrites_only_its_block():
    text = "a\n<!-- make_docs: x -->\nold\n<!-- /make_docs -->\nb <!-- make_docs: y -->\n"
    new = make_docs.replace_block(text, "x", "new\nlines\n")
    assert (
        new
        == "a\n<!-- make_docs: x -->\nnew\nlines\n<!-- /make_docs -->\nb <!-- make_docs: y -->\n"
    )
    assert make_docs.read_block(new, "x") == "new\nlines"
    with pytest.raises(SystemExit, match="exactly one"):
        make_docs.replace_block(text, "z", "new")


@pytest.mark.parametrize("name", ["canonical", "summary", "activations", "causes"])
def test_readme_has_each_block_once(name):
    assert README.count(f"<!-- make_docs: {name} -->\n") == 1
    block = make_docs.read_block(README, name)
    assert make_docs.replace_block(README, name, block) == README


def test_readme_first_steps_match_a_short_run(tmp_path):
    """The canonical ReLU job's lines for steps 0 and 1000, from a 1000-step run (a few s)."""
    printout = make_docs.xorrelu_cli(
        make_docs.SHOWN_JOB,
        "steps=1000",
        *make_docs.PINNED,
        "plot=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    steps = [line for line in printout.splitlines() if line.startswith("step ")]
    shown = make_docs.read_block(README, "canonical").splitlines()
    assert steps == shown[1:3]


@pytest.mark.slow
def test_readme_matches_the_canonical_sweep(tmp_path):
    """The whole canonical sweep (~30 s on 2 cores, no plots): the printout and summary table."""
    sweep = tmp_path / "canonical"
    printout = make_docs.run_sweep(make_docs.CANONICAL, sweep, plots=False)
    assert make_docs.read_block(README, "canonical") == make_docs.canonical_text(printout, sweep)
    assert make_docs.read_block(README, "summary") == make_docs.summary_table(sweep)


def test_readme_causes_table_has_the_numbers_of_the_definitions():
    assert make_docs.read_block(README, "causes") + "\n" == make_docs.causes_table()
