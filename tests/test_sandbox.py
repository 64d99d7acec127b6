"""The sandbox against hostile code: each test runs the real thing in a real subprocess, with small limits.

The sandbox needs bubblewrap (`make sandbox-tools`); without it these tests fail with SandboxUnavailable, which
says so, rather than skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from synthflow.stages.verifiers.sandbox import Limits, SandboxUnavailable, probe, run_command, run_python

FAST = Limits(wall_s=5, cpu_s=5, memory_mb=512, max_processes=16, max_output_bytes=200_000)


def test_plain_code_runs_and_its_output_comes_back():
    r = run_python("import sys\nprint('hello')\nprint('warn', file=sys.stderr)", limits=FAST)
    assert r.status == "passed", r
    assert r.stdout.strip() == "hello" and r.stderr.strip() == "warn"
    assert r.returncode == 0 and r.duration_s < 5


def test_files_sit_beside_the_code_and_are_importable():
    r = run_python("import helper\nprint(helper.VALUE * 2)", files={"helper.py": "VALUE = 21"}, limits=FAST)
    assert r.status == "passed", r
    assert r.stdout.strip() == "42"


def test_a_failing_program_is_failed_with_the_last_error_line():
    r = run_python("raise ValueError('bad input')", limits=FAST)
    assert r.status == "failed"
    assert r.detail == "ValueError: bad input"


def test_infinite_loop_is_stopped_at_the_wall_clock_limit():
    r = run_python("while True:\n    pass", limits=Limits(wall_s=1.5, cpu_s=30))
    assert r.status == "timeout"
    assert "wall-clock" in r.detail
    assert 1.4 < r.duration_s < 4


def test_cpu_limit_kills_a_busy_process_before_the_wall_clock_does():
    r = run_python("while True:\n    pass", limits=Limits(wall_s=20, cpu_s=1))
    assert r.status == "timeout"
    assert "CPU limit" in r.detail
    assert r.duration_s < 5


def test_sleeping_child_that_outlives_the_parent_is_killed():
    # The main process exits at once; a detached grandchild holds no pipe but must not survive the run.
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid(); os.close(1); os.close(2); time.sleep(60); os._exit(0)\n"
        "print('parent done')\n"
    )
    r = run_python(code, limits=FAST)
    assert r.status == "passed", r
    assert r.duration_s < 4  # the run ends with its main process; the PID namespace takes the grandchild along


def test_fork_bomb_is_capped_and_cleaned_up():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    r = run_python(code, limits=Limits(wall_s=2, cpu_s=10, max_processes=12))
    assert time.monotonic() - started < 8
    assert r.status == "timeout"


def test_ten_gigabyte_allocation_is_a_memory_failure():
    r = run_python("x = bytearray(10 * 1024**3)\nprint('allocated')", limits=FAST)
    assert r.status == "memory", r
    assert "allocated" not in r.stdout
    assert "512 MB" in r.detail


def test_network_connection_to_a_local_listener_fails():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('blocked:', e)\n"
        )
        r = run_python(code, limits=FAST)
        assert r.status == "passed", r
        assert "blocked" in r.stdout and "CONNECTED" not in r.stdout
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody knocked
    assert r.isolation["network"].startswith("network namespace")


def test_without_namespaces_the_python_socket_block_still_stops_connections():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('CONNECTED')"
        )
        r = run_python(code, limits=FAST, isolation="none")
        assert r.status == "failed"
        assert "network access is disabled" in r.detail
        with pytest.raises(TimeoutError):
            listener.accept()
    assert r.isolation["network"].startswith("python socket block")


def test_secrets_in_the_parent_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SYNTHFLOW_TEST_SECRET", secret)
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        "print(os.environ.get('SYNTHFLOW_TEST_SECRET'))\n"
        "for path in (f'/proc/{os.getppid()}/environ', '/proc/1/environ'):\n"
        "    try:\n"
        "        print(open(path, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print('unreadable', path, type(e).__name__)\n"
    )
    r = run_python(code, limits=FAST)
    assert r.status == "passed", r
    assert secret not in r.stdout + r.stderr
    assert "SYNTHFLOW_TEST_SECRET" not in r.stdout


def test_writes_outside_the_working_directory_fail():
    repo_target = Path(__file__).resolve().parent / f"sandbox-escape-{uuid.uuid4().hex}"
    tmp_target = Path("/tmp") / f"sandbox-escape-{uuid.uuid4().hex}"
    shm_target = Path("/dev/shm") / f"sandbox-escape-{uuid.uuid4().hex}"
    code = (
        "import os, sys\n"
        "open('inside.txt', 'w').write('fine')\n"
        "print('inside ok', open('inside.txt').read())\n"
        "for path in sys.argv[1:] + [os.path.join(os.path.dirname(os.getcwd()), 'escape.txt')]:\n"
        "    try:\n"
        "        open(path, 'w').write('escaped')\n"
        "        print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.strerror)\n"
    )
    r = run_python(code, args=[str(repo_target), str(tmp_target), str(shm_target)], limits=FAST)
    assert r.status == "passed", r
    assert "inside ok fine" in r.stdout
    assert "WROTE" not in r.stdout
    assert r.stdout.count("denied") == 4
    for p in (repo_target, tmp_target, shm_target):
        assert not p.exists()


def test_the_working_directory_never_touches_the_host():
    before = set(os.listdir(tempfile.gettempdir()))
    r = run_python("import os\nopen('x.txt', 'w').write('x')\nprint(os.getcwd())", limits=FAST)
    assert r.status == "passed", r
    assert r.stdout.strip() == "/sandbox"  # a tmpfs inside the sandbox's mount namespace
    assert not Path("/sandbox").exists()
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if "sandbox" in n}


def test_printing_gigabytes_is_cut_off_at_the_output_limit():
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stdout.write(chunk)\n"
    started = time.monotonic()
    r = run_python(code, limits=Limits(wall_s=30, max_output_bytes=1_000_000))
    assert r.status == "output_limit", r
    assert time.monotonic() - started < 10
    assert r.output_bytes < 20_000_000  # read stops soon after the limit; gigabytes were never read
    assert len(r.stdout) < 10_000  # only head and tail are kept


def test_big_files_hit_the_file_size_limit():
    code = "open('big.bin', 'wb').write(b'0' * 5_000_000)"
    r = run_python(code, limits=Limits(wall_s=10, max_file_bytes=1_000_000))
    assert r.status == "output_limit", r
    assert "file size" in r.detail


def test_files_may_not_escape_the_working_directory():
    with pytest.raises(ValueError, match="outside the working directory"):
        run_python("pass", files={"../evil.py": "x = 1"}, limits=FAST)


def test_run_command_runs_any_program():
    r = run_command(["sh", "-c", "echo $HOME; pwd"], limits=FAST)
    assert r.status == "passed", r
    home, cwd = r.stdout.split()
    assert home == cwd == "/sandbox"


def test_the_isolation_report_says_what_held():
    iso = probe()
    assert iso["level"] == "bwrap"
    assert "pid" in iso["namespaces"] and "network" in iso["namespaces"]
    for key in ("memory", "processes", "cpu", "disk", "filesystem", "user"):
        assert iso[key], key
    # This machine's cgroup v2 has no memory/pids/cpu controllers (hybrid layout): the report names the fallback.
    if "cgroup" not in iso:
        assert "no delegated cgroup v2" in iso["memory"]


def test_an_unknown_isolation_level_is_an_error():
    with pytest.raises(ValueError, match="isolation must be 'sandbox' or 'none'"):
        run_python("pass", isolation="weak")  # type: ignore[arg-type]
    assert issubclass(SandboxUnavailable, RuntimeError)


# ---- hostile code against the process that runs it, as root and as an unprivileged user (issue 12, 14-18) ------
#
# Each attack runs in tests/sandbox_driver.py, a process of its own standing in for `synthflow run`: as root, and
# through `setpriv` as uid 65534 (or, when pytest itself is not root, as pytest's own user).

DRIVER = Path(__file__).resolve().parent / "sandbox_driver.py"
NOBODY = 65534


def _as(who: str) -> list[str]:
    if who == "root":
        if os.geteuid() != 0:
            pytest.skip("needs root")
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []


USERS = pytest.mark.parametrize("who", ["root", "unprivileged"])


def _start(who: str, code: str, *, limits: dict | None = None, isolation: str = "sandbox", **job) -> subprocess.Popen:
    job = {"code": code, "limits": {**FAST_LIMITS, **(limits or {})}, "isolation": isolation, **job}
    return subprocess.Popen(
        [*_as(who), sys.executable, str(DRIVER), json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def _drive(who: str, code: str, **kw) -> dict:
    """Run `code` in a sandbox from the driver; the driver must survive and report."""
    proc = _start(who, code, **kw)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"the process running the sandbox died: exit {proc.returncode}; {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


FAST_LIMITS = {"wall_s": 8, "cpu_s": 5, "memory_mb": 512, "max_processes": 16, "max_output_bytes": 200_000}


def _marker() -> str:
    """A token that can stand in a `sleep` command line (sleep adds its arguments up)."""
    return f"0.000{random.randrange(10**9, 10**10)}"


def _processes_with(token: str) -> list[int]:
    """Live `sleep` processes whose command line holds `token` (the driver's own command line holds it too)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
                if argv[0] == b"sleep" and token.encode() in argv:
                    state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                    if state not in (b"Z", b"X"):
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                for c in (task / "children").read_text().split():
                    if int(c) not in out:
                        out.add(int(c))
                        todo.append(int(c))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


@pytest.fixture
def shared_dir():
    """A world-readable folder outside any sandbox, as another pipeline's store would be."""
    d = Path(tempfile.mkdtemp(prefix="synthflow-test-outside-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@USERS
def test_14_code_cannot_kill_the_process_that_runs_it(who: str):
    code = "import os\nos.kill(os.getppid(), 9)\ntry:\n    os.kill(-1, 9)\nexcept OSError:\n    pass\nprint('still here')\n"
    r = _drive(who, code)  # asserts the driver survived and reported
    assert "exception" not in r, r
    assert r["isolation"]["level"] == "bwrap"


@USERS
def test_14_no_daemon_outlives_the_run_and_nothing_lands_in_the_system_temp_folder(who: str, shared_dir: Path):
    token = _marker()
    late = shared_dir / "late.txt"
    shared_dir.chmod(0o777)  # writable for the unprivileged user: only the sandbox may stop the write
    code = (
        "import os, sys, time\n"
        "token, late = sys.argv[1], sys.argv[2]\n"
        "for path in ('/tmp/' + token, '/var/tmp/' + token, '/dev/shm/' + token):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.strerror)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv('/bin/sleep', ['sleep', '20', token])\n"
        "    if os.fork() == 0:\n"
        "        for fd in (0, 1, 2): os.close(fd)\n"
        "        time.sleep(3)\n"
        "        open(late, 'w').write('daemon outlived the run')\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('main done')\n"
    )
    started = time.monotonic()
    r = _drive(who, code, args=[token, str(late)])
    assert r["status"] == "passed", r
    assert "WROTE" not in r["stdout"]
    assert _processes_with(token) == []
    time.sleep(max(0.0, started + 4.5 - time.monotonic()))
    assert not late.exists()
    assert _processes_with(token) == []
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not Path(d, token).exists()


@USERS
def test_14_other_processes_command_lines_are_invisible(who: str):
    token = _marker()
    bystander = subprocess.Popen(["sleep", "20", token])
    try:
        code = (
            "import os\n"
            "seen = []\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit():\n"
            "        try:\n"
            "            seen.append(open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\\0', b' ').decode())\n"
            "        except OSError:\n"
            "            pass\n"
            "print(len(seen), seen)\n"
        )
        r = _drive(who, code)
        assert r["status"] == "passed", r
        assert token not in r["stdout"]
    finally:
        bystander.kill()
        bystander.wait()


def test_14_without_a_sandbox_code_is_refused_unless_isolation_none():
    env = {"PATH": "/nonexistent"}  # no bwrap on the PATH: the sandbox cannot start
    job = {"code": "print('ran')", "limits": FAST_LIMITS}
    for isolation, ran in (("sandbox", False), ("none", True)):
        out = subprocess.run(
            [sys.executable, str(DRIVER), json.dumps({**job, "isolation": isolation})],
            capture_output=True, text=True, env=env, timeout=30, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if ran:
            assert r["status"] == "passed" and r["stdout"].strip() == "ran", r
            assert r["isolation"]["level"] == "none"
        else:
            assert r.get("exception") == "SandboxUnavailable", r
            assert "bwrap" in r["message"] and "isolation: none" in r["message"]


@USERS
def test_15_memory_is_limited_per_sandbox_across_processes(who: str):
    # Four processes of 200 MB each stay under a 400 MB per-process limit but not under 400 MB for the sandbox.
    code = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        x = b'x' * (200 << 20)\n"
        "        time.sleep(4)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for k in kids:\n"
        "    os.waitpid(k, 0)\n"
        "print('all allocated')\n"
    )
    r = _drive(who, code, limits={"memory_mb": 400})
    assert r["status"] == "memory", r
    assert "all allocated" not in r["stdout"]
    assert r["isolation"]["memory"]


@USERS
def test_15_cpu_time_is_limited_per_sandbox_across_processes(who: str):
    code = "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass\n"
    # Four busy processes: 2 CPU-seconds together end the run, long before the wall clock (however busy the host).
    r = _drive(who, code, limits={"cpu_s": 2, "wall_s": 30})
    assert r["status"] == "timeout", r
    assert "CPU limit of 2 s exceeded (all the sandbox's processes together)" in r["detail"]
    assert r["isolation"]["cpu"]


@USERS
def test_15_process_count_is_limited_per_sandbox(who: str):
    code = (
        "import os, time\n"
        "n = 0\n"
        "while n < 60:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    r = _drive(who, code, limits={"max_processes": 8})
    assert r["status"] == "passed", r
    assert int(r["stdout"].strip()) < 8
    assert r["isolation"]["processes"]


@USERS
def test_16_a_killed_caller_leaves_no_sandbox_behind(who: str):
    token = _marker()
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.execv('/bin/sleep', ['sleep', '30', sys.argv[1]])\n"
        "time.sleep(30)\n"
    )
    proc = _start(who, code, args=[token], limits={"wall_s": 30, "cpu_s": 30})
    deadline = time.monotonic() + 10
    while not _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = _descendants(proc.pid)
    assert _processes_with(token), "the sandbox never started"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (_processes_with(token) or any(map(_alive, tree))):
        time.sleep(0.05)
    assert _processes_with(token) == []
    assert [p for p in tree if _alive(p)] == []


@USERS
def test_16_the_wall_limit_kills_the_whole_tree(who: str):
    token = _marker()
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.execv('/bin/sleep', ['sleep', '30', sys.argv[1]])\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    r = _drive(who, code, args=[token], limits={"wall_s": 1.5, "cpu_s": 30})
    assert r["status"] == "timeout", r
    assert time.monotonic() - started < 6
    assert _processes_with(token) == []


@USERS
def test_16_a_killed_runs_work_folder_is_removed_at_the_next_start(who: str):
    # Only `isolation: none` keeps a work folder on the host (the sandbox's lives on a tmpfs inside it).
    token = _marker()
    code = "import os, sys\nprint(os.getcwd(), flush=True)\nos.execv('/bin/sleep', ['sleep', '30', sys.argv[1]])\n"
    proc = _start(who, code, args=[token], isolation="none", limits={"wall_s": 30, "cpu_s": 30})
    deadline = time.monotonic() + 10
    while not _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in Path(tempfile.gettempdir()).glob("synthflow-sandbox*/**/main.py")]
    proc.kill()
    proc.wait()
    for pid in _processes_with(token):  # `isolation: none` promises no clean-up of a killed caller's children
        os.kill(pid, 9)
    assert left, "the run's work folder was not where expected"
    r = _drive(who, "print('next run')", isolation="none")
    assert r["status"] == "passed", r
    assert [p for p in left if p.exists()] == []


@USERS
def test_17_disk_is_capped_per_sandbox(who: str):
    # 1.1 GB in 1 MB files, each under the per-file limit.
    code = (
        "import os\n"
        "chunk = b'x' * (1 << 20)\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(1100):\n"
        "        with open('f%04d.bin' % i, 'wb') as f:\n"
        "            f.write(chunk)\n"
        "        written += len(chunk)\n"
        "finally:\n"
        "    print('written', written, flush=True)\n"
    )
    started = time.monotonic()
    r = _drive(who, code, limits={"max_disk_bytes": 32 << 20, "wall_s": 10})
    assert time.monotonic() - started < 10
    assert r["status"] == "output_limit", r
    assert "disk" in r["detail"]
    written = int(re.search(r"written (\d+)", r["stdout"]).group(1))
    assert written <= 32 << 20
    assert r["isolation"]["disk"]


@USERS
def test_18_files_outside_the_sandbox_are_unreadable(who: str, shared_dir: Path):
    secret = f"s3cret-{uuid.uuid4().hex}"
    store = shared_dir / "store" / "other_pipeline"
    store.mkdir(parents=True)
    (store / "rows.jsonl").write_text(secret)
    for p in (store.parent, store, store / "rows.jsonl"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    repo_file = Path(__file__).resolve()
    code = (
        "import os, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        print('READ', path, open(path).read()[:200])\n"
        "    except OSError as e:\n"
        "        print('unreadable', path, e.strerror)\n"
        "print(sorted(os.listdir('/')))\n"
    )
    r = _drive(who, code, args=[str(store / "rows.jsonl"), str(repo_file), "/etc/passwd"])
    assert r["status"] == "passed", r
    assert secret not in r["stdout"] + r["stderr"]
    assert "READ" not in r["stdout"]
    assert r["stdout"].count("unreadable") == 3
