"""A second independent amoCRM client: amocrm-api (Krukov/amocrm_api), whose token manager
decodes the access token as a JWT (pyjwt) for its ``exp`` before every call
(amocrm/v2/tokens.py, ``TokenManager._is_expire``). An opaque token makes it fail with
``jwt.DecodeError``; the emulator's JWTs let it work."""

from __future__ import annotations

import jwt
import pytest
import requests
from amocrm.v2 import tokens
from amocrm.v2.entity.lead import LeadsInteraction
from requests.adapters import HTTPAdapter

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator


class ToEmulator(HTTPAdapter):
    """The client calls https://<subdomain>.amocrm.ru only: send those requests to loopback."""

    def __init__(self, account: str, url: str):
        super().__init__()
        self.account, self.url = account, url

    def send(self, request, **kwargs):
        request.url = request.url.replace(self.account, self.url, 1)
        return super().send(request, **kwargs)


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


def test_given_the_emulators_jwt_when_the_client_checks_exp_and_calls_then_it_reads_the_lead(emu):
    lead_id = emu.create_lead("Ефимова Е.В., 9:05", price=150)
    pair = requests.post(f"{emu.url}/oauth2/access_token", timeout=5,
                         json={**emu.new_auth_code(), "grant_type": "authorization_code"}).json()
    storage = tokens.MemoryTokensStorage()
    storage.save_tokens(pair["access_token"], pair["refresh_token"])
    manager = tokens.TokenManager()
    manager(client_id=emu.client_id, client_secret=emu.client_secret, subdomain=emu.subdomain,
            redirect_url=emu.redirect_uri, storage=storage)
    session = requests.Session()
    account = f"https://{emu.subdomain}.amocrm.ru"
    session.mount(account + "/", ToEmulator(account, emu.url))

    assert manager.get_access_token() == pair["access_token"]  # decoded, not expired: no refresh
    lead = LeadsInteraction(token_manager=manager, session=session).get(lead_id)

    assert (lead["id"], lead["name"], lead["price"]) == (lead_id, "Ефимова Е.В., 9:05", 150)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["account_id"] == emu.account_id
    assert claims["exp"] > claims["iat"]
    session.close()
