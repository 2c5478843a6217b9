"""The CLI as a subprocess where no server is needed: help, usage and client errors."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli_env, free_port, run_cli

CLIENT_COMMANDS = ("submit", "status", "logs", "cancel", "list")


def test_cli_help_names_the_env_vars_of_options(tmp_path: Path) -> None:
    env = cli_env(tmp_path)

    for command in CLIENT_COMMANDS:
        shown = run_cli(command, "--help", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "PROCTOR_URL" in shown.stdout and "PROCTOR_TOKEN" in shown.stdout
    for command in ("up", "serve"):
        shown = run_cli(command, "--help", env=env)
        assert "PROCTOR_HOST" in shown.stdout and "PROCTOR_PORT" in shown.stdout


def test_cli_usage_error_exits_3_not_2(tmp_path: Path) -> None:
    result = run_cli("list", "--no-such-option", env=cli_env(tmp_path))

    assert result.returncode == 3
    assert "--no-such-option" in result.stderr


def test_cli_without_token_says_how_to_get_one(tmp_path: Path) -> None:
    result = run_cli("list", env=cli_env(tmp_path))

    assert result.returncode == 3
    assert result.stderr.startswith("error: no API token")
    assert "proctor up" in result.stderr and "Traceback" not in result.stderr


def test_cli_unreachable_server_exits_3_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_cli("status", "j1", "--url", url, "--token", "t", env=cli_env(tmp_path))

    assert result.returncode == 3
    assert f"cannot reach proctor at {url}" in result.stderr


def test_cli_submit_of_a_missing_path_exits_3(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = run_cli("submit", str(missing), "--token", "t", env=cli_env(tmp_path))

    assert result.returncode == 3
    assert str(missing) in result.stderr


def test_cli_broken_credentials_file_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text("{broken")

    result = run_cli("list", env=cli_env(tmp_path))

    assert result.returncode == 3
    assert "credentials.json" in result.stderr and "Traceback" not in result.stderr


def test_cli_config_show_reports_invalid_settings_without_traceback(tmp_path: Path) -> None:
    result = run_cli("config", "show", env=cli_env(tmp_path, PROCTOR_RUN_MEMORY="lots"))

    assert result.returncode == 3
    assert "invalid configuration" in result.stderr and "run_memory" in result.stderr


def test_cli_error_is_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "COLUMNS": "40"}

    result = run_cli("list", env=env)

    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and len(result.stderr) > 40
