"""Fixtures of the integration tier: both emulators on loopback (in process) and settings that
point at them. The helpers that go with them are in tests/support/e2e.py."""

from __future__ import annotations

import pytest

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support.e2e import TOKEN, make_settings


@pytest.fixture
def amo_emu():
    with AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN) as e:
        yield e


@pytest.fixture
def onec_emu():
    with OneCEmulator() as e:
        yield e


@pytest.fixture
def settings(amo_emu, onec_emu):
    return make_settings(amo_emu, onec_emu)
