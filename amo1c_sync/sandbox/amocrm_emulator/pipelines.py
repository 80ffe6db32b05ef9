"""The account's lead pipelines and their stages (``GET /api/v4/leads/pipelines``).

The shape follows amoCRM's reference for pipelines (https://www.amocrm.ru/developers/content/
crm_platform/leads_pipelines; the same as https://developers.kommo.com/reference/pipelines-list):
``_embedded.pipelines[]`` with ``id, name, sort, is_main, is_unsorted_on, is_archive, account_id``
and ``_embedded.statuses[]`` of ``id, name, sort, is_editable, pipeline_id, color, type,
account_id``. Every pipeline ends with the two system stages of the same ids everywhere: 142
«Успешно реализовано» and 143 «Закрыто и не реализовано» (closed; ``is_editable`` false). The first
stage is «Неразобранное» (``type`` 1, incoming leads); a lead created without a stage goes to the
main pipeline's first ordinary stage.
"""

from __future__ import annotations

from collections.abc import Iterable

from amo1c_sync.sandbox.amocrm_emulator.problems import Problem

WON, LOST = 142, 143
SANDBOX_PIPELINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Запись к врачу", ("Новая заявка", "Записан на приём", "Оплачено", "Отменена", "Не пришёл")),
    ("Воронка", ("Первичный контакт", "Переговоры")),
)
_COLORS = ("#99ccff", "#ffcc66", "#deff81", "#ffc8c8", "#d6eaff", "#f2f3f4")


class Pipelines:
    """Pipelines by id, each with its stages in order."""

    def __init__(self, account_id: int, spec: Iterable[tuple[str, Iterable[str]]] = SANDBOX_PIPELINES):
        self.account_id = account_id
        self.pipelines: dict[int, dict] = {}
        self._next_pipeline = 7000001
        self._next_status = 40000001
        for i, (name, stages) in enumerate(spec):
            self.add(name, stages, main=(i == 0))

    def add(self, name: str, stages: Iterable[str], *, main: bool = False) -> int:
        pid = self._next_pipeline
        self._next_pipeline += 1
        statuses = [self._status(pid, "Неразобранное", 10, type_=1, editable=False)]
        for i, stage in enumerate(stages, 2):
            statuses.append(self._status(pid, stage, i * 10))
        statuses.append({**self._status(pid, "Успешно реализовано", 10000, editable=False), "id": WON})
        statuses.append({**self._status(pid, "Закрыто и не реализовано", 11000, editable=False), "id": LOST})
        self.pipelines[pid] = {"id": pid, "name": name, "sort": (len(self.pipelines) + 1) * 10,
                               "is_main": main, "is_unsorted_on": True, "is_archive": False,
                               "account_id": self.account_id, "statuses": statuses}
        return pid

    def _status(self, pid: int, name: str, sort: int, *, type_: int = 0, editable: bool = True) -> dict:
        sid = self._next_status
        self._next_status += 1
        return {"id": sid, "name": name, "sort": sort, "is_editable": editable, "pipeline_id": pid,
                "color": _COLORS[sort // 10 % len(_COLORS)], "type": type_, "account_id": self.account_id}

    def main(self) -> dict:
        return next(p for p in self.pipelines.values() if p["is_main"])

    def default_stage(self) -> tuple[int, int]:
        """Where a new lead lands: the main pipeline's first ordinary stage."""
        p = self.main()
        return p["id"], next(s["id"] for s in p["statuses"] if s["type"] == 0 and s["id"] not in (WON, LOST))

    def has(self, pipeline_id: int, status_id: int) -> bool:
        p = self.pipelines.get(pipeline_id)
        return p is not None and any(s["id"] == status_id for s in p["statuses"])

    def names(self, pipeline_id: int, status_id: int) -> tuple[str | None, str | None]:
        p = self.pipelines.get(pipeline_id)
        if p is None:
            return None, None
        return p["name"], next((s["name"] for s in p["statuses"] if s["id"] == status_id), None)

    def by_name(self, text: str) -> tuple[int, int]:
        """«Отменена» (a stage of the main pipeline, else of any) or «Воронка / Переговоры»."""
        pipeline, _, stage = text.rpartition("/")
        pipeline, stage = pipeline.strip(), stage.strip()
        order = sorted(self.pipelines.values(), key=lambda p: not p["is_main"])
        for p in order:
            if pipeline and p["name"] != pipeline:
                continue
            for s in p["statuses"]:
                if s["name"] == stage:
                    return p["id"], s["id"]
        known = "; ".join(f"{p['name']}: " + ", ".join(s["name"] for s in p["statuses"]) for p in order)
        raise Problem(400, f"no stage {text!r}; stages: {known}")

    def api_view(self, host_url: str) -> dict:
        out = []
        for p in sorted(self.pipelines.values(), key=lambda p: p["sort"]):
            href = f"{host_url}api/v4/leads/pipelines/{p['id']}"
            statuses = [{**s, "_links": {"self": {"href": f"{href}/statuses/{s['id']}"}}}
                        for s in sorted(p["statuses"], key=lambda s: s["sort"])]
            out.append({**{k: v for k, v in p.items() if k != "statuses"},
                        "_links": {"self": {"href": href}}, "_embedded": {"statuses": statuses}})
        return {"_total_items": len(out), "_links": {"self": {"href": f"{host_url}api/v4/leads/pipelines"}},
                "_embedded": {"pipelines": out}}
