"""An amoCRM API v4 emulator: a real HTTP server on loopback (werkzeug WSGI, threaded).

:mod:`.state` holds the account (fields, leads, notes), :mod:`.contacts` its contacts (and
their API and control routes), :mod:`.oauth` its tokens,
:mod:`.validation` amoCRM's ``validation-errors``, :mod:`.api` the API v4 routes and the rate
limit, :mod:`.control` the ``/_sandbox/`` API, :mod:`.app` the server that joins them.
"""

from amo1c_sync.sandbox.amocrm_emulator.app import AmoCRMEmulator
from amo1c_sync.sandbox.amocrm_emulator.state import (
    DEFAULT_DOCTORS, DEFAULT_LEAD_FIELDS, LeadBook, default_time_grid)

__all__ = ["AmoCRMEmulator", "DEFAULT_DOCTORS", "DEFAULT_LEAD_FIELDS", "LeadBook", "default_time_grid"]
