"""A single-node SLURM cluster on this machine for the SLURM tests and CI: munged, slurmctld and
slurmd from Debian's slurm-wlm and munge packages, as root, on localhost.

Everything lives in one dir of its own: the munge key and socket, slurm.conf, the daemons' state,
logs and PID files. Nothing in /etc/slurm or /etc/munge is read or written, the ports are chosen
free, so a cluster already running on the machine is left alone. Clients find it through
SLURM_CONF=DIR/slurm.conf (jobs inherit it). slurm.conf is written at start from this machine's
hostname and `slurmd -C` (cores, memory); no cgroups (proctrack/linuxproc, task/none) and no
accounting database (sacct is off; xorrelu's launcher reads job states from squeue).

    python tests/slurm_cluster.py start DIR     # then: export SLURM_CONF=DIR/slurm.conf
    python tests/slurm_cluster.py stop DIR      # stops the daemons by their PIDs

Standard library only: .ci/run calls it before the tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order, started in the reverse
MARK = "# written by xorrelu's tests/slurm_cluster.py"


class ClusterError(Exception):
    """The cluster cannot start here; the message says why."""


def unavailable() -> str | None:
    """Why a cluster cannot be started on this machine, or None."""
    missing = [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol") if not _which(name)]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} not found): "
            "apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "starting a SLURM cluster needs root (munged, slurmctld and slurmd run as root)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def ours(conf: str | Path) -> bool:
    """Whether `conf` is a slurm.conf this module wrote."""
    try:
        return Path(conf).read_text().startswith(MARK)
    except OSError:
        return False


def answers(conf: str | Path, timeout: float = 5) -> bool:
    """Whether the cluster of `conf` is up, with its node ready for jobs."""
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")


def start(root: str | Path, timeout: float = 60) -> Path:
    """Start the cluster in `root` (made if needed); its slurm.conf. ClusterError with the
    reason (a daemon's last log lines) if it does not come up within `timeout` seconds."""
    reason = unavailable()
    if reason:
        raise ClusterError(reason)
    root = Path(root).absolute()
    for sub in ("munge", "ctld", "d", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # slurmd reads slurm.conf here; jobs run as root
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket.2"
    _run(
        [
            _which("munged"),
            "--force",
            f"--key-file={key}",
            f"--socket={munge_socket}",
            f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
        ],
        root / "log" / "munged.log",
    )
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, munge_socket))
    _run([_which("slurmctld"), "-f", str(conf)], root / "log" / "slurmctld.log")
    _run([_which("slurmd"), "-f", str(conf)], root / "log" / "slurmd.log")
    deadline = time.monotonic() + timeout
    while not answers(conf):
        if time.monotonic() > deadline:
            tail = _tail(root / "log" / "slurmctld.log") + _tail(root / "log" / "slurmd.log")
            stop(root)
            raise ClusterError(f"the node did not become idle within {timeout:.0f} s: {tail}")
        time.sleep(0.5)
    return conf


def _slurm_conf(root: Path, munge_socket: Path) -> str:
    host = socket.gethostname().split(".")[0]
    node = subprocess.run(
        [_which("slurmd"), "-C"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]  # NodeName=HOST CPUs=2 ... RealMemory=24105
    fields = dict(item.split("=", 1) for item in node.split())
    cpus, memory = fields["CPUs"], fields["RealMemory"]
    ctld_port, d_port = _free_port(), _free_port()
    return f"""{MARK} for its tests; stop it with: python tests/slurm_cluster.py stop {root}
ClusterName=xorrelu
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation={root / "ctld"}
SlurmdSpoolDir={root / "d"}
SlurmctldPidFile={root / "ctld" / "slurmctld.pid"}
SlurmdPidFile={root / "d" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], log: Path) -> None:
    """Start a daemon (each forks into the background and writes its PID file)."""
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise ClusterError(
            f"{Path(command[0]).name} did not start (exit {out.returncode}): "
            f"{' '.join((out.stderr or out.stdout).split())[-300:]}{_tail(log)}"
        )


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f" [{log.name}: {' | '.join(text)}]" if text else ""


def stop(root: str | Path, timeout: float = 20) -> None:
    """Stop the daemons started in `root`, by the PIDs in their PID files (SIGTERM)."""
    root = Path(root)
    pid_files = {
        "slurmd": root / "d" / "slurmd.pid",
        "slurmctld": root / "ctld" / "slurmctld.pid",
        "munged": root / "munge" / "munged.pid",
    }
    for name in DAEMONS:
        try:
            pid = int(pid_files[name].read_text().strip())
        except (OSError, ValueError):
            continue
        if not _is(pid, name):
            continue  # gone, and the PID may be someone else's by now
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is(pid, name) and time.monotonic() < deadline:
            time.sleep(0.1)


def _is(pid: int, name: str) -> bool:
    """Whether process `pid` is running and is `name`."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    action, root = argv
    if action == "stop":
        stop(root)
        return 0
    try:
        conf = start(root)
    except ClusterError as error:
        print(f"slurm_cluster: cannot start a SLURM cluster: {error}", file=sys.stderr)
        return 1
    print(conf)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
