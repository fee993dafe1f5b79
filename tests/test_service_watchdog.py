"""The watchdog's judgement (issue 3, mlx-lm #1672) and the rotation of the
service's stdout/stderr logs, as pure functions with a fake clock."""

from __future__ import annotations

import fcntl
import os

from mlx_native_server.core.logrotate import StreamLogs, adopt_append, rotate
from mlx_native_server.engine.watchdog import (
    EXIT_ENGINE_DIED,
    EXIT_ENGINE_STALLED,
    EngineActivity,
    verdict,
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_engine_is_never_stalled():
    clock = Clock()
    activity = EngineActivity(clock)
    clock.now += 10_000
    assert activity.stalled_for() == 0.0
    assert verdict(True, activity, 300) is None


def test_a_request_waiting_with_no_answer_is_a_stall():
    clock = Clock()
    activity = EngineActivity(clock)
    clock.now += 3600  # idle for an hour first: that does not count
    with activity.waiting():
        clock.now += 299
        assert verdict(True, activity, 300) is None
        clock.now += 2
        code, why = verdict(True, activity, 300)
    assert code == EXIT_ENGINE_STALLED
    assert "no progress for 301.0s while 1 request(s) waited" in why
    assert verdict(True, activity, 0) is None  # 0 turns the check off


def test_a_long_prefill_that_reports_progress_is_not_a_stall():
    clock = Clock()
    activity = EngineActivity(clock)
    seen = []
    report = activity.progress(lambda done, total: seen.append(done))
    with activity.waiting():  # one next() that spans a 20-minute prefill
        for step in range(1, 121):
            clock.now += 10  # one prefill_step_size chunk every 10 s
            report(step * 2048, 120 * 2048)
            assert verdict(True, activity, 60) is None
    assert seen[-1] == 120 * 2048


def test_a_request_queued_behind_a_busy_one_is_not_a_stall():
    clock = Clock()
    activity = EngineActivity(clock)

    def tokens():
        for _ in range(100):
            clock.now += 5
            yield "tok"

    with activity.waiting():  # the queued request waits the whole time
        for _ in activity.track(tokens()):  # while the other one streams tokens
            assert verdict(True, activity, 30) is None
    assert activity.waiters == 0


def test_time_spent_writing_to_a_slow_client_does_not_count():
    clock = Clock()
    activity = EngineActivity(clock)
    for _ in activity.track(iter(["a", "b"])):
        clock.now += 600  # the handler is busy elsewhere, not waiting on the engine
        assert activity.stalled_for() == 0.0


def test_a_cancelled_request_left_waiting_is_not_a_stall():
    # mlx-lm's batch path drops a cancelled request without a last word, so
    # its handler can stay blocked: that must not restart a healthy server.
    clock = Clock()
    activity = EngineActivity(clock)
    cancelled = False
    with activity.waiting(lambda: cancelled):
        clock.now += 10
        cancelled = True
        clock.now += 3600
        assert verdict(True, activity, 300) is None and activity.waiters == 0


def test_a_dead_generation_thread_is_exit_3():
    code, why = verdict(False, EngineActivity(Clock()), 300)
    assert code == EXIT_ENGINE_DIED and "generation engine has stopped" in why


def test_rotate_copies_then_truncates_and_keeps_n_backups(tmp_path):
    log = tmp_path / "stdout.log"
    for generation in "abcd":
        log.write_text(generation * 100)
        assert rotate(log, max_bytes=50, backups=2)
    assert log.read_text() == ""
    assert (tmp_path / "stdout.log.1").read_text() == "d" * 100
    assert (tmp_path / "stdout.log.2").read_text() == "c" * 100
    assert not (tmp_path / "stdout.log.3").exists()
    log.write_text("small")
    assert not rotate(log, max_bytes=50, backups=2)
    assert not rotate(tmp_path / "missing.log", max_bytes=50, backups=2)


def test_adopted_fd_appends_so_truncation_does_not_leave_a_hole(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text("")
    fd = os.open(log, os.O_WRONLY)  # as a writer that did not ask for O_APPEND
    try:
        os.write(fd, b"x" * 100)
        assert adopt_append(fd, log)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        assert rotate(log, max_bytes=50, backups=1)
        os.write(fd, b"after\n")
        assert log.read_bytes() == b"after\n"
        assert not adopt_append(fd, tmp_path / "other.log")
    finally:
        os.close(fd)


def test_stream_logs_rotate_both_files(tmp_path):
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    out.write_text("o" * 10)
    err.write_text("e" * 100)
    assert StreamLogs(out, err, max_bytes=50, backups=1).rotate() == [err]
