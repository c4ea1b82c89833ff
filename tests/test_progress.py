"""A Ctrl-C is never lost: one that Python swallows in a finalizer still stops the run at the next item."""

import signal

import pytest

from fmapviz.progress import Progress, interrupts_are_kept


class _InterruptedWhileFinalized:
    """Raises the SIGINT handler's KeyboardInterrupt from __del__, where Python prints and swallows it."""

    def __del__(self):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_at_the_next_item():
    progress = Progress("report", total=3, enabled=False)
    with interrupts_are_kept():
        _InterruptedWhileFinalized()  # the KeyboardInterrupt is printed as "Exception ignored" and lost
        with pytest.raises(KeyboardInterrupt):
            progress.done("photo1.png")
        progress.done("photo2.png")  # remembered once, not forever


def test_the_previous_sigint_handler_comes_back_and_nothing_is_remembered_outside():
    before = signal.getsignal(signal.SIGINT)
    with interrupts_are_kept():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    Progress("scan", total=1, enabled=False).done("batch")  # no interrupt pending


def test_a_line_says_the_time_left_at_the_pace_so_far(monkeypatch):
    import io
    import time

    now = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    stream = io.StringIO()
    progress = Progress("explore actmax", total=2816, stream=stream)
    for seconds, count in ((30.0, 120), (1.5, 16), (600.0, 2000), (200.0, 680)):
        now[0] += seconds
        progress.done(f"features.3 {count} channels", count)
    assert stream.getvalue().splitlines() == [
        "explore actmax: 120/2816 features.3 120 channels (30.0 s, about 11 min left)",  # 0.25 s each, 2696 left
        "explore actmax: 136/2816 features.3 16 channels (1.5 s, about 10 min left)",
        "explore actmax: 2136/2816 features.3 2000 channels (600.0 s, about 3 min left)",
        "explore actmax: 2816/2816 features.3 680 channels (200.0 s)",  # done: no time left to say
    ]
    slow = Progress("report", total=3, stream=stream)
    now[0] += 3000.0
    slow.done("cat.png")
    unknown = Progress("scan", total=None, stream=stream)
    now[0] += 2.0
    unknown.done("batch")
    assert stream.getvalue().splitlines()[-2:] == [
        "report: 1/3 cat.png (3000.0 s, about 1.7 h left)",
        "scan: 1 batch (2.0 s)",
    ]
