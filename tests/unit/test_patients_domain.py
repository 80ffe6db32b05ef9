"""F8 rules, pure: phone and name normalisation and the six rules that pick a lead's 1C client."""

from __future__ import annotations

import pytest

from amo1c_sync.domain.patients import (
    BadPhone,
    DefaultClient,
    KnownClient,
    NewClient,
    Phone,
    Rule,
    UseClient,
    choose_client,
    name_parts,
    names_match,
    parse_phone,
    parse_phones,
    patient,
)
from amo1c_sync.domain.registration import finish_note

SEED_PHONE = "+7 (911) 123-45-67"
KEY = "6f1c3a52-0d1e-4f0a-9b7e-1a2b3c4d5e6f"


def client(name: str, code: str, *phones: str, ref: str = "", deleted: bool = False) -> KnownClient:
    return KnownClient(ref=ref or f"00000000-0000-0000-0000-{int(code):012d}", code=code, name=name,
                       deleted=deleted, phones=tuple(phones))


# --- phones -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "8 (911) 123-45-67", "+7 911 1234567", "79111234567", "89111234567", "9111234567",
    SEED_PHONE, " 8-911-123-45-67 ", "+7 911 123-45-67 доб. 12", "8 911 123 45 67 ext 3",
])
def test_given_spellings_of_one_russian_number_when_parsed_then_one_phone(raw):
    phone = parse_phone(raw, "RU")
    assert phone == Phone(e164="+79111234567", national="9111234567", display="+7 911 123-45-67",
                          dialled="89111234567")
    assert phone.digits == "79111234567"


def test_given_a_number_when_spelled_as_digits_then_every_way_a_base_may_keep_it():
    assert parse_phone("8 (911) 123-45-67", "RU").spellings == (
        "79111234567", "89111234567", "9111234567", "+79111234567")
    # a country without a trunk prefix dials the national number as it is
    assert parse_phone("+39 06 1234 5678", "RU").spellings == ("390612345678", "0612345678", "+390612345678")


@pytest.mark.parametrize(("raw", "reason"), [
    ("8 911 ABC-45-67", "в номере есть буквы"),  # the library alone would read ABC as 222
    ("8 911 12З-45-67", "в номере есть буквы"),  # a Cyrillic З for a 3
    ("позвонить маме", "в номере есть буквы"),
    ("123", "такого номера не бывает (не хватает или лишние цифры?)"),
    ("8 (911) 123-45-6", "такого номера не бывает (не хватает или лишние цифры?)"),
    ("+7 (911) 123-45-67-89", "такого номера не бывает (не хватает или лишние цифры?)"),
    ("---", "это не номер телефона"),
    ("   ", "пустой номер"),
])
def test_given_an_unreadable_phone_when_parsed_then_reported_not_guessed(raw, reason):
    assert parse_phone(raw, "RU") == BadPhone(raw.strip(), reason)


def test_given_a_number_without_code_when_region_differs_then_read_in_that_region():
    # 8 029 … is a Belarusian mobile written the domestic way; +7 … keeps its own country
    assert parse_phone("8 029 123-45-67", "BY").e164 == "+375291234567"
    assert parse_phone("+7 911 123-45-67", "BY").e164 == "+79111234567"


def test_given_repeats_and_bad_values_when_parsing_several_then_distinct_in_first_order_and_bad_listed():
    good, bad = parse_phones(["8 (911) 123-45-67", "+7 495 123-45-67", "79111234567", "abc"], "RU")
    assert [p.e164 for p in good] == ["+79111234567", "+74951234567"]
    assert bad == (BadPhone("abc", "в номере есть буквы"),)


# --- names --------------------------------------------------------------------------------------

def test_given_case_yo_dots_and_spaces_when_split_then_same_words():
    assert name_parts("  ИВАНОВА   Алёна  ") == ("иванова", "алена")
    assert name_parts("Иванова А.А.") == ("иванова", "а", "а")
    assert name_parts("Иванова А. А.") == ("иванова", "а", "а")
    assert name_parts('Иванова "Анна"') == ("иванова", "анна")
    assert name_parts("Петрова-Водкина Анна") == ("петрова-водкина", "анна")
    assert name_parts("O'Brien Шон") == ("o'brien", "шон")
    assert name_parts("Aнна") == ("анна",)  # a Latin A typed in a Cyrillic name
    assert name_parts("+7 911 123-45-67") == ()


@pytest.mark.parametrize(("a", "b"), [
    ("Иванова А.", "Иванова Анна"),
    ("Иванова Анна", "иванова  анна"),
    ("Иванова Алёна", "Иванова Алена"),
    ("Иванова А.П.", "Иванова Анна Петровна"),
    ("Иванова Анна", "Иванова Анна Петровна"),
    ("Анна Иванова", "Иванова Анна"),  # amoCRM contacts are often named given name first
    ("А.П. Иванова", "Иванова Анна Петровна"),
    ("Иванова", "Иванова"),
    ("Aнна Иванова", "Иванова Анна"),
])
def test_given_two_spellings_of_one_person_when_compared_then_match(a, b):
    assert names_match(a, b)
    assert names_match(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("Иванова А.А.", "Иванова Анна Петровна"),  # the patronymic's initial differs
    ("Иванова Анна", "Иванова Мария"),
    ("Иванова Анна", "Иванов Антон"),
    ("Иванова", "Иванова Анна"),  # a surname alone could be anyone in the family
    ("Иванова А.", "Петрова Анна"),
    ("А. Иванова", "Б. Иванова"),
    ("", "Иванова Анна"),
    ("+7 911 123-45-67", "+7 911 123-45-67"),
])
def test_given_two_different_people_when_compared_then_no_match(a, b):
    assert not names_match(a, b)
    assert not names_match(b, a)


# --- the patient --------------------------------------------------------------------------------

def test_given_lead_name_and_contact_name_when_building_patient_then_lead_field_wins():
    p = patient(lead_name=" Иванова  Анна ", contact_name="Аня", contact_phones=[SEED_PHONE])
    assert p.name == "Иванова Анна"
    assert [ph.e164 for ph in p.phones] == ["+79111234567"]


def test_given_no_lead_name_when_contact_is_named_by_a_phone_then_no_name():
    assert patient(contact_name="Иванова Анна").name == "Иванова Анна"
    assert patient(contact_name="+7 911 123-45-67").name == ""


def test_given_a_contact_key_that_is_not_a_guid_when_building_patient_then_kept_aside():
    p = patient(lead_name="Иванова Анна", contact_key="Иванова")
    assert p.onec_key == ""
    assert p.bad_key == "Иванова"
    assert patient(contact_key=KEY.upper()).onec_key == KEY


def test_given_phone_or_no_name_when_asking_for_name_lookup_then_only_named_lead_without_phone():
    assert patient(lead_name="Иванова Анна").needs_name_lookup
    assert not patient(lead_name="Иванова Анна", contact_phones=[SEED_PHONE]).needs_name_lookup
    assert not patient(contact_phones=["abc"]).needs_name_lookup
    assert patient(lead_name="Иванова Анна", contact_phones=["abc"]).needs_name_lookup


# --- the six rules ------------------------------------------------------------------------------

ANNA = client("Иванова Анна Петровна", "000000012", "8 (911) 123-45-67")
MARIA = client("Иванова Мария", "000000013", "+79111234567")
ANNA_NO_PHONE = client("Иванова Анна", "000000020")


def choose(**kw):
    lookups = {k: kw.pop(k) for k in ("by_key", "by_phone", "by_name") if k in kw}
    return choose_client(patient(**kw), **lookups)


def test_rule_1_given_contact_key_of_an_existing_client_when_choosing_then_that_client():
    keyed = client("Иванова Анна Петровна", "000000012", ref=KEY)
    got = choose(lead_name="Иванова А.", contact_phones=["+7 495 000-00-00"], contact_key=KEY,
                 by_key=keyed, by_phone=[MARIA])
    assert got == UseClient(Rule.KEY, keyed,
                            "Клиент найден по ключу 1С из контакта: «Иванова Анна Петровна» (код 000000012).")
    assert choose(contact_key=KEY, by_key=keyed).rule is Rule.KEY  # no name at all: the key decides


def test_rule_1_given_a_keyed_contact_and_another_name_on_the_lead_when_choosing_then_not_the_keyed_client():
    # a mother's contact used for her son's lead: the son is not booked on her card
    keyed = client("Иванова Мария", "000000013", "+79111234567", ref=KEY)
    got = choose(lead_name="Иванов Пётр", contact_phones=[SEED_PHONE], contact_key=KEY, by_key=keyed,
                 by_phone=[keyed])
    assert got.rule is Rule.FAMILY_MEMBER
    assert got.name == "Иванов Пётр"
    assert got.note.endswith("Контакт сделки ведёт к клиенту 1С «Иванова Мария» (код 000000013), а в сделке "
                             "пациент «Иванов Пётр» (другой член семьи?) — клиент подобран по телефону и имени.")


@pytest.mark.parametrize("by_key", [None, client("Иванова Анна Петровна", "12", ref=KEY, deleted=True)])
def test_rule_1_given_key_of_a_gone_or_deleted_client_when_choosing_then_chosen_anew_with_a_remark(by_key):
    got = choose(lead_name="Иванова Анна", contact_phones=[SEED_PHONE], contact_key=KEY, by_key=by_key,
                 by_phone=[ANNA])
    assert got.rule is Rule.PHONE_AND_NAME
    assert got.client == ANNA
    assert got.note.endswith(f"Клиента 1С из поля контакта «Клиент 1С» ({KEY}) нет в 1С или он помечен "
                             "на удаление — клиент подобран заново.")


def test_rule_2_given_phone_and_compatible_name_when_choosing_then_that_client():
    got = choose(lead_name="Иванова А.", contact_phones=["79111234567"], by_phone=[MARIA, ANNA])
    assert got == UseClient(Rule.PHONE_AND_NAME, ANNA, "Клиент найден по телефону +7 911 123-45-67: "
                                                       "«Иванова Анна Петровна» (код 000000012).")


def test_rule_2_given_two_compatible_names_on_one_phone_when_choosing_then_same_name_first_and_others_said():
    initial = client("Иванова А.", "000000004", SEED_PHONE)
    alla = client("Иванова Алла", "000000005", SEED_PHONE)
    anna = client("Иванова Анна", "000000009", SEED_PHONE)
    got = choose(lead_name="Иванова Анна", contact_phones=[SEED_PHONE], by_phone=[initial, alla, anna])
    assert got.client == anna  # «Иванова А.» has the lower code, but «Иванова Анна» is the name written
    assert got.note.endswith("Подходят также: «Иванова А.» (код 000000004).")
    got = choose(lead_name="Иванова А.", contact_phones=[SEED_PHONE], by_phone=[anna, alla])
    assert got.client == alla
    assert got.note.endswith("Подходят также: «Иванова Анна» (код 000000009).")


def test_rule_3_given_phone_of_another_family_member_when_choosing_then_new_client_with_that_phone():
    got = choose(lead_name="Иванова Анна", contact_phones=["8 (911) 123-45-67"], by_phone=[MARIA])
    assert isinstance(got, NewClient)
    assert got.rule is Rule.FAMILY_MEMBER
    assert got.name == "Иванова Анна"
    assert [p.e164 for p in got.phones] == ["+79111234567"]
    assert got.note == ("Клиент «Иванова Анна» не найден в 1С, но найден другой пациент с этим телефоном "
                        "(+7 911 123-45-67): «Иванова Мария» (код 000000013), создан новый клиент "
                        "«Иванова Анна».")


def test_rule_3_given_initials_that_differ_when_choosing_then_a_family_member_not_a_merge():
    got = choose(lead_name="Иванова А.А.", contact_phones=[SEED_PHONE], by_phone=[ANNA])
    assert got.rule is Rule.FAMILY_MEMBER


def test_rule_4_given_name_without_phone_when_several_clients_then_first_by_code_said_in_note():
    second = client("Иванова Анна", "000000031")
    got = choose(lead_name="Иванова Анна", by_name=[second, ANNA_NO_PHONE])
    assert got == UseClient(Rule.NAME_ONLY, ANNA_NO_PHONE,
                            "В 1С найдено клиентов «Иванова Анна»: 2; выбран первый по коду (000000020); "
                            "телефона в контакте нет.")
    got = choose(lead_name="Иванова Анна", by_name=[second])
    assert got.rule is Rule.NAME_ONLY
    assert got.note == ""


def test_rule_4_given_the_lead_has_a_phone_when_only_a_name_matches_then_new_client_not_name_match():
    got = choose(lead_name="Иванова Анна", contact_phones=[SEED_PHONE], by_name=[ANNA_NO_PHONE])
    assert got.rule is Rule.NEW


def test_rule_5_given_nothing_matches_when_choosing_then_new_client_with_name_and_phones():
    got = choose(lead_name="Иванова Анна", contact_phones=[SEED_PHONE, "+7 495 123-45-67"],
                 by_phone=[client("Петров Пётр", "7", "+7 911 000-00-00")])
    assert got == NewClient(Rule.NEW, "Иванова Анна", got.phones,
                            "Клиент «Иванова Анна» не найден в 1С — создан новый клиент с телефоном "
                            "+7 911 123-45-67, +7 495 123-45-67.")
    assert choose(lead_name="Иванова Анна").note == "Клиент «Иванова Анна» не найден в 1С — создан новый клиент."


def test_rule_6_given_no_name_and_no_phone_when_choosing_then_default_client():
    # the seed's lead: nothing to say about the client, the note stays «Создан документ Заявка № 219»
    assert choose_client(patient(), default_name="Клиент из AmoCRM") == DefaultClient(Rule.DEFAULT, "")
    got = choose_client(patient(contact_phones=["нет"]), default_name="Клиент из AmoCRM")
    assert got == DefaultClient(Rule.DEFAULT, "Имени и телефона клиента нет ни в сделке, ни в контакте — "
                                              "выбран клиент «Клиент из AmoCRM».\n"
                                              "Телефон «нет» не учтён: в номере есть буквы.")


# --- no name, but a phone -----------------------------------------------------------------------

def test_given_no_name_and_a_phone_of_one_client_when_choosing_then_that_client():
    got = choose(contact_phones=[SEED_PHONE], by_phone=[ANNA])
    assert got.rule is Rule.PHONE_AND_NAME
    assert got.client == ANNA


def test_given_no_name_and_a_phone_of_a_family_when_choosing_then_default_client_and_both_named():
    got = choose(contact_phones=[SEED_PHONE], by_phone=[ANNA, MARIA])
    assert isinstance(got, DefaultClient)
    assert got.note == ("По телефону +7 911 123-45-67 в 1С найдено клиентов: 2 («Иванова Анна Петровна» "
                        "(код 000000012), «Иванова Мария» (код 000000013)), а имени нет ни в сделке, ни "
                        "в контакте — выбран клиент «Клиент из AmoCRM». Заполните «ФИО клиента», чтобы "
                        "запись была на пациента.")


def test_given_no_name_and_an_unknown_phone_when_choosing_then_new_client_named_by_the_phone():
    got = choose(contact_name="+7 (911) 123-45-67", contact_phones=[SEED_PHONE])
    assert isinstance(got, NewClient)
    assert got.rule is Rule.NEW
    assert got.name == "+7 911 123-45-67"
    assert [p.e164 for p in got.phones] == ["+79111234567"]
    assert got.note == ("Клиента с телефоном +7 911 123-45-67 в 1С нет, а имени нет ни в сделке, ни в "
                        "контакте — создан новый клиент «+7 911 123-45-67» с этим телефоном. Впишите ФИО "
                        "пациента в 1С или в «ФИО клиента».")


# --- bad input ----------------------------------------------------------------------------------

def test_given_a_phone_with_letters_when_choosing_then_ignored_with_a_note_and_name_rules_apply():
    got = choose(lead_name="Иванова Анна", contact_phones=["8 911 ABC-45-67"], by_name=[ANNA_NO_PHONE])
    assert got.rule is Rule.NAME_ONLY
    assert got.note == "Телефон «8 911 ABC-45-67» не учтён: в номере есть буквы."


def test_given_an_empty_contact_when_choosing_then_the_lead_name_decides():
    assert choose(lead_name="Иванова Анна", contact_name="", contact_phones=[]).rule is Rule.NEW
    assert choose(contact_name="", contact_phones=[]).rule is Rule.DEFAULT


def test_given_a_contact_with_five_phones_when_one_is_known_then_found_by_it():
    phones = ["+7 495 000-00-01", "+7 495 000-00-02", "8 (911) 123-45-67", "+7 495 000-00-04", "нет"]
    got = choose(lead_name="Иванова Анна", contact_phones=phones, by_phone=[ANNA])
    assert got.rule is Rule.PHONE_AND_NAME
    assert got.client == ANNA
    assert got.note.endswith("Телефон «нет» не учтён: в номере есть буквы.")


def test_given_a_client_marked_for_deletion_with_the_phone_when_choosing_then_skipped():
    gone = client("Иванова Анна", "000000001", SEED_PHONE, deleted=True)
    got = choose(lead_name="Иванова Анна", contact_phones=[SEED_PHONE], by_phone=[gone])
    assert got.rule is Rule.NEW
    got = choose(lead_name="Иванова Анна", by_name=[gone])
    assert got.rule is Rule.NEW


def test_given_a_loose_phone_lookup_when_the_client_lacks_the_number_then_not_taken_as_phone_match():
    # a 1C query on the last digits may return a number that only ends alike
    other = client("Иванова Анна", "000000002", "+7 495 123-45-67")
    assert choose(lead_name="Иванова Анна", contact_phones=["+7 911 123-45-67"], by_phone=[other]).rule is Rule.NEW


def test_given_a_key_field_holding_text_when_choosing_then_remark_and_rules_go_on():
    got = choose(lead_name="Иванова Анна", contact_key="см. карту", by_name=[ANNA_NO_PHONE])
    assert got.rule is Rule.NAME_ONLY
    assert got.note.endswith("В поле контакта «Клиент 1С» не ключ клиента 1С: «см. карту» — не учтено.")


def test_given_a_name_with_quotes_and_a_dot_when_noting_then_name_kept_as_is():
    got = choose(lead_name='Иванова "Анна" А.')
    assert got.name == 'Иванова "Анна" А.'
    assert finish_note(got.note) == "Клиент «Иванова \"Анна\" А.» не найден в 1С — создан новый клиент."
