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
