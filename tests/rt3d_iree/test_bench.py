"""bench.py: the benchmark malloc settings, interleaved timing rounds, the CLI's re-execution."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rt3d_iree import cli
from rt3d_iree.bench import ALLOCATOR_ENV, allocator_env, allocator_tuned, interleaved_medians


def test_allocator_env_adds_settings_and_keeps_user_tunables():
    env = allocator_env({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert env["PATH"] == "/bin"
    assert env["MALLOC_MMAP_MAX_"] == "0"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
    assert allocator_tuned(env)
    assert not allocator_tuned({"PATH": "/bin"})
    assert allocator_env(env) == env  # applying twice changes nothing


def test_allocator_settings_reach_a_child_process():
    """glibc reads them at start-up: a child started with them runs and sees them."""
    code = "import os; print(os.environ['MALLOC_MMAP_MAX_'], os.environ['GLIBC_TUNABLES'])"
    out = subprocess.run([sys.executable, "-c", code], env=allocator_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == [ALLOCATOR_ENV["MALLOC_MMAP_MAX_"], ALLOCATOR_ENV["GLIBC_TUNABLES"]]


def test_interleaved_medians_take_turns_and_pool_all_runs():
    calls = []
    runs = {"a": iter([[1.0, 2.0], [9.0, 9.0], [3.0, 3.0]]), "b": iter([[5.0], [4.0], [6.0]])}

    def timer(name):
        def run():
            calls.append(name)
            return next(runs[name])
        return run

    rounds_done = []
    medians = interleaved_medians({"a": timer("a"), "b": timer("b")}, 3, on_round=lambda: rounds_done.append(1))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # every engine once per round, in turn
    assert medians == {"a": 3.0, "b": 5.0}  # medians of [1, 2, 9, 9, 3, 3] and [5, 4, 6]
    assert len(rounds_done) == 3


def test_timing_commands_reexecute_under_the_allocator_settings(monkeypatch):
    seen = {}

    def fake_execve(path, args, env):
        seen.update(path=path, args=args, env=env)
        raise SystemExit(0)

    for key in (*ALLOCATOR_ENV, "RT3D_NO_REEXEC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(sys, "argv", ["rt3d", "bench-layer", "--reps", "7"])
    with pytest.raises(SystemExit):
        cli.main()
    assert seen["path"] == sys.executable
    assert seen["args"][1:] == ["-m", "rt3d_iree.cli", "bench-layer", "--reps", "7"]
    assert allocator_tuned(seen["env"]) and seen["env"]["RT3D_NO_REEXEC"] == "1"


def test_no_reexecution_in_process_or_for_other_commands(monkeypatch, capsys):
    def fail(*args):
        raise AssertionError("must not re-execute")

    for key in ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(os, "execve", fail)
    monkeypatch.setattr(sys, "argv", ["rt3d", "targets"])
    assert cli.main() == 0  # not a timing command
    assert "host" in capsys.readouterr().out
    assert cli.main(["targets"]) == 0  # called in-process with argv: never replaces the caller
