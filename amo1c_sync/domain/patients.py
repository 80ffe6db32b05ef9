"""F8, pure: which 1C client a lead's patient is — by the key stored on the amoCRM contact, by
phone and name, by name alone — and the note that says why.

No I/O here: the job looks the candidates up (by key, by phone, by name) and hands them in; this
module only normalises and decides. The rules, in order:

1. the contact carries a 1C client key written by amo1c-sync earlier -> that client, if it still
   exists, is not marked for deletion and the lead's name (when it has one) is that client's: a
   parent's contact used for a child's lead must not book the child on the parent's card;
2. a phone matches and the name matches -> that client;
3. a phone matches but no name does -> a family member (relatives share one phone and must stay
   separate patients): a new client with this name and phone;
4. the name matches and the lead has no (readable) phone -> that client, first by code;
5. nothing matches -> a new client with the name and the phones (with a phone but no name at all,
   named by the phone: a visit on the default client could never be attributed to anyone);
6. no name and no phone -> the default client («Клиент из AmoCRM»); so is a phone without a name
   that several patients share.

A phone that cannot be read is left out with a note, never guessed: a wrong digit would attach the
visit to somebody else's card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Sequence, Union

import phonenumbers

from amo1c_sync.domain.registration import clean_name

# --- phones -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """A phone number that parsed and is valid for its country. Two spellings of one number
    («8 (911) 123-45-67», «+7 911 1234567») give equal Phones; an extension is not part of it."""

    e164: str  # "+79111234567"
    national: str  # "9111234567": the national significant number, without trunk prefix or code
    display: str  # "+7 911 123-45-67"
    dialled: str = ""  # "89111234567": the digits as dialled inside the country (trunk prefix)

    @property
    def digits(self) -> str:
        """The digits of the full international number («79111234567»)."""
        return self.e164.lstrip("+")

    @property
    def spellings(self) -> tuple[str, ...]:
        """The ways a base that keeps a number as digits may hold this one: with the country code,
        as dialled at home, the bare national number, and E.164 with its «+»."""
        return tuple(dict.fromkeys(x for x in (self.digits, self.dialled, self.national, self.e164) if x))


@dataclass(frozen=True)
class BadPhone:
    """A phone value that was left out, and why (Russian, for the note)."""

    raw: str
    reason: str


_EXTENSION = re.compile(r"(?:доб|ext|вн)\.?\s*\d+\s*$|[x#]\s*\d+\s*$", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")


def is_phone_region(region: str) -> bool:
    """Whether ``region`` is a two-letter region the phone library knows (RU, KZ, BY …)."""
    return region in phonenumbers.SUPPORTED_REGIONS


def parse_phone(raw: str, region: str) -> Phone | BadPhone:
    """One phone value as a person typed it -> a Phone, or BadPhone saying why it was left out.

    A number without a country code is read as a number of ``region``. Letters are refused: the
    library would read «ABC» as the digits of a phone keypad, which here is a typo, not a number."""
    text = str(raw or "").strip()
    if not text:
        return BadPhone(text, "пустой номер")
    if _LETTER.search(_EXTENSION.sub("", text)):
        return BadPhone(text, "в номере есть буквы")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return BadPhone(text, "это не номер телефона")
    if not phonenumbers.is_valid_number(number):
        return BadPhone(text, "такого номера не бывает (не хватает или лишние цифры?)")
    number.extension = None
    fmt = phonenumbers.PhoneNumberFormat
    return Phone(e164=phonenumbers.format_number(number, fmt.E164),
                 national=phonenumbers.national_significant_number(number),
                 display=phonenumbers.format_number(number, fmt.INTERNATIONAL),
                 dialled=re.sub(r"\D", "", phonenumbers.format_number(number, fmt.NATIONAL)))


def parse_phones(raws: Iterable[str], region: str) -> tuple[tuple[Phone, ...], tuple[BadPhone, ...]]:
    """Several phone values -> the distinct numbers in their first order, and the ones left out."""
    good: list[Phone] = []
    bad: list[BadPhone] = []
    for raw in raws:
        parsed = parse_phone(raw, region)
        if isinstance(parsed, BadPhone):
            bad.append(parsed)
        elif parsed not in good:
            good.append(parsed)
    return tuple(good), tuple(bad)


# --- names --------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_CYRILLIC = re.compile(r"[а-я]")
# Latin letters that look like Cyrillic ones: a name typed on a mixed layout («Aнна» with a Latin A)
_LOOKALIKES = str.maketrans("aeopcxykmthb", "аеорсхукмтнв")


def name_parts(text: str) -> tuple[str, ...]:
    """A person's name -> its words, compared as a person would: case, ё/е, spaces, dots and
    quotes do not matter; «А.А.» is two initials. A one-letter word is an initial."""
    words = _WORD.findall(str(text or "").casefold().replace("ё", "е"))
    return tuple(w.translate(_LOOKALIKES) if _CYRILLIC.search(w) else w for w in words)


def _compatible(a: str, b: str) -> bool:
    if len(a) == 1 or len(b) == 1:
        return a[0] == b[0]
    return a == b


def _aligned(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Surname first on both sides: the surnames are equal, and so is every further word that both
    have (an initial stands for any word with that first letter). A name with only a surname
    matches only a name with only that surname: «Иванова» could be anyone in the family."""
    if len(a[0]) == 1 or len(b[0]) == 1 or a[0] != b[0]:
        return False
    if (len(a) > 1) != (len(b) > 1):
        return False
    return all(_compatible(x, y) for x, y in zip(a[1:], b[1:], strict=False))  # the words both have


def _surname_first(parts: tuple[str, ...]) -> tuple[str, ...]:
    return parts[-1:] + parts[:-1]


def names_match(a: str, b: str) -> bool:
    """«Иванова А.» ~ «Иванова Анна»; «Иванова А.П.» ~ «Иванова Анна Петровна» ~ «Анна Петровна
    Иванова»; but «Иванова А.А.» is not «Иванова Анна Петровна», nor «Иванов Антон» «Иванова Анна».
    amoCRM contacts are often named given name first, so that order is tried too."""
    x, y = name_parts(a), name_parts(b)
    if not x or not y:
        return False
    return any(_aligned(u, v) for u, v in ((x, y), (_surname_first(x), y), (x, _surname_first(y))))


def same_name(a: str, b: str) -> bool:
    """The names are written alike (after normalisation), not merely compatible."""
    x, y = name_parts(a), name_parts(b)
    return bool(x) and (x == y or _surname_first(x) == y or x == _surname_first(y))


# --- who the patient is -------------------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Patient:
    """What amoCRM says about the lead's patient, normalised."""

    name: str  # "" = no name
    phones: tuple[Phone, ...] = ()
    bad_phones: tuple[BadPhone, ...] = ()
    onec_key: str = ""  # the 1C client's Ref_Key stored on the contact; "" = none
    bad_key: str = ""  # what the contact field held when it was not a 1C key

    @property
    def needs_name_lookup(self) -> bool:
        """Rule 4 looks clients up by name only for a lead without a readable phone."""
        return bool(self.name) and not self.phones


def patient(*, lead_name: str = "", contact_name: str = "", contact_phones: Iterable[str] = (),
            contact_key: str = "", region: str = "RU") -> Patient:
    """The patient from the lead's «ФИО клиента» and its main contact. The lead's field wins: the
    clinic's staff fill it for 1C, while a contact's name is often whatever a web form or a call
    left («Анна», a phone number); a name without a single letter is no name."""
    name = next((clean_name(n) for n in (lead_name, contact_name) if name_parts(n)), "")
    phones, bad = parse_phones(contact_phones, region)
    key = clean_name(contact_key)
    if key and not _GUID.match(key):
        return Patient(name, phones, bad, onec_key="", bad_key=key)
    return Patient(name, phones, bad, onec_key=key.lower())


@dataclass(frozen=True)
class KnownClient:
    """A 1C client as the rules need it; ``phones`` as 1C holds them (any spelling)."""

    ref: str
    code: str
    name: str
    deleted: bool = False
    phones: tuple[str, ...] = ()


class Rule(IntEnum):
    """Which rule chose the client, strongest first (the journal records it)."""

    KEY = 1
    PHONE_AND_NAME = 2
    FAMILY_MEMBER = 3
    NAME_ONLY = 4
    NEW = 5
    DEFAULT = 6


@dataclass(frozen=True)
class UseClient:
    """Use this existing 1C client; ``note`` tells the lead why."""

    rule: Rule
    client: KnownClient
    note: str


@dataclass(frozen=True)
class NewClient:
    """Create this client in 1C: ``name`` and ``phones`` for its contact information."""

    rule: Rule
    name: str
    phones: tuple[Phone, ...]
    note: str


@dataclass(frozen=True)
class DefaultClient:
    """Nothing identifies the patient: use the default client («Клиент из AmoCRM»)."""

    rule: Rule
    note: str


Choice = Union[UseClient, NewClient, DefaultClient]


def choose_client(p: Patient, *, by_key: KnownClient | None = None, by_phone: Sequence[KnownClient] = (),
                  by_name: Sequence[KnownClient] = (), default_name: str = "Клиент из AmoCRM",
                  key_label: str = "Клиент 1С", region: str = "RU") -> Choice:
    """The client for the lead, by the six rules of this module, with the note for the lead.

    ``by_key``: the client whose ref is ``p.onec_key`` (None when not found); ``by_phone``: clients
    whose contact information may hold one of ``p.phones`` (rechecked here, so a loose 1C query is
    fine); ``by_name``: clients named like ``p.name`` (looked up only when ``p.needs_name_lookup``).
    Clients marked for deletion are never chosen."""
    remarks = [_bad_phone_remark(b) for b in p.bad_phones]
    if p.bad_key:
        remarks.append(f"В поле контакта «{key_label}» не ключ клиента 1С: «{p.bad_key}» — не учтено.")
    elif p.onec_key:
        live = by_key is not None and not by_key.deleted and by_key.ref.lower() == p.onec_key
        if live and by_key is not None and (not p.name or names_match(p.name, by_key.name)):
            return UseClient(Rule.KEY, by_key, _note(
                f"Клиент найден по ключу 1С из контакта: {_who(by_key)}.", remarks))
        if live and by_key is not None:
            remarks.append(f"Контакт сделки ведёт к клиенту 1С {_who(by_key)}, а в сделке пациент «{p.name}» "
                           "(другой член семьи?) — клиент подобран по телефону и имени.")
        else:
            remarks.append(f"Клиента 1С из поля контакта «{key_label}» ({p.onec_key}) нет в 1С или он "
                           "помечен на удаление — клиент подобран заново.")
    holders = _phone_holders(p.phones, by_phone, region)
    if holders:
        return _by_phone(p, holders, remarks, default_name)
    if not p.name and p.phones:
        phone = p.phones[0]
        return NewClient(Rule.NEW, phone.display, p.phones, _note(
            f"Клиента с телефоном {_phone_list(p.phones)} в 1С нет, а имени нет ни в сделке, ни в "
            f"контакте — создан новый клиент «{phone.display}» с этим телефоном. Впишите ФИО пациента "
            "в 1С или в «ФИО клиента».", remarks))
    if not p.name:
        return _default(p, remarks, default_name)
    if not p.phones:
        named = sorted((c for c in by_name if not c.deleted and (
            c.name.casefold() == p.name.casefold() or names_match(p.name, c.name))), key=_by_code)
        if named:
            return UseClient(Rule.NAME_ONLY, named[0], _note(_name_only_note(p.name, named), remarks))
    with_phones = f" с телефоном {_phone_list(p.phones)}" if p.phones else ""
    return NewClient(Rule.NEW, p.name, p.phones, _note(
        f"Клиент «{p.name}» не найден в 1С — создан новый клиент{with_phones}.", remarks))


def _by_code(c: KnownClient) -> tuple[str, str]:
    return (c.code, c.ref)


def _phone_holders(phones: Sequence[Phone], clients: Sequence[KnownClient],
                   region: str) -> list[tuple[Phone, KnownClient]]:
    """(the patient's phone, a non-deleted client that has it), first by code."""
    found: list[tuple[Phone, KnownClient]] = []
    for c in sorted(clients, key=_by_code):
        if c.deleted:
            continue
        theirs, _ = parse_phones(c.phones, region)
        shared = next((ph for ph in phones if ph in theirs), None)
        if shared is not None and all(c.ref != known.ref for _, known in found):
            found.append((shared, c))
    return found


def _by_phone(p: Patient, holders: list[tuple[Phone, KnownClient]], remarks: list[str],
              default_name: str) -> Choice:
    """Rules 2 and 3: a phone is known to 1C. The same name wins over a merely compatible one
    («Иванова Анна» over «Иванова А.» for «Иванова Анна»)."""
    if not p.name:
        if len(holders) == 1:
            phone, c = holders[0]
            return UseClient(Rule.PHONE_AND_NAME, c, _note(
                f"Клиент найден по телефону {phone.display}: {_who(c)}; имени в сделке и в контакте "
                "нет.", remarks))
        return _default(p, remarks, default_name, holders=holders)
    matching = [h for h in holders if names_match(p.name, h[1].name)]
    if matching:
        exact = [h for h in matching if same_name(p.name, h[1].name)]
        phone, c = (exact or matching)[0]
        others = [o for _, o in matching if o is not c]
        also = f" Подходят также: {_names(others)}." if others else ""
        return UseClient(Rule.PHONE_AND_NAME, c, _note(
            f"Клиент найден по телефону {phone.display}: {_who(c)}.{also}", remarks))
    phone = holders[0][0]
    return NewClient(Rule.FAMILY_MEMBER, p.name, p.phones, _note(
        f"Клиент «{p.name}» не найден в 1С, но найден другой пациент с этим телефоном "
        f"({phone.display}): {_names([c for _, c in holders])}, создан новый клиент «{p.name}».",
        remarks))


def _default(p: Patient, remarks: list[str], default_name: str, *,
             holders: Sequence[tuple[Phone, KnownClient]] = ()) -> DefaultClient:
    """No name and no phone; or no name and a phone that several patients (a family) share, where
    picking one would be a guess."""
    if holders:
        head = (f"По телефону {holders[0][0].display} в 1С найдено клиентов: {len(holders)} "
                f"({_names([c for _, c in holders])}), а имени нет ни в сделке, ни в контакте")
        tail = " Заполните «ФИО клиента», чтобы запись была на пациента."
    elif not remarks:
        return DefaultClient(Rule.DEFAULT, "")  # the seed's case: its note says nothing about the client
    else:
        head, tail = "Имени и телефона клиента нет ни в сделке, ни в контакте", ""
    return DefaultClient(Rule.DEFAULT, _note(f"{head} — выбран клиент «{default_name}».{tail}", remarks))


def _name_only_note(name: str, named: Sequence[KnownClient]) -> str:
    if len(named) == 1:
        return ""  # as before phones were known: one client of that name needs no word
    return (f"В 1С найдено клиентов «{name}»: {len(named)}; выбран первый по коду ({named[0].code}); "
            "телефона в контакте нет.")


def _bad_phone_remark(b: BadPhone) -> str:
    return f"Телефон «{b.raw}» не учтён: {b.reason}."


def _who(c: KnownClient) -> str:
    return f"«{c.name}» (код {c.code})" if c.code else f"«{c.name}»"


def _names(clients: Sequence[KnownClient], limit: int = 3) -> str:
    shown = ", ".join(_who(c) for c in clients[:limit])
    rest = len(clients) - limit
    return shown + (f" и ещё {rest}" if rest > 0 else "")


def _phone_list(phones: Sequence[Phone]) -> str:
    return ", ".join(ph.display for ph in phones)


def _note(head: str, remarks: Sequence[str]) -> str:
    return "\n".join(x for x in (head, *remarks) if x)
