"""The batch reference: METRICS.md sections 1-6 computed the plain way, from a list of events.

The streaming worker keeps incremental state (per-user bitmaps, counters, late-event
corrections) and it is easy to get subtly wrong. This module is what that state must equal:
it takes the whole set of events at once, deduplicates them, and recomputes every figure
from scratch with sets and loops, straight from the definitions in the contract. Tests feed
the same events to both and compare.

It is deliberately independent of the implementation: it imports nothing from the project
except the `Event` type, reads §1's JSON with its own reader (`read_message`,
`read_event`), does its own calendar arithmetic with the standard library
(`zoneinfo`, `datetime`), and favours being obviously right over being fast.

Choices where the contract leaves room (kept in one place so they are easy to challenge):

- Deduplication is global: the first occurrence of an (app, event_id) in iteration order
  wins, whatever the distance in time (the streaming dedup window is not modelled).
- Every deduplicated event counts, including events later than `now_ms`; `now_ms` is only
  used for the `complete` flags.
- A triangle lists only cohorts that have at least one user (an empty period has no rate).
- The start of a local day is its first instant: local midnight, or the moment the clocks
  jump when a DST change skips midnight.
- Money is exact: every `amount` and `cost` is read as `Decimal(str(x))` and summed in
  `Decimal`. Money figures (sums, and money divided by a number of users or by a cost) are
  computed in `Decimal` and returned as `float(round(value, 4))` (Decimal's default rounding,
  half to even). Ratios of counts are `round(a / b, 4)` of floats, as in the triangles.
- A purchase's currency is its `currency`, else `default_currency`; there is no conversion.
  A purchase without an amount (validation never lets one through) counts as 0.
- `cost` counts only on install events, on every install of the user (reinstalls included),
  whatever its day, and is taken to be in the app's currency.
- User attributes (platform, country, campaign) come from the user's earliest event that
  carries the attribute; at equal times the lexicographically smallest value wins.
- The value segment is lifetime (all the user's deduplicated events, including those after
  `now_ms`): "vip" when the revenue in `default_currency` is >= `vip_revenue` or the number of
  purchase events (any currency) is >= `vip_purchases`, else "payer" with at least one
  purchase, else "free".
- `where` selects users (all given attributes equal); every figure, including DAU, cohort
  sizes, the last period with data and the row offsets, is then computed from the events of
  those users only.
- A `survey` event (§8) is an answer, nothing else: it makes no one active, sets no
  first_seen, last activity or attribute. A user known only by answers has no cohort; its
  value segment is "free" (no purchase) and it has no attribute, so it is in `where=None`
  and `{"value": "free"}` only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from retention_tracker.bench.lapse_reference import p_alive  # §9: the papers' closed forms
from retention_tracker.streams.events import Event

GRANULARITIES = ("day", "week", "month")
KINDS = ("classic", "rolling")
MONEY_KINDS = ("ltv", "payer_conversion", "roas")
KPI_PERIODS = ("week", "month", "year")
PERIODS = (*GRANULARITIES, "year")  # every period the calendar functions know
ATTRIBUTES = ("platform", "country", "campaign")
SEGMENT_KEYS = (*ATTRIBUTES, "value")
VALUE_SEGMENTS = ("vip", "payer", "free")
DEFAULT_CURRENCY = "USD"
DEFAULT_VIP_REVENUE = Decimal("100")
DEFAULT_VIP_PURCHASES = 10

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
DAY_MS = 24 * 3600 * 1000  # a 24-hour window, in ms

User = tuple[str, str]  # (app, user_id)


# --------------------------------------------------------------------------------------
# Events


def dedup(events: Iterable[Event]) -> list[Event]:
    """Keep the first occurrence of each (app, event_id), in the original order."""
    seen: set[tuple[str, str]] = set()
    kept: list[Event] = []
    for event in events:
        key = (event.app, event.event_id)
        if key in seen:
            continue
        seen.add(key)
        kept.append(event)
    return kept


def app_events(events: Iterable[Event], app: str) -> list[Event]:
    """The deduplicated events of `app`, in the original order."""
    return [event for event in dedup(events) if event.app == app]


# --------------------------------------------------------------------------------------
# Section 1: reading events (the reference's own reader, for tests that start from JSON)

EVENT_TYPES = ("install", "session", "purchase", "survey")  # + the ACTIVITY_EVENTS given
SURVEY = "survey"
SURVEY_NAME_CHARS = _APP_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_MONEY = 1_000_000_000  # docs/operations.md "Security": money at most 1e9 per event
FUTURE_MS = 24 * 3_600_000


def _text(obj: dict, name: str, max_len: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise ValueError(name)
    return value


def _amount(obj: dict, name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(name)
    if value != value or value in (float("inf"), float("-inf")) or not 0 <= value <= MAX_MONEY:
        raise ValueError(name)
    return value


def _ts_ms(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("ts")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError("ts")
    moment = datetime.fromisoformat(value)  # ValueError if it is not ISO-8601
    if moment.utcoffset() is None:
        raise ValueError("ts without an offset")
    return (moment - _EPOCH) // _ONE_MS


def read_event(obj: object, now_ms: int, default_app: str = "default",
               activity_types: Iterable[str] = ()) -> Event | None:
    """One decoded JSON value -> the event it is, or None when §1 rejects it: not an object;
    event_id / user_id not strings of 1-128 chars; an unknown type; app not 1-64 chars of
    [A-Za-z0-9._-]; ts missing, not ISO-8601 with an offset nor integer epoch ms, before
    1970 or more than 24 h ahead of now; platform / country / campaign not strings of
    1-64 chars; amount (required for purchases) or an install's cost not a number in
    0..1e9; currency not three capital letters. A type named in `activity_types` (the
    custom ACTIVITY_EVENTS) is accepted and counts as activity, like a session. Other
    fields are ignored; cost counts on installs only, amount and currency on purchases
    only."""
    if not isinstance(obj, dict):
        return None
    try:
        event_id, user_id = _text(obj, "event_id", 128), _text(obj, "user_id", 128)
        kind, app = obj.get("type"), obj.get("app", default_app)
        if event_id is None or user_id is None or not (
                kind in EVENT_TYPES or (isinstance(kind, str) and kind in set(activity_types))):
            return None
        if not isinstance(app, str) or not 1 <= len(app) <= 64 or not set(app) <= _APP_CHARS:
            return None
        if obj.get("ts") is None:
            return None
        ts_ms = _ts_ms(obj["ts"])
        if not 0 <= ts_ms <= now_ms + FUTURE_MS:
            return None
        attributes = {name: _text(obj, name, 64) for name in ATTRIBUTES}
        cost = _amount(obj, "cost") if kind == "install" else None
        amount = _amount(obj, "amount")
        currency = obj.get("currency")
        if currency is not None and not (isinstance(currency, str) and len(currency) == 3
                                         and all("A" <= c <= "Z" for c in currency)):
            return None
    except ValueError:
        return None
    if kind == "purchase" and amount is None:
        return None
    if kind == SURVEY:  # score: an integer 0-10; survey: a name, default "nps"
        score, survey = obj.get("score"), obj.get("survey")
        if type(score) is not int or not 0 <= score <= 10:
            return None
        if survey is None:
            survey = "nps"
        if not (isinstance(survey, str) and 1 <= len(survey) <= 64
                and set(survey) <= SURVEY_NAME_CHARS):
            return None
        return Event(app=app, event_id=event_id, type=kind, user_id=user_id, ts_ms=ts_ms,
                     score=score, survey=survey, **attributes)
    return Event(app=app, event_id=event_id, type=kind, user_id=user_id, ts_ms=ts_ms,
                 cost=cost, amount=amount if kind == "purchase" else None,
                 currency=currency if kind == "purchase" else None, **attributes)


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large for a double")
    return value


def _int64(text: str) -> int | float:
    """RFC 8259's interoperable reading: an integer beyond 64 bits is a double (so not an
    integer epoch timestamp), and one beyond a double's range is no number at all."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else _strict_float(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def read_message(raw: bytes | None, now_ms: int, max_bytes: int = 1 << 20,
                 max_events: int = 1000, activity_types: Iterable[str] = ()
                 ) -> list[tuple[int, Event | None]]:
    """One Kafka message value -> (index, event or None when rejected) per element: -1 for
    a message that is one object or that is rejected whole (empty, larger than
    ``max_bytes``, not UTF-8, not JSON, an array longer than ``max_events`` or empty)."""
    if not raw or len(raw) > max_bytes:
        return [(-1, None)]
    try:
        decoded = json.loads(raw.decode("utf-8"), parse_float=_strict_float,
                             parse_int=_int64, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return [(-1, None)]
    if not isinstance(decoded, list):
        return [(-1, read_event(decoded, now_ms, "default", activity_types))]
    if not decoded or len(decoded) > max_events:
        return [(-1, None)]
    return [(index, read_event(obj, now_ms, "default", activity_types))
            for index, obj in enumerate(decoded)]


# --------------------------------------------------------------------------------------
# Money


def money(x: float | int | str | Decimal) -> Decimal:
    """An amount or a cost as an exact decimal: `Decimal(str(x))` (0.1 is 0.1, not 0.1000...5)."""
    return Decimal(str(x))


def money_out(value: Decimal) -> float:
    """How money leaves the reference: rounded to 4 places in Decimal, then a float."""
    return float(round(value, 4))


def purchase_amount(event: Event) -> Decimal:
    return money(event.amount) if event.amount is not None else Decimal(0)


def purchase_currency(event: Event, default_currency: str) -> str:
    return event.currency or default_currency


# --------------------------------------------------------------------------------------
# User attributes and segments


def value_segment(
    revenue: Decimal, purchases: int, vip_revenue: Decimal | int | str, vip_purchases: int
) -> str:
    """The value segment, "vip", "payer" or "free", from lifetime revenue and purchase count."""
    if revenue >= money(vip_revenue) or purchases >= vip_purchases:
        return "vip"
    if purchases >= 1:
        return "payer"
    return "free"


def user_profiles(
    events: Iterable[Event],
    app: str,
    *,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> dict[str, dict]:
    """user_id -> {"platform", "country", "campaign", "value"} for every user of `app`.

    An attribute is the value on the user's earliest event that carries it (None if no event
    does); at equal times the smallest value wins. "value" is the lifetime value segment.
    """
    earliest: dict[tuple[str, str], tuple[int, str]] = {}  # (user_id, attribute) -> (ts, value)
    revenue: dict[str, Decimal] = {}  # in default_currency only
    purchases: dict[str, int] = {}
    users: list[str] = []
    for event in app_events(events, app):
        if event.user_id not in purchases:
            users.append(event.user_id)
            purchases[event.user_id] = 0
            revenue[event.user_id] = Decimal(0)
        if event.type == SURVEY:  # an answer: no attribute
            continue
        for attribute in ATTRIBUTES:
            value = getattr(event, attribute)
            if value is None:
                continue
            key = (event.user_id, attribute)
            candidate = (event.ts_ms, value)
            if key not in earliest or candidate < earliest[key]:
                earliest[key] = candidate
        if event.type == "purchase":
            purchases[event.user_id] += 1
            if purchase_currency(event, default_currency) == default_currency:
                revenue[event.user_id] += purchase_amount(event)
    profiles: dict[str, dict] = {}
    for user_id in users:
        profile: dict = {}
        for attribute in ATTRIBUTES:
            found = earliest.get((user_id, attribute))
            profile[attribute] = found[1] if found is not None else None
        profile["value"] = value_segment(
            revenue[user_id], purchases[user_id], vip_revenue, vip_purchases
        )
        profiles[user_id] = profile
    return profiles


def _check_where(where: dict[str, str]) -> None:
    for key, value in where.items():
        if key not in SEGMENT_KEYS:
            raise ValueError(f"segment keys must be among {SEGMENT_KEYS}, not {key!r}")
        if key == "value" and value not in VALUE_SEGMENTS:
            raise ValueError(f"value segment must be one of {VALUE_SEGMENTS}, not {value!r}")


def segment_events(
    events: Iterable[Event],
    app: str,
    where: dict[str, str] | None = None,
    *,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> list[Event]:
    """The deduplicated events of `app` whose user is in the segment `where` (None: everyone)."""
    kept = app_events(events, app)
    if where is None:
        return kept
    _check_where(where)
    profiles = user_profiles(
        kept,
        app,
        default_currency=default_currency,
        vip_revenue=vip_revenue,
        vip_purchases=vip_purchases,
    )
    members = {
        user_id
        for user_id, profile in profiles.items()
        if all(profile[key] == value for key, value in where.items())
    }
    return [event for event in kept if event.user_id in members]


# --------------------------------------------------------------------------------------
# Time


def local_day(ts_ms: int, tz: str) -> date:
    """The calendar date of the instant `ts_ms` (epoch milliseconds) in the IANA zone `tz`."""
    instant = _EPOCH + timedelta(milliseconds=ts_ms)  # exact integer arithmetic, no floats
    return instant.astimezone(ZoneInfo(tz)).date()


def day_start_ms(day: date, tz: str) -> int:
    """Epoch milliseconds of the first instant of `day` in `tz`.

    That is local midnight. When a DST change skips midnight (clocks jump from 00:00 to
    01:00), `fold=0` reads the nonexistent 00:00 with the offset in force before the jump,
    which is exactly the instant of the jump, i.e. still the first instant of the day.
    """
    midnight = datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(tz))
    return (midnight - _EPOCH) // _ONE_MS


def _check_granularity(granularity: str) -> None:
    if granularity not in PERIODS:
        raise ValueError(f"granularity must be one of {PERIODS}, not {granularity!r}")


def period_start(day: date, granularity: str) -> date:
    """The period containing `day`, identified by its first day.

    day: the date itself; week: the Monday of its ISO week; month: the first of the month;
    year: January 1st.
    """
    _check_granularity(granularity)
    if granularity == "day":
        return day
    if granularity == "week":
        return day - timedelta(days=day.weekday())  # weekday(): Monday is 0
    if granularity == "year":
        return date(day.year, 1, 1)
    return day.replace(day=1)


def next_period_start(start: date, granularity: str) -> date:
    """The first day of the period after the one that starts on `start`."""
    _check_granularity(granularity)
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    if granularity == "year":
        return date(start.year + 1, 1, 1)
    if start.month == 12:
        return date(start.year + 1, 1, 1)
    return date(start.year, start.month + 1, 1)


def period_label(start: date, granularity: str) -> str:
    """day "YYYY-MM-DD", week "YYYY-Www" (ISO year and week), month "YYYY-MM", year
    "YYYY"."""
    _check_granularity(granularity)
    if granularity == "day":
        return start.isoformat()
    if granularity == "year":
        return f"{start.year:04d}"
    if granularity == "week":
        iso_year, iso_week, _ = start.isocalendar()
        return f"{iso_year:04d}-W{iso_week:02d}"
    return f"{start.year:04d}-{start.month:02d}"


def period_offset(first: date, later: date, granularity: str) -> int:
    """Number of whole periods from the period of `first` to the period of `later`."""
    a = period_start(first, granularity)
    b = period_start(later, granularity)
    if granularity == "day":
        return (b - a).days
    if granularity == "week":
        return (b - a).days // 7  # both are Mondays, so this is exact
    if granularity == "year":
        return b.year - a.year
    return (b.year - a.year) * 12 + (b.month - a.month)


def add_periods(start: date, n: int, granularity: str) -> date:
    """The start of the period `n` periods after the one that starts on `start` (n >= 0)."""
    current = period_start(start, granularity)
    for _ in range(n):
        current = next_period_start(current, granularity)
    return current


def period_end_ms(start: date, granularity: str, tz: str) -> int:
    """When the period starting on `start` ends: the first instant of the next period in tz."""
    return day_start_ms(next_period_start(start, granularity), tz)


# --------------------------------------------------------------------------------------
# Users and their days


class _AppData:
    """One app's deduplicated events reduced to what sections 3-6 need, all in local days."""

    def __init__(
        self, events: Iterable[Event], app: str, tz: str, default_currency: str = DEFAULT_CURRENCY
    ) -> None:
        self.first_seen_ms: dict[User, int] = {}
        self.active_days: dict[User, set[date]] = {}
        self.users_active_on: dict[date, set[User]] = {}
        self.users_installing_on: dict[date, set[User]] = {}
        # Every purchase event as (day, currency, amount), per user and per day.
        self.purchases_of: dict[User, list[tuple[date, str, Decimal]]] = {}
        self.purchases_on: dict[date, list[tuple[User, str, Decimal]]] = {}
        self.install_cost: dict[User, Decimal] = {}  # sum of `cost` of the user's installs
        self.days_by_type: dict[User, dict[str, set[date]]] = {}  # days of each event type
        self.activity_ms: dict[User, list[int]] = {}  # every activity's time (24-h windows)
        for event in dedup(events):
            if event.app != app or event.type == SURVEY:  # an answer is not activity
                continue
            user = (event.app, event.user_id)
            day = local_day(event.ts_ms, tz)
            if user not in self.first_seen_ms or event.ts_ms < self.first_seen_ms[user]:
                self.first_seen_ms[user] = event.ts_ms
            self.active_days.setdefault(user, set()).add(day)
            self.activity_ms.setdefault(user, []).append(event.ts_ms)
            self.days_by_type.setdefault(user, {}).setdefault(event.type, set()).add(day)
            self.users_active_on.setdefault(day, set()).add(user)
            if event.type == "install":
                self.users_installing_on.setdefault(day, set()).add(user)
                if event.cost is not None:
                    cost = self.install_cost.get(user, Decimal(0)) + money(event.cost)
                    self.install_cost[user] = cost
            if event.type == "purchase":
                currency = purchase_currency(event, default_currency)
                amount = purchase_amount(event)
                self.purchases_of.setdefault(user, []).append((day, currency, amount))
                self.purchases_on.setdefault(day, []).append((user, currency, amount))
        self.first_day: dict[User, date] = {
            user: local_day(ts, tz) for user, ts in self.first_seen_ms.items()
        }
        self.new_users_on: dict[date, set[User]] = {}
        for user, day in self.first_day.items():
            self.new_users_on.setdefault(day, set()).add(user)

    def first_data_day(self) -> date | None:
        return min(self.users_active_on) if self.users_active_on else None

    def last_data_day(self) -> date | None:
        return max(self.users_active_on) if self.users_active_on else None

    def users_active_between(self, first: date, last: date) -> set[User]:
        users: set[User] = set()
        day = first
        while day <= last:
            users |= self.users_active_on.get(day, set())
            day += timedelta(days=1)
        return users

    def cohort_users(self, granularity: str) -> dict[date, list[User]]:
        """Cohort period start -> its users (only non-empty cohorts)."""
        cohorts: dict[date, list[User]] = {}
        for user, first_day in self.first_day.items():
            cohorts.setdefault(period_start(first_day, granularity), []).append(user)
        return cohorts


def _load(
    events: Iterable[Event],
    app: str,
    tz: str,
    where: dict[str, str] | None,
    default_currency: str,
    vip_revenue: Decimal | int | str,
    vip_purchases: int,
) -> _AppData:
    """The `_AppData` of the users of segment `where` (None: all users of the app)."""
    selected = segment_events(
        events,
        app,
        where,
        default_currency=default_currency,
        vip_revenue=vip_revenue,
        vip_purchases=vip_purchases,
    )
    return _AppData(selected, app, tz, default_currency)


def _selected_cohorts(
    cohorts: Iterable[date], granularity: str, date_from: date | None, date_to: date | None
) -> list[date]:
    """The cohorts (period starts) between the periods of date_from and date_to, oldest first."""
    low = period_start(date_from, granularity) if date_from is not None else None
    high = period_start(date_to, granularity) if date_to is not None else None
    return [
        cohort
        for cohort in sorted(cohorts)
        if (low is None or cohort >= low) and (high is None or cohort <= high)
    ]


def _complete_flags(cohort: date, n_offsets: int, granularity: str, tz: str, now_ms: int) -> list:
    return [
        period_end_ms(add_periods(cohort, n, granularity), granularity, tz) <= now_ms
        for n in range(n_offsets)
    ]


# --------------------------------------------------------------------------------------
# Section 4: retention triangles


def _frame(
    events: Iterable[Event],
    app: str,
    tz: str,
    granularity: str,
    where: dict[str, str] | None,
    default_currency: str,
    vip_revenue: Decimal | int | str,
    vip_purchases: int,
) -> tuple[_AppData, date] | None:
    """The app's (or segment's) data and its last period with data: what bounds every
    triangle's rows. None when there is no data."""
    if granularity not in GRANULARITIES:  # years are KPI periods, not cohorts
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    last_day = data.last_data_day()
    if last_day is None:
        return None
    return data, period_start(last_day, granularity)


def triangle(
    events: Iterable[Event],
    app: str,
    granularity: str,
    kind: str,
    tz: str,
    now_ms: int,
    date_from: date | None = None,
    date_to: date | None = None,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
    returning: str | None = None,
    window: str = "calendar",
) -> list[dict]:
    """The retention triangle of `app`, one dict per non-empty cohort, oldest first.

    With `returning` (an event type), a user counts as back in a period only if it sent an
    event of that type in it (classic: in c+N; rolling: in some period >= c+N): N = 0 too,
    so a cohort's first cell is the share that sent one in its first period.

    Each dict is {"cohort", "size", "counts", "values", "complete"}; offsets run from 0 to
    the app's last period with data. `date_from`/`date_to` keep the cohorts whose period
    lies between the periods of those dates (inclusive); they do not shorten the rows.
    With `where`, everything (cohorts, sizes, the last period) is over the segment's users.

    With `window` "24h" (daily cohorts, any activity), offset N is a user's 24-hour window
    [first_seen + N*24h, first_seen + (N+1)*24h), first_seen its earliest event, instead
    of the calendar day c+N; a row runs to the last day with data or to its users' latest
    window if that is later (a day of 25 hours), and complete[N] is whether the cohort's
    day ended (N+1)*24h ago.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if window not in ("calendar", "24h") or (window == "24h" and (
            granularity != "day" or returning is not None)):
        raise ValueError(f"24-hour windows are of daily cohorts on any activity, not {window!r}")
    framed = _frame(events, app, tz, granularity, where, default_currency, vip_revenue,
                    vip_purchases)
    if framed is None:
        return []
    data, last_period = framed

    # Each user's cohort, and the set of periods it was active in.
    cohort_users = data.cohort_users(granularity)
    active_periods: dict[User, set[date]] = {
        user: {period_start(d, granularity) for d in days}
        for user, days in data.active_days.items()
    }
    if returning is not None:
        active_periods = {
            user: {period_start(d, granularity)
                   for d in data.days_by_type.get(user, {}).get(returning, set())}
            for user in data.active_days
        }

    rows: list[dict] = []
    for cohort in _selected_cohorts(cohort_users, granularity, date_from, date_to):
        users = cohort_users[cohort]
        size = len(users)
        offsets_of = {user: [period_offset(cohort, p, granularity) for p in active_periods[user]]
                      for user in users}
        if window == "24h":
            offsets_of = {user: sorted({(ts - data.first_seen_ms[user]) // DAY_MS
                                        for ts in data.activity_ms[user]}) for user in users}
        n_offsets = max(period_offset(cohort, last_period, granularity),
                        *(max(offsets, default=0) for offsets in offsets_of.values())) + 1
        counts = [0] * n_offsets
        for user in users:
            offsets = offsets_of[user]
            if not offsets:  # never sent the returning event type
                continue
            if kind == "classic":
                # Active in period c+N.
                for n in offsets:
                    if 0 <= n < n_offsets:
                        counts[n] += 1
            else:
                # Active in any period >= c+N, i.e. its latest active period is >= c+N.
                latest = max(offsets)
                for n in range(n_offsets):
                    if latest >= n:
                        counts[n] += 1
        values = [round(count / size, 4) for count in counts]
        rows.append(
            {
                "cohort": period_label(cohort, granularity),
                "size": size,
                "counts": counts,
                "values": values,
                "complete": _complete_flags(cohort, n_offsets, granularity, tz, now_ms)
                if window == "calendar" else [
                    period_end_ms(cohort, "day", tz) + (n + 1) * DAY_MS <= now_ms
                    for n in range(n_offsets)],
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# Section 5: money by cohort


def money_triangle(
    events: Iterable[Event],
    app: str,
    granularity: str,
    kind: str,
    tz: str,
    now_ms: int,
    currency: str = DEFAULT_CURRENCY,
    date_from: date | None = None,
    date_to: date | None = None,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> list[dict]:
    """LTV, payer conversion or ROAS by cohort; cohorts, offsets and flags as in `triangle`.

    - ltv: {"cohort", "size", "revenue", "values", "complete"}: revenue[N] is the revenue in
      `currency` of the cohort's users in periods c..c+N; values[N] = revenue[N] / size.
    - payer_conversion: {"cohort", "size", "counts", "values", "complete"}: counts[N] is the
      number of the cohort's users with a purchase (any currency) in c..c+N.
    - roas: {"cohort", "size", "cac", "revenue", "values", "complete"}: with cost = the sum of
      `cost` of the cohort's users' installs, cac = cost / size and values[N] = revenue[N] /
      cost; both None when cost is 0.
    """
    if kind not in MONEY_KINDS:
        raise ValueError(f"kind must be one of {MONEY_KINDS}, not {kind!r}")
    framed = _frame(events, app, tz, granularity, where, default_currency, vip_revenue,
                    vip_purchases)
    if framed is None:
        return []
    data, last_period = framed
    cohort_users = data.cohort_users(granularity)

    rows: list[dict] = []
    for cohort in _selected_cohorts(cohort_users, granularity, date_from, date_to):
        users = cohort_users[cohort]
        size = len(users)
        n_offsets = period_offset(cohort, last_period, granularity) + 1
        revenue_in = [Decimal(0)] * n_offsets  # revenue in period c+N (not cumulative)
        first_purchase_in = [0] * n_offsets  # users whose first purchase is in period c+N
        cost = Decimal(0)
        for user in users:
            cost += data.install_cost.get(user, Decimal(0))
            purchases = data.purchases_of.get(user, [])
            for day, purchase_currency_, amount in purchases:
                if purchase_currency_ == currency:
                    revenue_in[period_offset(cohort, day, granularity)] += amount
            if purchases:
                first = min(period_offset(cohort, day, granularity) for day, _, _ in purchases)
                first_purchase_in[first] += 1
        cumulative_revenue = [sum(revenue_in[: n + 1], Decimal(0)) for n in range(n_offsets)]
        row: dict = {"cohort": period_label(cohort, granularity), "size": size}
        if kind == "ltv":
            row["revenue"] = [money_out(r) for r in cumulative_revenue]
            row["values"] = [money_out(r / size) for r in cumulative_revenue]
        elif kind == "payer_conversion":
            counts = [sum(first_purchase_in[: n + 1]) for n in range(n_offsets)]
            row["counts"] = counts
            row["values"] = [round(count / size, 4) for count in counts]
        else:
            row["cac"] = money_out(cost / size) if cost != 0 else None
            row["revenue"] = [money_out(r) for r in cumulative_revenue]
            row["values"] = [money_out(r / cost) if cost != 0 else None for r in cumulative_revenue]
        row["complete"] = _complete_flags(cohort, n_offsets, granularity, tz, now_ms)
        rows.append(row)
    return rows


def _repeat_figures(purchase_counts: dict[User, int]) -> dict:
    """{"buyers", "repeat_buyers", "rpr"} from each user's number of purchase events."""
    buyers = sum(1 for n in purchase_counts.values() if n >= 1)
    repeat = sum(1 for n in purchase_counts.values() if n >= 2)
    return {
        "buyers": buyers,
        "repeat_buyers": repeat,
        "rpr": round(repeat / buyers, 4) if buyers else 0.0,
    }


def repeat_purchase_rate(
    events: Iterable[Event],
    app: str,
    tz: str,
    date_from: date | None = None,
    date_to: date | None = None,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> dict:
    """RPR over the purchases whose local day is in [date_from, date_to] (None: unbounded).

    {"buyers": users with >= 1 purchase, "repeat_buyers": users with >= 2 purchase events
    (two on one day count), "rpr": repeat_buyers / buyers, 0.0 without buyers}.
    """
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    counts: dict[User, int] = {}
    for user, purchases in data.purchases_of.items():
        for day, _, _ in purchases:
            if date_from is not None and day < date_from:
                continue
            if date_to is not None and day > date_to:
                continue
            counts[user] = counts.get(user, 0) + 1
    return _repeat_figures(counts)


def repeat_purchase_by_cohort(
    events: Iterable[Event],
    app: str,
    granularity: str,
    tz: str,
    date_from: date | None = None,
    date_to: date | None = None,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> dict[str, dict]:
    """Cohort label -> lifetime `repeat_purchase_rate` figures of that cohort's users.

    Every non-empty cohort is listed, oldest first; date_from/date_to select cohorts by
    period as in `triangle` (they do not window the purchases).
    """
    _check_granularity(granularity)
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    cohort_users = data.cohort_users(granularity)
    result: dict[str, dict] = {}
    for cohort in _selected_cohorts(cohort_users, granularity, date_from, date_to):
        counts = {user: len(data.purchases_of.get(user, [])) for user in cohort_users[cohort]}
        result[period_label(cohort, granularity)] = _repeat_figures(counts)
    return result


# --------------------------------------------------------------------------------------
# Section 3 (and the daily part of section 5): daily figures


def _money_by_currency(totals: dict[str, Decimal], divisor: int) -> dict[str, float]:
    if not divisor:
        return {}
    return {currency: money_out(total / divisor) for currency, total in sorted(totals.items())}


def _summary_of(data: _AppData, app: str, day: date) -> dict:
    dau = len(data.users_active_on.get(day, set()))
    wau = len(data.users_active_between(day - timedelta(days=6), day))
    mau = len(data.users_active_between(day - timedelta(days=29), day))
    new_users = len(data.new_users_on.get(day, set()))
    revenue: dict[str, Decimal] = {}
    payers: set[User] = set()
    for user, currency, amount in data.purchases_on.get(day, []):
        revenue[currency] = revenue.get(currency, Decimal(0)) + amount
        payers.add(user)
    revenue = {currency: total for currency, total in revenue.items() if total}
    return {
        "app": app,
        "date": day.isoformat(),
        "dau": dau,
        "wau": wau,
        "mau": mau,
        "stickiness": round(dau / mau, 4) if mau else 0.0,
        "installs": len(data.users_installing_on.get(day, set())),
        "new_users": new_users,
        "returning_users": dau - new_users,
        "revenue": {currency: money_out(total) for currency, total in sorted(revenue.items())},
        "payers": len(payers),
        "arpdau": _money_by_currency(revenue, dau),
        "arppu": _money_by_currency(revenue, len(payers)),
    }


def summary(
    events: Iterable[Event],
    app: str,
    date: date,
    tz: str,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
    now_ms: int | None = None,
) -> dict:
    """Daily figures of `app` on local `date`.

    DAU, WAU, MAU, stickiness, installs, new and returning users, and per currency the
    revenue (only currencies with non-zero revenue that day), ARPDAU (revenue / DAU) and ARPPU
    (revenue / payers, payers counted over all currencies), plus the number of payers. With
    `now_ms`, also "complete": whether the day has ended by then.
    """
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    figures = _summary_of(data, app, date)
    if now_ms is not None:
        figures["complete"] = period_end_ms(date, "day", tz) <= now_ms
    return figures


def daily_series(
    events: Iterable[Event],
    app: str,
    tz: str,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> dict[date, dict]:
    """`summary` for every day from the app's first to its last day with data, gaps included."""
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    first, last = data.first_data_day(), data.last_data_day()
    series: dict[date, dict] = {}
    if first is None or last is None:
        return series
    day = first
    while day <= last:
        series[day] = _summary_of(data, app, day)
        day += timedelta(days=1)
    return series


# --------------------------------------------------------------------------------------
# Section 6: period KPIs


def kpis(
    events: Iterable[Event],
    app: str,
    period: str,
    tz: str,
    *,
    where: dict[str, str] | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
    now_ms: int | None = None,
) -> list[dict]:
    """One row per week, month or year, from the first to the last period with data, oldest
    first.

    With S = users active in P-1, E = users active in P, Nn = users whose first_seen is in P:
    {"period", "active": E, "new_users": Nn, "returning": E - Nn, "crr": (E - Nn) / S,
    "churn": |active in P-1 and not in P| / S (both None when S == 0), "revenue": {currency:
    money}, "payers": users with a purchase in P, "rpr": users with >= 2 purchases in P /
    payers (0.0 without payers), and the revenue and payers split between the new users of
    P (Nn) and the others (returning): "new_revenue", "returning_revenue" ({currency:
    money}, non-zero only), "new_payers", "returning_payers"}. With `now_ms`, also
    "complete": whether the period has ended by then (§6: an unfinished period's CRR and
    churn are live numbers).
    """
    if period not in KPI_PERIODS:
        raise ValueError(f"period must be one of {KPI_PERIODS}, not {period!r}")
    data = _load(events, app, tz, where, default_currency, vip_revenue, vip_purchases)
    first_day, last_day = data.first_data_day(), data.last_data_day()
    if first_day is None or last_day is None:
        return []

    active_in: dict[date, set[User]] = {}
    for day, users in data.users_active_on.items():
        active_in.setdefault(period_start(day, period), set()).update(users)
    new_in: dict[date, set[User]] = {}
    for user, day in data.first_day.items():
        new_in.setdefault(period_start(day, period), set()).add(user)
    revenue_in: dict[date, dict[str, Decimal]] = {}
    purchases_in: dict[date, dict[User, int]] = {}
    purchases_by_user_in: dict[date, list[tuple[User, str, Decimal]]] = {}
    for day, purchases in data.purchases_on.items():
        p = period_start(day, period)
        purchases_by_user_in.setdefault(p, []).extend(purchases)
        for user, currency, amount in purchases:
            totals = revenue_in.setdefault(p, {})
            totals[currency] = totals.get(currency, Decimal(0)) + amount
            counts = purchases_in.setdefault(p, {})
            counts[user] = counts.get(user, 0) + 1

    rows: list[dict] = []
    previous: set[User] = set()  # P-1 of the first period has no data
    current_period = period_start(first_day, period)
    last_period = period_start(last_day, period)
    while current_period <= last_period:
        active = active_in.get(current_period, set())
        new = new_in.get(current_period, set())
        s = len(previous)
        e = len(active)
        lost = len(previous - active)
        repeat = _repeat_figures(purchases_in.get(current_period, {}))
        revenue = revenue_in.get(current_period, {})
        new_revenue: dict[str, Decimal] = {}
        for user, currency, amount in purchases_by_user_in.get(current_period, []):
            if user in new:
                new_revenue[currency] = new_revenue.get(currency, Decimal(0)) + amount
        returning_revenue = {c: t - new_revenue.get(c, Decimal(0)) for c, t in revenue.items()}
        buyers = set(purchases_in.get(current_period, {}))
        rows.append(
            {
                "period": period_label(current_period, period),
                "active": e,
                "new_users": len(new),
                "returning": e - len(new),
                "crr": round((e - len(new)) / s, 4) if s else None,
                "churn": round(lost / s, 4) if s else None,
                "revenue": {c: money_out(t) for c, t in sorted(revenue.items()) if t},
                "payers": repeat["buyers"],
                "rpr": repeat["rpr"],
                "new_revenue": {c: money_out(t) for c, t in sorted(new_revenue.items()) if t},
                "returning_revenue": {c: money_out(t)
                                      for c, t in sorted(returning_revenue.items()) if t},
                "new_payers": len(buyers & new),
                "returning_payers": len(buyers - new),
            }
        )
        if now_ms is not None:
            rows[-1]["complete"] = period_end_ms(current_period, period, tz) <= now_ms
        previous = active
        current_period = next_period_start(current_period, period)
    return rows


# ---- Section 7: inactivity episodes, on the event clock --------------------------------------


def inactivity_episodes(
    stream: Iterable[Event], thresholds: Iterable[int], max_delay_ms: int, tz: str = "UTC"
) -> dict[str, set]:
    """Section 7 read plainly, for one partition's stream in arrival order (deduplicated,
    one app): after each arrival, now = the latest `ts` so far; every user whose last
    activity + K days is at or before now is inactive-K in that episode, once, published if
    now reached the moment within `max_delay_ms` and expired otherwise. A user's event dated
    after its last activity ends the episode: a return for each sent threshold whose
    moment the event is at or after, a false alarm for each it is before. A moment cannot
    come before the event that made it known (a late event of a user long inactive): it is
    judged at that event's arrival.

    Returns sets of (user_id, K, episode last_active ms): "sent", "expired", "returns",
    "false_alarms"; and "sessions": (user_id, K, episode last_active ms, n) per message
    sent, n its payload's `sessions`: the distinct days (in `tz`) on which the user had a
    session among the events arrived before it."""
    day_ms = 86_400_000
    out: dict[str, set] = {"sent": set(), "expired": set(), "returns": set(),
                           "false_alarms": set(), "sessions": set()}
    session_days: dict[str, set[date]] = {}
    thresholds = sorted(set(thresholds))
    last: dict[str, int] = {}
    handled: dict[str, dict[int, bool]] = {}  # user -> K -> sent (True) or expired (False)
    now = 0

    def inactive(users: Iterable[str]) -> None:
        for user in users:
            for days in thresholds:
                moment = last[user] + days * day_ms
                if moment <= now and days not in handled.setdefault(user, {}):
                    fresh = now - moment <= max_delay_ms
                    handled[user][days] = fresh
                    out["sent" if fresh else "expired"].add((user, days, last[user]))
                    if fresh:
                        out["sessions"].add((user, days, last[user],
                                             len(session_days.get(user, ()))))

    for event in stream:
        now = max(now, event.ts_ms)
        inactive(list(last))  # before the event: it may be the user's return
        if event.type == SURVEY:  # an answer moves now, but makes no one active
            continue
        user = event.user_id
        if event.type == "session":
            session_days.setdefault(user, set()).add(local_day(event.ts_ms, tz))
        if user in last and event.ts_ms > last[user]:
            for days, sent in handled.get(user, {}).items():
                if sent:
                    back = event.ts_ms >= last[user] + days * day_ms
                    out["returns" if back else "false_alarms"].add((user, days, last[user]))
            handled[user] = {}
        if user not in last or event.ts_ms > last[user]:
            last[user] = event.ts_ms
        inactive([user])  # a late event may leave its user inactive for long already
    return out


# ---- Section 8: satisfaction (NPS) ----------------------------------------------------------

NPS_PERIODS = ("week", "month", "year")
NPS_BY = ("period", "cohort", "churn")


def _nps_counts(scores: Iterable[int]) -> dict:
    """answers, promoters (9-10), passives (7-8), detractors (0-6) and NPS = (promoters -
    detractors) / answers x 100, rounded to 2 places (None without answers)."""
    scores = list(scores)
    promoters = sum(1 for s in scores if s >= 9)
    passives = sum(1 for s in scores if 7 <= s <= 8)
    detractors = sum(1 for s in scores if s <= 6)
    return {"answers": len(scores), "promoters": promoters, "passives": passives,
            "detractors": detractors,
            "nps": round((promoters - detractors) / len(scores) * 100, 2) if scores else None}


def nps(
    events: Iterable[Event],
    app: str,
    period: str,
    tz: str,
    survey: str = "nps",
    *,
    by: str = "period",
    where: dict[str, str] | None = None,
    now_ms: int | None = None,
    default_currency: str = DEFAULT_CURRENCY,
    vip_revenue: Decimal | int | str = DEFAULT_VIP_REVENUE,
    vip_purchases: int = DEFAULT_VIP_PURCHASES,
) -> list[dict]:
    """§8 read plainly. A user's answer in a period is the score of its latest `survey`
    event to `survey` in it (equal ts: the larger event_id).

    - by "period": one row per period from the first to the last with answers, gaps
      included: {"period", "answers", "promoters", "passives", "detractors", "nps"}.
    - by "churn": one row per period with answers: {"period", "retained": figures of those
      who answered in it and were active in the next period, "churned": of the others};
      with `now_ms`, "complete": whether the next period has ended.
    - by "cohort": one row per cohort (of the period's granularity) with answers, from its
      users' answers in every period: {"cohort", figures}. Users without activity have no
      cohort and are left out.
    """
    if period not in NPS_PERIODS or by not in NPS_BY:
        raise ValueError(f"period in {NPS_PERIODS}, by in {NPS_BY}")
    selected = segment_events(events, app, where, default_currency=default_currency,
                              vip_revenue=vip_revenue, vip_purchases=vip_purchases)
    data = _AppData(selected, app, tz, default_currency)
    latest: dict[tuple[User, date], tuple[int, str, int]] = {}
    for event in selected:
        if event.type != SURVEY or event.survey != survey:
            continue
        key = ((event.app, event.user_id), period_start(local_day(event.ts_ms, tz), period))
        candidate = (event.ts_ms, event.event_id, event.score)
        if key not in latest or candidate[:2] > latest[key][:2]:
            latest[key] = candidate
    if not latest:
        return []
    if by == "cohort":
        by_cohort: dict[date, list[int]] = {}
        for (user, _), (_, _, score) in latest.items():
            if user in data.first_day:
                cohort = period_start(data.first_day[user], period)
                by_cohort.setdefault(cohort, []).append(score)
        return [{"cohort": period_label(c, period), **_nps_counts(by_cohort[c])}
                for c in sorted(by_cohort)]
    scores_in: dict[date, list[tuple[User, int]]] = {}
    for (user, p), (_, _, score) in latest.items():
        scores_in.setdefault(p, []).append((user, score))
    if by == "churn":
        rows = []
        for p in sorted(scores_in):
            following = next_period_start(p, period)
            back = {user for user, days in data.active_days.items()
                    if any(period_start(d, period) == following for d in days)}
            row = {"period": period_label(p, period),
                   "retained": _nps_counts(s for u, s in scores_in[p] if u in back),
                   "churned": _nps_counts(s for u, s in scores_in[p] if u not in back)}
            if now_ms is not None:
                row["complete"] = period_end_ms(following, period, tz) <= now_ms
            rows.append(row)
        return rows
    rows, current = [], min(scores_in)
    while current <= max(scores_in):
        rows.append({"period": period_label(current, period),
                     **_nps_counts(s for _, s in scores_in.get(current, []))})
        current = next_period_start(current, period)
    return rows


# ---- Section 9: risk of lapsing, the per-user summaries --------------------------------------


def lapse_summaries(events: Iterable[Event], app: str, tz: str) -> dict[tuple[int, int, date], int]:
    """Section 9's summaries, counted: (x, t_x days, first active day) -> users, where x is
    the user's distinct active days after the first and t_x the days from the first to the
    last (T follows from the first day and the day of now)."""
    data = _AppData(events, app, tz)
    out: dict[tuple[int, int, date], int] = {}
    for days in data.active_days.values():
        key = (len(days) - 1, (max(days) - min(days)).days, min(days))
        out[key] = out.get(key, 0) + 1
    return out


def _at_risk_day(model: str, params: tuple[float, float, float, float], x: int,
                 first: date, last: date, threshold: float) -> date | None:
    """The first day from ``last`` on whose P(alive) (T = that day - ``first``) is below
    ``threshold``, by doubling then halving over days (P(alive) falls as T grows); None
    when not within 52,000 weeks (BG/NBD with no repeat day never falls)."""
    t_x = (last - first).days / 7

    def below(day: date) -> bool:
        return p_alive(model, params, x, t_x, (day - first).days / 7) < threshold

    horizon = first + timedelta(weeks=52_000)
    if below(last):
        return last
    low, step = last, 1  # below(low) is False
    while not below(low + timedelta(days=step)):
        low += timedelta(days=step)
        step *= 2
        if low > horizon:
            return None
    high = low + timedelta(days=step)  # below(high) is True
    while (high - low).days > 1:
        middle = low + timedelta(days=(high - low).days // 2)
        low, high = (low, middle) if below(middle) else (middle, high)
    return high if high <= horizon else None


def at_risk_episodes(
    batches: Iterable[Iterable[Event]], model: str, params: tuple[float, float, float, float],
    threshold: float, max_delay_ms: int, tz: str = "UTC",
) -> dict[str, set]:
    """Section 9's ``users.at_risk`` read plainly under a fixed fit, for one partition's
    stream cut into batches (deduplicated, one app), as the worker looks for the moments:
    after each batch (never between the events of one), now = the latest `ts` so far. A
    user's episode is its last activity; its moment is the start of the first local day
    from its last active day on whose P(alive | x, t_x, T) is below ``threshold``, never
    before the last activity. Every user whose moment of the current episode is at or
    before now is at risk in that episode, once: published if now is at most
    ``max_delay_ms`` past the moment, expired otherwise. A batch that moves the user's last
    activity past the episode ends it; for a published one, the first day back (the first
    active day after the episode's last active day, else that day itself, an activity of
    the same day arriving late) at or after the moment's day is a return (and back within
    7 days when at most 7 days after it), before it a false alarm.

    Returns sets of (user_id, episode last_active ms): "sent", "expired", "returns",
    "back_7d", "false_alarms"."""
    out: dict[str, set] = {name: set() for name in
                           ("sent", "expired", "returns", "back_7d", "false_alarms")}
    last: dict[str, int] = {}
    days: dict[str, set[date]] = {}
    handled: dict[str, tuple[int, date, bool]] = {}  # user -> episode, moment day, sent
    seen: set[tuple[str, str]] = set()
    now = 0
    for batch in batches:
        for event in batch:
            if (event.app, event.event_id) in seen:
                continue
            seen.add((event.app, event.event_id))
            now = max(now, event.ts_ms)
            if event.type == SURVEY:
                continue
            user = event.user_id
            days.setdefault(user, set()).add(local_day(event.ts_ms, tz))
            last[user] = max(last.get(user, event.ts_ms), event.ts_ms)
        for user, (episode, moment_day, sent) in list(handled.items()):
            if last[user] == episode:
                continue
            del handled[user]
            if not sent:
                continue
            ended = local_day(episode, tz)
            back = min((d for d in days[user] if d > ended), default=ended)
            if back >= moment_day:
                out["returns"].add((user, episode))
                if (back - moment_day).days <= 7:
                    out["back_7d"].add((user, episode))
            else:
                out["false_alarms"].add((user, episode))
        for user, last_ms in last.items():
            if user in handled:
                continue
            mine = days[user]
            day = _at_risk_day(model, params, len(mine) - 1, min(mine), max(mine), threshold)
            if day is None:
                continue
            moment = max(day_start_ms(day, tz), last_ms)
            if moment <= now:
                fresh = now - moment <= max_delay_ms
                handled[user] = (last_ms, local_day(moment, tz), fresh)
                out["sent" if fresh else "expired"].add((user, last_ms))
    return out
