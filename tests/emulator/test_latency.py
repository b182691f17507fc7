"""The latency model: off by default, repeatable under a seed, on an injected sleep."""

from __future__ import annotations

import math
import random

import pytest
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.latency import REALISTIC, Lognormal, PerOperation, latency_model


def _delays(seed: int) -> list[float]:
    clock = FakeClock()
    with KlaviyoEmulator(latency="realistic", seed=seed, sleep=clock.sleep, clock=clock) as emu:
        api = Api(emu.base_url)
        pid = api.create_profile(email="a@example.com").json()["data"]["id"]
        for _ in range(3):
            api.get(f"/api/profiles/{pid}")
            api.get("/api/profiles", query={"filter": 'equals(email,"a@example.com")'})
    return clock.slept


def test_same_seed_same_delays_on_a_virtual_clock() -> None:
    first = _delays(seed=7)
    assert len(first) == 7 and all(d > 0 for d in first)
    assert _delays(seed=7) == first
    assert _delays(seed=8) != first


def test_off_by_default(emu: KlaviyoEmulator) -> None:
    assert emu.config.latency is None


def test_configure_switches_latency_on_and_off(emu: KlaviyoEmulator) -> None:
    clock = FakeClock()
    with KlaviyoEmulator(sleep=clock.sleep) as local:
        api = Api(local.base_url)
        api.get("/api/profiles")
        assert clock.slept == []
        local.configure(latency="realistic")
        api.get("/api/profiles")
        assert len(clock.slept) == 1
        local.configure(latency=None)
        api.get("/api/profiles")
        assert len(clock.slept) == 1
    assert emu.config.latency is None


def test_a_model_object_can_be_passed() -> None:
    clock = FakeClock()
    fixed = PerOperation({"get_profiles": Lognormal(0.5, 0.5000001)}, seed=1)
    with KlaviyoEmulator(latency=fixed, sleep=clock.sleep) as emu:
        Api(emu.base_url).get("/api/profiles")
    assert clock.slept == [pytest.approx(0.5)]


def test_lognormal_matches_its_median_and_p99() -> None:
    dist = Lognormal(0.2, 1.2)
    rng = random.Random(1)
    draws = sorted(dist.draw(rng) for _ in range(20_000))
    assert math.isclose(draws[len(draws) // 2], 0.2, rel_tol=0.05)
    assert math.isclose(draws[int(len(draws) * 0.99)], 1.2, rel_tol=0.1)


def test_realistic_covers_every_served_operation() -> None:
    from devtools.klaviyo_emulator.operations import HANDLERS

    assert set(REALISTIC) == set(HANDLERS)
    model = latency_model("realistic", seed=3)
    assert model is not None and model.name == "realistic"


def test_reset_starts_the_seeded_draws_over() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(latency="realistic", seed=5, sleep=clock.sleep) as emu:
        api = Api(emu.base_url)
        api.get("/api/profiles")
        api.get("/api/profiles")
        first = list(clock.slept)
        emu.reset()
        api.get("/api/profiles")
        api.get("/api/profiles")
    assert clock.slept[2:] == first
