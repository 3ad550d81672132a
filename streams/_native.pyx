# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The plan's hot core in C (issue 29): the "new active days" delta and a whole user's
contributions (without money, answers or returning events) summed per (segments, cell) in a
C hash table, rendered once per batch into the plan's Counters.

Why native: that delta is the usual change of a batch (a user active on a day not counted
yet, nothing else counted moving), and in Python it is sets, tuples and Counter updates
per cell. Here a user's active days are a bitmap (uint64 words from its first day), a
period's "was the user active in it" is a masked word test, day -> week/month/year is a
table (arithmetic outside it), and each contribution is one probe of an open-addressing
table keyed by (segments, measure, granularity, coordinates). Python objects are touched
only to read the two day sets and to render the distinct sums.

It computes exactly ``plan.add_new_days_delta`` (the pure-Python engine, kept as the
fallback): tests/streams/test_native.py holds the two to the same sums on random states
and calendars, and every plan property runs against both engines (streams/engine.py).
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
