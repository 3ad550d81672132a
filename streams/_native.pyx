# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The plan's hot core in C (issue 29): the "new active days" delta and a whole user's
contributions (without money, answers or returning events) summed per (segments, cell) in a
C hash table, rendered once per batch into the plan's Counters; and a user's state built
from its events of the batch (``add_events``, at the end of this file).

Why native: that delta is the usual change of a batch (a user active on a day not counted
yet, nothing else counted moving), and in Python it is sets, tuples and Counter updates
per cell. Here a user's active days are a bitmap (uint64 words from its first day), a
period's "was the user active in it" is a masked word test, day -> week/month/year is a
table (arithmetic outside it), and each contribution is one probe of an open-addressing
table keyed by (segments, measure, granularity, coordinates). Python objects are touched
only to read the two day sets and to render the distinct sums.

It computes exactly ``plan.add_new_days_delta`` and ``plan.add_events`` (the pure-Python
engine, kept as the fallback): tests/streams/test_native.py holds each pair to the same
sums and states on random states, events and calendars, and every plan property runs
against both engines (streams/engine.py).
"""

from collections import Counter

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, qsort, realloc
from libc.string cimport memset

from retention_tracker.streams.counters import Measure

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

# granularities: the plan's names, by index (PERIOD_GRANULARITIES' order)
cdef enum:
    DAY = 0
    WEEK = 1
    MONTH = 2
    YEAR = 3
    NO_GRAN = 7  # a daily measure: cell (measure, day)

cdef tuple GRANULARITY_NAMES = ("day", "week", "month", "year")
# Measure's members by value (a list: the render indexes it per sum)
cdef list MEASURES = [None] * (max(Measure) + 1)
for _m in Measure:
    MEASURES[_m] = _m

cdef int32_t M_DAU = Measure.DAU
cdef int32_t M_INSTALLS = Measure.INSTALLS
cdef int32_t M_NEW_USERS = Measure.NEW_USERS
cdef int32_t M_COHORT_SIZE = Measure.COHORT_SIZE
cdef int32_t M_COST = Measure.COST
cdef int32_t M_WAU_EDGE = Measure.WAU_EDGE
cdef int32_t M_MAU_EDGE = Measure.MAU_EDGE
cdef int32_t M_CLASSIC = Measure.CLASSIC
cdef int32_t M_ACTIVE = Measure.ACTIVE
cdef int32_t M_LOST = Measure.LOST
cdef int32_t M_LAST_ACTIVE = Measure.LAST_ACTIVE
# a user's install cost the native sums take (1/10,000ths: 110 million in money); a larger
# one takes the Python path, so a batch's sum (at most 2^15 users) stays far from 2^63
MAX_NATIVE_COST = 1 << 40
cdef int64_t WAU_DAYS = 7
cdef int64_t MAU_DAYS = 30

# ---- calendar: day -> month from a table over 1970..2169, arithmetic outside it ----------

cdef inline int64_t floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef int64_t month_by_arithmetic(int64_t day) noexcept nogil:
    """year * 12 + month - 1 of a day number (days since 1970-01-01): H. Hinnant's
    civil_from_days, exact for every proleptic Gregorian day."""
    cdef int64_t z = day + 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) / 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    cdef int64_t mp = (5 * doy + 2) / 153
    cdef int64_t m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y * 12 + m - 1


cdef int64_t first_day_of_month(int64_t month) noexcept nogil:
    """The day number of the first day of ``month`` (year * 12 + month - 1): H. Hinnant's
    days_from_civil."""
    cdef int64_t y = floordiv(month, 12)
    cdef int64_t m = month - y * 12 + 1
    if m <= 2:
        y -= 1
    cdef int64_t era = (y if y >= 0 else y - 399) / 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m - 3 if m > 2 else m + 9) + 2) / 5
    cdef int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468


cdef enum:
    TABLE_DAYS = 73049  # 1970-01-01 .. 2169-12-31
cdef int32_t MONTH_OF[TABLE_DAYS]
cdef int _i
for _i in range(TABLE_DAYS):
    MONTH_OF[_i] = <int32_t>month_by_arithmetic(_i)


cdef inline int64_t month_of(int64_t day) noexcept nogil:
    if 0 <= day < TABLE_DAYS:
        return MONTH_OF[day]
    return month_by_arithmetic(day)


cdef inline int64_t period_of(int64_t day, int g) noexcept nogil:
    if g == DAY:
        return day
    if g == WEEK:
        return floordiv(day + 3, 7)  # 1970-01-01 is a Thursday: its ISO week starts on day -3
    if g == MONTH:
        return month_of(day)
    return floordiv(month_of(day), 12)


cdef inline int64_t period_start(int64_t period, int g) noexcept nogil:
    if g == DAY:
        return period
    if g == WEEK:
        return period * 7 - 3
    if g == MONTH:
        return first_day_of_month(period)
    return first_day_of_month(period * 12)


def month_of_day(int64_t day):
    """The native calendar's month of a day (tests compare it with streams/calendar.py)."""
    return month_of(day)


def first_day_of(int64_t period, str granularity):
    """The native calendar's first day of a period (tests compare it with calendar.py)."""
    return period_start(period, GRANULARITY_NAMES.index(granularity))


# ---- sorting the added days -----------------------------------------------------------

cdef int compare_days(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


# ---- the sums: an open-addressing hash table ------------------------------------------

cdef struct Slot:
    int64_t a  # first coordinate (day, cohort or period)
    int64_t b  # second coordinate (offset), 0 when the cell has one
    int64_t value
    int32_t group  # the segments' index in DeltaSums.groups
    int32_t kind  # measure * 8 + granularity index (NO_GRAN: daily); 0: empty slot


cdef inline uint64_t slot_hash(int32_t group, int32_t kind, int64_t a, int64_t b) noexcept nogil:
    cdef uint64_t h = <uint64_t>a * 0x9E3779B97F4A7C15ULL
    h ^= <uint64_t>b * 0xC2B2AE3D27D4EB4FULL
    h ^= ((<uint64_t>group << 16) ^ <uint64_t>kind) * 0x165667B19E3779F9ULL
    h ^= h >> 29
    h *= 0xBF58476D1CE4E5B9ULL
    return h ^ (h >> 32)


cdef class DeltaSums:
    """The deltas of one batch's users that the native engine computes, summed per
    (segments, cell) in C: ``add_new_days`` (the usual change, ``plan._only_new_active_days``)
    and ``add_user`` (a whole user's contributions, for a new user or one moving cohort or
    segment, without money, answers or returning events); ``render_into`` adds the sums to
    the plan's per-segments Counters once per batch."""

    cdef Slot* slots
    cdef Py_ssize_t capacity  # a power of two
    cdef Py_ssize_t used
    cdef list groups
    cdef dict group_ids
    # scratch, grown as needed: the old days' bitmap, the added days' bitmap, the added
    # days sorted, the fresh periods of one granularity
    cdef uint64_t* old_bits
    cdef uint64_t* new_bits
    cdef Py_ssize_t bit_words
    cdef int64_t* added
    cdef int64_t* fresh
    cdef Py_ssize_t added_cap

    def __cinit__(self):
        self.capacity = 1024
        self.slots = <Slot*>grown(NULL, self.capacity * sizeof(Slot))
        memset(self.slots, 0, self.capacity * sizeof(Slot))
        self.used = 0
        self.groups = []
        self.group_ids = {}
        self.old_bits = self.new_bits = NULL
        self.bit_words = 0
        self.added = self.fresh = NULL
        self.added_cap = 0

    def __dealloc__(self):
        free(self.slots)
        free(self.old_bits)
        free(self.new_bits)
        free(self.added)
        free(self.fresh)

    cdef int grow(self) except -1:
        cdef Py_ssize_t old_capacity = self.capacity, i
        cdef Slot* old = self.slots
        cdef Slot* slot
        self.slots = <Slot*>grown(NULL, 2 * old_capacity * sizeof(Slot))
        self.capacity = 2 * old_capacity
        memset(self.slots, 0, self.capacity * sizeof(Slot))
        for i in range(old_capacity):
            if old[i].kind:
                slot = self.find(old[i].group, old[i].kind, old[i].a, old[i].b)
                slot[0] = old[i]
        free(old)
        return 0

    cdef inline Slot* find(self, int32_t group, int32_t kind, int64_t a, int64_t b) noexcept:
        cdef uint64_t mask = <uint64_t>(self.capacity - 1)
        cdef uint64_t i = slot_hash(group, kind, a, b) & mask
        cdef Slot* slot
        while True:
            slot = &self.slots[i]
            if slot.kind == 0 or (slot.kind == kind and slot.group == group
                                  and slot.a == a and slot.b == b):
                return slot
            i = (i + 1) & mask

    cdef int add(self, int32_t group, int32_t measure, int g, int64_t a, int64_t b,
                 int64_t value) except -1:
        cdef int32_t kind = measure * 8 + g
        cdef Slot* slot = self.find(group, kind, a, b)
        if slot.kind == 0:
            if (self.used + 1) * 2 > self.capacity:
                self.grow()
                slot = self.find(group, kind, a, b)
            slot.kind, slot.group, slot.a, slot.b, slot.value = kind, group, a, b, 0
            self.used += 1
        slot.value += value
        return 0

    cdef int32_t group_of(self, tuple segments) except -1:
        """The index of ``segments`` among the groups summed (added when new)."""
        cdef object found = self.group_ids.get(segments)
        if found is not None:
            return found
        self.groups.append(segments)
        self.group_ids[segments] = len(self.groups) - 1
        return len(self.groups) - 1

    cdef int reserve(self, Py_ssize_t words, Py_ssize_t days) except -1:
        """Room for a bitmap of ``words`` words and ``days`` days in the scratch arrays."""
        if words > self.bit_words:
            self.old_bits = <uint64_t*>grown(self.old_bits, words * sizeof(uint64_t))
            self.new_bits = <uint64_t*>grown(self.new_bits, words * sizeof(uint64_t))
            self.bit_words = words
        if days > self.added_cap:
            self.added = <int64_t*>grown(self.added, days * sizeof(int64_t))
            self.fresh = <int64_t*>grown(self.fresh, days * sizeof(int64_t))
            self.added_cap = days
        return 0

    def add_new_days(self, tuple segments, frozenset old_days, frozenset added):
        """Add contributions(new) - contributions(old) of a user whose new state only adds
        the active days ``added`` (none of them in ``old_days``, all after its first day)
        to the sums of ``segments``."""
        cdef int32_t group = self.group_of(segments)
        cdef int64_t first = 0, old_last = 0, lo = 0, hi = 0, d, top
        cdef bint empty = True
        for day in old_days:
            d = day
            if empty or d < first:
                first = d
            if empty or d > old_last:
                old_last = d
            empty = False
        cdef Py_ssize_t n_added = len(added), i = 0
        if empty or n_added == 0:
            raise ValueError("add_new_days needs old active days and added days")
        self.reserve(0, n_added)
        for day in added:
            self.added[i] = day
            i += 1
        qsort(self.added, n_added, sizeof(int64_t), compare_days)
        lo, hi = self.added[0], self.added[n_added - 1]
        if lo <= first:
            raise ValueError("added days must come after the first active day")
        top = hi if hi > old_last else old_last
        cdef Py_ssize_t words = (top - first) // 64 + 1
        self.reserve(words, 0)
        memset(self.old_bits, 0, words * sizeof(uint64_t))
        for day in old_days:
            d = <int64_t>day - first
            self.old_bits[d >> 6] |= 1ULL << (d & 63)
        memcpy_words(self.new_bits, self.old_bits, words)
        for i in range(n_added):
            d = self.added[i] - first
            self.new_bits[d >> 6] |= 1ULL << (d & 63)
        for i in range(n_added):
            self.add(group, M_DAU, NO_GRAN, self.added[i], 0, 1)
        self.add_edges(group, M_WAU_EDGE, WAU_DAYS, first, top, lo, hi)
        self.add_edges(group, M_MAU_EDGE, MAU_DAYS, first, top, lo, hi)
        cdef int g
        for g in range(4):
            self.add_periods(group, g, first, top, old_last, hi if hi > old_last else old_last,
                             n_added)

    cdef int add_edges(self, int32_t group, int32_t measure, int64_t width, int64_t first,
                       int64_t top, int64_t lo, int64_t hi) except -1:
        """The WAU/MAU edges' delta (plan._window_edges): the edge on day d is
        covered(d) - covered(d - 1), covered(d) being an active day in
        [d - width + 1, d]; old and new edges differ only in [lo, hi + width]."""
        cdef int64_t prev_old = last_bit_at_or_before(self.old_bits, lo - 1 - first) + first
        cdef int64_t prev_new = prev_old  # no added day before lo
        cdef bint was_old = prev_old >= lo - width, was_new = was_old, cov_old, cov_new
        cdef int64_t d, rel, edge
        for d in range(lo, hi + width + 1):
            rel = d - first
            if d <= top:
                if self.old_bits[rel >> 6] >> (rel & 63) & 1:
                    prev_old = d
                if self.new_bits[rel >> 6] >> (rel & 63) & 1:
                    prev_new = d
            cov_old = prev_old >= d - width + 1
            cov_new = prev_new >= d - width + 1
            edge = (<int64_t>cov_new - <int64_t>was_new) - (<int64_t>cov_old - <int64_t>was_old)
            if edge:
                self.add(group, measure, NO_GRAN, d, 0, edge)
            was_old, was_new = cov_old, cov_new
        return 0

    cdef inline bint old_in_period(self, int64_t period, int g, int64_t first,
                                   int64_t top) noexcept:
        """Was the user active (in the old state) in ``period`` of granularity ``g``?"""
        cdef int64_t start = period_start(period, g)
        cdef int64_t end = period_start(period + 1, g) - 1
        return any_bit(self.old_bits, (start if start > first else first) - first,
                       (end if end < top else top) - first)

    cdef int add_periods(self, int32_t group, int g, int64_t first, int64_t top,
                         int64_t old_last, int64_t new_last, Py_ssize_t n_added) except -1:
        """Per granularity: the fresh periods' classic and active cells, the lost cells
        next to them, the last-active cell (plan.add_new_days_delta's loop body)."""
        cdef int64_t cohort = period_of(first, g), p, q, last_p = 0, moved, before_q, last_b, last_n
        cdef bint have_last = False, cohorts = g != YEAR
        cdef bint active_b_prev, active_b, active_a_prev, active_a
        cdef Py_ssize_t i, j, n_fresh = 0
        for i in range(n_added):  # the added days sorted: their periods come in order
            p = period_of(self.added[i], g)
            if have_last and p == last_p:
                continue
            have_last, last_p = True, p
            if g != DAY and self.old_in_period(p, g, first, top):
                continue
            self.fresh[n_fresh] = p
            n_fresh += 1
        for i in range(n_fresh):
            p = self.fresh[i]
            if cohorts:
                self.add(group, M_CLASSIC, g, cohort, p - cohort, 1)
            self.add(group, M_ACTIVE, g, p, 0, 1)
        # lost(q) = active(q - 1) and not active(q): only q fresh or just after one moves
        for i in range(n_fresh):
            for j in range(2):
                q = self.fresh[i] + j
                if j == 1 and i + 1 < n_fresh and self.fresh[i + 1] == q:
                    continue  # handled as a fresh period itself
                active_b_prev = self.old_in_period(q - 1, g, first, top)
                active_b = self.old_in_period(q, g, first, top)
                active_a_prev = active_b_prev or is_fresh(self.fresh, n_fresh, q - 1)
                active_a = active_b or is_fresh(self.fresh, n_fresh, q)
                moved = ((<int64_t>(active_a_prev and not active_a))
                         - (<int64_t>(active_b_prev and not active_b)))
                if moved:
                    self.add(group, M_LOST, g, q, 0, moved)
        if cohorts:
            last_b, last_n = period_of(old_last, g), period_of(new_last, g)
            if last_b != last_n:
                self.add(group, M_LAST_ACTIVE, g, cohort, last_b - cohort, -1)
                self.add(group, M_LAST_ACTIVE, g, cohort, last_n - cohort, 1)
        return 0

    def add_user(self, tuple segments, state, int64_t sign):
        """Add ``sign`` times the full contributions of ``state`` (a UserState), as
        plan.user_contributions gives them without the 24-hour windows (the caller adds
        those): a new user, or one moving cohort or segment. False, and nothing added,
        where the native sums do not take the user: purchases, survey answers, returning
        events or no activity (the Python engine's), or an install cost above
        MAX_NATIVE_COST (so no batch's sum can overflow)."""
        cdef frozenset days = state.active_days
        if not days or state.purchases or state.answers or state.returns:
            return False
        cost = state.cost_units
        if cost > MAX_NATIVE_COST or cost < -MAX_NATIVE_COST:
            return False
        cdef int64_t cost_units = cost, first_day = state.first_day
        cdef frozenset install_days = state.install_days
        cdef int32_t group = self.group_of(segments)
        cdef Py_ssize_t n = len(days), i = 0, w
        self.reserve(0, n)
        for day in days:
            self.added[i] = day
            i += 1
        qsort(self.added, n, sizeof(int64_t), compare_days)
        cdef int64_t d, end = 0, width, last = self.added[n - 1]
        cdef int32_t measure
        cdef Py_ssize_t n_periods
        for i in range(n):
            self.add(group, M_DAU, NO_GRAN, self.added[i], 0, sign)
        for w in range(2):  # plan._window_edges: +1 where a covered run starts, -1 after
            measure = M_WAU_EDGE if w == 0 else M_MAU_EDGE
            width = WAU_DAYS if w == 0 else MAU_DAYS
            for i in range(n):
                d = self.added[i]
                if i == 0 or d > end:
                    if i > 0:
                        self.add(group, measure, NO_GRAN, end, 0, -sign)
                    self.add(group, measure, NO_GRAN, d, 0, sign)
                end = d + width
            self.add(group, measure, NO_GRAN, end, 0, -sign)
        for day in install_days:
            self.add(group, M_INSTALLS, NO_GRAN, day, 0, sign)
        self.add(group, M_NEW_USERS, NO_GRAN, first_day, 0, sign)
        cdef int g
        cdef int64_t cohort, p, previous = 0
        for g in range(4):
            cohort = period_of(first_day, g)
            self.add(group, M_COHORT_SIZE, g, cohort, 0, sign)
            n_periods = 0
            for i in range(n):  # sorted days: their periods come in order
                p = period_of(self.added[i], g)
                if n_periods and p == previous:
                    continue
                self.fresh[n_periods] = previous = p
                n_periods += 1
            for i in range(n_periods):
                p = self.fresh[i]
                if g != YEAR:
                    self.add(group, M_CLASSIC, g, cohort, p - cohort, sign)
                self.add(group, M_ACTIVE, g, p, 0, sign)
                if i + 1 == n_periods or self.fresh[i + 1] != p + 1:
                    self.add(group, M_LOST, g, p + 1, 0, sign)  # lost the period after
            if g != YEAR:
                self.add(group, M_LAST_ACTIVE, g, cohort, period_of(last, g) - cohort, sign)
                if cost_units:
                    self.add(group, M_COST, g, cohort, 0, sign * cost_units)
        return True

    def render_into(self, dict pending):
        """Add every sum to ``pending`` (segments -> Counter of cells), as plan.py's
        Python engine would have: cells (measure, day) or (measure, granularity, ...)."""
        cdef Py_ssize_t i
        cdef Slot* slot
        cdef int g
        cdef int32_t measure
        cdef object cell, counter
        cdef list counters = []
        for segments in self.groups:  # the Counter of each group, found once
            counter = pending.get(segments)
            if counter is None:
                counter = pending[segments] = Counter()
            counters.append(counter)
        for i in range(self.capacity):
            slot = &self.slots[i]
            if slot.kind == 0 or slot.value == 0:
                continue
            measure = slot.kind // 8
            g = slot.kind % 8
            if g == NO_GRAN:
                cell = (MEASURES[measure], slot.a)
            elif measure == M_CLASSIC or measure == M_LAST_ACTIVE:
                cell = (MEASURES[measure], GRANULARITY_NAMES[g], slot.a, slot.b)
            else:
                cell = (MEASURES[measure], GRANULARITY_NAMES[g], slot.a)
            counter = counters[slot.group]
            # dict's get and set: Counter's += would call its Python __missing__
            counter[cell] = counter.get(cell, 0) + slot.value


cdef void* grown(void* p, size_t size) except NULL:
    """``p`` reallocated to ``size`` bytes; MemoryError (``p`` still valid) when it fails."""
    cdef void* found = realloc(p, size)
    if found == NULL:
        raise MemoryError()
    return found


cdef inline void memcpy_words(uint64_t* to, const uint64_t* source, Py_ssize_t words) noexcept:
    cdef Py_ssize_t i
    for i in range(words):
        to[i] = source[i]


cdef inline bint is_fresh(const int64_t* fresh, Py_ssize_t n, int64_t q) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if fresh[i] == q:
            return True
        if fresh[i] > q:
            return False
    return False


cdef inline bint any_bit(const uint64_t* bits, int64_t lo, int64_t hi) noexcept:
    """Is any bit of positions lo..hi (inclusive) set? Empty when lo > hi."""
    if lo > hi:
        return False
    cdef int64_t w_lo = lo >> 6, w_hi = hi >> 6, w
    cdef uint64_t lo_mask = ~0ULL << (lo & 63)
    cdef uint64_t hi_mask = ~0ULL >> (63 - (hi & 63))
    if w_lo == w_hi:
        return (bits[w_lo] & lo_mask & hi_mask) != 0
    if bits[w_lo] & lo_mask:
        return True
    for w in range(w_lo + 1, w_hi):
        if bits[w]:
            return True
    return (bits[w_hi] & hi_mask) != 0


cdef inline int64_t last_bit_at_or_before(const uint64_t* bits, int64_t pos) noexcept:
    """The highest set position <= pos (pos >= 0 and bit 0 set: the first day)."""
    cdef int64_t w = pos >> 6
    cdef uint64_t word = bits[w] & (~0ULL >> (63 - (pos & 63)))
    while word == 0:
        w -= 1
        word = bits[w]
    return w * 64 + 63 - __builtin_clzll(word)


# ---- state building: plan.add_events natively ---------------------------------------------

from retention_tracker.streams.segments import money_units
from retention_tracker.streams.user_state import MONEY_UNITS, ATTRIBUTES, Purchases, UserState
from retention_tracker.streams.windows24 import merge_spans

from cpython.mem cimport PyMem_Free
from cpython.set cimport PyFrozenSet_New, PySet_Add, PySet_Contains

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL

cdef int64_t MS_DAY = 86_400_000  # calendar.MS_PER_DAY
# Python's day_of goes through float seconds (ts_ms / 1000), exact to the ms below 2^33 s
# (year 2242); later instants are left to it
cdef int64_t ZONE_TABLE_END_MS = (<int64_t>1 << 33) * 1000
cdef Py_ssize_t MAX_ZONE_DAYS = 1 << 16  # ~179 years of UTC days per zone
cdef int64_t ZONE_MARGIN_DAYS = 32  # tabulated around a missing day at once


cdef class ZoneDays:
    """A non-UTC calendar's offsets, tabulated per UTC day from the calendar's own
    ``utc_offset_ms`` (zoneinfo): the offset at the start of each UTC day. A UTC day whose
    start and the next day's start have the same offset lies in one offset (tzdata has no
    two transitions within a day: after 1970 the closest two of 410 zone files are 6.9
    days apart), and its events' local day is ``floor((ts + offset) / day)``; a day with
    a transition in it (DST changes: two a year) asks the calendar's
    ``day_of`` per event, as the Python engine does. Kept per timezone for the process,
    grown around the days events fall on."""

    cdef object calendar
    cdef int64_t base  # the UTC day of starts[0]
    cdef Py_ssize_t count
    cdef int64_t* starts  # ms offset at the start of UTC day base + i

    def __cinit__(self, calendar):
        self.calendar = calendar
        self.base = 0
        self.count = 0
        self.starts = NULL

    def __dealloc__(self):
        free(self.starts)

    cdef bint cover(self, int64_t lo, int64_t hi) except -1:
        """Tabulate UTC days lo..hi (with the days already held); False when that would
        hold more than MAX_ZONE_DAYS (the caller asks the calendar instead)."""
        cdef int64_t old_hi = self.base + self.count - 1, v
        if self.count:
            lo = lo if lo < self.base else self.base
            hi = hi if hi > old_hi else old_hi
        if hi - lo + 1 > MAX_ZONE_DAYS:
            return False
        cdef int64_t* table = <int64_t*>grown(NULL, (hi - lo + 1) * sizeof(int64_t))
        offset_of = self.calendar.utc_offset_ms
        try:
            for v in range(lo, hi + 1):
                if self.count and self.base <= v <= old_hi:
                    table[v - lo] = self.starts[v - self.base]
                else:
                    table[v - lo] = offset_of(v * MS_DAY)
        except BaseException:
            free(table)
            raise
        free(self.starts)
        self.starts, self.base, self.count = table, lo, hi - lo + 1
        return True

    cdef int64_t day_of(self, int64_t ts) except? -1:
        """The calendar's day_of(ts), from the table where the UTC day has one offset."""
        cdef int64_t u = floordiv(ts, MS_DAY), offset
        if 0 <= ts < ZONE_TABLE_END_MS:
            if (u < self.base or u + 1 >= self.base + self.count) and not self.cover(
                    u - ZONE_MARGIN_DAYS, u + ZONE_MARGIN_DAYS):
                return self.calendar.day_of(ts)
            offset = self.starts[u - self.base]
            if offset == self.starts[u + 1 - self.base]:
                return floordiv(ts + offset, MS_DAY)
        return self.calendar.day_of(ts)


cdef dict ZONES = {}  # timezone -> its ZoneDays, for the process


cdef ZoneDays zone_days(calendar):
    """The calendar's offset table (None: UTC, whose day is plain division)."""
    timezone = calendar.timezone
    if timezone == "UTC":
        return None
    cdef ZoneDays found = ZONES.get(timezone)
    if found is None:
        found = ZONES[timezone] = ZoneDays(calendar)
    return found


cdef inline int64_t local_day(ZoneDays zone, int64_t ts) except? -1:
    return floordiv(ts, MS_DAY) if zone is None else zone.day_of(ts)


def day_of(calendar, int64_t ts_ms):
    """The native engine's local day of an instant (tests compare it with calendar.py)."""
    return local_day(zone_days(calendar), ts_ms)


# scratch of add_events, grown as needed: per event its time and local day, the times
# sorted, the install and session days. One user at a time: Python code it calls (money,
# calendar, spans) may let another thread in, which then takes the Python engine (BUSY)
cdef bint BUSY = False
cdef int64_t* EV_TS = NULL
cdef int64_t* EV_DAY = NULL
cdef int64_t* EV_SORTED = NULL
cdef int64_t* EV_INSTALL = NULL
cdef int64_t* EV_SESSION = NULL
cdef Py_ssize_t EV_CAP = 0


cdef int reserve_events(Py_ssize_t n) except -1:
    global EV_TS, EV_DAY, EV_SORTED, EV_INSTALL, EV_SESSION, EV_CAP
    if n <= EV_CAP:
        return 0
    cdef Py_ssize_t size = n * sizeof(int64_t)
    EV_TS = <int64_t*>grown(EV_TS, size)
    EV_DAY = <int64_t*>grown(EV_DAY, size)
    EV_SORTED = <int64_t*>grown(EV_SORTED, size)
    EV_INSTALL = <int64_t*>grown(EV_INSTALL, size)
    EV_SESSION = <int64_t*>grown(EV_SESSION, size)
    EV_CAP = n
    return 0


cdef Py_ssize_t sort_unique(int64_t* values, Py_ssize_t n) noexcept:
    """Sort values[:n] and drop repeats; returns how many are left."""
    if n < 2:
        return n
    qsort(values, n, sizeof(int64_t), compare_days)
    cdef Py_ssize_t i, kept = 1
    for i in range(1, n):
        if values[i] != values[kept - 1]:
            values[kept] = values[i]
            kept += 1
    return kept


# ---- money: segments.money_units of a float without Decimal ----------------------------------

cdef int64_t MONEY_DIGITS = 4  # MONEY_UNITS = 10^4
assert MONEY_UNITS == 10 ** MONEY_DIGITS
cdef uint64_t MAX_EXACT_UNITS = (<uint64_t>1) << 62  # larger: Python's ints


cdef bint float_units(double amount, int64_t* units) except -1:
    """money_units(amount) into ``units``: Python's shortest repr of the float (the digits
    ``str`` gives, which money_units reads as a Decimal) times 10^4, rounded half to even
    like Decimal's default context. False for what it leaves to money_units: inf, nan,
    and results beyond 2^62."""
    cdef char* text = PyOS_double_to_string(amount, c'r', 0, 0, NULL)
    cdef char* c = text
    cdef bint negative = False, ok = True, exponent_negative = False
    cdef uint64_t mantissa = 0, power = 1, quotient, remainder
    cdef int64_t exponent = 0, written = 0, digits = 0, i
    try:
        if c[0] == c'-':
            negative = True
            c += 1
        while c'0' <= c[0] <= c'9' or c[0] == c'.':
            if c[0] == c'.':
                digits = -1
            else:
                mantissa = mantissa * 10 + <uint64_t>(c[0] - c'0')
                if digits < 0:
                    exponent -= 1
            c += 1
        if c[0] == c'e':
            c += 1
            if c[0] == c'-' or c[0] == c'+':
                exponent_negative = c[0] == c'-'
                c += 1
            while c'0' <= c[0] <= c'9':
                written = written * 10 + (c[0] - c'0')
                c += 1
            exponent += -written if exponent_negative else written
        if c[0] != 0:  # inf, nan
            return False
    finally:
        PyMem_Free(text)
    exponent += MONEY_DIGITS  # units = mantissa * 10^exponent, rounded
    if exponent >= 0:
        for i in range(exponent):
            if mantissa > MAX_EXACT_UNITS // 10:
                return False
            mantissa *= 10
        if mantissa > MAX_EXACT_UNITS:
            return False
        quotient = mantissa
    elif exponent < -19:  # mantissa < 10^17: far below half of 10^19
        quotient = 0
    else:
        for i in range(-exponent):
            power *= 10
        quotient, remainder = mantissa // power, mantissa % power
        if 2 * remainder > power or (2 * remainder == power and quotient & 1):
            quotient += 1
    units[0] = -<int64_t>quotient if negative else <int64_t>quotient
    return True


def units_of(amount):
    """segments.money_units(amount), a float's without Decimal (tests hold them equal)."""
    cdef int64_t units
    if type(amount) is float and float_units(amount, &units):
        return units
    if type(amount) is int:
        return amount * MONEY_UNITS
    return money_units(amount)


cdef frozenset NO_DAYS = frozenset()


cdef object with_days(object old, const int64_t* days, Py_ssize_t n):
    """``old`` (a frozenset of days) with ``days`` (sorted, unique) added: ``old`` itself
    when it holds them all (the usual: another event on a day counted)."""
    cdef Py_ssize_t i, first_new = -1
    for i in range(n):
        if not PySet_Contains(old, days[i]):
            first_new = i
            break
    if first_new < 0:
        return old
    cdef object found = PyFrozenSet_New(old)  # a new set: filled before anyone sees it
    for i in range(first_new, n):
        PySet_Add(found, days[i])
    return found


cdef bint earlier_value(list values, int64_t* best_ts, int a, object value, int64_t ts
                        ) except -1:
    """Does this event's value of attribute ``a`` win over the one kept (then kept)? The
    earliest event carrying it wins; equal times: the smallest value (plan.add_events)."""
    if values[a] is None or ts < best_ts[a] or (ts == best_ts[a] and value < values[a]):
        values[a] = value
        best_ts[a] = ts
        return True
    return False


cdef Py_ssize_t count_new(object old, const int64_t* days, Py_ssize_t n) except -1:
    """How many of ``days`` ``old`` (a frozenset) does not hold."""
    cdef Py_ssize_t i, found = 0
    for i in range(n):
        if not PySet_Contains(old, days[i]):
            found += 1
    return found


cdef bint sorted_by_key(tuple entries, Py_ssize_t width) except -1:
    """Are ``entries`` tuples of ``width`` whose keys (all but the last item) strictly
    ascend? Then the Python engine's dict-and-sort rebuilds them equal, and they are kept."""
    cdef object previous = None, key
    for entry in entries:
        if type(entry) is not tuple or len(<tuple>entry) != width:
            return False
        key = (<tuple>entry)[:width - 1]
        if previous is not None and not previous < key:
            return False
        previous = key
    return True


cdef object python_add_events(state, events, calendar, rules):
    """The Python engine's add_events (streams/plan.py), for the cases left to it."""
    from retention_tracker.streams.plan import add_events as python
    return python(state, events, calendar, rules)


def add_events(state, events, calendar, rules):
    """``plan.add_events`` natively: the same UserState (equal field by field) for every
    input, from one pass over the user's events in C (times, local days from the zone's
    table, the UTC day spans) and the state's day sets taken as they are where nothing
    new is added to them; money without Decimal (``units_of``).

    Left to the Python engine, for the whole user: no events, a state with no active day
    (known by survey answers only; the plan never passes one), a state attribute outside
    ATTRIBUTES, a time or attribute time beyond int64, a call while another thread's is
    under way (BUSY). Done with Python objects, as plan.py does: purchases, install cost
    and RETURN_EVENTS days when an event adds some (exact at any size), the spans when a
    late event lands before the last UTC day with activity (``windows24.merge_spans``),
    the local day of an instant in a UTC day with a timezone transition or past 2242
    (``calendar.day_of``)."""
    global BUSY
    if type(events) is not list:
        events = list(events)
    found = None
    if not BUSY:
        BUSY = True
        try:
            found = build_state(state, <list>events, calendar, rules)
        except OverflowError:  # a time or attribute time beyond int64
            pass
        finally:
            BUSY = False
    return python_add_events(state, events, calendar, rules) if found is None else found


cdef object build_state(state, list events, calendar, rules):
    cdef Py_ssize_t n = len(events), i, n_install = 0, n_session = 0, a
    if n == 0 or (state is not None and not state.active_days):
        return None
    cdef ZoneDays zone = zone_days(calendar)
    reserve_events(n)
    cdef bint have = state is not None
    cdef int64_t ts, day, first_ms = 0, last_ms = 0
    cdef int64_t best_ts[3]
    cdef bint attributes_kept = True  # the state's attributes tuple stays as it is
    values = [None, None, None]  # of ATTRIBUTES, with their times in best_ts
    best_ts[0] = best_ts[1] = best_ts[2] = 0
    if have:
        first_ms, last_ms = state.first_seen_ms, state.last_active_ms
        a = -1
        for entry in state.attributes:
            name, value, at = entry
            if name not in ATTRIBUTES:
                return None
            i = ATTRIBUTES.index(name)
            if type(entry) is not tuple or i <= a:
                attributes_kept = False
            a = i
            values[i], best_ts[i] = value, at
    return_types = rules.return_types
    cost = state.cost_units if have else 0
    purchases = None  # (day, currency) -> Purchases, made when an event adds one
    returns = None  # kind -> set of days, likewise
    for i in range(n):
        event = events[i]
        ts = event.ts_ms
        kind = event.type
        day = local_day(zone, ts)
        EV_TS[i] = ts
        EV_DAY[i] = day
        if return_types and kind in return_types:
            if returns is None:
                returns = {k: set(days) for k, days in state.returns} if have else {}
            found = returns.get(kind)
            if found is None:
                found = returns[kind] = set()
            found.add(day)
        if kind == "session":
            EV_SESSION[n_session] = day
            n_session += 1
        elif kind == "install":
            EV_INSTALL[n_install] = day
            n_install += 1
            if event.cost:
                cost = cost + units_of(event.cost)
        elif kind == "purchase":
            if purchases is None:
                purchases = ({(d, cur): p for d, cur, p in state.purchases} if have else {})
            key = (day, event.currency or rules.default_currency)
            old = purchases.get(key)
            amount = event.amount
            units = units_of(amount) if amount else 0
            purchases[key] = (Purchases(1, units) if old is None
                              else Purchases(old.count + 1, old.units + units))
        value = event.platform  # ATTRIBUTES, in their order
        if value is not None and earlier_value(values, best_ts, 0, value, ts):
            attributes_kept = False
        value = event.country
        if value is not None and earlier_value(values, best_ts, 1, value, ts):
            attributes_kept = False
        value = event.campaign
        if value is not None and earlier_value(values, best_ts, 2, value, ts):
            attributes_kept = False
        if not have and i == 0:
            first_ms = last_ms = ts
        if ts < first_ms:
            first_ms = ts
        if ts > last_ms:
            last_ms = ts
    old_active = state.active_days if have else NO_DAYS
    for i in range(n):
        EV_SORTED[i] = EV_DAY[i]
    cdef Py_ssize_t n_days = sort_unique(EV_SORTED, n)
    cdef Py_ssize_t added = count_new(old_active, EV_SORTED, n_days)
    active = old_active if added == 0 else with_days(old_active, EV_SORTED, n_days)
    n_install = sort_unique(EV_INSTALL, n_install)
    installs = with_days(state.install_days if have else NO_DAYS, EV_INSTALL, n_install)
    n_session = sort_unique(EV_SESSION, n_session)
    old_sessions = state.session_days if have else NO_DAYS
    if old_sessions is old_active and count_new(old_sessions, EV_SESSION, n_session) == added:
        sessions = active  # a session on every active day, before and after (the usual)
    else:  # plan.add_events' shared_days: the active days' own set when equal
        sessions = with_days(old_sessions, EV_SESSION, n_session)
        if sessions is not active and sessions == active:
            sessions = active
    if attributes_kept and have:
        attributes = state.attributes
    else:
        attributes = tuple((ATTRIBUTES[a], values[a], best_ts[a]) for a in range(3)
                           if values[a] is not None)
    if purchases is None and have and state.purchases and not sorted_by_key(
            state.purchases, 3):
        purchases = {(d, cur): p for d, cur, p in state.purchases}
    if purchases is not None:
        purchase_items = tuple((d, cur, p) for (d, cur), p in sorted(purchases.items()))
    else:
        purchase_items = state.purchases if have else ()
    if returns is None and have and state.returns and not sorted_by_key(state.returns, 2):
        returns = {k: set(days) for k, days in state.returns}
    if returns is not None:
        return_items = (tuple((k, frozenset(days)) for k, days in sorted(returns.items()))
                        if returns else ())
    else:
        return_items = state.returns if have else ()
    spans = None if have and state.utc_spans is None else merged_spans(
        state.utc_spans if have else (), n)
    return UserState(
        first_ms, last_ms, local_day(zone, first_ms), active, installs, attributes,
        purchase_items, cost, sessions,
        state.notified_episode_ms if have else None,
        state.notified_days if have else (),
        state.expired_days if have else (),
        state.answers if have else (),
        return_items,
        spans,
        state.at_risk_episode_ms if have else None,
        state.at_risk_moment_ms if have else 0,
        state.at_risk_sent if have else False,
    )


cdef tuple merged_spans(tuple spans, Py_ssize_t n):
    """``windows24.merge_spans`` of the state's spans and the events' times (EV_TS[:n]):
    per UTC day, the earliest and latest. The usual, events on the last UTC day with
    activity or later, and a new user's, here; a late event before it, in Python."""
    cdef Py_ssize_t i, k = 0, kept
    for i in range(n):
        EV_SORTED[i] = EV_TS[i]
    qsort(EV_SORTED, n, sizeof(int64_t), compare_days)
    cdef int64_t first_day = floordiv(EV_SORTED[0], MS_DAY), u, last_u, lo, hi
    cdef list found = []  # (day, earliest, latest) per UTC day, ascending
    lo = hi = EV_SORTED[0]
    last_u = first_day
    for i in range(1, n):
        u = floordiv(EV_SORTED[i], MS_DAY)
        if u != last_u:
            found.append((last_u, lo, hi))
            last_u, lo = u, EV_SORTED[i]
        hi = EV_SORTED[i]
    found.append((last_u, lo, hi))
    if not spans:
        return tuple(found)
    last = spans[len(spans) - 1]
    if first_day < last[0]:
        return merge_spans(spans, {d: [f, l] for d, f, l in found})
    kept = len(spans) - 1
    if first_day == last[0]:  # the last span grows
        u, lo, hi = found[0]
        found[0] = (u, min(lo, last[1]), max(hi, last[2]))
    else:
        kept += 1
    return spans[:kept] + tuple(found)
