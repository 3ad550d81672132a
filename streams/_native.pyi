"""Types of the native engine (streams/_native.pyx, compiled by Cython): mypy reads this."""

from collections import Counter

from retention_tracker.streams.counters import Cell
from retention_tracker.streams.user_state import UserState

def month_of_day(day: int) -> int: ...
def first_day_of(period: int, granularity: str) -> int: ...

MAX_NATIVE_COST: int

class DeltaSums:
    def add_new_days(self, segments: tuple[str, ...], old_days: frozenset[int],
                     added: frozenset[int]) -> None: ...
    def add_user(self, segments: tuple[str, ...], state: UserState, sign: int) -> bool: ...
    def render_into(self, pending: dict[tuple[str, ...], Counter[Cell]]) -> None: ...
