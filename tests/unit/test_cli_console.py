"""`lorafleet serve`'s terminal: in-place status on a TTY, rare plain lines elsewhere."""

import io

from deployments.cli.console import ERASE_LINE, Console


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place_under_progress_lines():
    out = Tty()
    console = Console(out, started=0)
    console.status("1 replica · 0 running")
    console.status("1 replica · 2 running")
    console.step("published poet")
    text = out.getvalue()
    assert text.count("\n") == 1  # only the progress line ends a line
    assert ERASE_LINE + "[" in text  # the status was erased before the progress line
    assert text.endswith("published poet\n1 replica · 2 running")  # and drawn again under it


def test_off_a_terminal_the_status_is_a_plain_line_only_when_it_changed_and_rarely():
    out = io.StringIO()
    console = Console(out, started=0, plain_status_period_s=3600)
    for i in range(100):
        console.status(f"{i} req/s", key="same counters")
    console.status("other", key="new counters")  # changed, but within the period
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.count("status:") == 1


def test_off_a_terminal_a_changed_status_is_printed_again_after_the_period():
    out = io.StringIO()
    console = Console(out, started=0, plain_status_period_s=0)
    console.status("a", key="1")
    console.status("a", key="1")
    console.status("b", key="2")
    assert out.getvalue().count("status:") == 2
