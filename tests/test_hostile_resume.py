"""Hostile input to xorrelu.resume: a damaged or forged checkpoint.pt, summary.json, metrics.csv
or sweep dir is refused with one line and exit 2, and every file of the job dir stays byte for
byte as it was. Good input still resumes (the positive controls), exactly."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cfg, snapshot
from omegaconf import OmegaConf

from xorrelu import resume
from xorrelu.train import train

ARGS = ("steps=40", "replicas=2", "plot=false")
KINDS = {  # completed 40-step jobs, each resumable with --steps 80
    "sgd": (),  # the autograd engine with an empty optimizer state
    "adam": ("optimizer=adam",),  # the autograd engine with a per-parameter optimizer state
    "fused": ("engine=fused", "compile=false", "optimizer=adam"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for kind, extra in KINDS.items():
        train(make_cfg(*ARGS, *extra), root / kind)
    return root


@pytest.fixture
def job(pristine, tmp_path):
    """job(kind) -> a fresh copy of a pristine job dir, to damage."""

    def copy(kind: str = "adam", name: str = "job") -> Path:
        return Path(shutil.copytree(pristine / kind, tmp_path / name, symlinks=True))

    return copy


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_refused(
    capsys, root: Path, argv: list[str], words: tuple[str, ...], code: int = 2
) -> str:
    """resume.main(argv) exits `code` with one error line holding `words`, and root is unchanged."""
    before = snapshot(root)
    with deadline(60):
        assert resume.main(argv) == code
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xorrelu-resume: error:"), out.err
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in out.err + out.out
    assert snapshot(root) == before
    return lines[0]


# --- mutations: each takes the job dir and damages one thing ---------------------------------
def in_checkpoint(change):
    """Load checkpoint.pt, let change(checkpoint, job) edit it, save it back."""

    def mutate(job: Path) -> None:
        checkpoint = torch.load(job / "checkpoint.pt", weights_only=True)
        change(checkpoint, job)
        torch.save(checkpoint, job / "checkpoint.pt")

    return mutate


def in_summary(change):
    def mutate(job: Path) -> None:
        summary = json.loads((job / "summary.json").read_text())
        change(summary)
        (job / "summary.json").write_text(json.dumps(summary))

    return mutate


def write(name: str, data: bytes):
    return lambda job: (job / name).write_bytes(data)


def recorder(**values):
    return in_checkpoint(lambda c, job: c["recorder"].update(values))


def row_ends(job: Path) -> list[int]:
    """Byte offsets just after each line of metrics.csv."""
    data = (job / "metrics.csv").read_bytes()
    return [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]


def csv_at(pick):
    """Point recorder.csv_bytes at pick(job, csv_bytes)."""
    return in_checkpoint(
        lambda c, job: c["recorder"].update(csv_bytes=pick(job, c["recorder"]["csv_bytes"]))
    )


def truncate(job: Path) -> None:
    data = (job / "checkpoint.pt").read_bytes()
    (job / "checkpoint.pt").write_bytes(data[: len(data) // 2])


def flip_a_weight_byte(job: Path) -> None:
    """Flip one byte inside a stored tensor: the zip's CRC no longer matches."""
    path = job / "checkpoint.pt"
    with zipfile.ZipFile(path) as archive:
        member = next(m for m in archive.infolist() if "/data/" in m.filename and m.file_size >= 8)
    data = bytearray(path.read_bytes())
    name_length, extra_length = (
        int.from_bytes(data[member.header_offset + 26 : member.header_offset + 28], "little"),
        int.from_bytes(data[member.header_offset + 28 : member.header_offset + 30], "little"),
    )
    data[member.header_offset + 30 + name_length + extra_length + 3] ^= 0x40
    path.write_bytes(bytes(data))


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def sparse(name: str, size: int, start: bytes = b""):
    def mutate(job: Path) -> None:
        with open(job / name, "wb") as file:
            file.write(start)
            file.truncate(size)

    return mutate


def replace_with_dir(name: str):
    def mutate(job: Path) -> None:
        (job / name).unlink()
        (job / name).mkdir()

    return mutate


def replace_with_fifo(name: str):
    def mutate(job: Path) -> None:
        (job / name).unlink()
        os.mkfifo(job / name)

    return mutate


def dangling(name: str):
    def mutate(job: Path) -> None:
        (job / name).unlink()
        (job / name).symlink_to("nowhere")

    return mutate


def interrupted_at(steps: int):
    """A summary that says the run is unfinished and runs `steps` steps."""

    def change(summary: dict) -> None:
        summary["config"]["steps"], summary["status"] = steps, "interrupted"

    return change


def rename_header_column(job: Path) -> None:
    data = (job / "metrics.csv").read_bytes()
    (job / "metrics.csv").write_bytes(data.replace(b"accuracy", b"accurate", 1))


def hydra_config_only(text: str):
    def mutate(job: Path) -> None:
        (job / "summary.json").unlink()
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text(text)

    return mutate


def bad_engine_state(change):
    return in_checkpoint(lambda c, job: change(c["engine_state"]))


EXTEND = ("--steps", "80")
C = in_checkpoint
CASES = [
    # recorder.csv_bytes: where resume cuts metrics.csv and appends
    pytest.param(
        "adam",
        recorder(csv_bytes=1e9),
        EXTEND,
        ("csv_bytes is 1000000000.0, not an int",),
        id="csv_bytes-float-1e9",
    ),
    pytest.param(
        "adam",
        csv_at(lambda job, n: (job / "metrics.csv").stat().st_size + 100),
        EXTEND,
        ("metrics.csv holds", "bytes"),
        id="csv_bytes-beyond-file",
    ),
    pytest.param("adam", recorder(csv_bytes=0), EXTEND, ("holds 0 bytes",), id="csv_bytes-zero"),
    pytest.param(
        "adam", recorder(csv_bytes=-5), EXTEND, ("holds -5 bytes",), id="csv_bytes-negative"
    ),
    pytest.param(
        "adam", csv_at(lambda job, n: n - 5), EXTEND, ("inside a row",), id="csv_bytes-mid-row"
    ),
    pytest.param(
        "adam",
        csv_at(lambda job, n: row_ends(job)[row_ends(job).index(n) - 1]),
        EXTEND,
        ("middle of step 39", "seed 0"),
        id="csv_bytes-mid-step",
    ),
    pytest.param(
        "adam",
        csv_at(lambda job, n: row_ends(job)[row_ends(job).index(n) - 2]),
        EXTEND,
        ("ends with step 38", "after step 39"),
        id="csv_bytes-a-step-early",
    ),
    pytest.param(
        "adam",
        csv_at(lambda job, n: row_ends(job)[0]),
        EXTEND,
        ("has no rows", "at step 40"),
        id="csv_bytes-header-only",
    ),
    pytest.param(
        "adam",
        write("metrics.csv", b""),
        EXTEND,
        ("metrics.csv holds", "is 0 bytes"),
        id="metrics-emptied",
    ),
    pytest.param(
        "adam",
        lambda job: (job / "metrics.csv").unlink(),
        EXTEND,
        ("metrics.csv is missing",),
        id="metrics-missing",
    ),
    pytest.param(
        "adam",
        rename_header_column,
        EXTEND,
        ("does not start with the header",),
        id="metrics-other-header",
    ),
    pytest.param(
        "adam",
        replace_with_fifo("metrics.csv"),
        EXTEND,
        ("metrics.csv is not a regular file",),
        id="metrics-fifo",
    ),
    # step
    pytest.param(
        "adam",
        C(lambda c, job: c.update(step=-50)),
        EXTEND,
        ("step -50 is outside 0..40",),
        id="step-negative",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(step=41)),
        EXTEND,
        ("step 41 is outside 0..40",),
        id="step-beyond-config",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(step=40.0)),
        EXTEND,
        ("step is 40.0, not an int",),
        id="step-float",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(step=True)),
        EXTEND,
        ("step is True, not an int",),
        id="step-bool",
    ),
    pytest.param(
        "sgd",
        C(lambda c, job: c.update(step=20)),
        EXTEND,
        ("ends with step 39", "from step 20"),
        id="step-behind-rows",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(step=20)),
        EXTEND,
        ("counts [40.0] updates", "step is 20"),
        id="step-behind-optimizer",
    ),
    # model and initial: the shapes of the model the config builds
    pytest.param(
        "adam",
        C(lambda c, job: c.update(model={})),
        EXTEND,
        ("model is [], not the keys",),
        id="model-empty",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["model"].update({"0.weight": torch.zeros(3, 2, 5)})),
        EXTEND,
        ("model['0.weight'] is torch.float32 [3, 2, 5], not torch.float32 [2, 2, 5]",),
        id="model-wrong-shape",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["model"].update({"0.bias": c["model"]["0.bias"].double()})),
        EXTEND,
        ("torch.float64",),
        id="model-wrong-dtype",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["model"].update({"0.bias": 5})),
        EXTEND,
        ("model['0.bias'] is 5, not a tensor",),
        id="model-not-a-tensor",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["initial"].pop("20.bias")),
        EXTEND,
        ("initial is",),
        id="initial-missing-tensor",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(model=[1, 2])),
        EXTEND,
        ("model is [1, 2], not a dict",),
        id="model-a-list",
    ),
    # engine, its state, threads
    pytest.param(
        "adam",
        C(lambda c, job: c.update(engine="bogus")),
        EXTEND,
        ("engine 'bogus' is neither",),
        id="engine-bogus",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(engine="fused")),
        EXTEND,
        ("engine_state", "fused engine's state"),
        id="engine-swapped",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(compiled="yes")),
        EXTEND,
        ("compiled is 'yes', not a bool",),
        id="compiled-a-string",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(compiled=True)),
        EXTEND,
        ("autograd engine was compiled",),
        id="compiled-autograd",
    ),
    pytest.param(
        "adam",
        bad_engine_state(lambda s: s["state"][0].update(exp_avg=torch.zeros(7))),
        EXTEND,
        ("engine_state['state'][0]['exp_avg'] is torch.float32 [7]",),
        id="optimizer-state-wrong-shape",
    ),
    pytest.param(
        "adam",
        bad_engine_state(lambda s: s["param_groups"][0].update(lr=0.5)),
        EXTEND,
        ("['lr'] is 0.5, not 0.01",),
        id="optimizer-lr-forged",
    ),
    pytest.param(
        "adam",
        bad_engine_state(lambda s: s["state"].clear()),
        EXTEND,
        ("engine_state['state'] is []",),
        id="optimizer-state-dropped",
    ),
    pytest.param(
        "adam",
        bad_engine_state(lambda s: [v.update(step=torch.tensor(7.0)) for v in s["state"].values()]),
        EXTEND,
        ("counts [7.0] updates",),
        id="optimizer-step-count",
    ),
    pytest.param(
        "fused",
        bad_engine_state(lambda s: s["state"].pop()),
        EXTEND,
        ("engine_state['state'] is", "not a list of 44"),
        id="fused-state-short",
    ),
    pytest.param(
        "fused",
        bad_engine_state(lambda s: s.update(t=torch.tensor(3.0))),
        EXTEND,
        ("counts [3.0] updates",),
        id="fused-t-forged",
    ),
    pytest.param(
        "fused",
        bad_engine_state(lambda s: s.update(t=torch.zeros(2))),
        EXTEND,
        ("engine_state['t'] is torch.float32 [2]",),
        id="fused-t-wrong-shape",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(threads=-3)),
        EXTEND,
        ("threads -3 is outside",),
        id="threads-negative",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(threads="2")),
        EXTEND,
        ("threads is '2', not an int",),
        id="threads-a-string",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(threads=10**6)),
        EXTEND,
        ("threads 1000000 is outside",),
        id="threads-huge",
    ),
    # recorder tensors: one per replica
    pytest.param(
        "adam",
        recorder(first_step_solved=torch.tensor([-1, -1, -1])),
        EXTEND,
        ("recorder first_step_solved is torch.int64 [3], not torch.int64 [2]",),
        id="recorder-wrong-length",
    ),
    pytest.param(
        "adam",
        recorder(diverged=torch.zeros(2)),
        EXTEND,
        ("recorder diverged is torch.float32 [2], not torch.bool [2]",),
        id="recorder-wrong-dtype",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["recorder"].pop("cost_at_90")),
        EXTEND,
        ("recorder has the keys",),
        id="recorder-missing-key",
    ),
    pytest.param(
        "adam",
        recorder(first_step_solved=torch.tensor([100, -1])),
        EXTEND,
        ("recorder first_step_solved holds steps outside -1..39",),
        id="recorder-first-step-solved-future",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(recorder=[])),
        EXTEND,
        ("recorder is [], not a dict",),
        id="recorder-a-list",
    ),
    # the checkpoint as a whole
    pytest.param(
        "adam",
        C(lambda c, job: c.pop("recorder")),
        EXTEND,
        ("not an xorrelu checkpoint", "lacks recorder"),
        id="checkpoint-missing-key",
    ),
    pytest.param(
        "adam",
        lambda job: torch.save([1, 2], job / "checkpoint.pt"),
        EXTEND,
        ("not an xorrelu checkpoint",),
        id="checkpoint-a-list",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c.update(config="x")),
        EXTEND,
        ("config is 'x', not a dict",),
        id="checkpoint-config-a-string",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["config"].update(depth="ten")),
        EXTEND,
        ("config depth='ten' has the wrong type",),
        id="checkpoint-config-wrong-type",
    ),
    pytest.param(
        "adam",
        C(lambda c, job: c["config"].update(depth=3)),
        EXTEND,
        ("not the one its checkpoint was made with", "depth: checkpoint 3, job dir 10"),
        id="checkpoint-other-config",
    ),
    pytest.param(
        "adam",
        truncate,
        EXTEND,
        ("checkpoint.pt is damaged", "truncated"),
        id="checkpoint-truncated",
    ),
    pytest.param(
        "adam",
        flip_a_weight_byte,
        EXTEND,
        ("checkpoint.pt is damaged", "fails its checksum"),
        id="checkpoint-bit-flip",
    ),
    pytest.param(
        "adam",
        write("checkpoint.pt", b"\x80\x04garbage" * 10),
        EXTEND,
        ("not an xorrelu checkpoint", "not a zip archive"),
        id="checkpoint-garbage",
    ),
    pytest.param(
        "adam",
        lambda job: torch.save({"step": Payload()}, job / "checkpoint.pt"),
        EXTEND,
        ("not an xorrelu checkpoint", "refused"),
        id="checkpoint-pickle-payload",
    ),
    pytest.param(
        "adam",
        sparse("checkpoint.pt", 40 * 2**20, b"PK\x03\x04"),
        EXTEND,
        ("MiB, more than the 16 MiB",),
        id="checkpoint-too-large",
    ),
    pytest.param(
        "adam",
        replace_with_dir("checkpoint.pt"),
        EXTEND,
        ("checkpoint.pt is not a regular file",),
        id="checkpoint-a-dir",
    ),
    pytest.param(
        "adam",
        replace_with_fifo("checkpoint.pt"),
        EXTEND,
        ("checkpoint.pt is not a regular file",),
        id="checkpoint-fifo",
    ),
    pytest.param(
        "adam",
        lambda job: (job / "checkpoint.pt").unlink(),
        EXTEND,
        ("no checkpoint.pt",),
        id="checkpoint-missing",
    ),
    # summary.json: refused as it is, never replaced by .hydra/config.yaml
    pytest.param(
        "adam",
        write("summary.json", b"[1, 2, 3]"),
        (),
        ("summary.json is damaged", "a JSON list, not an object"),
        id="summary-a-list",
    ),
    pytest.param(
        "adam",
        write("summary.json", b"\xff\xfe\x00garbage\x80"),
        (),
        ("summary.json is damaged", "not UTF-8"),
        id="summary-not-utf8",
    ),
    pytest.param(
        "adam",
        write("summary.json", b"[" * 100_000),
        (),
        ("summary.json is damaged", "nested too deeply"),
        id="summary-deeply-nested",
    ),
    pytest.param(
        "adam",
        write("summary.json", b"{not json"),
        (),
        ("summary.json is damaged", "not valid JSON"),
        id="summary-not-json",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s.update(status="bogus")),
        (),
        ("status 'bogus' is none of",),
        id="summary-status-bogus",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s.update(status=["completed"])),
        (),
        ("status ['completed'] is none of",),
        id="summary-status-a-list",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s.pop("config")),
        (),
        ("its config is None",),
        id="summary-no-config",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s.update(config=[1])),
        (),
        ("its config is [1]",),
        id="summary-config-a-list",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"].update(depth="ten")),
        EXTEND,
        ("config depth='ten' has the wrong type",),
        id="summary-config-wrong-type",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"]["optimizer"].update(lr=[0.1])),
        EXTEND,
        ("config optimizer.'lr'=[0.1]",),
        id="summary-config-nested-wrong-type",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"].update(evil=1)),
        EXTEND,
        ("unknown 'evil'",),
        id="summary-config-unknown-key",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"].pop("width")),
        EXTEND,
        ("missing width",),
        id="summary-config-missing-key",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"].update(seed=-1)),
        EXTEND,
        ("seed=-1 is not allowed",),
        id="summary-config-seed-negative",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"].update(seed=2**70)),
        EXTEND,
        ("seed=1180591620717411303424 is not allowed",),
        id="summary-config-seed-beyond-64-bits",
    ),
    pytest.param(
        "adam",
        write("summary.json", b'{"status": "interrupted", "config": {"optimizer": {"lr": NaN}}}'),
        (),
        ("missing activation",),
        id="summary-config-partial",
    ),
    pytest.param(
        "adam",
        in_summary(lambda s: s["config"]["optimizer"].update(lr=float("nan"))),
        EXTEND,
        ("optimizer.lr=nan is not allowed",),
        id="summary-config-lr-nan",
    ),
    pytest.param(
        "adam",
        in_summary(interrupted_at(30)),
        (),
        ("at step 40, past the 30 steps", "summary.json", "--steps 40"),
        id="summary-steps-behind-checkpoint",
    ),
    pytest.param(
        "adam",
        sparse("summary.json", 65 * 2**20, b"{"),
        (),
        ("summary.json is 65.0 MiB, more than the 64 MiB",),
        id="summary-too-large",
    ),
    pytest.param(
        "adam",
        replace_with_dir("summary.json"),
        (),
        ("summary.json is not a regular file",),
        id="summary-a-dir",
    ),
    pytest.param(
        "adam",
        dangling("summary.json"),
        (),
        ("summary.json is not a regular file",),
        id="summary-dangling-link",
    ),
    pytest.param(
        "adam",
        lambda job: (job / "summary.json").unlink(),
        EXTEND,
        ("holds no config",),
        id="summary-missing-no-hydra",
    ),
    pytest.param(
        "adam",
        hydra_config_only("a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\n"),
        EXTEND,
        ("config.yaml is damaged", "aliases"),
        id="hydra-yaml-aliases",
    ),
    pytest.param(
        "adam",
        hydra_config_only("- 1\n- 2\n"),
        EXTEND,
        ("config.yaml is damaged", "not a mapping"),
        id="hydra-yaml-a-list",
    ),
]


@pytest.mark.parametrize("kind, mutate, args, words", CASES)
def test_hostile_input_is_refused_in_one_line_and_changes_nothing(
    job, tmp_path, capsys, monkeypatch, kind, mutate, args, words
):
    path = job(kind)
    mutate(path)
    monkeypatch.chdir(tmp_path)  # where a pickle payload would leave its mark
    assert_refused(capsys, tmp_path, [str(path), *args], words)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_an_extended_run_whose_summary_is_gone_is_refused_not_cut(job, tmp_path, capsys):
    """Extended to 80 steps, then summary.json is lost: .hydra/config.yaml still says 40. Going on
    would make train() run no step at all after cutting the final row (UnboundLocalError)."""
    path = job("sgd")
    assert resume.main([str(path), "--steps", "80"]) == 0
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(make_cfg(*ARGS)))
    (path / "summary.json").unlink()
    capsys.readouterr()
    assert_refused(
        capsys,
        tmp_path,
        [str(path)],
        ("at step 80, past the 40 steps", ".hydra/config.yaml", "--steps 80"),
    )
    assert resume.main([str(path), "--steps", "80"]) == 0  # the way out the message gives


def reference_metrics(tmp_path: Path, kind: str, steps: int) -> bytes:
    args = [a for a in ARGS if not a.startswith("steps=")]
    train(make_cfg(*args, f"steps={steps}", *KINDS[kind]), tmp_path / f"reference-{kind}")
    return (tmp_path / f"reference-{kind}" / "metrics.csv").read_bytes()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_good_checkpoint_still_resumes_exactly(job, tmp_path, capsys, kind):
    path = job(kind)
    assert resume.main([str(path), "--steps", "80"]) == 0
    assert capsys.readouterr().err == ""
    assert (path / "metrics.csv").read_bytes() == reference_metrics(tmp_path, kind, 80)
    assert json.loads((path / "summary.json").read_text())["status"] == "completed"


def test_a_checkpoint_at_step_0_with_only_the_header_resumes(job, capsys):
    """What a stop before the first update leaves: header-only rows, a fresh optimizer."""
    path = job("sgd")
    whole = (path / "metrics.csv").read_bytes()
    checkpoint = torch.load(path / "checkpoint.pt", weights_only=True)
    checkpoint["step"], checkpoint["model"] = 0, checkpoint["initial"]
    checkpoint["recorder"] = {
        "csv_bytes": whole.index(b"\n") + 1,
        "diverged": torch.zeros(2, dtype=torch.bool),
        "since": torch.full((2,), -1),  # as checkpoints named first_step_solved before
        "first_ratio": torch.full((2,), float("nan")),
        "below_ln2": torch.zeros(2, dtype=torch.bool),
        "cost_at_90": torch.full((2,), float("nan")),
    }
    torch.save(checkpoint, path / "checkpoint.pt")
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    assert resume.main([str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert (path / "metrics.csv").read_bytes() == whole


def test_a_sweep_resumes_its_good_jobs_and_reports_the_bad_one(job, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, "xorrelu.resume")
    sweep = tmp_path / "sweep"
    bad, good = job("adam", "sweep/0"), job("sgd", "sweep/1")
    recorder(csv_bytes=10**9)(bad)
    (sweep / "2").symlink_to("1")  # the same job twice: resumed once
    (sweep / "loop").symlink_to(".")  # a link back to the sweep: no job, no loop
    (sweep / "notes").mkdir()  # not a job: skipped
    line = assert_refused(
        capsys,
        bad,
        [str(sweep), "--steps", "80"],
        (f"{bad}/checkpoint.pt", "metrics.csv holds 1000000000 bytes"),
    )
    assert str(good) not in line
    assert json.loads((good / "summary.json").read_text())["last_step"] == 80
    assert (good / "metrics.csv").read_bytes() == reference_metrics(tmp_path, "sgd", 80)
    said = [record.getMessage() for record in caplog.records if record.name == "xorrelu.resume"]
    assert [line.split()[0] for line in said] == [
        "resuming"
    ]  # job 1 once, though two names lead to it


def test_a_sweep_with_named_and_numbered_jobs(job, tmp_path, caplog):
    """Job dirs named other than 0, 1, ... sort after the numbered ones
    instead of failing to sort."""
    caplog.set_level(logging.INFO, "xorrelu.resume")
    job("sgd", "sweep/10"), job("sgd", "sweep/9"), job("sgd", "sweep/extra")
    assert resume.main([str(tmp_path / "sweep")]) == 0  # all completed: skipped
    said = [record.getMessage() for record in caplog.records if record.name == "xorrelu.resume"]
    assert [line.split("/")[-1] for line in said] == [
        "9: completed",
        "10: completed",
        "extra: completed",
    ]


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (SystemExit(3), 3)])
def test_a_stop_during_resume_is_one_line_not_a_traceback(
    job, tmp_path, capsys, monkeypatch, error, code
):
    def stop(*args, **kwargs):
        raise error

    monkeypatch.setattr(resume, "train", stop)
    assert_refused(
        capsys, tmp_path, [str(job("sgd")), "--steps", "80"], ("xorrelu-resume: error:",), code=code
    )


def test_bad_arguments_return_2(capsys):
    assert resume.main(["--steps", "many"]) == 2
    assert "Traceback" not in capsys.readouterr().err


BOMB_CHILD = """
import resource, sys
from xorrelu import resume
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = resume.main(sys.argv[1:])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(code, grown // 1024)
"""


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_inflated(job, tmp_path):
    """checkpoint.pt with one tensor record replaced by 300 MB of zeros, deflated to ~300 KB:
    torch.load would allocate the 300 MB. Resume measures it in another process."""
    path = job("sgd")
    original = path / "checkpoint.pt"
    with zipfile.ZipFile(original) as source:
        victim = max(
            (m for m in source.infolist() if "/data/" in m.filename), key=lambda m: m.file_size
        )
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(bomb, "w") as out:
        for member in source.infolist():
            if member.filename == victim.filename:
                info = zipfile.ZipInfo(member.filename)
                info.compress_type = zipfile.ZIP_DEFLATED
                with out.open(info, "w", force_zip64=True) as record:
                    zeros = bytes(2**20)
                    for _ in range(300):
                        record.write(zeros)
            else:
                out.writestr(member, source.read(member))
    assert bomb.stat().st_size < 2 * 2**20
    shutil.move(bomb, original)
    before = snapshot(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(path), "--steps", "80"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    code, grown_mib = map(int, proc.stdout.split()[-2:])
    assert code == 2 and "declares 300 MiB" in proc.stderr and len(proc.stderr.splitlines()) == 1, (
        proc.stderr
    )
    assert grown_mib < 100, f"resume grew by {grown_mib} MiB on a zip bomb"
    assert snapshot(path) == before


@pytest.mark.slow
def test_two_resumes_of_one_job_at_once_one_is_refused(job, tmp_path):
    """The first holds the job dir's lock while it trains; the second says so in one line."""
    path = job("sgd")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "xorrelu.resume", str(path), "--steps", "30000"]
    first = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    log = path / "xorrelu.log"
    while "resuming" not in (log.read_text() if log.is_file() else ""):
        assert first.poll() is None, first.communicate()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert second.returncode == 2 and "another xorrelu process is writing into" in second.stderr, (
        second.stderr
    )
    assert len(second.stderr.splitlines()) == 1
    assert first.returncode == 143, err
    assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"
