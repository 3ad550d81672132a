"""The stored spelling of every name: the on-disk format of existing deployments, pinned."""

from __future__ import annotations

import pytest

from retention_tracker.state.schema import (
    DAILY_FAMILY,
    DUE_NEXT,
    DUE_RISK,
    Keyspace,
    due_member,
    family_name,
    field_name,
    key_kind,
    parse_daily,
    parse_due_member,
    parse_family,
    parse_stat,
    render_cell,
    render_stat,
)
from retention_tracker.streams.counters import APP_MEASURES, DAILY_MEASURES, Measure, Stat

#: Each measure's stored (family, field) for a sample cell: these strings never change.
STORED = {
    (Measure.DAU, 19700): ("daily", "dau:19700"),
    (Measure.WAU_EDGE, 19700): ("daily", "wae:19700"),
    (Measure.MAU_EDGE, 19700): ("daily", "mae:19700"),
    (Measure.INSTALLS, 19700): ("daily", "ins:19700"),
    (Measure.NEW_USERS, 19700): ("daily", "new:19700"),
    (Measure.PAYERS, 19700): ("daily", "pay:19700"),
    (Measure.REVENUE, 19700, "USD"): ("daily", "rev:19700:USD"),
    (Measure.COHORT_SIZE, "day", 19700): ("coh:day", "19700"),
    (Measure.CLASSIC, "week", 2800, 3): ("cls:week", "2800:3"),
    (Measure.ACTIVE, "month", 648): ("act:month", "648"),
    (Measure.LOST, "day", 19701): ("lost:day", "19701"),
    (Measure.LAST_ACTIVE, "day", 19700, 0): ("last:day", "19700:0"),
    (Measure.COST, "day", 19700): ("cost:day", "19700"),
    (Measure.LTV, "day", 19700, 2, "EUR"): ("ltv:day", "19700:2:EUR"),
    (Measure.PERIOD_REVENUE, "week", 2800, "USD"): ("prev:week", "2800:USD"),
    (Measure.FIRST_PAYMENT, "day", 19700, 1): ("fpay:day", "19700:1"),
    (Measure.PERIOD_PAYERS, "day", 19700): ("ppay:day", "19700"),
    (Measure.REPEAT_PAYERS, "day", 19700): ("prep:day", "19700"),
    (Measure.REPEAT_BUYERS, "month", 648, 2): ("rpc:month", "648:2"),
    (Measure.ACTIVE, "year", 2024): ("act:year", "2024"),
    (Measure.NPS, "week", 2800, 2, 1, "nps"): ("nps:week", "2800:2:1:nps"),
    (Measure.NPS_COHORT, "year", 2024, -1, 0, "csat"): ("npsc:year", "2024:-1:0:csat"),
    (Measure.RETURNED, "week", 2800, 1, "purchase"): ("ret:week", "2800:1:purchase"),
    (Measure.LAST_RETURN, "day", 19700, 3, "bet"): ("lret:day", "19700:3:bet"),
    (Measure.WINDOW24, "day", 19700, 2): ("w24:day", "19700:2"),
    (Measure.LAST_WINDOW24, "day", 19700, 0): ("lw24:day", "19700:0"),
    (Measure.LAPSE, 4, 12, 19700): ("lapse", "4:12:19700"),
}

STATS = {
    (Stat.ACCEPTED, "a", "session"): "acc:a:session",
    (Stat.REJECTED, "too_old"): "rej:too_old",
    (Stat.DUPLICATE, "a"): "dup:a",
    (Stat.FORWARDED, "a", "no_key"): "fwd:a:no_key",
    (Stat.ROUTE, 19700, "home"): "route:19700:home",
    (Stat.INACTIVE, "a", 2): "inactive:a:2",
    (Stat.EXPIRED, "a", 2): "expired:a:2",
    (Stat.SENT, "a", 2, "free", "quick"): "sent:a:2:free:quick",
    (Stat.FALSE_ALARM, "a", 2, "vip", "late"): "false:a:2:vip:late",
    (Stat.REACTIVATED, "a", 7, "payer", "late"): "react:a:7:payer:late",
    (Stat.BACK_WITHIN_7D, "a", 7, "payer", "quick"): "back7:a:7:payer:quick",
    (Stat.AT_RISK_SENT, "a"): "risk_sent:a",
    (Stat.AT_RISK_EXPIRED, "a"): "risk_expired:a",
    (Stat.AT_RISK_RETURNED, "a"): "risk_back:a",
    (Stat.AT_RISK_BACK_7D, "a"): "risk_back7:a",
    (Stat.AT_RISK_FALSE_ALARM, "a"): "risk_false:a",
}


def test_every_measure_has_its_pinned_spelling() -> None:
    assert {cell[0] for cell in STORED} == set(Measure)
    for cell, stored in STORED.items():
        assert render_cell(cell) == stored, cell


def test_stored_names_parse_back_to_the_cells() -> None:
    daily = {field: 1 for cell, (family, field) in STORED.items() if family == DAILY_FAMILY}
    assert set(parse_daily(daily)) == {cell for cell in STORED if cell[0] in DAILY_MEASURES}
    for cell, (family, field) in STORED.items():
        if cell[0] in DAILY_MEASURES:
            continue
        app_wide = cell[0] in APP_MEASURES  # no granularity in the cell
        coordinates = cell[1:] if app_wide else cell[2:]
        assert family_name(cell[0], None if app_wide else cell[1]) == family
        assert field_name(cell[0], *coordinates) == field
        assert parse_family(cell[0], {field: 5}) == {coordinates: 5}


def test_daily_fields_of_no_known_measure_are_left_out() -> None:
    assert parse_daily({"dau:3": 2, "zzz:3": 9}) == {(Measure.DAU, 3): 2}


def test_every_stat_has_its_pinned_spelling_and_parses_back() -> None:
    assert {key[0] for key in STATS} == set(Stat)
    for key, stored in STATS.items():
        assert render_stat(key) == stored
        assert parse_stat(stored) == key


@pytest.mark.parametrize("name", ["unknown:x", "route:notaday:home", "sent:a:notdays:free"])
def test_a_field_no_reader_can_use_parses_to_none(name: str) -> None:
    assert parse_stat(name) is None


def test_win_back_records_from_before_churn_types_keep_their_labels() -> None:
    assert parse_stat("sent:a:2:free") == (Stat.SENT, "a", 2, "free")


def test_key_names_carry_the_partition_hash_tag() -> None:
    keys = Keyspace("rt")
    assert keys.meta(3) == "rt:{3}:meta"
    assert keys.stats(3) == "rt:{3}:stats"
    assert keys.users(3, "app", 7) == "rt:{3}:u:app:7"
    assert keys.aggregate(3, "app", "platform=ios", "coh:day") == (
        "rt:{3}:a:app:platform=ios:coh:day")
    assert keys.dedup(3, 100, 2) == "rt:{3}:dd:100:2"
    assert keys.due_bucket(3, DUE_NEXT, 9) == "rt:{3}:due:next:9"
    assert keys.due_index(3, DUE_RISK) == "rt:{3}:due:risk:index"
    assert keys.due(3) == "rt:{3}:due:next"  # before the due buckets
    assert keys.due_per_threshold(3, 2) == "rt:{3}:due:2"  # before issue 31
    assert (keys.apps(), keys.shards(), keys.topology()) == ("rt:apps", "rt:shards", "rt:topology")
    assert key_kind(keys.users(3, "app", 7), "rt") == "user_records"
    assert key_kind(keys.due_bucket(3, DUE_NEXT, 9), "rt") == "due"
    assert key_kind(keys.due_index(3, DUE_NEXT), "rt") == "due"


def test_due_members_round_trip() -> None:
    assert parse_due_member(due_member(("app", "u:1")).encode()) == ("app", "u:1")
