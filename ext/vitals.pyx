# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Decoders for Bluetooth health-device payloads (IEEE 11073-20601 numbers, GATT characteristics,
Polar H10 PMD ECG frames). Built as ``mediasrv._vitals``; the public face is ``mediasrv.vitals``.

Every characteristic is parsed by one C function into a ``Reading`` struct; two front ends turn a
Reading into a dict (``decode``) or into one row of a numpy structured array (``decode_batch``).
Kinds are passed as integer codes (16-bit characteristic UUIDs, ``KIND_POLAR_ECG`` for ECG frames).
"""

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.math cimport NAN, INFINITY
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII

cimport numpy as cnp
import numpy as np

cnp.import_array()

# --- kinds ------------------------------------------------------------------------------------------

KIND_HEART_RATE = 0x2A37
KIND_PLX_CONTINUOUS = 0x2A5F
KIND_PLX_SPOT_CHECK = 0x2A5E
KIND_BLOOD_PRESSURE = 0x2A35
KIND_TEMPERATURE = 0x2A1C
KIND_WEIGHT = 0x2A9D
KIND_GLUCOSE = 0x2A18
# Not a GATT characteristic: mediasrv's private code for Polar PMD frames, 0xFF00 + PMD measurement type.
KIND_POLAR_ECG = 0xFF00

cdef enum:
    K_HEART_RATE = 0x2A37
    K_PLX_CONT = 0x2A5F
    K_PLX_SPOT = 0x2A5E
    K_BP = 0x2A35
    K_TEMP = 0x2A1C
    K_WEIGHT = 0x2A9D
    K_GLUCOSE = 0x2A18
    K_POLAR_ECG = 0xFF00

KIND_NAMES = {
    K_HEART_RATE: "heart_rate",
    K_PLX_CONT: "plx_continuous",
    K_PLX_SPOT: "plx_spot_check",
    K_BP: "blood_pressure",
    K_TEMP: "temperature",
    K_WEIGHT: "weight",
    K_GLUCOSE: "glucose",
    K_POLAR_ECG: "polar_ecg",
}

cdef dict _CODES = {**{name: code for code, name in KIND_NAMES.items()},
                    **{code: code for code in KIND_NAMES}}


cdef int _resolve(object kind) except -1:
    """Kind name or 16-bit code -> code; ValueError for anything else."""
    cdef object code
    if type(kind) is str or type(kind) is int:
        code = _CODES.get(kind)
        if code is not None:
            return <int>code
    elif isinstance(kind, np.integer):
        return _resolve(int(kind))
    if isinstance(kind, str):
        raise ValueError(f"unknown vitals kind {kind!r}; known: " + ", ".join(KIND_NAMES.values()))
    if isinstance(kind, int) and not isinstance(kind, bool):
        _unknown_kind(kind)
    raise ValueError(f"vitals kind must be a name or a 16-bit UUID int, got {kind!r}")


def kind_code(kind):
    """The code of a kind given by name or 16-bit code; ValueError when it is not a vitals kind."""
    return _resolve(kind)


# --- special values ---------------------------------------------------------------------------------

cdef enum:
    SP_ABSENT = -1
    SP_NONE = 0
    SP_NAN = 1
    SP_NRES = 2
    SP_PINF = 3
    SP_NINF = 4
    SP_RESERVED = 5
    SP_UNSUCCESSFUL = 6  # weight 0xFFFF: "measurement unsuccessful"

# Index = special code; code 0 means an ordinary number.
SPECIAL_NAMES = (None, "nan", "nres", "+inf", "-inf", "reserved", "unsuccessful")

# Exact powers of ten (correctly rounded from integers) so m * 10**e and m / 10**-e are correctly
# rounded for |e| <= 22; the pure-Python reference uses the same table and the same operations.
cdef double POW10[129]
for _k in range(129):
    POW10[_k] = float(10 ** _k)


cdef inline double _scaled(int32_t mantissa, int exponent) noexcept nogil:
    if exponent >= 0:
        return mantissa * POW10[exponent]
    return mantissa / POW10[-exponent]


cdef inline double _special_value(int32_t offset, int8_t* special) noexcept nogil:
    # IEEE 11073-20601 puts its special values around the NRes code (0x0800 for SFLOAT, 0x800000 for
    # FLOAT, exponent 0): -2 +INF, -1 NaN, 0 NRes, +1 reserved, +2 -INF.
    if offset == -1:
        special[0] = SP_NAN
        return NAN
    if offset == 0:
        special[0] = SP_NRES
        return NAN
    if offset == -2:
        special[0] = SP_PINF
        return INFINITY
    if offset == 2:
        special[0] = SP_NINF
        return -INFINITY
    special[0] = SP_RESERVED
    return NAN


cdef inline double sfloat_value(uint16_t raw, int8_t* special) noexcept nogil:
    cdef int32_t mantissa = raw & 0x0FFF
    cdef int exponent = raw >> 12
    if exponent == 0 and -2 <= mantissa - 0x0800 <= 2:
        return _special_value(mantissa - 0x0800, special)
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent >= 8:
        exponent -= 16
    special[0] = SP_NONE
    return _scaled(mantissa, exponent)


cdef inline double float_value(uint32_t raw, int8_t* special) noexcept nogil:
    cdef int32_t mantissa = raw & 0x00FFFFFF
    cdef int exponent = <int8_t>(raw >> 24)
    if exponent == 0 and -2 <= mantissa - 0x00800000 <= 2:
        return _special_value(mantissa - 0x00800000, special)
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    special[0] = SP_NONE
    return _scaled(mantissa, exponent)


def sfloat(int raw):
    """One SFLOAT (16-bit int as read little-endian) -> (value, special name or None)."""
    if not 0 <= raw <= 0xFFFF:
        raise ValueError(f"SFLOAT must be a 16-bit unsigned value, got {raw}")
    cdef int8_t sp
    cdef double v = sfloat_value(<uint16_t>raw, &sp)
    return v, SPECIAL_NAMES[sp]


def float32(long long raw):
    """One 32-bit FLOAT (int as read little-endian) -> (value, special name or None)."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise ValueError(f"FLOAT must be a 32-bit unsigned value, got {raw}")
    cdef int8_t sp
    cdef double v = float_value(<uint32_t>raw, &sp)
    return v, SPECIAL_NAMES[sp]


ctypedef fused raw_t:
    uint16_t
    uint32_t


cdef inline double _raw_value(raw_t raw, int8_t* special) noexcept nogil:
    if raw_t is uint16_t:
        return sfloat_value(raw, special)
    else:
        return float_value(raw, special)


cdef object _decode_array(const raw_t[::1] raw, int8_t[::1] special):
    cdef Py_ssize_t i, n = raw.shape[0]
    cdef cnp.ndarray[cnp.float64_t, ndim=1] out = np.empty(n, dtype=np.float64)
    cdef double* o = <double*>cnp.PyArray_DATA(out)
    cdef int8_t sp
    cdef bint want_special = special is not None
    if want_special and special.shape[0] != n:
        raise ValueError(f"special has {special.shape[0]} slots for {n} values")
    with nogil:
        if want_special:
            for i in range(n):
                o[i] = _raw_value(raw[i], &special[i])
        else:
            for i in range(n):
                o[i] = _raw_value(raw[i], &sp)
    return out


def sfloat_array(const uint16_t[::1] raw, int8_t[::1] special=None):
    """Raw SFLOATs -> float64 array; special codes (index into SPECIAL_NAMES) go to ``special``."""
    return _decode_array(raw, special)


def float_array(const uint32_t[::1] raw, int8_t[::1] special=None):
    """Raw 32-bit FLOATs -> float64 array; special codes go to ``special`` when given."""
    return _decode_array(raw, special)


# --- the parsed form of one payload ----------------------------------------------------------------

cdef enum:
    MAX_F = 7
    MAX_I = 6
    TS_ABSENT = 0
    TS_UNKNOWN = 1
    TS_KNOWN = 2

cdef struct Reading:
    int kind
    int flags
    int unit          # index into the kind's unit names, -1 when the kind has none
    int unit2         # weight only: height unit index
    double f[MAX_F]
    int8_t fs[MAX_F]  # special code per float slot, SP_ABSENT when the field is absent
    int64_t iv[MAX_I]
    bint ip[MAX_I]    # integer slot present?
    int ts_state
    int year, month, day, hour, minute, second
    Py_ssize_t var_pos    # first byte of the RR intervals / ECG samples
    Py_ssize_t var_count
    uint64_t ts_ns


cdef inline void _blank(Reading* r, int kind) noexcept nogil:
    cdef int k
    r.kind = kind
    r.flags = 0
    r.unit = -1
    r.unit2 = -1
    for k in range(MAX_F):
        r.f[k] = NAN
        r.fs[k] = SP_ABSENT
    for k in range(MAX_I):
        r.iv[k] = -1
        r.ip[k] = False
    r.ts_state = TS_ABSENT
    r.var_pos = 0
    r.var_count = 0
    r.ts_ns = 0


cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    return p[0] | (p[1] << 8)


cdef inline uint32_t _u24(const uint8_t* p) noexcept nogil:
    return p[0] | (p[1] << 8) | (<uint32_t>p[2] << 16)


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return p[0] | (p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef int _raise_missing(int kind, int flags, str what, Py_ssize_t pos, Py_ssize_t size,
                        Py_ssize_t n, bint announced) except -1:
    name = KIND_NAMES[kind]
    where = f"byte {pos}" if size == 1 else f"bytes {pos}-{pos + size - 1}"
    if announced:
        raise ValueError(f"{name}: flags 0x{flags:02x} announce {what} at {where} "
                         f"but the payload has only {n} bytes")
    raise ValueError(f"{name}: truncated payload: {what} needs {where} "
                     f"but the payload has only {n} bytes")


cdef inline int _need(int kind, int flags, str what, Py_ssize_t pos, Py_ssize_t size,
                      Py_ssize_t n, bint announced) except -1:
    if pos + size > n:
        _raise_missing(kind, flags, what, pos, size, n, announced)
    return 0


cdef int _no_trailing(int kind, int flags, Py_ssize_t pos, Py_ssize_t n) except -1:
    if pos != n:
        raise ValueError(f"{KIND_NAMES[kind]}: {n - pos} trailing bytes after the last field "
                         f"(from byte {pos}; flags 0x{flags:02x}; payload {n} bytes)")
    return 0


cdef int _empty(int kind, Py_ssize_t n) except -1:
    if n == 0:
        raise ValueError(f"{KIND_NAMES[kind]}: empty payload (the flags byte is missing)")
    return 0


cdef int _days_in_month(int year, int month) noexcept nogil:
    if month == 2:
        if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0:
            return 29
        return 28
    if month == 4 or month == 6 or month == 9 or month == 11:
        return 30
    return 31


cdef int _datetime(Reading* r, const uint8_t* p, str what) except -1:
    """GATT Date Time (7 bytes): year u16, month, day, hours, minutes, seconds; 0 = unknown."""
    cdef int year = _u16(p), month = p[2], day = p[3], hour = p[4], minute = p[5], second = p[6]
    if (year != 0 and not 1582 <= year <= 9999) or month > 12 or day > 31 or hour > 23 \
            or minute > 59 or second > 59:
        return _bad_datetime(r.kind, what, year, month, day, hour, minute, second)
    if year == 0 or month == 0 or day == 0:
        r.ts_state = TS_UNKNOWN
        return 0
    if day > _days_in_month(year, month):
        raise ValueError(f"{KIND_NAMES[r.kind]}: {what} {year:04d}-{month:02d}-{day:02d} "
                         f"is not a calendar date")
    r.ts_state = TS_KNOWN
    r.year = year
    r.month = month
    r.day = day
    r.hour = hour
    r.minute = minute
    r.second = second
    return 0


cdef int _bad_datetime(int kind, str what, int year, int month, int day, int hour, int minute,
                       int second) except -1:
    name = KIND_NAMES[kind]
    if year != 0 and not 1582 <= year <= 9999:
        raise ValueError(f"{name}: {what} year {year} out of range (1582-9999, 0 = unknown)")
    if month > 12:
        raise ValueError(f"{name}: {what} month {month} out of range (1-12, 0 = unknown)")
    if day > 31:
        raise ValueError(f"{name}: {what} day {day} out of range (1-31, 0 = unknown)")
    raise ValueError(f"{name}: {what} time {hour:02d}:{minute:02d}:{second:02d} out of range")


# --- one parser per kind ---------------------------------------------------------------------------
# Float slots (f/fs) and integer slots (iv/ip) are named per kind in SPECS below.

cdef int _parse_heart_rate(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_HEART_RATE, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1, left
    r.flags = flags
    if flags & 0x01:
        _need(K_HEART_RATE, flags, "heart rate (uint16)", pos, 2, n, False)
        r.iv[0] = _u16(p + pos)
        pos += 2
    else:
        _need(K_HEART_RATE, flags, "heart rate (uint8)", pos, 1, n, False)
        r.iv[0] = p[pos]
        pos += 1
    r.ip[0] = True
    if flags & 0x04:  # sensor contact supported: bit 1 says whether contact is detected
        r.iv[1] = (flags >> 1) & 1
        r.ip[1] = True
    if flags & 0x08:
        _need(K_HEART_RATE, flags, "energy expended", pos, 2, n, True)
        r.iv[2] = _u16(p + pos)
        r.ip[2] = True
        pos += 2
    if flags & 0x10:
        left = n - pos
        if left == 0:
            _raise_missing(K_HEART_RATE, flags, "RR-intervals", pos, 2, n, True)
        if left & 1:
            raise ValueError(f"heart_rate: RR-interval at byte {n - 1} is truncated "
                             f"(1 of 2 bytes; payload {n} bytes)")
        r.var_pos = pos
        r.var_count = left // 2
        return 0
    return _no_trailing(K_HEART_RATE, flags, pos, n)


cdef inline Py_ssize_t _sfloat_at(Reading* r, int slot, const uint8_t* p, Py_ssize_t pos,
                                  Py_ssize_t n, str what, bint announced) except -1:
    _need(r.kind, r.flags, what, pos, 2, n, announced)
    r.f[slot] = sfloat_value(_u16(p + pos), &r.fs[slot])
    return pos + 2


cdef int _parse_plx_continuous(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_PLX_CONT, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    r.flags = flags
    pos = _sfloat_at(r, 0, p, pos, n, "SpO2 (normal)", False)
    pos = _sfloat_at(r, 1, p, pos, n, "pulse rate (normal)", False)
    if flags & 0x01:
        pos = _sfloat_at(r, 2, p, pos, n, "SpO2 (fast)", True)
        pos = _sfloat_at(r, 3, p, pos, n, "pulse rate (fast)", True)
    if flags & 0x02:
        pos = _sfloat_at(r, 4, p, pos, n, "SpO2 (slow)", True)
        pos = _sfloat_at(r, 5, p, pos, n, "pulse rate (slow)", True)
    if flags & 0x04:
        _need(K_PLX_CONT, flags, "measurement status", pos, 2, n, True)
        r.iv[0] = _u16(p + pos)
        r.ip[0] = True
        pos += 2
    if flags & 0x08:
        _need(K_PLX_CONT, flags, "device and sensor status", pos, 3, n, True)
        r.iv[1] = _u24(p + pos)
        r.ip[1] = True
        pos += 3
    if flags & 0x10:
        pos = _sfloat_at(r, 6, p, pos, n, "pulse amplitude index", True)
    return _no_trailing(K_PLX_CONT, flags, pos, n)


cdef int _parse_plx_spot_check(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_PLX_SPOT, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    r.flags = flags
    pos = _sfloat_at(r, 0, p, pos, n, "SpO2", False)
    pos = _sfloat_at(r, 1, p, pos, n, "pulse rate", False)
    if flags & 0x01:
        _need(K_PLX_SPOT, flags, "timestamp", pos, 7, n, True)
        _datetime(r, p + pos, "timestamp")
        pos += 7
    if flags & 0x02:
        _need(K_PLX_SPOT, flags, "measurement status", pos, 2, n, True)
        r.iv[0] = _u16(p + pos)
        r.ip[0] = True
        pos += 2
    if flags & 0x04:
        _need(K_PLX_SPOT, flags, "device and sensor status", pos, 3, n, True)
        r.iv[1] = _u24(p + pos)
        r.ip[1] = True
        pos += 3
    if flags & 0x08:
        pos = _sfloat_at(r, 2, p, pos, n, "pulse amplitude index", True)
    if flags & 0x10:
        r.iv[2] = 1
        r.ip[2] = True
    return _no_trailing(K_PLX_SPOT, flags, pos, n)


cdef int _parse_blood_pressure(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_BP, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    r.flags = flags
    r.unit = flags & 0x01
    pos = _sfloat_at(r, 0, p, pos, n, "systolic", False)
    pos = _sfloat_at(r, 1, p, pos, n, "diastolic", False)
    pos = _sfloat_at(r, 2, p, pos, n, "mean arterial pressure", False)
    if flags & 0x02:
        _need(K_BP, flags, "timestamp", pos, 7, n, True)
        _datetime(r, p + pos, "timestamp")
        pos += 7
    if flags & 0x04:
        pos = _sfloat_at(r, 3, p, pos, n, "pulse rate", True)
    if flags & 0x08:
        _need(K_BP, flags, "user ID", pos, 1, n, True)
        r.iv[0] = p[pos]
        r.ip[0] = True
        pos += 1
    if flags & 0x10:
        _need(K_BP, flags, "measurement status", pos, 2, n, True)
        r.iv[1] = _u16(p + pos)
        r.ip[1] = True
        pos += 2
    return _no_trailing(K_BP, flags, pos, n)


cdef int _parse_temperature(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_TEMP, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    r.flags = flags
    r.unit = flags & 0x01
    _need(K_TEMP, flags, "temperature (FLOAT)", pos, 4, n, False)
    r.f[0] = float_value(_u32(p + pos), &r.fs[0])
    pos += 4
    if flags & 0x02:
        _need(K_TEMP, flags, "timestamp", pos, 7, n, True)
        _datetime(r, p + pos, "timestamp")
        pos += 7
    if flags & 0x04:
        _need(K_TEMP, flags, "temperature type", pos, 1, n, True)
        r.iv[0] = p[pos]
        r.ip[0] = True
        pos += 1
    return _no_trailing(K_TEMP, flags, pos, n)


cdef int _parse_weight(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_WEIGHT, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    cdef bint imperial = flags & 0x01
    cdef uint16_t raw
    r.flags = flags
    r.unit = imperial
    _need(K_WEIGHT, flags, "weight", pos, 2, n, False)
    raw = _u16(p + pos)
    if raw == 0xFFFF:
        r.f[0] = NAN
        r.fs[0] = SP_UNSUCCESSFUL
    else:
        # Resolution 0.005 kg or 0.01 lb; dividing keeps results like 70.0 exact.
        r.f[0] = raw / 100.0 if imperial else raw / 200.0
        r.fs[0] = SP_NONE
    pos += 2
    if flags & 0x02:
        _need(K_WEIGHT, flags, "timestamp", pos, 7, n, True)
        _datetime(r, p + pos, "timestamp")
        pos += 7
    if flags & 0x04:
        _need(K_WEIGHT, flags, "user ID", pos, 1, n, True)
        r.iv[0] = p[pos]
        r.ip[0] = True
        pos += 1
    if flags & 0x08:
        _need(K_WEIGHT, flags, "BMI and height", pos, 4, n, True)
        r.f[1] = _u16(p + pos) / 10.0
        r.fs[1] = SP_NONE
        raw = _u16(p + pos + 2)
        r.f[2] = raw / 10.0 if imperial else raw / 1000.0
        r.fs[2] = SP_NONE
        r.unit2 = imperial
        pos += 4
    return _no_trailing(K_WEIGHT, flags, pos, n)


cdef int _parse_glucose(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _empty(K_GLUCOSE, n)
    cdef int flags = p[0]
    cdef Py_ssize_t pos = 1
    cdef int type_location
    r.flags = flags
    _need(K_GLUCOSE, flags, "sequence number", pos, 2, n, False)
    r.iv[0] = _u16(p + pos)
    r.ip[0] = True
    pos += 2
    _need(K_GLUCOSE, flags, "base time", pos, 7, n, False)
    _datetime(r, p + pos, "base time")
    pos += 7
    if flags & 0x01:
        _need(K_GLUCOSE, flags, "time offset", pos, 2, n, True)
        r.iv[1] = <int16_t>_u16(p + pos)
        r.ip[1] = True
        pos += 2
    if flags & 0x02:
        pos = _sfloat_at(r, 0, p, pos, n, "glucose concentration", True)
        _need(K_GLUCOSE, flags, "type and sample location", pos, 1, n, True)
        type_location = p[pos]
        r.iv[2] = type_location & 0x0F
        r.iv[3] = type_location >> 4
        r.ip[2] = True
        r.ip[3] = True
        r.unit = (flags >> 2) & 1
        pos += 1
    if flags & 0x08:
        _need(K_GLUCOSE, flags, "sensor status annunciation", pos, 2, n, True)
        r.iv[4] = _u16(p + pos)
        r.ip[4] = True
        pos += 2
    if flags & 0x10:
        r.iv[5] = 1
        r.ip[5] = True
    return _no_trailing(K_GLUCOSE, flags, pos, n)


cdef int _parse_polar_ecg(Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    if n < 10:
        raise ValueError(f"polar_ecg: truncated frame: the header needs 10 bytes "
                         f"but the frame has only {n}")
    if p[0] != 0:
        raise ValueError(f"polar_ecg: measurement type {p[0]} is not ECG (0)")
    if p[9] != 0:
        raise ValueError(f"polar_ecg: frame type {p[9]} is not supported "
                         f"(only 0, uncompressed 24-bit samples)")
    cdef Py_ssize_t body = n - 10
    if body == 0:
        raise ValueError("polar_ecg: frame holds no samples (10-byte header only)")
    if body % 3:
        raise ValueError(f"polar_ecg: {body % 3} trailing bytes after {body // 3} samples "
                         f"(samples are 3 bytes each; frame {n} bytes)")
    r.flags = 0
    r.ts_ns = <uint64_t>_u32(p + 1) | (<uint64_t>_u32(p + 5) << 32)
    r.var_pos = 10
    r.var_count = body // 3
    return 0


cdef int _parse(int kind, Reading* r, const uint8_t* p, Py_ssize_t n) except -1:
    _blank(r, kind)
    if kind == K_HEART_RATE:
        return _parse_heart_rate(r, p, n)
    if kind == K_PLX_CONT:
        return _parse_plx_continuous(r, p, n)
    if kind == K_PLX_SPOT:
        return _parse_plx_spot_check(r, p, n)
    if kind == K_BP:
        return _parse_blood_pressure(r, p, n)
    if kind == K_TEMP:
        return _parse_temperature(r, p, n)
    if kind == K_WEIGHT:
        return _parse_weight(r, p, n)
    if kind == K_GLUCOSE:
        return _parse_glucose(r, p, n)
    if kind == K_POLAR_ECG:
        return _parse_polar_ecg(r, p, n)
    return _unknown_kind(kind)


cdef int _unknown_kind(object kind) except -1:
    raise ValueError(f"unknown vitals kind 0x{kind:04X}; known: "
                     + ", ".join(f"0x{k:04X} ({v})" for k, v in KIND_NAMES.items()))


# --- field names per kind --------------------------------------------------------------------------

cdef class _Spec:
    cdef readonly tuple floats      # names of float slots
    cdef readonly tuple ints        # names of integer slots
    cdef readonly tuple bools       # per integer slot: True when it is a boolean
    cdef readonly object ts_name    # name of the date-time field or None
    cdef readonly tuple units       # unit names by index, () when the kind has none
    cdef readonly tuple units2      # weight: height unit names

    def __init__(self, floats, ints, bools, ts_name, units, units2=()):
        self.floats = floats
        self.ints = ints
        self.bools = bools
        self.ts_name = ts_name
        self.units = units
        self.units2 = units2


cdef dict SPECS = {
    K_HEART_RATE: _Spec((), ("heart_rate_bpm", "sensor_contact", "energy_expended_kj"),
                        (False, True, False), None, ()),
    K_PLX_CONT: _Spec(("spo2_pct", "pulse_rate_bpm", "spo2_fast_pct", "pulse_rate_fast_bpm",
                       "spo2_slow_pct", "pulse_rate_slow_bpm", "pulse_amplitude_index_pct"),
                      ("measurement_status", "device_sensor_status"), (False, False), None, ()),
    K_PLX_SPOT: _Spec(("spo2_pct", "pulse_rate_bpm", "pulse_amplitude_index_pct"),
                      ("measurement_status", "device_sensor_status", "device_clock_not_set"),
                      (False, False, True), "timestamp", ()),
    K_BP: _Spec(("systolic", "diastolic", "mean_arterial", "pulse_rate_bpm"),
                ("user_id", "measurement_status"), (False, False), "timestamp",
                ("mm[Hg]", "kPa")),
    K_TEMP: _Spec(("temperature",), ("temperature_type",), (False,), "timestamp",
                  ("Cel", "[degF]")),
    K_WEIGHT: _Spec(("weight", "bmi", "height"), ("user_id",), (False,), "timestamp",
                    ("kg", "[lb_av]"), ("m", "[in_i]")),
    K_GLUCOSE: _Spec(("concentration",),
                     ("sequence_number", "time_offset_min", "sample_type", "sample_location",
                      "sensor_status", "context_follows"),
                     (False, False, False, False, False, True), "base_time", ("kg/L", "mol/L")),
    K_POLAR_ECG: _Spec((), (), (), None, ()),
}


# --- front end 1: dict -----------------------------------------------------------------------------

cdef inline void _digits(char* at, int value, int width) noexcept nogil:
    cdef int k
    for k in range(width - 1, -1, -1):
        at[k] = <char>(48 + value % 10)
        value //= 10


cdef inline str _iso(Reading* r):
    # Hand-rolled: snprintf with six fields costs more than the rest of a decode.
    cdef char buf[19]
    _digits(buf, r.year, 4)
    buf[4] = b'-'
    _digits(buf + 5, r.month, 2)
    buf[7] = b'-'
    _digits(buf + 8, r.day, 2)
    buf[10] = b'T'
    _digits(buf + 11, r.hour, 2)
    buf[13] = b':'
    _digits(buf + 14, r.minute, 2)
    buf[16] = b':'
    _digits(buf + 17, r.second, 2)
    return PyUnicode_DecodeASCII(buf, 19, NULL)


cdef object _rr_list(const uint8_t* p, Py_ssize_t pos, Py_ssize_t count):
    cdef Py_ssize_t i
    out = [None] * count
    for i in range(count):
        out[i] = _u16(p + pos + 2 * i) / 1024.0  # RR-interval resolution is 1/1024 s
    return out


cdef object _samples(const uint8_t* p, Py_ssize_t pos, Py_ssize_t count):
    # The C API, not np.empty(...): a short ECG frame would otherwise spend most of its decode
    # resolving the dtype.
    cdef cnp.npy_intp dims = count
    cdef cnp.ndarray out = cnp.PyArray_SimpleNew(1, &dims, cnp.NPY_INT32)
    _fill_samples(<int32_t*>cnp.PyArray_DATA(out), p + pos, count)
    return out


cdef inline void _fill_samples(int32_t* out, const uint8_t* p, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    cdef int32_t v
    for i in range(count):
        v = <int32_t>_u24(p + 3 * i)
        if v & 0x800000:
            v -= 0x1000000
        out[i] = v


cdef int _last_kind = -1
cdef _Spec _last_spec = None


cdef dict _heart_rate_dict(Reading* r, const uint8_t* p):
    # The most frequent live reading (1/s per strap): built directly, without the generic walk.
    cdef dict d = {"heart_rate_bpm": r.iv[0]}
    if r.ip[1]:
        d["sensor_contact"] = r.iv[1] != 0
    if r.ip[2]:
        d["energy_expended_kj"] = r.iv[2]
    if r.var_count:
        d["rr_intervals_s"] = _rr_list(p, r.var_pos, r.var_count)
    return d


cdef dict _to_dict(Reading* r, const uint8_t* p):
    global _last_kind, _last_spec
    if r.kind == K_HEART_RATE:
        return _heart_rate_dict(r, p)
    if r.kind == K_POLAR_ECG:
        return {"timestamp_ns": r.ts_ns, "samples_uv": _samples(p, r.var_pos, r.var_count)}
    if r.kind != _last_kind:  # a stream decodes one kind: skip the dict lookup (GIL held)
        _last_spec = <_Spec>SPECS[r.kind]
        _last_kind = r.kind
    cdef _Spec spec = _last_spec
    cdef dict d = {}
    cdef dict special = None
    cdef int k
    if r.unit >= 0:
        d["unit"] = spec.units[r.unit]
    for k in range(len(spec.floats)):
        if r.fs[k] != SP_ABSENT:
            d[spec.floats[k]] = r.f[k]
            if r.fs[k] != SP_NONE:
                if special is None:
                    special = {}
                special[spec.floats[k]] = SPECIAL_NAMES[r.fs[k]]
    for k in range(len(spec.ints)):
        if r.ip[k]:
            d[spec.ints[k]] = (r.iv[k] != 0) if spec.bools[k] else r.iv[k]
    if r.ts_state == TS_KNOWN:
        d[spec.ts_name] = _iso(r)
    elif r.ts_state == TS_UNKNOWN:
        d[spec.ts_name] = None
    if r.unit2 >= 0:
        d["height_unit"] = spec.units2[r.unit2]
    if special is not None:
        d["special"] = special
    return d


cdef inline bytes _as_bytes(object payload):
    """Any bytes-like payload as bytes (copied only when it is not bytes already)."""
    if type(payload) is bytes:
        return <bytes>payload
    return memoryview(payload).tobytes()


def decode(object kind, payload):
    """Decode one device payload into a dict; ValueError when it is invalid.

    ``kind``: a name (heart_rate, plx_continuous, plx_spot_check, blood_pressure, temperature,
    weight, glucose, polar_ecg) or the 16-bit characteristic UUID as an int (0xFF00 = polar_ecg).
    Absent optional fields are absent; a timestamp the device marks as unknown is None; special
    values are NaN/±inf and named in ``result["special"]``.
    """
    cdef int code = _resolve(kind)
    cdef Reading r
    cdef bytes data = _as_bytes(payload)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    _parse(code, &r, p, PyBytes_GET_SIZE(data))
    return _to_dict(&r, p)


# --- front end 2: structured arrays ----------------------------------------------------------------

UNIT_WIDTH = 7  # longest UCUM unit written here is "[lb_av]"


def batch_dtype(object kind_or_name):
    """The numpy dtype of ``decode_batch`` records for ``kind``."""
    cdef int kind = _resolve(kind_or_name)
    cdef _Spec spec = <_Spec>SPECS[kind]
    fields = [("ok", "?"), ("flags", "u1")]
    if spec.units:
        fields.append(("unit", f"U{UNIT_WIDTH}"))
    for name in spec.floats:
        fields.append((name, "f8"))
        fields.append((name + "_special", "i1"))
    for name, is_bool in zip(spec.ints, spec.bools):
        fields.append((name, "i1" if is_bool else "i8"))
    if spec.ts_name is not None:
        fields.append((spec.ts_name, "M8[s]"))
    if spec.units2:
        fields.append(("height_unit", f"U{UNIT_WIDTH}"))
    if kind == K_POLAR_ECG:
        fields.append(("timestamp_ns", "u8"))
    if kind == K_HEART_RATE or kind == K_POLAR_ECG:
        fields.append(("values_start", "i8"))
        fields.append(("values_count", "i8"))
    return np.dtype(fields)


cdef struct Layout:
    Py_ssize_t itemsize
    Py_ssize_t ok, flags, unit, unit2, ts, ts_ns, vstart, vcount
    int nf, ni
    Py_ssize_t f[MAX_F]
    Py_ssize_t fs[MAX_F]
    Py_ssize_t i[MAX_I]
    bint ib[MAX_I]


cdef void _layout(Layout* lay, object dtype, _Spec spec, int kind):
    fields = dtype.fields
    cdef int k
    lay.itemsize = dtype.itemsize
    lay.ok = fields["ok"][1]
    lay.flags = fields["flags"][1]
    lay.unit = fields["unit"][1] if spec.units else -1
    lay.unit2 = fields["height_unit"][1] if spec.units2 else -1
    lay.ts = fields[spec.ts_name][1] if spec.ts_name is not None else -1
    lay.ts_ns = fields["timestamp_ns"][1] if kind == K_POLAR_ECG else -1
    lay.vstart = fields["values_start"][1] if "values_start" in fields else -1
    lay.vcount = fields["values_count"][1] if "values_count" in fields else -1
    lay.nf = len(spec.floats)
    lay.ni = len(spec.ints)
    for k in range(lay.nf):
        lay.f[k] = fields[spec.floats[k]][1]
        lay.fs[k] = fields[spec.floats[k] + "_special"][1]
    for k in range(lay.ni):
        lay.i[k] = fields[spec.ints[k]][1]
        lay.ib[k] = spec.bools[k]


cdef inline int64_t _days_from_civil(int y, int m, int d) noexcept nogil:
    # Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline void _put_unit(char* at, str unit) noexcept:
    cdef Py_ssize_t k
    cdef uint32_t* cells = <uint32_t*>at
    for k in range(len(unit)):
        cells[k] = <uint32_t>ord(unit[k])


cdef void _write_row(char* row, Layout* lay, Reading* r, _Spec spec, bint ok,
                     int64_t vstart) noexcept:
    cdef int k
    row[lay.ok] = ok
    (<uint8_t*>(row + lay.flags))[0] = <uint8_t>r.flags
    if lay.unit >= 0 and r.unit >= 0:
        _put_unit(row + lay.unit, spec.units[r.unit])
    if lay.unit2 >= 0 and r.unit2 >= 0:
        _put_unit(row + lay.unit2, spec.units2[r.unit2])
    for k in range(lay.nf):
        (<double*>(row + lay.f[k]))[0] = r.f[k]
        (<int8_t*>(row + lay.fs[k]))[0] = r.fs[k]
    for k in range(lay.ni):
        if lay.ib[k]:
            (<int8_t*>(row + lay.i[k]))[0] = <int8_t>r.iv[k]
        else:
            (<int64_t*>(row + lay.i[k]))[0] = r.iv[k]
    if lay.ts >= 0:
        if r.ts_state == TS_KNOWN:
            (<int64_t*>(row + lay.ts))[0] = (
                _days_from_civil(r.year, r.month, r.day) * 86400
                + r.hour * 3600 + r.minute * 60 + r.second)
        else:
            (<int64_t*>(row + lay.ts))[0] = <int64_t>(-0x7FFFFFFFFFFFFFFF - 1)  # NaT
    if lay.ts_ns >= 0:
        (<uint64_t*>(row + lay.ts_ns))[0] = r.ts_ns
    if lay.vstart >= 0:
        (<int64_t*>(row + lay.vstart))[0] = vstart
        (<int64_t*>(row + lay.vcount))[0] = r.var_count


def decode_batch(object kind_or_name, payloads, bint mark_errors=False):
    """Decode many payloads of one kind -> (records, values, errors).

    records: structured array (``batch_dtype(kind)``), one row per payload. values: the RR intervals
    (float64 s) or ECG samples (int32 µV) of all rows, concatenated; rows point into it with
    values_start/values_count. errors: (index, message) of invalid payloads, which raise ValueError
    unless ``mark_errors``, in which case their row has ok=False and every field absent.
    """
    cdef int kind = _resolve(kind_or_name)
    dtype = batch_dtype(kind)
    cdef _Spec spec = <_Spec>SPECS[kind]
    cdef list items = list(payloads)
    cdef Py_ssize_t count = len(items), idx, n, total = 0, k
    cdef cnp.ndarray records = np.zeros(count, dtype=dtype)
    cdef char* base = <char*>cnp.PyArray_DATA(records)
    cdef Layout lay
    cdef Reading r
    cdef const uint8_t* p
    cdef bytes data
    cdef list errors = []
    cdef bint has_values = kind == K_HEART_RATE or kind == K_POLAR_ECG
    cdef list chunks = [] if has_values else None
    _layout(&lay, dtype, spec, kind)
    for idx in range(count):
        data = _as_bytes(items[idx])
        p = <const uint8_t*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        try:
            _parse(kind, &r, p, n)
        except ValueError as exc:
            if not mark_errors:
                raise ValueError(f"payload {idx}: {exc}") from None
            errors.append((idx, str(exc)))
            _blank(&r, kind)
            _write_row(base + idx * lay.itemsize, &lay, &r, spec, False, total)
            continue
        if has_values and r.var_count:
            chunks.append(bytes(p[r.var_pos:n]))
        _write_row(base + idx * lay.itemsize, &lay, &r, spec, True, total)
        total += r.var_count
    values = _concat_values(kind, chunks, total) if has_values else np.empty(0, np.float64)
    return records, values, errors


cdef object _concat_values(int kind, list chunks, Py_ssize_t total):
    cdef Py_ssize_t at = 0, i, cnt
    cdef const uint8_t* p
    cdef bytes chunk
    cdef cnp.ndarray out
    cdef double* fo
    cdef int32_t* io
    if kind == K_HEART_RATE:
        out = np.empty(total, dtype=np.float64)
        fo = <double*>cnp.PyArray_DATA(out)
        for chunk in chunks:
            p = <const uint8_t*>PyBytes_AS_STRING(chunk)
            cnt = PyBytes_GET_SIZE(chunk) // 2
            for i in range(cnt):
                fo[at + i] = _u16(p + 2 * i) / 1024.0
            at += cnt
        return out
    out = np.empty(total, dtype=np.int32)
    io = <int32_t*>cnp.PyArray_DATA(out)
    for chunk in chunks:
        p = <const uint8_t*>PyBytes_AS_STRING(chunk)
        cnt = PyBytes_GET_SIZE(chunk) // 3
        _fill_samples(io + at, p, cnt)
        at += cnt
    return out
