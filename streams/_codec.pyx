# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The user record codec in C (issue 29): ``encode_user`` and ``decode_user`` of
streams/user_state.py, record format 7 written and formats 3-7 read, byte for byte and
field for field what the Python functions give.

Why native: a changed user is encoded once per batch and a loaded one decoded once, and in
Python each varint is a loop of bigint operations (``_put_varint`` alone was 2.1% of the
worker). Here a record is written into a C buffer, a day set becomes a bitmap in one pass,
and Python objects are touched only to read the state's fields and build the decoded one.

The Python functions stay the oracle and the fallback: whatever this module does not take
natively (a number outside int64, a negative one the format cannot hold, a malformed
state or record, any error) is handed to them whole, so the bytes, the state or the error
are theirs (tests/streams/test_codec_native.py holds the two equal).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memset

from msgspec.structs import astuple

from retention_tracker.streams import user_state as _python
from retention_tracker.streams.user_state import Purchases, UserState

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

cdef extern from *:
    int __builtin_ctz(unsigned int) noexcept nogil
    bint add_overflow "__builtin_add_overflow" (int64_t, int64_t, int64_t*) noexcept nogil
    bint sub_overflow "__builtin_sub_overflow" (int64_t, int64_t, int64_t*) noexcept nogil
    bint mul_overflow "__builtin_mul_overflow" (int64_t, int64_t, int64_t*) noexcept nogil

# the layout this module writes and reads: a change to either side fails the import (the
# engine then says the native build is stale, streams/engine.py) rather than a record
_FIELDS = ("first_seen_ms", "last_active_ms", "first_day", "active_days", "install_days",
           "attributes", "purchases", "cost_units", "session_days", "notified_episode_ms",
           "notified_days", "expired_days", "answers", "returns", "utc_spans",
           "at_risk_episode_ms", "at_risk_moment_ms", "at_risk_sent")
if UserState.__struct_fields__ != _FIELDS or _python._FORMAT_VERSION != 7 or \
        _python._READABLE_VERSIONS != (3, 4, 5, 6, 7):
    raise ImportError("streams/_codec.pyx is stale: UserState or the record format changed")

# a UserState's fields by position (msgspec.structs.astuple: one call, not 18 lookups)
cdef enum:
    FIRST_SEEN = 0
    LAST_ACTIVE = 1
    FIRST_DAY = 2
    ACTIVE_DAYS = 3
    INSTALL_DAYS = 4
    ATTRIBUTE_LIST = 5
    PURCHASES = 6
    COST_UNITS = 7
    SESSION_DAYS = 8
    EPISODE = 9
    NOTIFIED = 10
    EXPIRED = 11
    ANSWERS = 12
    RETURNS = 13
    SPANS = 14
    RISK_EPISODE = 15
    RISK_MOMENT = 16
    RISK_SENT = 17

cdef int64_t MS_PER_DAY = _python.MS_PER_DAY
cdef str DEFAULT_SURVEY = _python._DEFAULT_SURVEY
cdef tuple ATTRIBUTES = _python.ATTRIBUTES
cdef dict ATTRIBUTE_INDEX = {name: index for index, name in enumerate(ATTRIBUTES)}
cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF


class _NotNative(Exception):
    """What this module hands to the Python codec (never seen outside it)."""


def encode_user(state):
    """``user_state.encode_user(state)``: the same bytes (format 7), or its error."""
    found = encode(state)
    return _python.encode_user(state) if found is None else found


def decode_user(data):
    """``user_state.decode_user(data)``: the same state (formats 3-7), or its error."""
    found = decode(data)
    return _python.decode_user(data) if found is None else found


def encode_native(state):
    """The record as this module writes it; None where it leaves ``state`` to the Python
    codec (tests: the usual states never are)."""
    return encode(state)


def decode_native(data):
    """The state as this module reads it; None where it leaves ``data`` to the Python
    codec."""
    return decode(data)


cdef object encode(object state):
    cdef unsigned char stack[512]
    cdef Out out
    out.data, out.size, out.cap, out.heap = stack, 0, sizeof(stack), False
    cdef Days days
    days.bits, days.words, days.heap = days.stack, 0, False
    cdef Bits bits
    bits.data, bits.heap = bits.stack, False
    try:
        write_user(&out, &days, &bits, state)
        return PyBytes_FromStringAndSize(<char*>out.data, out.size)
    except Exception:  # _NotNative, or an error the Python codec raises its own way
        return None
    finally:
        if out.heap:
            free(out.data)
        if days.heap:
            free(days.bits)
        if bits.heap:
            free(bits.data)


cdef object decode(object data):
    if not PyBytes_CheckExact(data):
        return None
    try:
        return read_user(data)
    except Exception:  # _NotNative, or an error the Python codec raises its own way
        return None


# ---- writing ----------------------------------------------------------------------------

cdef struct Out:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t cap
    bint heap  # data was malloc'ed (else it is the caller's stack buffer)


cdef int grow(Out* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap = 2 * out.cap if 2 * out.cap > out.size + more else out.size + more
    cdef unsigned char* data
    if out.heap:
        data = <unsigned char*>realloc(out.data, cap)
    else:
        data = <unsigned char*>malloc(cap)
        if data != NULL:
            memcpy(data, out.data, out.size)
    if data == NULL:
        raise MemoryError()
    out.data, out.cap, out.heap = data, cap, True
    return 0


cdef inline int put(Out* out, uint64_t value) except -1:
    """One varint (``_put_varint``): 7 bits a byte, low first, high bit = more follow."""
    if out.size + 10 > out.cap:
        grow(out, 10)
    while value >= 0x80:
        out.data[out.size] = <unsigned char>(value & 0x7F) | 0x80
        out.size += 1
        value >>= 7
    out.data[out.size] = <unsigned char>value
    out.size += 1
    return 0


cdef inline int put_unsigned(Out* out, int64_t value) except -1:
    if value < 0:  # the format has no room for it: the Python codec's error
        raise _NotNative()
    return put(out, <uint64_t>value)


cdef inline int put_signed(Out* out, int64_t value) except -1:
    """``_put_varint(_zigzag(value))``: 0, -1, 1, -2, ... as 0, 1, 2, 3, ..."""
    return put(out, (<uint64_t>value << 1) ^ <uint64_t>(value >> 63))


cdef inline int put_raw(Out* out, const char* raw, Py_ssize_t size) except -1:
    if out.size + size > out.cap:
        grow(out, size)
    memcpy(out.data + out.size, raw, size)
    out.size += size
    return 0


cdef inline int put_text(Out* out, object text) except -1:
    """Its UTF-8 length, then the bytes (``len(raw)``, ``raw``)."""
    cdef Py_ssize_t size
    cdef const char* raw = utf8(text, &size)
    put(out, <uint64_t>size)
    return put_raw(out, raw, size)


cdef inline const char* utf8(object text, Py_ssize_t* size) except NULL:
    if not PyUnicode_CheckExact(text):
        raise _NotNative()
    return PyUnicode_AsUTF8AndSize(text, size)


cdef inline int64_t number(object value) except? -1:
    """A Python int within int64 (a subclass, bool included, goes to the Python codec;
    beyond int64, Cython's conversion raises OverflowError, which goes there too)."""
    if not PyLong_CheckExact(value):
        raise _NotNative()
    return <int64_t>value


cdef inline int64_t minus(int64_t a, int64_t b) except? -1:
    cdef int64_t found
    if sub_overflow(a, b, &found):
        raise _NotNative()
    return found


cdef inline int64_t plus(int64_t a, int64_t b) except? -1:
    cdef int64_t found
    if add_overflow(a, b, &found):
        raise _NotNative()
    return found


cdef inline int64_t times(int64_t a, int64_t b) except? -1:
    cdef int64_t found
    if mul_overflow(a, b, &found):
        raise _NotNative()
    return found


cdef int compare_days(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


# scratch: a day set sorted, on the stack unless large
cdef struct Days:
    int64_t* bits
    Py_ssize_t words  # int64 slots available when heap (else the stack's)
    bint heap
    int64_t stack[64]


cdef int64_t* room(Days* days, Py_ssize_t words) except NULL:
    """At least ``words`` int64 slots (their contents not kept)."""
    cdef Py_ssize_t have = days.words if days.heap else 64
    if words <= have:
        return days.bits
    cdef int64_t* found = <int64_t*>malloc(words * sizeof(int64_t))
    if found == NULL:
        raise MemoryError()
    if days.heap:
        free(days.bits)
    days.bits, days.words, days.heap = found, words, True
    return found


cdef Py_ssize_t collect_days(Days* days, object found) except -1:
    """The days of a set into ``days.bits``, in the set's order; their number."""
    cdef Py_ssize_t n = len(found), i = 0
    cdef int64_t* into = room(days, n)
    cdef frozenset frozen
    if type(found) is frozenset:  # Cython walks a frozenset's table without an iterator
        frozen = found
        for day in frozen:
            into[i] = number(day)
            i += 1
    else:
        for day in found:
            if i == n:  # more than its len() said: no room for it
                raise _NotNative()
            into[i] = number(day)
            i += 1
    if i != n:
        raise _NotNative()
    return n


cdef Py_ssize_t sorted_days(Days* days, object found) except -1:
    """The days of a set into ``days.bits``, ascending; their number."""
    cdef Py_ssize_t n = collect_days(days, found)
    qsort(days.bits, n, sizeof(int64_t), compare_days)
    return n


cdef int write_user(Out* out, Days* scratch, Bits* bits, object state) except -1:
    """``encode_user`` (user_state.py), field by field in the same order."""
    if type(state) is not UserState:  # a subclass may read its fields otherwise
        raise _NotNative()
    cdef tuple f = astuple(state)
    cdef int64_t first_seen = number(f[FIRST_SEEN])
    cdef int64_t last_active = number(f[LAST_ACTIVE])
    cdef int64_t first_day = number(f[FIRST_DAY])
    active = f[ACTIVE_DAYS]
    if type(active) is not frozenset and type(active) is not set:  # len() = distinct days
        raise _NotNative()
    cdef Py_ssize_t n, i
    out.data[0] = 7
    out.size = 1
    put_signed(out, first_seen)
    put_unsigned(out, minus(last_active, first_seen))
    put_signed(out, first_day)
    n = sorted_days(scratch, f[INSTALL_DAYS])
    put(out, n)
    for i in range(n):
        put_unsigned(out, minus(scratch.bits[i], first_day))
    cdef tuple items = f[ATTRIBUTE_LIST]
    put(out, len(items))
    for name, value, ts_ms in items:
        index = ATTRIBUTE_INDEX.get(name)
        if index is None:
            raise _NotNative()
        put(out, <uint64_t>(<int>index))  # < 128: one byte, as ``out.append``
        put_text(out, value)
        put_signed(out, minus(number(ts_ms), first_seen))
    items = f[PURCHASES]
    put(out, len(items))
    for day, currency, totals in items:
        put_unsigned(out, minus(number(day), first_day))
        put_currency(out, currency)
        put_unsigned(out, number(totals.count))
        put_unsigned(out, number(totals.units))
    put_unsigned(out, number(f[COST_UNITS]))
    # the active days' bitmap, now: the session days and the spans test membership in it
    cdef Py_ssize_t bitmap_size = active_bitmap(bits, scratch, active, first_day)
    cdef const unsigned char* bitmap = bits.data
    write_session_days(out, f, active, bitmap, bitmap_size, first_day)
    write_marks(out, f, first_seen)
    write_answers(out, f[ANSWERS], first_day, first_seen)
    items = f[RETURNS]
    put(out, len(items))
    for kind, kind_days in items:
        put_text(out, kind)
        n = sorted_days(scratch, kind_days)
        put(out, n)
        for i in range(n):
            put_signed(out, minus(scratch.bits[i], first_day))
    write_spans(out, f[SPANS], first_seen, last_active, first_day, len(active),
                bitmap, bitmap_size)
    write_at_risk_mark(out, f, first_seen)
    return put_raw(out, <const char*>bitmap, bitmap_size)


cdef int put_currency(Out* out, object currency) except -1:
    """``currency.encode()[:3].ljust(3)``: three bytes, space-padded."""
    cdef Py_ssize_t size
    cdef const char* raw = utf8(currency, &size)
    cdef char padded[3]
    padded[0] = padded[1] = padded[2] = b' '
    memcpy(padded, raw, size if size < 3 else 3)
    return put_raw(out, padded, 3)


# scratch: the active days' bitmap (bit i: day first_day + i), on the stack unless the
# user's days span more than 8 years
cdef struct Bits:
    unsigned char* data
    bint heap
    unsigned char stack[384]


cdef Py_ssize_t active_bitmap(Bits* bits, Days* scratch, object active, int64_t first_day
                              ) except -1:
    """The active days as the record's bitmap in ``bits``; its size in bytes. A day
    before the first is no bitmap the format can hold (the Python codec's to judge)."""
    cdef int64_t last = first_day, offset
    cdef Py_ssize_t n = collect_days(scratch, active), i
    cdef int64_t* days = scratch.bits
    for i in range(n):
        if days[i] < first_day:
            raise _NotNative()
        if days[i] > last:
            last = days[i]
    if not n:
        return 0
    if last - first_day >= (1 << 34):  # 2 GB of bitmap: not for this module
        raise _NotNative()
    cdef Py_ssize_t size = <Py_ssize_t>((last - first_day + 8) // 8)
    if size > <Py_ssize_t>sizeof(bits.stack):
        bits.data = <unsigned char*>malloc(size)
        if bits.data == NULL:
            raise MemoryError()
        bits.heap = True
    memset(bits.data, 0, size)
    for i in range(n):
        offset = days[i] - first_day
        bits.data[offset >> 3] |= 1 << (offset & 7)
    return size


cdef inline bint in_bitmap(const unsigned char* bitmap, Py_ssize_t size, int64_t offset
                           ) noexcept:
    return 0 <= offset < size * 8 and (bitmap[offset >> 3] >> (offset & 7)) & 1


cdef int write_session_days(Out* out, tuple f, object active,
                            const unsigned char* bitmap, Py_ssize_t bitmap_size,
                            int64_t first_day) except -1:
    """``_encode_session_days``: 0, 1 (every active day) or 2 + a mask over the active
    days ascending."""
    days = f[SESSION_DAYS]
    if not days or days is active or days == active:
        return put(out, 1 if days else 0)
    cdef Py_ssize_t mask_size = (len(active) + 7) // 8, index = 0
    cdef int64_t offset
    if out.size + 10 + mask_size > out.cap:
        grow(out, 10 + mask_size)
    put(out, <uint64_t>(2 + mask_size))
    cdef unsigned char* mask = out.data + out.size
    memset(mask, 0, mask_size)
    for offset in range(bitmap_size * 8):  # the active days ascending
        if not in_bitmap(bitmap, bitmap_size, offset):
            continue
        if plus(first_day, offset) in days:
            mask[index >> 3] |= 1 << (index & 7)
        index += 1
    out.size += mask_size
    return 0


cdef int write_marks(Out* out, tuple f, int64_t first_seen) except -1:
    """The win-back marks: each threshold sent (mark d * 2) or expired (d * 2 + 1), after
    the episode they belong to; none without an episode."""
    episode = f[EPISODE]
    if episode is None:
        return put(out, 0)
    cdef tuple notified = f[NOTIFIED], expired = f[EXPIRED]
    cdef Py_ssize_t count = len(notified) + len(expired)
    put(out, count)
    if not count:
        return 0
    put_signed(out, minus(number(episode) if episode else 0, first_seen))
    for day in notified:
        put_unsigned(out, times(number(day), 2))
    for day in expired:
        put_unsigned(out, plus(times(number(day), 2), 1))
    return 0


cdef int write_answers(Out* out, tuple answers, int64_t first_day, int64_t first_seen
                       ) except -1:
    """``_encode_answers``: the survey (empty for the default), day, time, event id, score."""
    cdef int64_t score
    put(out, len(answers))
    for survey, day, ts_ms, event_id, answer_score in answers:
        if survey == DEFAULT_SURVEY:
            put(out, 0)
        else:
            put_text(out, survey)
        put_signed(out, minus(number(day), first_day))
        put_signed(out, minus(number(ts_ms), first_seen))
        put_text(out, event_id)
        score = number(answer_score)
        if not 0 <= score < 256:  # bytearray.append's ValueError, from the Python codec
            raise _NotNative()
        if out.size + 1 > out.cap:
            grow(out, 1)
        out.data[out.size] = <unsigned char>score
        out.size += 1
    return 0


cdef int write_spans(Out* out, object spans, int64_t first_seen, int64_t last_active,
                     int64_t first_day, Py_ssize_t active_count, const unsigned char* bitmap,
                     Py_ssize_t bitmap_size) except -1:
    """``_encode_spans``: a code (0: unknown; else 1 + count * 2 + whether the days are
    written), then per span what first_seen and last_active do not say."""
    if spans is None:
        return put(out, 0)
    cdef tuple found = spans
    cdef Py_ssize_t count = len(found), index, last = count - 1
    cdef int64_t day, first_ms, last_ms, previous = first_day, into_day
    if count and (number(found[0][1]) != first_seen or number(found[last][2]) != last_active):
        raise _NotNative()  # the Python codec's assertion
    cdef bint explicit = count != active_count
    if not explicit:
        for span in found:
            if not in_bitmap(bitmap, bitmap_size, minus(number(span[0]), first_day)):
                explicit = True
                break
    put(out, <uint64_t>(1 + count * 2 + explicit))
    for index in range(count):
        span_day, span_first, span_last = found[index]
        day, first_ms, last_ms = number(span_day), number(span_first), number(span_last)
        if explicit:
            put_signed(out, minus(day, previous))
            previous = day
        if index == 0:
            if index != last:
                put_unsigned(out, minus(last_ms, first_ms))
            continue
        into_day = minus(first_ms, times(day, MS_PER_DAY))
        if index == last:
            put_unsigned(out, into_day)
        else:
            put_unsigned(out, plus(times(into_day, 2), last_ms != first_ms))
            if last_ms != first_ms:
                put_unsigned(out, minus(last_ms, first_ms))
    return 0


cdef int write_at_risk_mark(Out* out, tuple f, int64_t first_seen) except -1:
    """``_encode_at_risk_mark``: 0, or 1 (expired) / 2 (sent), the episode, the moment."""
    episode = f[RISK_EPISODE]
    if episode is None:
        return put(out, 0)
    sent = f[RISK_SENT]
    if sent is True:
        put(out, 2)
    elif sent is False:
        put(out, 1)
    else:
        raise _NotNative()
    put_signed(out, minus(number(episode), first_seen))
    return put_signed(out, minus(number(f[RISK_MOMENT]), first_seen))


# ---- reading ----------------------------------------------------------------------------

cdef struct In:
    const unsigned char* data
    Py_ssize_t size
    Py_ssize_t pos


cdef inline uint64_t get(In* rec) except? 0xFFFFFFFFFFFFFFFF:
    """One varint (``_get_varint``); past the end or beyond 64 bits: the Python codec's."""
    cdef uint64_t result = 0, byte
    cdef int shift = 0
    while True:
        if rec.pos >= rec.size or shift > 63:
            raise _NotNative()
        byte = rec.data[rec.pos]
        rec.pos += 1
        if shift == 63 and (byte & 0x7F) > 1:
            raise _NotNative()
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7


cdef inline int64_t get_offset(In* rec) except? -1:
    """A varint that is added to a number: within int64."""
    cdef uint64_t found = get(rec)
    if found > <uint64_t>I64_MAX:
        raise _NotNative()
    return <int64_t>found


cdef inline int64_t get_signed(In* rec) except? -1:
    """``_unzigzag(_get_varint(...))``."""
    cdef uint64_t found = get(rec)
    return <int64_t>(found >> 1) ^ -<int64_t>(found & 1)


cdef inline str get_text(In* rec, Py_ssize_t size):
    """``data[pos:pos + size].decode()`` where the record holds them (a short slice means a
    read past the end right after: the Python codec's IndexError)."""
    if size > rec.size - rec.pos:
        raise _NotNative()
    cdef str text = PyUnicode_DecodeUTF8(<const char*>rec.data + rec.pos, size, NULL)
    rec.pos += size
    return text


cdef inline Py_ssize_t get_size(In* rec) except -1:
    cdef uint64_t found = get(rec)
    if found > <uint64_t>(rec.size - rec.pos):
        raise _NotNative()
    return <Py_ssize_t>found


cdef object read_user(bytes data):
    """``decode_user`` (user_state.py) of a well-formed record."""
    cdef In rec
    rec.data = <const unsigned char*>PyBytes_AS_STRING(data)
    rec.size = len(data)
    rec.pos = 1
    if rec.size == 0 or not 3 <= rec.data[0] <= 7:
        raise _NotNative()
    cdef int version = rec.data[0]
    cdef int64_t first_seen = get_signed(&rec)
    cdef int64_t last_active = plus(first_seen, get_offset(&rec))
    cdef int64_t first_day = get_signed(&rec)
    cdef uint64_t count, i
    count = get(&rec)
    cdef list installs = []
    for i in range(count):
        installs.append(plus(first_day, get_offset(&rec)))
    count = get(&rec)
    cdef list attributes = []
    cdef unsigned char which
    for i in range(count):
        if rec.pos >= rec.size or rec.data[rec.pos] >= len(ATTRIBUTES):
            raise _NotNative()
        which = rec.data[rec.pos]
        rec.pos += 1
        value = get_text(&rec, get_size(&rec))
        attributes.append((ATTRIBUTES[which], value, plus(first_seen, get_signed(&rec))))
    count = get(&rec)
    cdef list purchases = []
    for i in range(count):
        day = plus(first_day, get_offset(&rec))
        currency = get_text(&rec, 3).rstrip()
        bought = get(&rec)
        purchases.append((day, currency, Purchases(bought, get(&rec))))
    cost_units = get(&rec)
    # the session days: a code, or (format 7) 2 + the length of a mask
    cdef uint64_t session_code = get(&rec)
    cdef const unsigned char* mask = NULL
    cdef Py_ssize_t mask_size = 0
    if version >= 7 and session_code >= 2:
        if session_code - 2 > <uint64_t>(rec.size - rec.pos):
            raise _NotNative()
        mask, mask_size = rec.data + rec.pos, <Py_ssize_t>(session_code - 2)
        rec.pos += mask_size
    episode, notified, expired = read_marks(&rec, first_seen, version >= 4)
    answers, returns = (), ()
    if version >= 5:
        answers = read_answers(&rec, first_day, first_seen)
        returns = read_returns(&rec, first_day)
    cdef list found_spans = None
    cdef list span_days = None
    if version >= 6:
        found_spans, span_days = read_spans(&rec, first_day)
    risk_episode, risk_moment, risk_sent = None, 0, False
    if version >= 6:
        mark = get(&rec)
        if mark:
            risk_episode = plus(first_seen, get_signed(&rec))
            risk_moment = plus(first_seen, get_signed(&rec))
            risk_sent = mark == 2
    # the rest: the active days' bitmap
    cdef list active = []
    cdef Py_ssize_t index
    cdef unsigned char byte
    cdef int bit
    if rec.size - rec.pos > (1 << 28):
        raise _NotNative()
    for index in range(rec.size - rec.pos):
        byte = rec.data[rec.pos + index]
        while byte:  # its set bits, lowest first
            bit = __builtin_ctz(byte)
            active.append(plus(first_day, index * 8 + bit))
            byte &= byte - 1
    active_days = frozenset(active)
    if mask != NULL:
        if active and (len(active) - 1) >> 3 >= mask_size:
            raise _NotNative()  # the Python codec's IndexError
        session_days = frozenset([active[index] for index in range(len(active))
                                  if mask[index >> 3] >> (index & 7) & 1])
    elif (session_code == 1) if version >= 7 else (session_code > 0):
        session_days = active_days
    else:
        session_days = frozenset()
    spans = None
    if found_spans is not None:
        spans = make_spans(active if span_days is None else span_days, found_spans,
                           first_seen, last_active)
    return UserState(first_seen, last_active, first_day, active_days, frozenset(installs),
                     tuple(attributes), tuple(purchases), cost_units, session_days, episode,
                     notified, expired, answers, returns, spans, risk_episode, risk_moment,
                     risk_sent)


cdef tuple read_marks(In* rec, int64_t first_seen, bint flagged):
    """``_decode_marks``: (episode or None, notified, expired); before format 4 every
    mark was a sent one, unflagged."""
    cdef uint64_t count = get(rec), i, mark
    if not count:
        return None, (), ()
    episode = plus(first_seen, get_signed(rec))
    cdef list notified = [], expired = []
    for i in range(count):
        mark = get(rec)
        if not flagged:
            notified.append(mark)
        elif mark & 1:
            expired.append(mark >> 1)
        else:
            notified.append(mark >> 1)
    return episode, tuple(notified), tuple(expired)


cdef tuple read_answers(In* rec, int64_t first_day, int64_t first_seen):
    cdef uint64_t count = get(rec), i
    cdef list answers = []
    for i in range(count):
        survey = get_text(rec, get_size(rec)) or DEFAULT_SURVEY
        day = plus(first_day, get_signed(rec))
        ts_ms = plus(first_seen, get_signed(rec))
        event_id = get_text(rec, get_size(rec))
        if rec.pos >= rec.size:
            raise _NotNative()
        answers.append((survey, day, ts_ms, event_id, rec.data[rec.pos]))
        rec.pos += 1
    return tuple(answers)


cdef tuple read_returns(In* rec, int64_t first_day):
    cdef uint64_t count = get(rec), i, n, j
    cdef list returns = []
    for i in range(count):
        kind = get_text(rec, get_size(rec))
        n = get(rec)
        days = []
        for j in range(n):
            days.append(plus(first_day, get_signed(rec)))
        returns.append((kind, frozenset(days)))
    return tuple(returns)


cdef tuple read_spans(In* rec, int64_t first_day):
    """``_decode_spans``: the spans as written, (earliest, width) each None where
    first_seen or last_active gives it (None: unknown), and their days when written."""
    cdef uint64_t code = get(rec)
    if not code:
        return None, None
    cdef uint64_t count = (code - 1) >> 1, index, flagged
    cdef list days = [] if (code - 1) & 1 else None
    cdef list found = []
    cdef int64_t previous = first_day
    for index in range(count):
        if days is not None:
            previous = plus(previous, get_signed(rec))
            days.append(previous)
        earliest = width = None
        if index == 0:
            if index != count - 1:
                width = get_offset(rec)
        elif index == count - 1:
            earliest = get_offset(rec)
        else:
            flagged = get(rec)
            earliest, width = flagged >> 1, 0
            if flagged & 1:
                width = get_offset(rec)
        found.append((earliest, width))
    return found, days


cdef tuple make_spans(list days, list found, int64_t first_seen, int64_t last_active):
    """``_spans``: each span's (day, earliest, latest) in ms."""
    cdef Py_ssize_t n = len(found), i
    cdef int64_t day, first_ms
    if len(days) != n:
        raise _NotNative()  # zip(strict=True)'s ValueError in the Python codec
    cdef list spans = []
    for i in range(n):
        day = days[i]
        earliest, width = found[i]
        first_ms = first_seen if earliest is None else plus(times(day, MS_PER_DAY),
                                                            number(earliest))
        spans.append((day, first_ms,
                      last_active if width is None else plus(first_ms, number(width))))
    return tuple(spans)
