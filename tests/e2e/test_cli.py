"""The `lorafleet` command's error paths: bad configs fail before anything starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _lorafleet(*args, cwd):
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("model: {source: /m, served_name: m}\nadapters: {uri: /a}\nengine: {max_lora: 4}\n", "engine.max_lora"),
        ("model: {source: /m, served_name: m}\nadapters: {uri: /a}\nserver: {port: -1}\n", "server.port"),
        ("model: {served_name: m}\nadapters: {uri: /a}\n", "model.source"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_serve_with_bad_config_exits_2_naming_the_field(tmp_path, yaml_text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    result = _lorafleet("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr


def test_serve_refuses_missing_base_model_folder(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{source: {tmp_path}/nowhere, served_name: m}}\nadapters: {{uri: {tmp_path}}}\n")
    result = _lorafleet("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_serve_with_postgres_and_no_dsn_in_the_environment_exits_2_naming_the_variable(tmp_path):
    (tmp_path / "base").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{source: {tmp_path}/base, served_name: m}}\nadapters: {{uri: {tmp_path}}}\n"
                      "server: {usage: {backend: postgres, postgres_dsn_env: LEDGER_DSN_FOR_TEST}}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DSN_FOR_TEST", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's code, whatever is installed
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 2
    assert "LEDGER_DSN_FOR_TEST" in result.stderr


def test_check_config_prints_resolved_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {source: ./base, served_name: m}\nadapters: {uri: ./adapters}\n")
    result = _lorafleet("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'"source": "{tmp_path}/base"' in result.stdout
    assert '"max_loras": 2' in result.stdout
