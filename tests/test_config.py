"""config.py: settings from the environment and `.env`, and refusing bad values (SPEC §9, §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import VARIABLES, ConfigError, Settings, env_example, is_loopback_host, load_settings


def load(env_file: Path | None = None, **env: str) -> Settings:
    return load_settings(env, env_file=env_file)


def test_defaults() -> None:
    s = load()
    assert s.vault_dir == Path("vault")
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.webhook_secret is None
    assert s.elevenlabs_webhook_secret is None
    assert s.admin_api_key is None
    assert s.phone_hash_key is None
    assert s.default_region is None
    assert s.agent_numbers == ()
    assert s.timezone == "UTC"
    assert s.prompt_max_chars == 12_000
    assert s.override_prompt is True
    assert s.override_first_message is True
    assert s.store_phone_numbers is False
    assert s.git_author_name == "memory-bridge"
    assert s.git_author_email == "memory-bridge@localhost"
    assert s.log_level == "INFO"
    assert s.log_format == "text"
    assert s.is_loopback


def test_defaults_equal_the_struct_defaults() -> None:
    assert load() == Settings()


def test_empty_values_mean_default() -> None:
    empty = {
        name: ""
        for name in (
            "VAULT_DIR",
            "HOST",
            "PORT",
            "WEBHOOK_SECRET",
            "ADMIN_API_KEY",
            "DEFAULT_REGION",
            "AGENT_NUMBERS",
            "TIMEZONE",
            "PROMPT_MAX_CHARS",
            "OVERRIDE_PROMPT",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "GIT_AUTHOR_NAME",
        )
    }
    assert load(**empty) == Settings()


def test_every_variable_is_read(tmp_path: Path) -> None:
    s = load(
        VAULT_DIR=str(tmp_path / "v"),
        HOST="::1",
        PORT="9123",
        WEBHOOK_SECRET="  webhook-secret  ",
        ELEVENLABS_WEBHOOK_SECRET="wsec_0123456789",
        ADMIN_API_KEY="admin-key-123",
        PHONE_HASH_KEY="phone-hash-key-123",
        DEFAULT_REGION="gb",
        AGENT_NUMBERS="+14155550199, 020 7183 8750,",
        TIMEZONE="Europe/London",
        PROMPT_MAX_CHARS="5000",
        OVERRIDE_PROMPT="false",
        OVERRIDE_FIRST_MESSAGE="no",
        STORE_PHONE_NUMBERS="YES",
        GIT_AUTHOR_NAME="Front Desk",
        GIT_AUTHOR_EMAIL="desk@example.com",
        LOG_LEVEL="debug",
        LOG_FORMAT="JSON",
    )
    assert s.vault_dir == tmp_path / "v"
    assert s.host == "::1"
    assert s.is_loopback
    assert s.port == 9123
    assert s.webhook_secret == "webhook-secret"
    assert s.elevenlabs_webhook_secret == "wsec_0123456789"
    assert s.admin_api_key == "admin-key-123"
    assert s.phone_hash_key == "phone-hash-key-123"
    assert s.default_region == "GB"
    assert s.agent_numbers == ("+14155550199", "+442071838750")
    assert s.timezone == "Europe/London"
    assert str(s.tz) == "Europe/London"
    assert s.prompt_max_chars == 5000
    assert s.override_prompt is False
    assert s.override_first_message is False
    assert s.store_phone_numbers is True
    assert s.git_author_name == "Front Desk"
    assert s.git_author_email == "desk@example.com"
    assert s.log_level == "DEBUG"
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "-1"),
        ("PORT", "70000"),
        ("PORT", "80.5"),
        ("PROMPT_MAX_CHARS", "-1"),
        ("PROMPT_MAX_CHARS", "lots"),
        ("PROMPT_MAX_CHARS", "10"),
        ("TIMEZONE", "Mars/Base"),
        ("TIMEZONE", "../../etc/passwd"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "chatty"),
        ("OVERRIDE_PROMPT", "maybe"),
        ("OVERRIDE_FIRST_MESSAGE", "2"),
        ("STORE_PHONE_NUMBERS", "sometimes"),
        ("DEFAULT_REGION", "ZZ"),
        ("DEFAULT_REGION", "USA"),
        ("AGENT_NUMBERS", "junk"),
        ("AGENT_NUMBERS", "+14155550199,junk"),
        ("WEBHOOK_SECRET", "short"),
        ("ELEVENLABS_WEBHOOK_SECRET", "abc"),
        ("ADMIN_API_KEY", "1234567"),
        ("PHONE_HASH_KEY", "x"),
        ("HAND_EDIT_QUIET_SECONDS", "soon"),
        ("RECONCILE_SECONDS", "0"),
        ("PERSONALIZE_DEADLINE_MS", "-5"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{name: value})
    assert name in str(info.value)


def test_bad_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load(ADMIN_API_KEY="s3cr3t!")
    assert "s3cr3t!" not in str(info.value)


def test_agent_numbers_national_format_uses_default_region() -> None:
    s = load(DEFAULT_REGION="US", AGENT_NUMBERS="(415) 555-0199")
    assert s.agent_numbers == ("+14155550199",)
    with pytest.raises(ConfigError, match="AGENT_NUMBERS"):
        load(AGENT_NUMBERS="(415) 555-0199")  # national without a region


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_non_loopback_host_needs_webhook_secret(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(HOST=host)
    assert "WEBHOOK_SECRET" in str(info.value)
    assert "HOST" in str(info.value)
    s = load(HOST=host, WEBHOOK_SECRET="a-long-enough-secret")
    assert s.host == host
    assert not s.is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_need_no_secret(host: str) -> None:
    assert load(HOST=host).is_loopback
    assert is_loopback_host(host)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nPORT=9001\nADMIN_API_KEY='file-admin-key'\nTIMEZONE=America/New_York\nLOG_FORMAT=json\n"
    )
    s = load(env_file)
    assert s.port == 9001
    assert s.admin_api_key == "file-admin-key"
    assert s.timezone == "America/New_York"
    assert s.log_format == "json"


def test_real_environment_wins_over_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nTIMEZONE=America/New_York\n")
    s = load(env_file, PORT="9002")
    assert s.port == 9002
    assert s.timezone == "America/New_York"  # not overridden, so the file's value stands


def test_bad_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_FORMAT=xml\n")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load(env_file)
    # A good real value hides the file's bad one.
    assert load(env_file, LOG_FORMAT="text").log_format == "text"


def test_missing_dotenv_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.env") == Settings()


def test_reads_process_environment_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HOST", "WEBHOOK_SECRET", "DEFAULT_REGION", "AGENT_NUMBERS", "TIMEZONE", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "9555")
    s = load_settings(env_file=tmp_path / "absent.env")
    assert s.port == 9555


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_env_example_is_rendered_from_the_table() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    assert example == env_example(), "run: python -m server.config > .env.example"
    documented = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert documented == set(VARIABLES)
    assert "VAULT_DIR" in VARIABLES and "PERSONALIZE_DEADLINE_MS" in VARIABLES


def test_a_bad_value_reads_as_a_sentence_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load(PORT="70000")
    assert str(info.value) == "PORT: expected a whole number <= 65535"
    with pytest.raises(ConfigError) as info:
        load(WEBHOOK_SECRET="short")
    assert str(info.value) == "WEBHOOK_SECRET: too short to be a secret (use at least 8 characters)"
