"""A non-editable `pip install .` finds its configs from any directory
(conf/ ships as xorrelu.conf)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import OmegaConf


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    assert (site / "xorrelu" / "conf" / "config.yaml").is_file()
    assert (site / "xorrelu" / "conf" / "activation" / "relu.yaml").is_file()
    assert (site / "xorrelu" / "conf" / "hydra" / "launcher" / "local.yaml").is_file()
    # the default launcher, in the namespace Hydra instantiates launchers from (no __init__.py)
    assert (site / "hydra_plugins" / "xorrelu_launcher" / "xorrelu_launcher.py").is_file()
    assert (site / "hydra_plugins" / "xorrelu_search" / "xorrelu_search.py").is_file()
    assert (site / "xorrelu" / "conf" / "hydra" / "sweeper" / "search.yaml").is_file()
    assert not (site / "hydra_plugins" / "__init__.py").exists()
    # every subpackage is installed (the venv's editable finder would hide a missing one)
    for package in sorted((ROOT / "xorrelu").rglob("__init__.py")):
        assert (site / package.relative_to(ROOT)).is_file(), package
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import xorrelu.__main__ as m; print(m.__file__); print(m.CONFIG_PATH)"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, check=True
    )
    assert where.stdout.splitlines() == [
        str(site / "xorrelu" / "__main__.py"),
        "pkg://xorrelu.conf",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xorrelu",
            "activation=tanh,relu",
            "steps=3",
            "replicas=2",
            "--multirun",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((work / "outputs" / "multirun").glob("*/*/*/summary.json"))) == 2
    (hydra_yaml, *_) = (work / "outputs" / "multirun").glob("*/*/0/.hydra/hydra.yaml")
    launcher = OmegaConf.load(hydra_yaml).hydra.launcher
    assert launcher._target_.endswith("LocalLauncher")
    assert launcher.n_jobs == min(os.cpu_count() or 1, 2)


@pytest.mark.slow
def test_an_editable_install_finds_the_default_launcher(tmp_path):
    """setuptools' editable installs hide hydra_plugins/xorrelu_launcher from Hydra's plugin scan
    (hydra issue #2359); xorrelu registers it itself. A venv of its own, on this one's packages."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "zz_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", ROOT],
        check=True,
        capture_output=True,
        env=env,
    )
    proc = subprocess.run(
        [python, "-m", "xorrelu", "depth=1,2", "steps=3", "replicas=2", "hydra.sweep.dir=sweep"]
        + ["--multirun"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    launcher = OmegaConf.load(tmp_path / "sweep" / "0" / ".hydra" / "hydra.yaml").hydra.launcher
    assert launcher._target_.endswith("LocalLauncher")
