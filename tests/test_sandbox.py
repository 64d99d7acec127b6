"""The sandbox against hostile code: each test runs the real thing in a real subprocess, with small limits."""

from __future__ import annotations

import functools
import os
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from synthflow.stages.verifiers.sandbox import Limits, run_command, run_python

FAST = Limits(wall_s=5, cpu_s=5, memory_mb=512, max_processes=16, max_output_bytes=200_000)


@functools.cache
def _isolation() -> dict[str, str]:
    """What this machine gives the sandbox: namespaces and per-run uids need root with CAP_SYS_ADMIN."""
    return run_python("pass", limits=FAST).isolation


def _full_isolation() -> bool:
    iso = _isolation()
    return iso.get("filesystem", "").startswith("read-only") and iso.get("user", "").startswith("fresh uid")


def _need_full_isolation() -> None:
    if not _full_isolation():
        pytest.skip(f"needs root with namespaces; this machine gives {_isolation()}")


def _uid_of(result) -> int | None:
    m = re.search(r"fresh uid (\d+)", result.isolation.get("user", ""))
    return int(m.group(1)) if m else None


def _processes_of(uid: int) -> list[int]:
    """Live processes of uid (zombies wait only for init to reap them)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                if entry.stat().st_uid == uid and state not in (b"Z", b"X"):
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


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
    uid = _uid_of(r)
    if uid is not None:
        assert _processes_of(uid) == []


def test_fork_bomb_is_capped_and_cleaned_up():
    _need_full_isolation()
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    r = run_python(code, limits=Limits(wall_s=2, cpu_s=10, max_processes=12))
    assert time.monotonic() - started < 8
    assert r.status == "timeout"
    uid = _uid_of(r)
    assert uid is not None
    assert _processes_of(uid) == []


def test_process_count_limit_holds():
    _need_full_isolation()
    code = (
        "import os, time\n"
        "n = 0\n"
        "while n < 100:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    r = run_python(code, limits=Limits(wall_s=10, max_processes=8))
    assert r.status == "passed", r
    assert int(r.stdout.strip()) < 8  # the main process counts too


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
    if _full_isolation():
        assert r.isolation["network"] == "network namespace"


def test_without_namespaces_the_python_socket_block_still_stops_connections():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('CONNECTED')"
        )
        r = run_python(code, limits=FAST, isolate=False)
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
    if _full_isolation():
        assert r.stdout.count("unreadable") == 2


def test_writes_outside_the_working_directory_fail():
    _need_full_isolation()
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


def test_the_working_directory_is_thrown_away():
    r = run_python("import os\nopen('x.txt', 'w').write('x')\nprint(os.getcwd())", limits=FAST)
    assert r.status == "passed", r
    assert not Path(r.stdout.strip()).exists()


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
    assert home == cwd and "synthflow-sandbox-" in cwd
