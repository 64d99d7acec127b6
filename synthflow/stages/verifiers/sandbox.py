"""Run untrusted (generated) code where it cannot hurt the pipeline that runs it, the machine, or other data on it.

Two isolation levels; `SandboxResult.isolation` reports which one ran and what enforced each limit:

- "bwrap" (the default, and the only one used unless the caller asks for "none"): bubblewrap starts the code in
  new user, mount, PID, network, IPC, UTS and cgroup namespaces, with every capability dropped and no way to make
  more user namespaces. Its filesystem is an empty root holding only /usr and the interpreter's own prefix
  (read-only), a private /proc that shows only the sandbox's processes, a minimal read-only /dev, and /work: a
  tmpfs of `max_disk_bytes` that is the working directory, HOME and TMPDIR. Nothing of the sandbox lives on the
  host disk, so nothing is left behind there. bwrap needs no privileges where the kernel lets unprivileged users
  make user namespaces; as root the sandbox first drops to a fresh uid unique to the run. Where bwrap is missing
  or cannot make its namespaces, `run_python`/`run_command` raise `SandboxUnavailable`: they never fall back to
  weaker isolation on their own.
- "none": asked for explicitly. The code runs as the caller's user in a throwaway folder under the system temp
  folder, with the rlimits and a Python-level socket block (best effort), and nothing else.

Limits per sandbox (all its processes together): with a delegated cgroup v2 that has the memory, pids and cpu
controllers, one cgroup per sandbox (memory.max, pids.max, cpu usage). Without one (cgroup v1 or hybrid hosts,
unprivileged users without delegation): RLIMIT_NPROC set inside the sandbox's own user namespace (counted per
sandbox by the kernel), and the parent samples the tree's resident memory and CPU time every 50 ms and kills it
past `memory_mb` or `cpu_s`; per-process rlimits (address space, CPU, file size, open files) hold in both cases.

A killed caller leaves nothing running: the launcher has PR_SET_PDEATHSIG, bwrap --die-with-parent kills the
sandbox when its caller dies, and ending the PID namespace's first process ends every process in it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory", "output_limit", "error"]
Isolation = Literal["sandbox", "none"]

# Exit code of a launcher that could not set the sandbox up (never a user program's verdict).
SETUP_FAILED = 125
# Fresh uids come from a range that no distribution hands out, so they own nothing on the machine.
_UID_BASE = 2_000_000_000
_UID_SPAN = 100_000_000
_SAMPLE_S = 0.05
_WORK = "/sandbox"  # the working directory inside the sandbox (a tmpfs there; not a host path)
_INSIDE_UID = 1000
_NONE_BASE = "synthflow-sandbox-none"  # folder in the system temp folder for `isolation: none` work folders


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start on this machine; the message says why and how to proceed."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10  # CPU seconds of all the sandbox's processes together
    memory_mb: int = 1024  # all processes together; each process's address space is capped at this too
    max_processes: int = 32  # at once, the sandbox's own init included
    max_output_bytes: int = 1_000_000  # stdout + stderr together
    max_file_bytes: int = 10_000_000  # largest file the code may write
    max_open_files: int = 256
    max_disk_bytes: int = 64_000_000  # all files in the working directory together


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None
    stdout: str  # excerpt: head and tail when long
    stderr: str
    duration_s: float
    detail: str = ""  # why, in words, when status is not "passed"
    output_bytes: int = 0
    isolation: dict[str, str] = field(default_factory=dict)  # level, and what enforced each limit

    @property
    def ok(self) -> bool:
        return self.status == "passed"


# rlimits, shared by both launchers. Inside the sandbox they are set after bwrap made the user namespace, so the
# kernel counts RLIMIT_NPROC for that namespace alone, not for every process of the caller's user.
_RLIMITS = r"""
import resource
def set_limits(lim):
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

def write_files(files):
    for name, text in files.items():
        d = os.path.dirname(name)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(name, "w") as f:
            f.write(text)

def die(msg):
    os.write(2, ("synthflow-sandbox: " + msg + "\n").encode())
    os._exit(125)
"""

# Runs first, as the caller's user, with `python -I -S`: joins the cgroup, drops root to the run's uid, and execs
# bwrap (or, for "none", sets the limits and execs the target). Standard library only: no isolation exists yet.
_OUTER = r"""
import ctypes, json, os, sys
""" + _RLIMITS + r"""
cfg = json.loads(sys.argv[1])
try:
    if cfg["cgroup"]:
        with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0")
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
except OSError as e:
    die("set-up failed: %s" % e)
# PR_SET_PDEATHSIG = SIGKILL: die with the caller. After the uid change, which clears it; kept across exec.
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
if os.getppid() != cfg["parent"]:
    die("the caller is gone")
if cfg["level"] == "none":
    os.chdir(cfg["workdir"])
    with os.fdopen(cfg["payload_fd"]) as f:
        write_files(json.load(f)["files"])
    try:
        set_limits(cfg["limits"])
    except (OSError, ValueError) as e:
        die("setrlimit failed: %s" % e)
    os.write(cfg["report_fd"], b"ok")
    os.close(cfg["report_fd"])
    target = cfg["argv"]
else:
    target = cfg["bwrap"]
try:
    os.execve(target[0], target, cfg["env"])
except OSError as e:
    die("cannot run %s: %s" % (target[0], e))
"""

# Runs inside the sandbox (uid 1000 of its own user namespace, no capabilities, cwd /work): writes the files from
# the payload and sets the limits, after confirming on the report pipe that the sandbox stands; execs the target.
_INNER = r"""
import json, os, sys
""" + _RLIMITS + r"""
payload_fd, report_fd = int(sys.argv[1]), int(sys.argv[2])
os.write(report_fd, b"ok")  # the namespaces stand; what fails from here on is the run's own doing
os.close(report_fd)
with os.fdopen(payload_fd) as f:
    job = json.load(f)
try:
    write_files(job["files"])
    set_limits(job["limits"])
except (OSError, ValueError) as e:
    die("set-up inside the sandbox failed: %s" % e)
try:
    os.execve(job["argv"][0], job["argv"], job["env"])
except OSError as e:
    die("cannot run %s: %s" % (job["argv"][0], e))
"""

# Prepended to user code run by `run_python`: puts the working directory on sys.path (python -I leaves it off)
# and, for "none", blocks sockets at the Python level.
_PY_BOOT = r"""
import os, sys
sys.path.insert(0, os.getcwd())
if os.environ.pop("SYNTHFLOW_SANDBOX_BLOCK_SOCKETS", None):
    import socket
    def _blocked(*a, **k):
        raise PermissionError("network access is disabled in the sandbox")
    for _name in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
        setattr(socket.socket, _name, _blocked)
    socket.create_connection = socket.getaddrinfo = _blocked
    del _blocked, _name, socket
import runpy
sys.argv = [%(main)r] + %(args)r
runpy.run_path(%(main)r, run_name="__main__")
"""

_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    # Thread pools in numeric libraries reserve address space per thread; one thread keeps RLIMIT_AS honest.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

_EXCERPT = 4000


def run_python(
    code: str,
    *,
    files: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    limits: Limits = Limits(),
    python: str | None = None,
    isolation: Isolation = "sandbox",
) -> SandboxResult:
    """Run `code` as `main.py` in a fresh sandbox, beside `files` (name -> text), with `python` (default: a
    Python of our version that the sandbox can read). Raises SandboxUnavailable rather than run with less
    isolation than asked for."""
    all_files = dict(files or {})
    all_files["main.py"] = code
    exe = _interpreter(python)
    boot = _PY_BOOT % {"main": "main.py", "args": list(args)}
    argv = [exe, "-I", "-B", "-c", boot]
    return _sandboxed(argv, all_files, limits, isolation, python_boot=True)


def run_command(
    argv: Sequence[str],
    *,
    files: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
    isolation: Isolation = "sandbox",
) -> SandboxResult:
    """Run `argv` in a fresh sandbox: a program under /usr (e.g. `sh -c` over the `files` beside it)."""
    return _sandboxed(list(argv), dict(files or {}), limits, isolation, python_boot=False)


@functools.cache
def _probe(bwrap: str | None, euid: int) -> dict[str, str]:
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so generated code cannot be isolated: install it "
            "(Debian/Ubuntu: apt-get install bubblewrap; `make sandbox-tools`), or set `isolation: none` in the "
            "verifier to run code without isolation"
        )
    r = run_python("pass", limits=Limits(wall_s=20, cpu_s=5, memory_mb=256, max_processes=8))
    if not r.ok:
        raise SandboxUnavailable(f"the sandbox does not run code here: {r.status}: {r.detail}")
    return r.isolation


def probe() -> dict[str, str]:
    """What the sandbox gives on this machine (cached); raises SandboxUnavailable when it cannot start."""
    return _probe(shutil.which("bwrap"), os.geteuid())


def _sandboxed(
    argv: list[str], files: dict[str, str], limits: Limits, isolation: Isolation, *, python_boot: bool
) -> SandboxResult:
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts:
            raise ValueError(f"sandbox file {name!r} would land outside the working directory")
    lim = {k: int(v) for k, v in vars(limits).items() if k not in ("wall_s", "max_disk_bytes")}
    if isolation == "none":
        return _run_unisolated(argv, files, limits, lim, python_boot)
    if isolation != "sandbox":
        raise ValueError(f"isolation must be 'sandbox' or 'none', not {isolation!r}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        _probe(None, os.geteuid())  # raises with the how-to
    inner = _interpreter(None)
    uid = _fresh_uid() if os.geteuid() == 0 else None
    cgroup = _Cgroup.create(limits)
    payload = {
        "files": files,
        "limits": lim,
        "argv": [shutil.which(argv[0]) or argv[0], *argv[1:]] if not argv[0].startswith("/") else argv,
        "env": {**_ENV, "HOME": _WORK, "TMPDIR": _WORK},
    }
    report = {
        "level": "bwrap",
        "namespaces": "user, mount, pid, network, ipc, uts, cgroup (bubblewrap)",
        "filesystem": f"/usr and the interpreter read-only; {_WORK} a private tmpfs; nothing else",
        "network": "network namespace without interfaces",
        "user": f"fresh uid {uid}, no capabilities" if uid is not None else f"uid {os.geteuid()}, no capabilities",
        "disk": f"tmpfs of {limits.max_disk_bytes} bytes",
        **(cgroup.report() if cgroup else _fallback_report(limits)),
    }
    try:
        return _run(
            lambda payload_fd, report_fd: {
                "level": "bwrap",
                "uid": uid,
                "cgroup": cgroup.path if cgroup else None,
                "env": {},
                "bwrap": _bwrap_argv(bwrap, inner, payload["argv"][0], limits, payload_fd, report_fd),
            },
            payload,
            limits,
            report,
            cgroup,
            strict=True,
        )
    finally:
        if cgroup:
            cgroup.remove()


def _bwrap_argv(
    bwrap: str, inner: str, exe: str, limits: Limits, payload_fd: int, report_fd: int
) -> list[str]:
    """bwrap's command line: namespaces, the read-only system and interpreter, /work, then the inner launcher."""
    argv = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--uid", str(_INSIDE_UID), "--gid", str(_INSIDE_UID), "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/", top)
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for prefix in sorted({_prefix_of(inner), _prefix_of(exe)}):
        if not prefix.startswith("/usr/") and prefix != "/usr":
            argv += ["--ro-bind", prefix, prefix]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "0700", "--size", str(limits.max_disk_bytes), "--tmpfs", _WORK,
        "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", _WORK,
        "--", inner, "-I", "-S", "-c", _INNER, str(payload_fd), str(report_fd),
    ]  # fmt: skip
    return argv


def _run_unisolated(
    argv: list[str], files: dict[str, str], limits: Limits, lim: dict, python_boot: bool
) -> SandboxResult:
    base = Path(tempfile.gettempdir()) / f"{_NONE_BASE}-{os.geteuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    _remove_stale(base)
    workdir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))
    env = {**_ENV, "HOME": str(workdir), "TMPDIR": str(workdir)}
    if python_boot:
        env["SYNTHFLOW_SANDBOX_BLOCK_SOCKETS"] = "1"
    report = {
        "level": "none",
        "namespaces": "none",
        "filesystem": "the caller's: everything the caller's user can read or write",
        "network": "python socket block (best effort)" if python_boot else "the caller's",
        "user": f"the caller's (uid {os.geteuid()})",
        "disk": "no cap beyond the per-file limit",
        "memory": f"per process: address space {limits.memory_mb} MB (RLIMIT_AS)",
        "processes": f"RLIMIT_NPROC {limits.max_processes}, counting all of the caller's processes",
        "cpu": f"per process: {limits.cpu_s} s (RLIMIT_CPU)",
    }
    try:
        return _run(
            lambda payload_fd, report_fd: {
                "level": "none",
                "uid": None,
                "cgroup": None,
                "workdir": str(workdir),
                "env": env,
                "argv": [shutil.which(argv[0]) or argv[0], *argv[1:]],
                "limits": lim,
            },
            {"files": files},
            limits,
            report,
            None,
            strict=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _remove_stale(base: Path) -> None:
    """Remove work folders of runs whose process is gone (a caller killed before it could clean up)."""
    for entry in base.iterdir():
        try:
            pid = int(entry.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(
    cfg_for: Callable[[int, int], dict],
    payload: dict,
    limits: Limits,
    report: dict[str, str],
    cgroup: _Cgroup | None,
    strict: bool,
) -> SandboxResult:
    """Start the launcher, watch it, clean up after it, and say what happened."""
    payload_fd = os.memfd_create("synthflow-sandbox-payload")
    report_r, report_w = os.pipe()
    try:
        os.write(payload_fd, json.dumps(payload).encode())
        os.lseek(payload_fd, 0, os.SEEK_SET)
        cfg = {**cfg_for(payload_fd, report_w), "parent": os.getpid(), "payload_fd": payload_fd,
               "report_fd": report_w}  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            [_interpreter(None), "-I", "-S", "-c", _OUTER, json.dumps(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(payload_fd, report_w),
            start_new_session=True,
            env={},
            cwd="/",
        )
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(payload_fd)
        os.close(report_w)
    out, err = _Capture(), _Capture()
    try:
        killed_for, cpu = _watch(proc, out, err, limits, started, cgroup)
    finally:
        if proc.returncode is None:  # only an unreaped pid is surely still ours
            _kill_tree(proc.pid, cgroup)
            proc.wait()
        elif cgroup:
            cgroup.kill()
        else:  # `isolation: none`: children left in the process group (its id stays taken while they live)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    duration = time.monotonic() - started
    with os.fdopen(report_r, "rb") as f:
        stood = f.read() == b"ok"
    rc = proc.returncode
    if strict and not stood and killed_for is None:
        raise SandboxUnavailable(
            f"bubblewrap could not set the sandbox up ({_last_line(err.text()) or f'exit status {rc}'}); "
            "the kernel may forbid unprivileged user namespaces (kernel.unprivileged_userns_clone, "
            "AppArmor's apparmor_restrict_unprivileged_userns); set `isolation: none` in the verifier to run code "
            "without isolation"
        )
    if strict and rc is not None and rc > 128:
        rc = -(rc - 128)  # bwrap exits 128+N when the code died of signal N
    if cgroup and cgroup.oom_killed():
        killed_for = killed_for or "memory"
    status, detail = _classify(rc, killed_for, err.text(), limits, cpu)
    return SandboxResult(
        status, rc, out.text(), err.text(), round(duration, 3), detail, out.total + err.total, report
    )


class _Capture:
    """Keeps the head and the tail of a stream and counts the rest."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = _EXCERPT - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail = (self.tail + chunk)[-_EXCERPT:]

    def text(self) -> str:
        skipped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {skipped} bytes skipped ...]\n".encode() if skipped > 0 else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


def _watch(
    proc: subprocess.Popen,
    out: _Capture,
    err: _Capture,
    limits: Limits,
    started: float,
    cgroup: _Cgroup | None,
) -> tuple[str | None, float]:
    """Read both pipes, wait for the launched process, and kill the sandbox on wall time, output volume, or (by
    sampling) memory and CPU of all its processes together.

    Returns (why it was killed or None, CPU seconds). The run ends when the launched process has exited and its
    pipes are drained, or half a second after it exited when leftover children still hold them. wait4 instead
    of Popen.wait: the CPU time tells a CPU-limit SIGKILL from an out-of-memory one.
    """
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    open_streams, killed_for, exited, cpu = 2, None, None, 0.0
    deadline, next_sample, peak_cpu = started + limits.wall_s, started, 0.0
    while True:
        now = time.monotonic()
        if exited is None:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                exited, cpu = now, usage.ru_utime + usage.ru_stime
        if exited is not None and (open_streams == 0 or now - exited > 0.5):
            break
        if killed_for is None and exited is None and now >= next_sample:
            next_sample = now + _SAMPLE_S
            rss, used = cgroup.usage() if cgroup else _tree_usage(proc.pid)
            peak_cpu = max(peak_cpu, used)
            if rss > limits.memory_mb << 20:
                killed_for = "memory"
            elif used > limits.cpu_s:
                killed_for = "cpu"
            if killed_for:
                _kill_tree(proc.pid, cgroup)
        if now >= deadline and killed_for is None:
            killed_for = "wall"
            _kill_tree(proc.pid, cgroup)
        for key, _ in sel.select(timeout=0.02 if exited is None and now < deadline else 0.01):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            key.data.add(chunk)
            if killed_for is None and out.total + err.total > limits.max_output_bytes:
                killed_for = "output"
                _kill_tree(proc.pid, cgroup)
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    return killed_for, max(cpu, peak_cpu)


def _classify(
    rc: int | None, killed_for: str | None, stderr: str, limits: Limits, cpu: float
) -> tuple[Status, str]:
    if killed_for == "output":
        return "output_limit", f"output exceeded {limits.max_output_bytes} bytes"
    if killed_for == "wall":
        return "timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded"
    if killed_for == "memory":
        return "memory", f"memory limit of {limits.memory_mb} MB exceeded (all the sandbox's processes together)"
    if killed_for == "cpu":
        return "timeout", f"CPU limit of {limits.cpu_s} s exceeded (all the sandbox's processes together)"
    if rc == SETUP_FAILED and "synthflow-sandbox:" in stderr:
        return "error", _last_line(stderr)
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_s):
            return "timeout", f"CPU limit of {limits.cpu_s} s exceeded"
        if sig == signal.SIGXFSZ:
            return "output_limit", f"file size limit of {limits.max_file_bytes} bytes exceeded"
        if sig == signal.SIGKILL:
            return "memory", "killed by the kernel (out of memory)"
        with contextlib.suppress(ValueError):
            return "failed", f"killed by signal {signal.Signals(sig).name}"
        return "failed", f"killed by signal {sig}"
    if rc == 0:
        return "passed", ""
    last = _last_line(stderr) or f"exit status {rc}"
    if "MemoryError" in stderr:
        return "memory", f"memory limit of {limits.memory_mb} MB exceeded ({last})"
    if "No space left on device" in stderr:
        return "output_limit", f"disk limit of {limits.max_disk_bytes} bytes exceeded ({last})"
    if "File too large" in stderr:
        return "output_limit", f"file size limit of {limits.max_file_bytes} bytes exceeded ({last})"
    return "failed", last


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def _fallback_report(limits: Limits) -> dict[str, str]:
    why = "no delegated cgroup v2 with memory, pids and cpu controllers"
    return {
        "memory": f"{limits.memory_mb} MB for all processes, sampled every {_SAMPLE_S * 1000:g} ms ({why}); "
        "per process RLIMIT_AS",
        "processes": f"{limits.max_processes} (RLIMIT_NPROC in the sandbox's user namespace)",
        "cpu": f"{limits.cpu_s} s for all processes, sampled every {_SAMPLE_S * 1000:g} ms ({why}); "
        "per process RLIMIT_CPU",
    }


def _kill_tree(pid: int, cgroup: _Cgroup | None) -> None:
    """Kill the launcher and everything under it. Killing the PID namespace's first process ends all of it."""
    if cgroup:
        cgroup.kill()
    for p in sorted(_descendants(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Processes under `pid`, parents before children (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def _tree_usage(pid: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds (including reaped children) of the processes under `pid`."""
    rss, cpu = 0, 0.0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * _PAGE
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return rss, cpu


class _Cgroup:
    """One cgroup v2 per sandbox under the caller's own (delegated) cgroup, when it has the controllers."""

    NEEDED = ("memory", "pids", "cpu")

    def __init__(self, path: str, limits: Limits) -> None:
        self.path, self.limits = path, limits

    @classmethod
    def create(cls, limits: Limits) -> _Cgroup | None:
        base = _cgroup_base()
        if base is None:
            return None
        path = os.path.join(base, f"synthflow-sandbox-{os.getpid()}-{random.SystemRandom().randrange(1 << 32):x}")
        try:
            os.mkdir(path)
            cg = cls(path, limits)
            cg._write("memory.max", str(limits.memory_mb << 20))
            with contextlib.suppress(OSError):
                cg._write("memory.swap.max", "0")
            cg._write("pids.max", str(limits.max_processes))
            return cg
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return None

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(value)

    def _read(self, name: str) -> str:
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def report(self) -> dict[str, str]:
        return {
            "memory": f"{self.limits.memory_mb} MB for all processes (cgroup v2 memory.max, no swap)",
            "processes": f"{self.limits.max_processes} (cgroup v2 pids.max)",
            "cpu": f"{self.limits.cpu_s} s for all processes (cgroup v2 cpu.stat, sampled); per process RLIMIT_CPU",
            "cgroup": self.path,
        }

    def usage(self) -> tuple[int, float]:
        try:
            mem = int(self._read("memory.current"))
            usec = next(int(v) for k, v in (ln.split() for ln in self._read("cpu.stat").splitlines())
                        if k == "usage_usec")  # fmt: skip
        except (OSError, StopIteration, ValueError):
            return 0, 0.0
        return mem, usec / 1e6  # memory.current counts the working tmpfs too

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            for line in self._read("memory.events").splitlines():
                k, v = line.split()
                if k == "oom_kill" and int(v) > 0:
                    return True
        return False

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._write("cgroup.kill", "1")

    def remove(self) -> None:
        self.kill()
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


@functools.cache
def _cgroup_base() -> str | None:
    """The caller's cgroup v2 folder when we may make children there with memory, pids and cpu; else None.

    Also removes empty sandbox cgroups a killed run left behind."""
    try:
        mount = next(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split(" - ")[1].split()[0] == "cgroup2"
        )  # fmt: skip
        own = next(ln[3:] for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln.startswith("0::"))
    except (OSError, StopIteration, IndexError):
        return None
    base = os.path.join(mount, own.lstrip("/"))
    try:
        controllers = set(Path(base, "cgroup.controllers").read_text().split())
        if not set(_Cgroup.NEEDED) <= controllers or not os.access(base, os.W_OK):
            return None
        enabled = set(Path(base, "cgroup.subtree_control").read_text().split())
        missing = [c for c in _Cgroup.NEEDED if c not in enabled]
        if missing:
            Path(base, "cgroup.subtree_control").write_text(" ".join("+" + c for c in missing))
    except OSError:
        return None
    for entry in Path(base).glob("synthflow-sandbox-*"):
        with contextlib.suppress(IndexError, ValueError, OSError):
            if not _pid_alive(int(entry.name.split("-")[2])):
                with contextlib.suppress(OSError):
                    entry.joinpath("cgroup.kill").write_text("1")
                time.sleep(0.05)
                entry.rmdir()
    return base


def _fresh_uid() -> int:
    return _UID_BASE + random.SystemRandom().randrange(_UID_SPAN)


def _prefix_of(exe: str) -> str:
    """The install prefix of a program: /usr for /usr/bin/python3.11, the venv or pyenv folder for theirs."""
    return str(Path(os.path.realpath(exe)).parent.parent)


@functools.cache
def _interpreter(python: str | None) -> str:
    """A Python the sandbox's user can run: `python`, else ours, else the system's of our version.

    The sandbox's user is not the caller's (a fresh uid under root), so an interpreter under a folder only its
    owner may enter (/root/.pyenv, say) is out of reach; the system's Python of the same version is the fallback.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [python] if python else [
        getattr(sys, "_base_executable", None) or sys.executable,
        sys.executable,
        os.path.join(sys.base_prefix, "bin", version),
        f"/usr/bin/{version}",
        f"/usr/local/bin/{version}",
    ]  # fmt: skip
    for c in candidates:
        real = os.path.realpath(shutil.which(c) or c) if c else ""
        stdlib = os.path.join(_prefix_of(real), "lib", version) if real else ""
        if real and _world_runnable(real) and (python or _world_runnable(stdlib)):
            return real
    raise SandboxUnavailable(
        f"no Python the sandbox can run: tried {', '.join(c for c in candidates if c)}; every folder above it "
        "must be open to all users (install the system python3, or pass python=)"
    )


def _world_runnable(path: str) -> bool:
    """Every folder above `path` may be entered by any user, and `path` may be run (or read) by any user."""
    p = Path(path)
    try:
        for d in reversed(p.parents):
            if not os.stat(d).st_mode & 0o001:
                return False
        return bool(os.stat(p).st_mode & 0o005)
    except OSError:
        return False
