"""amoCRM's answer formats: problem JSON for errors, HAL JSON for entities, nginx HTML pages."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed"}
HTML_429 = ("<html><head><title>429 Too Many Requests</title></head><body>"
            "<center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center>"
            "</body></html>")
HTML_403 = ("<html><head><title>403 Forbidden</title></head><body>"
            "<center><h1>403 Forbidden</h1></center><hr><center>nginx</center></body></html>")


class Problem(Exception):
    """An amoCRM error answer (``application/problem+json``)."""

    def __init__(self, status: int, detail: str, *, title: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.body = {"title": title or _TITLES.get(status, "Error"),
                     "type": f"https://httpstatus.es/{status}", "status": status,
                     "detail": detail, **extra}


def validation_failed(errors: list[dict]) -> Problem:
    problem = Problem(400, "Request validation failed")
    problem.body["validation-errors"] = errors  # not a Python name: set after the fact
    return problem


def problem_response(status: int, body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/problem+json")


def hal(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/hal+json")


def html(page: str, status: int) -> Response:
    return Response(page, status=status, content_type="text/html")
