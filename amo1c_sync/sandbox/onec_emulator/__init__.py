"""A 1C:Enterprise 8.3 standard OData interface emulator: a real HTTP server on loopback.

:mod:`.schema` names the configuration's objects, :mod:`.state` holds the base and does what 1C
does on a write, :mod:`.filters` is 1C's ``$filter``, :mod:`.api` the OData routes,
:mod:`.metadata` the CSDL, :mod:`.control` the ``/_sandbox/`` API, :mod:`.app` the server.
"""

from amo1c_sync.sandbox.onec_emulator.api import ODATA_MARK
from amo1c_sync.sandbox.onec_emulator.app import OneCEmulator
from amo1c_sync.sandbox.onec_emulator.errors import ODataError
from amo1c_sync.sandbox.onec_emulator.filters import (
    _evaluate, _key_lookup, _truth, parse_filter, tokenize)
from amo1c_sync.sandbox.onec_emulator.schema import EMPTY_DATE, EMPTY_REF, EntityType, build_schema
from amo1c_sync.sandbox.onec_emulator.state import OneCBase

__all__ = ["EMPTY_DATE", "EMPTY_REF", "ODATA_MARK", "ODataError", "EntityType", "OneCBase", "OneCEmulator",
           "build_schema", "parse_filter", "tokenize", "_evaluate", "_key_lookup", "_truth"]
