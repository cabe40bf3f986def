"""Pure parts of `lorafleet serve`: where the demo lives, the terminal log level, the
banner, and the driver log that holds records until the log folder is known."""

import logging

import pytest

from deployments.cli.demo import DemoError, demo_folder
from deployments.cli.logs import DriverLog, parse_level
from deployments.cli.banner import ready_message
from deployments.config import parse_config


def _config(source="/x/demo/base", uri="/x/demo/adapters"):
    return parse_config({"model": {"source": source, "served_name": "m"}, "adapters": {"uri": uri},
                         "server": {"port": 8123}})


def test_the_demo_folder_is_the_parent_of_base_and_adapters():
    assert str(demo_folder(_config())) == "/x/demo"


def test_a_config_not_laid_out_as_the_demo_is_refused_for_demo_naming_both_paths():
    with pytest.raises(DemoError, match="/elsewhere/adapters"):
        demo_folder(_config(uri="/elsewhere/adapters"))
    with pytest.raises(DemoError, match="model.source"):
        demo_folder(_config(source="/x/demo/weights"))


def test_the_terminal_shows_logs_only_when_asked():
    assert parse_level(None, verbose=False) is None
    assert parse_level(None, verbose=True) == logging.INFO
    assert parse_level("debug", verbose=False) == logging.DEBUG
    with pytest.raises(ValueError, match="unknown log level"):
        parse_level("chatty", verbose=False)


def test_the_banner_has_the_url_the_examples_top_and_the_log_folder(tmp_path):
    text = ready_message(_config(), "poet", "http://127.0.0.1:8080/metrics", tmp_path)
    assert "lorafleet is serving m on http://127.0.0.1:8123" in text
    assert "curl http://127.0.0.1:8123/v1/completions" in text and '"model": "poet"' in text
    assert "from openai import OpenAI" in text
    assert "lorafleet top --url http://127.0.0.1:8123" in text
    assert str(tmp_path) in text


def test_records_logged_before_the_log_folder_is_known_are_written_to_it(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        log = DriverLog(terminal_level=None)
        logging.getLogger("ray").warning("before the folder")
        path = log.attach(tmp_path / "logs")
        logging.getLogger("ray.serve").info("after the folder")
        for handler in root.handlers:
            handler.flush()
        text = path.read_text()
        assert "before the folder" in text and "after the folder" in text
        assert not logging.getLogger("ray").handlers and logging.getLogger("ray").propagate
    finally:
        for handler in root.handlers[:]:
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved[1])
