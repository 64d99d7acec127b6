"""Run untrusted (generated) code in a subprocess that cannot hurt the machine or read its secrets.

Layers, strongest first; each one that is available is used, and `SandboxResult.isolation` says which held:

- rlimits (always): CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), file size (RLIMIT_FSIZE), processes
  (RLIMIT_NPROC), open files, no core dumps. Wall-clock time and output volume are watched by the parent, which
  kills the whole process group when either runs over.
- empty environment (always): the child gets a fixed, constant environment, never a copy of ours.
- throwaway working directory (always): a fresh temp dir, removed afterwards.
- as root (Linux): a launcher enters new mount and network namespaces, mounts the whole filesystem read-only
  except the working directory, mounts a private /proc that hides other users' processes, and then drops to a
  fresh unprivileged uid chosen for this run. A network namespace has no interfaces up, so every connection
  fails, 127.0.0.1 included. RLIMIT_NPROC binds only non-root users, and the uid is unique to the run, so a fork
  bomb stops at `max_processes` and every process it left is killed afterwards by uid.
- not root: a user+network namespace when the kernel allows it; otherwise a Python-level socket block installed
  before the user code runs (best effort: code that loads `_socket` or ctypes gets around it). There is no
  filesystem isolation beyond the working directory in that case.

The launcher is a separate short Python program rather than a `preexec_fn`: preexec_fn is unsafe in threaded
parents, and verifiers run sandboxes from a thread pool.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory", "output_limit", "error"]

# Exit code of the launcher when it could not set the sandbox up (never a user program's verdict).
SETUP_FAILED = 125
# Fresh uids come from a range that no distribution hands out, so they own nothing on the machine.
_UID_BASE = 2_000_000_000
_UID_SPAN = 100_000_000


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024  # address space, not resident memory: Python alone maps ~30 MB, numpy a few hundred
    max_processes: int = 32
    max_output_bytes: int = 1_000_000  # stdout + stderr together
    max_file_bytes: int = 10_000_000  # largest file the code may write
    max_open_files: int = 256


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None
    stdout: str  # excerpt: head and tail when long
    stderr: str
    duration_s: float
    detail: str = ""  # why, in words, when status is not "passed"
    output_bytes: int = 0
    isolation: dict[str, str] = field(
        default_factory=dict
    )  # which layer enforced network / filesystem / user

    @property
    def ok(self) -> bool:
        return self.status == "passed"


# Runs as the caller's user (root when we are root) with `python -I -S`; sets everything up, then execs the
# target. Kept free of imports beyond the standard library because it runs before any isolation exists.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys

cfg = json.loads(sys.argv[1])
report = {"network": "none", "filesystem": "working directory only", "user": str(os.getuid())}
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, AT_FDCWD, AT_RECURSIVE, SYS_MOUNT_SETATTR = 1, -100, 0x8000, 442


def die(msg):
    os.write(2, ("synthflow-sandbox: " + msg + "\n").encode())
    os._exit(125)


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, what + ": " + os.strerror(err))


def mount(src, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s else None
    check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), "mount " + target)


class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def mount_setattr(path, recursive, set_=0, clr=0):
    attr = MountAttr(set_, clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)),
          "mount_setattr " + path)


def isolate_as_root(workdir):
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    report["network"] = "network namespace"
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Directories the unprivileged uid cannot traverse (e.g. /root holding the interpreter): cover them with an
    # empty tmpfs holding only what the interpreter needs. This also hides everything else in them.
    for ancestor, paths in cfg["expose"]:
        fds = [os.open(p, os.O_PATH) for p in paths]
        mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for p, fd in zip(paths, fds):
            os.makedirs(p, mode=0o755, exist_ok=True)
            mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
            os.close(fd)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    mount(workdir, workdir, None, MS_BIND)
    mount_setattr("/", True, set_=MOUNT_ATTR_RDONLY)
    mount_setattr(workdir, False, clr=MOUNT_ATTR_RDONLY)
    report["filesystem"] = "read-only root, writable working directory"


workdir = cfg["workdir"]
if os.geteuid() == 0 and cfg["isolate"]:
    try:
        isolate_as_root(workdir)
    except OSError as e:
        if cfg["strict"]:
            die("isolation failed: %s" % e)
        report["isolation_error"] = str(e)
elif cfg["isolate"]:
    try:
        check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare")
        report["network"] = "network namespace (user namespace)"
    except OSError as e:
        if cfg["strict"]:
            die("isolation failed: %s" % e)
        report["isolation_error"] = str(e)

env = dict(cfg["env"])
if report["network"] == "none" and cfg["python_boot"]:
    env["SYNTHFLOW_SANDBOX_BLOCK_SOCKETS"] = "1"  # the Python boot code installs a socket block
    report["network"] = "python socket block (best effort)"

lim = cfg["limits"]
try:
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
except (OSError, ValueError) as e:
    die("setrlimit failed: %s" % e)

uid = cfg["uid"]
if uid is not None:
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        report["user"] = "fresh uid %d" % uid
    except OSError as e:
        die("cannot drop privileges: %s" % e)

os.write(cfg["report_fd"], json.dumps(report).encode())
os.close(cfg["report_fd"])
os.chdir(workdir)
try:
    os.execve(cfg["argv"][0], cfg["argv"], env)
except OSError as e:
    die("cannot run %s: %s" % (cfg["argv"][0], e))
"""

# Prepended to user code run by `run_python`: puts the working directory on sys.path (python -I leaves it off)
# and, where no network namespace could be made, blocks sockets at the Python level.
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
    isolate: bool = True,
    strict: bool = False,
) -> SandboxResult:
    """Run `code` as `main.py` in a fresh sandbox, beside `files` (name -> text), with `python` (default: ours)."""
    all_files = dict(files or {})
    all_files["main.py"] = code
    exe = python or sys.executable
    boot = _PY_BOOT % {"main": "main.py", "args": list(args)}
    argv = [exe, "-I", "-B", "-c", boot]
    return _sandboxed(argv, all_files, limits, isolate, strict, _interpreter_dirs(exe), python_boot=True)


def run_command(
    argv: Sequence[str],
    *,
    files: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
    isolate: bool = True,
    strict: bool = False,
    expose: Sequence[str] = (),
) -> SandboxResult:
    """Run `argv` in a fresh sandbox. `expose`: directories the program must read even where the sandbox user
    could not (e.g. an interpreter installed under /root). With `strict`, missing isolation is an error."""
    return _sandboxed(argv, files or {}, limits, isolate, strict, expose, python_boot=False)


def _sandboxed(
    argv: Sequence[str],
    files: Mapping[str, str],
    limits: Limits,
    isolate: bool,
    strict: bool,
    expose: Sequence[str],
    *,
    python_boot: bool,
) -> SandboxResult:
    workdir = Path(tempfile.mkdtemp(prefix="synthflow-sandbox-"))
    try:
        for name, text in files.items():
            path = (workdir / name).resolve()
            if workdir.resolve() not in path.parents:
                raise ValueError(f"sandbox file {name!r} would land outside the working directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        uid = _fresh_uid() if (isolate and os.geteuid() == 0) else None
        if uid is not None:
            for p in [workdir, *workdir.rglob("*")]:
                os.chown(p, uid, uid)
        workdir.chmod(0o700)
        exe = shutil.which(argv[0]) or argv[0]
        cfg = {
            "argv": [exe, *argv[1:]],
            "workdir": str(workdir),
            "uid": uid,
            "isolate": isolate,
            "strict": strict,
            "python_boot": python_boot,
            "expose": _exposure_plan(expose, uid),
            "env": {**_ENV, "HOME": str(workdir), "TMPDIR": str(workdir)},
            "limits": {k: int(v) for k, v in vars(limits).items() if k != "wall_s"},
        }
        return _run(cfg, limits, uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(cfg: dict, limits: Limits, uid: int | None) -> SandboxResult:
    """Start the launcher with `cfg`, watch it, clean up after it, and say what happened."""
    report_r, report_w = os.pipe()
    cfg = {**cfg, "report_fd": report_w}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(report_w,),
            start_new_session=True,
            env={},
            cwd="/",
        )
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)
    out, err = _Capture(), _Capture()
    killed_for, cpu = _watch(proc, out, err, limits, started)
    duration = time.monotonic() - started
    _kill_group(proc.pid)
    if uid is not None:
        _kill_uid(uid)
    with os.fdopen(report_r, "rb") as f:
        raw = f.read()
    isolation = json.loads(raw) if raw else {}
    status, detail = _classify(proc.returncode, killed_for, err.text(), limits, cpu)
    return SandboxResult(
        status,
        proc.returncode,
        out.text(),
        err.text(),
        round(duration, 3),
        detail,
        out.total + err.total,
        isolation,
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
    proc: subprocess.Popen, out: _Capture, err: _Capture, limits: Limits, started: float
) -> tuple[str | None, float]:
    """Read both pipes and wait for the launched process; kill it on wall time or output volume.

    Returns (why it was killed or None, its CPU seconds). The run ends when the main process has exited and its
    pipes are drained, or half a second after it exited when leftover children still hold them (they are killed
    afterwards). wait4 instead of Popen.wait: the CPU time tells a CPU-limit SIGKILL from an out-of-memory one.
    """
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    open_streams, killed_for, exited, cpu = 2, None, None, 0.0
    deadline = started + limits.wall_s
    while True:
        now = time.monotonic()
        if exited is None:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                exited, cpu = now, usage.ru_utime + usage.ru_stime
        if exited is not None and (open_streams == 0 or now - exited > 0.5):
            break
        if now >= deadline and killed_for is None:
            killed_for = "wall"
            _kill_group(proc.pid)
        for key, _ in sel.select(timeout=0.05 if exited is None and now < deadline else 0.01):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            key.data.add(chunk)
            if killed_for is None and out.total + err.total > limits.max_output_bytes:
                killed_for = "output"
                _kill_group(proc.pid)
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    return killed_for, cpu


def _classify(
    rc: int | None, killed_for: str | None, stderr: str, limits: Limits, cpu: float
) -> tuple[Status, str]:
    if killed_for == "output":
        return "output_limit", f"output exceeded {limits.max_output_bytes} bytes"
    if killed_for == "wall":
        return "timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded"
    if rc == SETUP_FAILED and "synthflow-sandbox:" in stderr:
        return "error", stderr.strip().splitlines()[-1]
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_s):
            return "timeout", f"CPU limit of {limits.cpu_s} s exceeded"
        if sig == signal.SIGXFSZ:
            return "output_limit", f"file size limit of {limits.max_file_bytes} bytes exceeded"
        if sig == signal.SIGKILL:
            return "memory", "killed by the kernel (out of memory)"
        return "failed", f"killed by signal {signal.Signals(sig).name}"
    if rc == 0:
        return "passed", ""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {rc}"
    if "MemoryError" in stderr:
        return "memory", f"memory limit of {limits.memory_mb} MB exceeded ({last})"
    if "File too large" in stderr:
        return "output_limit", f"file size limit of {limits.max_file_bytes} bytes exceeded ({last})"
    return "failed", last


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _fresh_uid() -> int:
    return _UID_BASE + random.SystemRandom().randrange(_UID_SPAN)


def _pids_of(uid: int) -> list[int]:
    """Live processes of `uid`; zombies are dead already and wait only for init to reap them."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and not _zombie(entry.path):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _zombie(proc_dir: str) -> bool:
    with open(os.path.join(proc_dir, "stat"), "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


_KILL_ALL = (
    "import os,sys; u=int(sys.argv[1]); os.setgid(u); os.setuid(u)\ntry: os.kill(-1, 9)\nexcept OSError: pass"
)


def _kill_uid(uid: int) -> None:
    """Kill every process left with the run's uid, including ones that left the process group.

    kill(-1) from a process with that uid reaches all of them in one step, so a fork bomb cannot outrun it.
    """
    for _ in range(5):
        if not _pids_of(uid):
            return
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", _KILL_ALL, str(uid)],
            env={},
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.02)


def _interpreter_dirs(python: str) -> list[str]:
    """Directories a Python interpreter reads at startup: its install prefix and, for a venv, the venv."""
    exe = Path(shutil.which(python) or python)
    dirs = {str(exe.resolve().parent.parent)}
    if Path(python).resolve() == Path(sys.executable).resolve():
        dirs |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    cfg = exe.parent.parent / "pyvenv.cfg"
    if cfg.exists():
        dirs.add(str(exe.parent.parent.resolve()))
    return sorted(dirs)


def _exposure_plan(paths: Sequence[str], uid: int | None) -> list[tuple[str, list[str]]]:
    """For each path an unprivileged user cannot reach, the first blocking ancestor to cover with a tmpfs."""
    if uid is None:
        return []
    plan: dict[str, list[str]] = {}
    for p in sorted({os.path.realpath(x) for x in paths}):
        if any(p.startswith(q.rstrip("/") + "/") for qs in plan.values() for q in qs):
            continue
        blocked = _first_untraversable(p)
        if blocked is not None and blocked != p:
            plan.setdefault(blocked, []).append(p)
    return sorted(plan.items())


def _first_untraversable(path: str) -> str | None:
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        d = str(Path(*parts[:i]))
        try:
            mode = os.stat(d).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return d
    return None
