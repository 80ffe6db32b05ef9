"""1C's answers: ``odata.error`` bodies and JSON as 1C writes it (Decimal as a number)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Response


class ODataError(Exception):
    """Answered as 1C does: ``status`` with an ``odata.error`` body of ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_error(message: str) -> ODataError:
    return ODataError(400, "14", message)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=_json_default), status=status,
                    content_type="application/json;charset=utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def odata_error_response(err: ODataError) -> Response:
    return json_response({"odata.error": {"code": err.code, "message": {"lang": "ru", "value": err.message}}},
                         err.status)
