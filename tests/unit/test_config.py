"""The functions' configuration, read from the environment."""

import pytest

from klaviyo_leads.config import Settings


def test_defaults_are_klaviyos_own():
    settings = Settings.from_env({})
    assert (settings.base_url, settings.api_revision) == ("https://a.klaviyo.com", "2026-07-15")
    assert settings.coalesce_batches and settings.klaviyo_max_share == 1.0


@pytest.mark.parametrize(
    ("value", "share"),
    [("0.6", 0.6), ("60", 0.6), ("100", 1.0), ("", 1.0), ("0", 1.0), ("many", 1.0), ("250", 1.0)],
)
def test_the_share_of_klaviyos_limits_is_a_fraction_or_a_percentage(value, share):
    assert Settings.from_env({"KLAVIYO_MAX_SHARE": value}).klaviyo_max_share == share


@pytest.mark.parametrize(
    ("value", "containers"),
    [("12", 12), ("1", 1), ("0", None), ("", None), ("-3", None), ("many", None), ("2.5", None)],
)
def test_the_containers_sharing_klaviyos_limits_are_a_count_or_not_known(value, containers):
    """KLAVIYO_CONTAINERS: the function's reserved concurrency, which the stack passes (0 when
    there is none): the pacer of a fleet of unknown size starts more carefully."""
    assert Settings.from_env({"KLAVIYO_CONTAINERS": value}).klaviyo_containers == containers


@pytest.mark.parametrize(("value", "containers"), [("12", 12), ("0", None)])
def test_the_functions_pacer_is_told_how_many_containers_share_the_limits(
    monkeypatch: pytest.MonkeyPatch, value: str, containers: int | None
) -> None:
    from klaviyo_leads.runtime import Runtime

    monkeypatch.setenv("KLAVIYO_CONTAINERS", value)
    monkeypatch.setenv("KLAVIYO_MAX_SHARE", "40")
    pacer = Runtime.from_env().client.pacer
    assert (pacer.containers, pacer.max_share) == (containers, 0.4)


@pytest.mark.parametrize(
    ("value", "process"),
    [
        (None, "double_opt_in"),
        ("single_opt_in", "single_opt_in"),
        ("Single", "single_opt_in"),
        ("double", "double_opt_in"),
        ("anything", "double_opt_in"),
    ],
)
def test_the_accounts_opt_in_process_is_klaviyos_default_unless_set_to_single(value, process):
    env = {} if value is None else {"KLAVIYO_ACCOUNT_OPT_IN": value}
    assert Settings.from_env(env).account_opt_in_process == process
