"""What an entity looks like in 1C's JSON: ``$select``, ``$expand`` and navigation links.

From the 1C OData docs (see :mod:`.schema`), 17.4.6.4 «$expand» and 17.4.8 «Способы получения
данных»: ``$expand=X`` puts the object a reference points to inline, for collections only
(«Не поддерживается расширение при запросе одиночных сущностей», nor of tabular sections);
``$select`` may then name ``X/Attr``, ``X/*`` or ``X/**``; ``$select=**`` is every property but
the tabular sections. Each reference ``X_Key`` comes with ``X@navigationLinkUrl``, the URL
of the referenced object relative to the service root (real answers carry them, e.g.
``Сервер@navigationLinkUrl`` beside ``Сервер_Key``); an expanded empty reference gives no object,
only the link (hacker-cb/1c-odata packages/cli/src/codegen/emitter/entity.ts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amo1c_sync.sandbox.onec_emulator.errors import ODataError
from amo1c_sync.sandbox.onec_emulator.schema import EMPTY_REF, EntityType, nav_name
from amo1c_sync.sandbox.onec_emulator.state import OneCBase

NAV_LINK = "@navigationLinkUrl"


@dataclass
class Shape:
    """Which properties to send: ``top`` None = all; ``sections`` False for ``**``;
    ``expand`` navigation property -> the Shape of the object inlined there."""

    top: list[str] | None = None
    sections: bool = True
    expand: dict[str, "Shape"] = field(default_factory=dict)


def parse_shape(select: str | None, expand: str | None, etype: EntityType | None,
                types: dict[str, str], *, single: bool = False) -> Shape:
    shape = Shape(expand={nav: Shape() for nav in _expanded(expand, etype, single)})
    if select is None or select.strip() in ("", "*"):
        return shape
    if select.strip() == "**":
        shape.sections = False
        return shape
    allowed = set(types) | (set(etype.tabular) if etype else set())
    shape.top = []
    inner: dict[str, list[str]] = {}
    for item in (s.strip() for s in select.split(",")):
        nav, slash, rest = item.partition("/")
        if not slash:
            if item not in allowed:
                raise ODataError(400, "14", f"Ошибка разбора $select: неизвестное поле {item}")
            shape.top.append(item)
        elif nav in shape.expand:
            inner.setdefault(nav, []).append(rest.strip())
        else:
            raise ODataError(400, "14", f"Ошибка разбора $select: {nav} нет в $expand")
    for nav, names in inner.items():
        shape.expand[nav] = _inner_shape(names)
    return shape


def _inner_shape(names: list[str]) -> Shape:
    """``X/*`` wins over ``X/**``, which wins over ``X/Attr`` (the order the docs give)."""
    if "*" in names or "" in names:
        return Shape()
    if "**" in names:
        return Shape(sections=False)
    return Shape(top=names)


def _expanded(expand: str | None, etype: EntityType | None, single: bool) -> list[str]:
    if expand is None or not expand.strip():
        return []
    if single:
        raise ODataError(400, "14", "Расширение ($expand) при запросе одиночной сущности не поддерживается")
    navs = etype.navigation() if etype else {}
    names = [s.strip() for s in expand.split(",")]
    if names == ["*"]:
        return list(navs)
    for name in names:
        if name not in navs:
            raise ODataError(400, "14", f"Ошибка разбора $expand: {name} не является навигационным свойством")
    return names


def entity(base: OneCBase, etype: EntityType, row: dict, shape: Shape) -> dict:
    """One object as 1C sends it in JSON (without ``odata.metadata``)."""
    if shape.top is None:
        out = {k: v for k, v in row.items() if shape.sections or k not in etype.tabular}
    else:
        out = {k: row[k] for k in shape.top if k in row}
    key = f"{etype.name}(guid'{row['Ref_Key']}')"
    for ref_prop in etype.refs:
        nav = nav_name(ref_prop)
        if nav in shape.expand:
            continue
        if ref_prop in out:
            out[nav + NAV_LINK] = f"{key}/{nav}"
    for nav, inner in shape.expand.items():
        ref_prop, target = _ref_of(etype, nav)
        found = base.data[target].get(row.get(ref_prop) or EMPTY_REF)
        if found is None:
            out[nav + NAV_LINK] = f"{key}/{nav}"
        else:
            out[nav] = entity(base, base.schema[target], found, inner)
    for ts in etype.tabular:
        if ts in out:
            out[ts] = [section_row(etype, ts, line) for line in out[ts]]
    return out


def section_row(etype: EntityType, ts: str, line: dict) -> dict:
    """A tabular section's row, with the navigation links of its references."""
    out = dict(line)
    key = f"{etype.name}_{ts}(Ref_Key=guid'{line['Ref_Key']}', LineNumber={line['LineNumber']})"
    for ref_prop in etype.tabular_refs.get(ts, {}):
        if ref_prop in out:
            out[nav_name(ref_prop) + NAV_LINK] = f"{key}/{nav_name(ref_prop)}"
    return out


def _ref_of(etype: EntityType, nav: str) -> tuple[str, str]:
    for ref_prop, target in etype.refs.items():
        if nav_name(ref_prop) == nav:
            return ref_prop, target
    raise ODataError(404, "6", f"Не найдено навигационное свойство {nav} у {etype.name}")


def navigate(base: OneCBase, etype: EntityType, ref: str, nav: str) -> tuple[EntityType, dict]:
    """``Document_X(guid'…')/Клиент``: the object the reference points to."""
    ref_prop, target = _ref_of(etype, nav)
    row = base.find(etype.name, ref)
    found = base.data[target].get(row.get(ref_prop) or EMPTY_REF)
    if found is None:
        raise ODataError(404, "6", f"Ссылка {nav} у {etype.name}(guid'{ref}') пуста")
    return base.schema[target], found
