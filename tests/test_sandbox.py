"""The sandbox: adversarial programs are contained, get the right verdict, and leave the test
process (standing in for the harness) untouched."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from harness import sandbox
from harness.sandbox import (
    Limits,
    child,
    compare_stdout,
    compare_values,
    layers,
    process,
    run_program,
    run_tests,
)

LIMITS = Limits(time_s=1, wall_slack_s=0.5, memory_mb=256, output_mb=8)
ROOT = os.geteuid() == 0


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return int(next(line for line in handle if line.startswith("PPid:")).split()[1])
    except (OSError, StopIteration):
        return -1


def sandbox_processes() -> list[int]:
    """Sandboxed processes (even dead ones not yet reaped) that are this process's children or
    grandchildren, or orphans: those of other test runs on the same machine are not counted."""
    ours = {os.getpid(), 1}
    found = [pid for uid in range(sandbox.UID_BASE, sandbox.UID_BASE + sandbox.SLOTS) for pid, _ in process._processes_of(uid)]
    return [pid for pid in found if parent_of(pid) in ours or parent_of(parent_of(pid)) == os.getpid()]


def environment() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(autouse=True)
def harness_unaffected():
    """After every test: this process, its directory and environment are intact, and no
    sandboxed process or working directory is left behind."""
    pid, cwd, env = os.getpid(), os.getcwd(), environment()
    yield
    assert os.getpid() == pid and os.getcwd() == cwd and environment() == env
    assert sandbox_processes() == []


def stdin_test(output: str, given: str = "") -> dict:
    return {"input": given, "output": output, "testtype": "stdin"}


def judge(code: str, expected: str = "ok\n", limits: Limits = LIMITS) -> sandbox.Verdict:
    return run_tests(code, [stdin_test(expected)], limits=limits)


# ---------------------------------------------------------------------------------------------
# What this machine allows
# ---------------------------------------------------------------------------------------------
def test_layers_probe_finds_a_working_sandbox():
    found = layers()
    assert os.path.exists(found.python)
    assert found.setuid == ROOT
    if found.seccomp:
        assert child.arch() is not None


@pytest.mark.skipif(not ROOT, reason="the uid layer needs root")
def test_programs_run_as_an_unprivileged_uid_without_groups():
    run = run_program("import os\nprint(os.getuid(), os.getgid(), os.getgroups())", "", LIMITS)
    uid, gid, groups = run.stdout.split(maxsplit=2)
    assert run.status == "ok"
    assert int(uid) == int(gid) and sandbox.UID_BASE <= int(uid) < sandbox.UID_BASE + sandbox.SLOTS
    assert groups.strip() == "[]"


def test_parallel_sandboxes_get_their_own_slots():
    code = "import os, time\ntime.sleep(0.5)\nprint(os.getuid(), os.getcwd())"
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: run_program(code, "", LIMITS), range(2)))
    assert all(r.status == "ok" for r in runs)
    uids = {r.stdout.split()[0] for r in runs}
    assert len({r.stdout.split()[1] for r in runs}) == 2  # fresh working directories
    assert len(uids) == (2 if ROOT else 1)


# ---------------------------------------------------------------------------------------------
# Adversarial programs
# ---------------------------------------------------------------------------------------------
def test_infinite_loop_is_a_time_limit():
    start = time.monotonic()
    verdict = judge("while True:\n    pass")
    assert verdict.verdict == "time_limit" and verdict.first_failure == 0, verdict
    assert time.monotonic() - start < LIMITS.time_s + LIMITS.wall_slack_s + 4, verdict


def test_ignoring_sigxcpu_does_not_help():
    verdict = judge("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass")
    assert verdict.verdict == "time_limit"


def test_sleeping_past_the_limit_is_a_time_limit():
    start = time.monotonic()
    verdict = judge("import time\ntime.sleep(60)\nprint('ok')")
    assert verdict.verdict == "time_limit" and "wall clock" in verdict.message, verdict
    assert time.monotonic() - start < LIMITS.time_s + LIMITS.wall_slack_s + 4, verdict


# Bounded in the program itself: at most 50 forks, each child sleeping (escaping the process group).
FORK_BOMB = """
import os, time
for _ in range(50):
    if os.fork() == 0:
        os.setsid()
        time.sleep(30)
        os._exit(0)
print('ok')
"""


def test_fork_bomb_is_refused():
    verdict = judge(FORK_BOMB)
    assert verdict.verdict == "runtime_error"
    assert "Operation not permitted" in verdict.message or "Resource temporarily unavailable" in verdict.message


def test_subprocesses_are_refused():
    verdict = judge("import subprocess\nsubprocess.run(['true'])\nprint('ok')")
    assert verdict.verdict == "runtime_error"


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC binds only on a uid of the sandbox's own")
def test_without_seccomp_forks_are_bounded_and_killed_afterwards():
    run = process._run(FORK_BOMB, "", LIMITS, None, replace(layers(), seccomp=False))
    assert run.status == "runtime_error" and "Resource temporarily unavailable" in run.message
    # the autouse fixture checks that the children (in sessions of their own) were killed


def test_threads_still_work():
    code = "import threading\nthreading.stack_size(1 << 26)\nthreading.Thread(target=lambda: print('ok')).start()"
    assert judge(code).verdict == "passed"


def test_memory_hog_is_a_memory_limit():
    verdict = judge("blocks = []\nwhile True:\n    blocks.append(' ' * 10**7)")
    assert verdict.verdict == "memory_limit"


def test_one_huge_allocation_is_a_memory_limit():
    assert judge("x = bytearray(8 * 1024**3)\nprint('ok')").verdict == "memory_limit"


@pytest.mark.skipif(not ROOT, reason="without root the program runs as the harness's own user")
def test_writing_outside_its_directory_fails():
    target = Path(__file__).parent / f"escaped-{os.getpid()}.txt"
    try:
        verdict = judge(f"open({str(target)!r}, 'w').write('x')\nprint('ok')")
        # another uid may not write there; a checkout under /tmp is not even visible (a private /tmp)
        assert verdict.verdict == "runtime_error"
        assert "Permission denied" in verdict.message or "No such file or directory" in verdict.message
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.skipif(not layers().mountns, reason="private /tmp needs a mount namespace")
def test_shared_temporary_folders_are_private():
    name = f"moi-sandbox-test-{os.getpid()}"
    code = f"for d in ('/tmp', '/var/tmp', '/dev/shm'):\n    open(d + '/{name}', 'w').write('x')\nprint('ok')"
    assert judge(code).verdict == "passed"
    assert not any(os.path.exists(f"{d}/{name}") for d in ("/tmp", "/var/tmp", "/dev/shm"))


def test_each_run_gets_a_fresh_working_directory():
    code = "import os\nprint(sorted(os.listdir('.')))\nopen('left-behind.txt', 'w').write('x')"
    first, second = (run_program(code, "", LIMITS) for _ in range(2))
    assert first.stdout == second.stdout == "[]\n"


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("MOI_TEST_SECRET", "s3cret")
    verdict = run_tests("import os\nprint(os.environ.get('MOI_TEST_SECRET'))", [stdin_test("s3cret")], limits=LIMITS)
    assert verdict.verdict == "wrong_answer"
    run = run_program("import os\nprint(sorted(os.environ))", "", LIMITS)
    assert "MOI_TEST_SECRET" not in run.stdout


@pytest.mark.skipif(not ROOT, reason="another uid is what protects /proc/PID/environ")
def test_the_parents_environment_cannot_be_read_through_proc():
    verdict = judge("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert verdict.verdict == "runtime_error" and "Permission denied" in verdict.message


def test_inherited_file_descriptors_are_closed(tmp_path):
    secret = tmp_path / "results.jsonl"
    secret.write_text("secret\n")
    with open(secret) as handle:
        os.set_inheritable(handle.fileno(), True)
        verdict = judge(f"import os\nprint(os.read({handle.fileno()}, 100).decode().strip())", "secret\n")
    assert verdict.verdict == "runtime_error" and "Bad file descriptor" in verdict.message


def test_the_death_signal_cannot_be_cleared():
    if not layers().seccomp:
        pytest.skip("no seccomp filter on this architecture")
    code = "import ctypes\nprint('ok' if ctypes.CDLL(None).prctl(1, 0, 0, 0, 0) != 0 else 'cleared')"
    assert judge(code).verdict == "passed"


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    yield server
    server.close()


def connects(port: int) -> str:
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\nprint('ok')"


def test_no_socket_to_localhost(listener):
    verdict = judge(connects(listener.getsockname()[1]))
    assert verdict.verdict == "runtime_error"
    with pytest.raises(socket.timeout):
        listener.accept()


@pytest.mark.skipif(not layers().netns, reason="no network namespace here")
def test_the_network_namespace_alone_blocks_localhost(listener):
    run = process._run(connects(listener.getsockname()[1]), "", LIMITS, None, replace(layers(), seccomp=False))
    assert run.status == "runtime_error" and "unreachable" in run.message
    with pytest.raises(socket.timeout):
        listener.accept()


@pytest.mark.parametrize(
    "code",
    ["import os\nos.kill(os.getppid(), 9)", "import os\nos.killpg(os.getpgid(os.getppid()), 9)", "import os\nos.kill(-1, 9)"],
)
def test_killing_the_harness_fails(code):
    verdict = judge(code + "\nprint('ok')")
    assert verdict.verdict == "runtime_error" and "not permitted" in verdict.message
    assert os.getpid()  # still here (the fixture checks the rest)


def test_a_gigabyte_of_output_is_cut_off():
    start = time.monotonic()
    verdict = judge("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)")
    assert verdict.verdict == "runtime_error" and "output larger than" in verdict.message
    assert time.monotonic() - start < 5


def test_output_limit_holds_when_sigxfsz_is_ignored():
    code = "import signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))"
    assert "output larger than" in judge(code).message


def test_deep_recursion_is_a_runtime_error():
    plain = judge("def f(n):\n    return f(n + 1)\nf(0)", limits=replace(LIMITS, time_s=10))
    assert plain.verdict == "runtime_error" and "RecursionError" in plain.message
    through_c = "import sys\nsys.setrecursionlimit(10**7)\nfrom functools import lru_cache\n@lru_cache(None)\ndef f(n):\n    return 0 if n == 0 else f(n - 1) + 1\nprint(f(10**6))"
    verdict = judge(through_c)
    assert verdict.verdict in ("runtime_error", "memory_limit")  # a C stack overflow: SIGSEGV


# ---------------------------------------------------------------------------------------------
# Verdicts and comparison
# ---------------------------------------------------------------------------------------------
def test_verdicts_name_the_first_failing_test():
    code = "n = int(input())\nprint(n * 2 if n < 3 else 0)"
    tests = [stdin_test("2\n", "1\n"), stdin_test("4\n", "2\n"), stdin_test("6\n", "3\n"), stdin_test("8\n", "4\n")]
    verdict = run_tests(code, tests, limits=LIMITS)
    assert (verdict.verdict, verdict.passed_tests, verdict.first_failure, verdict.total_tests) == ("wrong_answer", 2, 2, 4)
    assert "got '0', expected '6'" in verdict.message


def test_syntax_and_runtime_errors():
    assert judge("def f(:\n    pass").verdict == "syntax_error"
    verdict = judge("print(1 // 0)")
    assert verdict.verdict == "runtime_error" and "ZeroDivisionError" in verdict.message


def test_stdin_programs_may_exit_and_use_the_official_preamble():
    assert judge("print('ok')\nexit()").verdict == "passed"
    assert judge("import sys\nprint('ok')\nsys.exit(3)").verdict == "passed"  # the official runner ignores exits
    assert judge("print('ok' if gcd(4, 6) == 2 and deque and List else 'no')").verdict == "passed"
    assert judge("if __name__ == '__main__':\n    print('ok')").verdict == "passed"


def functional(given: str, output: str) -> dict:
    return {"input": given, "output": output, "testtype": "functional"}


def test_functional_calls_the_solution_method():
    code = "class Solution:\n    def add(self, a: List[int], k: int) -> List[int]:\n        print('debug')\n        return [x + k for x in a]"
    tests = [functional("[1, 2]\n3", "[4, 5]"), functional("[]\n1", "[]")]
    assert run_tests(code, tests, "add", LIMITS).verdict == "passed"
    assert run_tests(code, [functional("[1]\n1", "[3]")], "add", LIMITS).verdict == "wrong_answer"
    assert run_tests(code, tests, "missing", LIMITS).verdict == "runtime_error"


def test_functional_return_values():
    def returns(value: str, expected: str) -> str:
        return run_tests(f"class Solution:\n    def f(self):\n        return {value}", [functional("", expected)], "f", LIMITS).verdict

    assert returns("(1, 2)", "[1, 2]") == "passed"
    assert returns("0.1 + 0.2", "0.3") == "passed"
    assert returns("{1, 2}", "[1, 2]") == "wrong_answer"  # not JSON: a set is not a list
    assert returns("True", "true") == "passed"
    assert returns("10**5000", "1" + "0" * 5000) == "passed"  # beyond Python's default 4300 digits
    assert returns("10**5000 + 1", "1" + "0" * 5000) == "wrong_answer"
    assert returns("'1' + '0' * 5000", "1" + "0" * 5000) == "wrong_answer"  # a string is not the number


def test_compare_stdout_rules():
    assert compare_stdout("1 2\n3\n\n", " 1 2 \n3")[0]
    assert not compare_stdout("1\n2", "1\n2\n3")[0]
    assert compare_stdout("1.0", "1")[0]  # decimals
    assert not compare_stdout("50000000000000001", "50000000000000000")[0]  # integers exactly
    assert compare_stdout("0.3333333333", "0.333333333333333")[0]
    assert not compare_stdout("0.3333333333", "0.333333333333333", tolerance=0)[0]  # the official rule
    assert not compare_stdout("0.34", "0.333333333333333")[0]
    assert compare_stdout("1000000.5", "1000000.0")[0]  # relative above 1
    assert not compare_stdout("Yes", "No")[0]
    assert compare_values('{"value": [1.0000001]}', "[1]")[0]
    assert not compare_values('{"unserializable": "set"}', "[1]")[0]


def test_the_sample_budget_cuts_the_tests():
    tests = [stdin_test("ok\n") for _ in range(10)]
    start = time.monotonic()
    verdict = run_tests("import time\ntime.sleep(0.8)\nprint('ok')", tests, limits=LIMITS, budget_s=3)
    assert verdict.verdict == "time_limit" and 1 <= verdict.first_failure < 4
    assert time.monotonic() - start < 4


def test_tests_are_required():
    with pytest.raises(ValueError):
        run_tests("print(1)", [], limits=LIMITS)
    with pytest.raises(ValueError):
        run_tests("print(1)", [functional("1", "1")], None, LIMITS)


def test_seccomp_filter_is_well_formed():
    for arch in ("x86_64", "aarch64"):
        program = child.seccomp_filter(arch, 1234)
        assert len(program) % 8 == 0 and len(program) // 8 < 256
