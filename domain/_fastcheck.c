/* The loop of `domain.integrity.FastLogCheck.check`, in C.
 *
 * Same rules, same verdicts: for each row it checks the log chain link the
 * recorder wrote at its position (recomputed from the link before it), the
 * aggregate's version order, and the aggregate's hash chain (the event's
 * hash recomputed over its canonical document, `domain.chain`). Where the
 * stored bytes are certain to be what orjson decodes and writes again
 * unchanged (`direct_canonical`), the canonical document is written straight
 * from them and the chain fields are read from them: the state is never
 * decoded. Otherwise, or if anything read so does not pass, the row is
 * checked as in Python: decoded by the same orjson function the Python loop
 * calls, its document serialised by orjson. What C saves is the decoding, that
 * serialisation, the hashing, the hex conversions and the per-row
 * bookkeeping, which in Python cost a call and an object each. Rows that pass
 * are handed on with their state as stored (bytes), as the Python loop does.
 *
 * Never more lenient than the Python loop: anything it does not expect
 * (a value of another type, a link that is not 64 lowercase hex digits)
 * fails the row, and the caller then checks the log in one pass, which says
 * what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    PyObject *loads;
    PyObject *dumps;
    PyObject *dumps_kwargs; /* {"option": OPT_SORT_KEYS} */
    unsigned char log_genesis[32];
    PyObject *genesis_hash; /* str: an aggregate's first previousHash */
    EVP_MD *sha256;
    EVP_MD_CTX *context;
    int ready;
} Config;

static Config config;

static PyObject *k_event_hash, *k_previous_hash, *k_originator_topic, *k_class_version,
    *k_timestamp, *k_actor, *k_idempotency_key, *k_aggregate_id, *k_version, *k_type,
    *k_payload;

static const char HEX[] = "0123456789abcdef";

static void
to_hex(const unsigned char digest[32], char out[64])
{
    for (int i = 0; i < 32; i++) {
        out[2 * i] = HEX[digest[i] >> 4];
        out[2 * i + 1] = HEX[digest[i] & 15];
    }
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The UTF-8 of `text` if it is a str of 64 characters, else NULL (no exception). */
static const char *
chars_of_64(PyObject *text)
{
    Py_ssize_t size;
    const char *chars;
    if (!PyUnicode_CheckExact(text)) return NULL;
    chars = PyUnicode_AsUTF8AndSize(text, &size);
    if (chars == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return size == 64 ? chars : NULL;
}

/* 64 lowercase hex digits to 32 bytes; 0 if `text` is anything else. */
static int
from_hex(PyObject *text, unsigned char out[32])
{
    const char *digits = chars_of_64(text);
    if (digits == NULL) return 0;
    for (int i = 0; i < 32; i++) {
        int high = hex_value(digits[2 * i]), low = hex_value(digits[2 * i + 1]);
        if (high < 0 || low < 0) return 0;
        out[i] = (unsigned char)(high << 4 | low);
    }
    return 1;
}

/* Whether `text` is a str of exactly these 64 hex digits. */
static int
equals_hex(PyObject *text, const char hex[64])
{
    const char *chars = chars_of_64(text);
    return chars != NULL && memcmp(chars, hex, 64) == 0;
}

static int
sha256(const void *const parts[], const size_t sizes[], int count, unsigned char out[32])
{
    if (!EVP_DigestInit_ex2(config.context, config.sha256, NULL)) return 0;
    for (int i = 0; i < count; i++) {
        if (!EVP_DigestUpdate(config.context, parts[i], sizes[i])) return 0;
    }
    return EVP_DigestFinal_ex(config.context, out, NULL);
}

/* The event's type name: the topic after its last dot (cached per topic). */
static PyObject *
type_name_of(PyObject *type_names, PyObject *topic)
{
    PyObject *name = PyDict_GetItemWithError(type_names, topic);
    Py_ssize_t length, dot;
    if (name != NULL) return Py_NewRef(name);
    if (PyErr_Occurred()) return NULL;
    length = PyUnicode_GET_LENGTH(topic);
    dot = PyUnicode_FindChar(topic, '.', 0, length, -1);
    if (dot == -2) return NULL;
    name = PyUnicode_Substring(topic, dot + 1, length);
    if (name == NULL) return NULL;
    if (PyDict_SetItem(type_names, topic, name) < 0) {
        Py_DECREF(name);
        return NULL;
    }
    return name;
}

/* Takes `key` out of `payload` into *value (a new reference); 0 if absent. */
static int
take(PyObject *payload, PyObject *key, PyObject **value)
{
    PyObject *found = PyDict_GetItemWithError(payload, key);
    if (found == NULL) return PyErr_Occurred() ? -1 : 0;
    *value = Py_NewRef(found);
    if (PyDict_DelItem(payload, key) < 0) {
        Py_CLEAR(*value);
        return -1;
    }
    return 1;
}

/* The hash of the event's canonical document (`domain.chain.canonical_event_bytes`),
 * in hex. 1: computed; 0: the state lacks a field; -1: an exception is set. */
static int
canonical_hash(PyObject *state, PyObject *aggregate_id, PyObject *version, PyObject *type_name,
               PyObject **recorded, PyObject **previous, char hex[64])
{
    PyObject *payload = NULL, *timestamp = NULL, *actor = NULL, *key = NULL, *scratch = NULL;
    PyObject *document = NULL, *args = NULL, *serialised = NULL;
    int result = -1, found;
    unsigned char digest[32];

    payload = PyDict_Copy(state);
    if (payload == NULL) goto done;
    if ((found = take(payload, k_event_hash, recorded)) <= 0) goto missing;
    if ((found = take(payload, k_previous_hash, previous)) <= 0) goto missing;
    if ((found = take(payload, k_originator_topic, &scratch)) < 0) goto done;
    Py_CLEAR(scratch);
    if ((found = take(payload, k_class_version, &scratch)) < 0) goto done;
    Py_CLEAR(scratch);
    if ((found = take(payload, k_timestamp, &timestamp)) <= 0) goto missing;
    if ((found = take(payload, k_actor, &actor)) <= 0) goto missing;
    if ((found = take(payload, k_idempotency_key, &key)) < 0) goto done;
    if (key == NULL) key = Py_NewRef(Py_None);

    document = PyDict_New();
    if (document == NULL
        || PyDict_SetItem(document, k_aggregate_id, aggregate_id) < 0
        || PyDict_SetItem(document, k_version, version) < 0
        || PyDict_SetItem(document, k_type, type_name) < 0
        || PyDict_SetItem(document, k_timestamp, timestamp) < 0
        || PyDict_SetItem(document, k_actor, actor) < 0
        || PyDict_SetItem(document, k_idempotency_key, key) < 0
        || PyDict_SetItem(document, k_previous_hash, *previous) < 0
        || PyDict_SetItem(document, k_payload, payload) < 0)
        goto done;
    args = PyTuple_Pack(1, document);
    if (args == NULL) goto done;
    serialised = PyObject_Call(config.dumps, args, config.dumps_kwargs);
    if (serialised == NULL) goto done;
    if (!PyBytes_CheckExact(serialised)) goto missing;
    {
        const void *parts[1] = {PyBytes_AS_STRING(serialised)};
        const size_t sizes[1] = {(size_t)PyBytes_GET_SIZE(serialised)};
        if (!sha256(parts, sizes, 1, digest)) {
            PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
            goto done;
        }
    }
    to_hex(digest, hex);
    result = 1;
    goto done;
missing:
    result = found < 0 ? -1 : 0;
done:
    Py_XDECREF(payload);
    Py_XDECREF(timestamp);
    Py_XDECREF(actor);
    Py_XDECREF(key);
    Py_XDECREF(scratch);
    Py_XDECREF(document);
    Py_XDECREF(args);
    Py_XDECREF(serialised);
    return result;
}


/* ---- The canonical document straight from the stored bytes ----
 *
 * `canonical_hash` builds the document as dicts and has orjson serialise it
 * with sorted keys: the largest cost of a row. But the stored state was
 * itself written by orjson, so each value in it, as written, is what orjson
 * writes for that value: the canonical document is the stored tokens
 * rearranged (the envelope taken out of the payload, keys sorted at every
 * level, whitespace dropped). `direct_canonical` writes that. It answers
 * only where orjson.loads certainly takes the bytes and every token is
 * certainly what orjson would write for its value, and says UNSURE
 * otherwise, and the row takes the orjson path:
 * - anything orjson.loads rejects: JSON's grammar is checked as it is read
 *   (numbers as JSON writes them, not "01", "1-2", "-", ".5" or "+1"; no
 *   control character in a string or key and only valid UTF-8, as orjson
 *   demands; only whitespace after the top-level object), since the bytes
 *   are not decoded first;
 * - a string or key with a backslash (an escape), or a key repeated;
 * - an integer written "-0" or with 19 or more digits;
 * - a number with a fraction or an exponent, unless it is written as
 *   Python's shortest repr writes it without an exponent (where orjson
 *   writes the same; it writes exponents differently);
 * - nesting deeper than MAX_DEPTH, or more than MAX_MEMBERS keys in an object.
 * So whenever it answers, its bytes are exactly what orjson makes.
 */

#define MAX_DEPTH 32 /* each level keeps its keys on the stack: ~5 KiB */
#define MAX_MEMBERS 128

enum { FAILED = -1, UNSURE = 0, SURE = 1 };

typedef struct {
    char *data;
    size_t size, capacity;
} Buffer;

static Buffer out;

static int
reserve(size_t extra)
{
    if (out.size + extra > out.capacity) {
        size_t capacity = out.capacity ? out.capacity : 8192;
        char *grown;
        while (capacity < out.size + extra) capacity *= 2;
        grown = realloc(out.data, capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        out.data = grown;
        out.capacity = capacity;
    }
    return 1;
}

static int
put(const char *bytes, size_t size)
{
    if (!reserve(size)) return 0;
    memcpy(out.data + out.size, bytes, size);
    out.size += size;
    return 1;
}

#define PUT_LITERAL(text) put(text, sizeof(text) - 1)

/* Appends a copy of bytes already in `out` (which `reserve` may move). */
static int
put_own(size_t start, size_t size)
{
    if (!reserve(size)) return 0;
    memcpy(out.data + out.size, out.data + start, size);
    out.size += size;
    return 1;
}

typedef struct {
    const char *key; /* between its quotes */
    size_t key_size;
    size_t start, size; /* its value, written canonically at out.data + start */
} Slot;

static const char *
skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* The length of the UTF-8 sequence at p (a byte >= 0x80), or 0 where it is not
 * one that orjson accepts: strict UTF-8 (RFC 3629), so no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence. */
static size_t
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], low = 0x80, high = 0xBF;
    size_t size;
    if (c >= 0xC2 && c <= 0xDF)
        size = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        size = 3;
        if (c == 0xE0) low = 0xA0;      /* not overlong */
        else if (c == 0xED) high = 0x9F; /* not a surrogate */
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        size = 4;
        if (c == 0xF0) low = 0x90;      /* not overlong */
        else if (c == 0xF4) high = 0x8F; /* not above U+10FFFF */
    }
    else
        return 0;
    if ((size_t)(end - p) < size || p[1] < low || p[1] > high) return 0;
    for (size_t i = 2; i < size; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    }
    return size;
}

#define BYTES_OF(b) (0x0101010101010101ULL * (b))

/* The high bit of each byte of a word that may not stand in a plain string as it
 * is: a control character, a quote, a backslash, or one not ASCII. The lowest
 * bit set is exactly that of the first such byte in memory order (on a
 * little-endian machine): a borrow only carries up out of a byte found. */
static inline uint64_t
special_bytes(uint64_t word)
{
    uint64_t quote = word ^ BYTES_OF('"'), backslash = word ^ BYTES_OF('\\');
    return (((word - BYTES_OF(0x20)) & ~word) | ((quote - BYTES_OF(1)) & ~quote)
            | ((backslash - BYTES_OF(1)) & ~backslash) | word)
           & BYTES_OF(0x80);
}

/* p at an opening quote: past the closing one, or NULL where orjson would not
 * take the string as it is written, or it might not write it so: an escape, a
 * control character, invalid UTF-8, or no closing quote. Plain ASCII is passed
 * over 8 bytes at a time; UTF-8 is checked only where a byte >= 0x80 appears. */
static const char *
plain_string_end(const char *p, const char *end)
{
    const unsigned char *q = (const unsigned char *)p + 1, *stop = (const unsigned char *)end;
    for (;;) {
        unsigned char c;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (stop - q >= 8) {
            uint64_t word, found;
            memcpy(&word, q, 8);
            found = special_bytes(word);
            if (found) {
                q += __builtin_ctzll(found) >> 3;
                break;
            }
            q += 8;
        }
#endif
        if (q >= stop) return NULL;
        c = *q;
        if (c == '"') return (const char *)q + 1;
        if (c < 0x80) {
            if (c == '\\' || c < 0x20) return NULL;
            q++;
        }
        else {
            size_t size = utf8_sequence(q, stop);
            if (size == 0) return NULL;
            q += size;
        }
    }
}

static inline int
compare_slots(const Slot *x, const Slot *y)
{
    size_t common = x->key_size < y->key_size ? x->key_size : y->key_size;
    for (size_t i = 0; i < common; i++) {
        unsigned char a = (unsigned char)x->key[i], b = (unsigned char)y->key[i];
        if (a != b) return a < b ? -1 : 1;
    }
    return (x->key_size > y->key_size) - (x->key_size < y->key_size);
}

/* Sorted by key (few keys: insertion sort); UNSURE if a key is repeated. */
static int
sort_slots(Slot *slots, size_t count)
{
    for (size_t i = 1; i < count; i++) {
        Slot slot = slots[i];
        size_t j = i;
        while (j > 0 && compare_slots(&slots[j - 1], &slot) > 0) {
            slots[j] = slots[j - 1];
            j--;
        }
        slots[j] = slot;
    }
    for (size_t i = 1; i < count; i++) {
        if (compare_slots(&slots[i - 1], &slots[i]) == 0) return UNSURE;
    }
    return SURE;
}

static int emit(const char **p, const char *end, int depth);

/* The members of the object at *p (its '{'), each value written canonically at
 * the end of `out`, in the order given; *p left past the '}'. */
static int
read_object(const char **p, const char *end, int depth, Slot *slots, size_t *count)
{
    const char *q = skip_space(*p + 1, end);
    *count = 0;
    if (q < end && *q == '}') {
        *p = q + 1;
        return SURE;
    }
    for (;;) {
        const char *key_end;
        Slot *slot = &slots[*count];
        int emitted;
        if (q >= end || *q != '"' || *count == MAX_MEMBERS) return UNSURE;
        key_end = plain_string_end(q, end);
        if (key_end == NULL) return UNSURE;
        slot->key = q + 1;
        slot->key_size = (size_t)(key_end - q - 2);
        q = skip_space(key_end, end);
        if (q >= end || *q != ':') return UNSURE;
        q = skip_space(q + 1, end);
        slot->start = out.size;
        if ((emitted = emit(&q, end, depth + 1)) != SURE) return emitted;
        slot->size = out.size - slot->start;
        (*count)++;
        q = skip_space(q, end);
        if (q < end && *q == ',') {
            q = skip_space(q + 1, end);
            continue;
        }
        if (q < end && *q == '}') {
            *p = q + 1;
            return SURE;
        }
        return UNSURE;
    }
}

/* Appends `{"key":value,...}` for the slots, in their order. */
static int
write_object(const Slot *const *slots, size_t count)
{
    size_t needed = 2;
    for (size_t i = 0; i < count; i++) needed += slots[i]->key_size + slots[i]->size + 4;
    if (!reserve(needed)) return FAILED;
    out.data[out.size++] = '{';
    for (size_t i = 0; i < count; i++) {
        if (i) out.data[out.size++] = ',';
        out.data[out.size++] = '"';
        memcpy(out.data + out.size, slots[i]->key, slots[i]->key_size);
        out.size += slots[i]->key_size;
        out.data[out.size++] = '"';
        out.data[out.size++] = ':';
        memcpy(out.data + out.size, out.data + slots[i]->start, slots[i]->size);
        out.size += slots[i]->size;
    }
    out.data[out.size++] = '}';
    return SURE;
}

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number, as JSON writes one: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * (anything after it is for the caller to judge: "01" or "1-2" stop at "0" or
 * "1", and what follows cannot follow a value). */
static int
emit_number(const char **p, const char *end)
{
    const char *start = *p, *q = *p;
    int fraction = 0;
    size_t digits;
    if (q < end && *q == '-') q++;
    if (q >= end || !is_digit(*q)) return UNSURE;
    if (*q == '0')
        q++;
    else {
        while (q < end && is_digit(*q)) q++;
    }
    digits = (size_t)(q - start) - (*start == '-');
    if (q < end && *q == '.') {
        fraction = 1;
        if (++q >= end || !is_digit(*q)) return UNSURE;
        while (q < end && is_digit(*q)) q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        fraction = 1;
        if (++q < end && (*q == '+' || *q == '-')) q++;
        if (q >= end || !is_digit(*q)) return UNSURE;
        while (q < end && is_digit(*q)) q++;
    }
    if (!fraction) {
        if (digits >= 19 || (q - start == 2 && start[0] == '-' && start[1] == '0')) return UNSURE;
    }
    else {
        char text[40], *parsed_end = NULL, *shortest;
        size_t size = (size_t)(q - start);
        double value;
        int same;
        if (size >= sizeof text) return UNSURE;
        memcpy(text, start, size);
        text[size] = '\0';
        value = PyOS_string_to_double(text, &parsed_end, NULL);
        if (value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return UNSURE;
        }
        if (parsed_end != text + size) return UNSURE;
        shortest = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (shortest == NULL) return FAILED;
        same = strchr(shortest, 'e') == NULL && strlen(shortest) == size
               && memcmp(shortest, start, size) == 0;
        PyMem_Free(shortest);
        if (!same) return UNSURE;
    }
    *p = q;
    return put(start, (size_t)(q - start)) ? SURE : FAILED;
}

/* Writes the value at *p canonically at the end of `out`; *p left past it. */
static int
emit(const char **p, const char *end, int depth)
{
    const char *q = *p;
    if (q >= end || depth > MAX_DEPTH) return UNSURE;
    switch (*q) {
    case '{': {
        Slot slots[MAX_MEMBERS];
        const Slot *order[MAX_MEMBERS];
        size_t count, base = out.size, sorted_at;
        int read = read_object(&q, end, depth, slots, &count);
        if (read != SURE) return read;
        if (sort_slots(slots, count) != SURE) return UNSURE;
        for (size_t i = 0; i < count; i++) order[i] = &slots[i];
        sorted_at = out.size;
        if (write_object(order, count) != SURE) return FAILED;
        /* The values as read are dropped: the object takes their place. */
        memmove(out.data + base, out.data + sorted_at, out.size - sorted_at);
        out.size = base + (out.size - sorted_at);
        *p = q;
        return SURE;
    }
    case '[': {
        int emitted;
        if (!PUT_LITERAL("[")) return FAILED;
        q = skip_space(q + 1, end);
        if (q < end && *q == ']') {
            *p = q + 1;
            return PUT_LITERAL("]") ? SURE : FAILED;
        }
        for (;;) {
            if ((emitted = emit(&q, end, depth + 1)) != SURE) return emitted;
            q = skip_space(q, end);
            if (q < end && *q == ',') {
                if (!PUT_LITERAL(",")) return FAILED;
                q = skip_space(q + 1, end);
                continue;
            }
            if (q < end && *q == ']') {
                *p = q + 1;
                return PUT_LITERAL("]") ? SURE : FAILED;
            }
            return UNSURE;
        }
    }
    case '"': {
        const char *string_end = plain_string_end(q, end);
        if (string_end == NULL) return UNSURE;
        *p = string_end;
        return put(q, (size_t)(string_end - q)) ? SURE : FAILED;
    }
    case 't':
        if (end - q >= 4 && memcmp(q, "true", 4) == 0) {
            *p = q + 4;
            return PUT_LITERAL("true") ? SURE : FAILED;
        }
        return UNSURE;
    case 'f':
        if (end - q >= 5 && memcmp(q, "false", 5) == 0) {
            *p = q + 5;
            return PUT_LITERAL("false") ? SURE : FAILED;
        }
        return UNSURE;
    case 'n':
        if (end - q >= 4 && memcmp(q, "null", 4) == 0) {
            *p = q + 4;
            return PUT_LITERAL("null") ? SURE : FAILED;
        }
        return UNSURE;
    default:
        return emit_number(p, end);
    }
}

static int
is_key(const Slot *slot, const char *key, size_t size)
{
    return slot->key_size == size && memcmp(slot->key, key, size) == 0;
}

#define IS_KEY(slot, text) is_key(slot, text, sizeof(text) - 1)

/* Whether text can stand between quotes as it is (as orjson writes it). */
static int
plain_text(const char *text, Py_ssize_t size)
{
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* Where the chain fields' values are written canonically in `out` (a string
 * as its token, quotes included); the topic's size is 0 where it is absent. */
typedef struct {
    size_t hash_start, hash_size, previous_start, previous_size, topic_start, topic_size;
} ChainTokens;

/* `domain.chain.canonical_event_bytes` of a stored state, from its bytes, into
 * out.data[*start ...], and where its chain fields are (`tokens`, if not NULL).
 * SURE: written; UNSURE: cannot tell; FAILED: an exception. */
static int
direct_canonical(const char *raw, Py_ssize_t raw_size, const char *aggregate_id,
                 Py_ssize_t id_size, long long version, const char *type_name,
                 Py_ssize_t type_size, size_t *start, ChainTokens *tokens)
{
    const char *p = raw, *end = raw + raw_size;
    Slot slots[MAX_MEMBERS];
    const Slot *payload[MAX_MEMBERS];
    const Slot *actor = NULL, *key = NULL, *previous = NULL, *timestamp = NULL, *hash = NULL;
    const Slot *topic = NULL;
    size_t count, payload_count = 0;
    char version_text[24];
    int read, version_size;

    out.size = 0;
    if (!plain_text(type_name, type_size) || !plain_text(aggregate_id, id_size)) return UNSURE;
    p = skip_space(p, end);
    if (p >= end || *p != '{') return UNSURE;
    if ((read = read_object(&p, end, 0, slots, &count)) != SURE) return read;
    if (skip_space(p, end) != end || sort_slots(slots, count) != SURE) return UNSURE;
    for (size_t i = 0; i < count; i++) {
        const Slot *slot = &slots[i];
        const Slot **envelope = NULL;
        const Slot *ignored = NULL;
        switch (slot->key_size) { /* the envelope's keys, told apart by length first */
        case 5:
            if (IS_KEY(slot, "actor")) envelope = &actor;
            break;
        case 9:
            if (IS_KEY(slot, "timestamp"))
                envelope = &timestamp;
            else if (IS_KEY(slot, "eventHash"))
                envelope = &hash;
            break;
        case 12:
            if (IS_KEY(slot, "previousHash")) envelope = &previous;
            break;
        case 13:
            if (IS_KEY(slot, "class_version")) envelope = &ignored;
            break;
        case 14:
            if (IS_KEY(slot, "idempotencyKey")) envelope = &key;
            break;
        case 15:
            if (IS_KEY(slot, "originatorTopic")) envelope = &topic;
            break;
        }
        if (envelope == NULL)
            payload[payload_count++] = slot;
        else
            *envelope = slot;
    }
    if (actor == NULL || previous == NULL || timestamp == NULL || hash == NULL) return UNSURE;
    if (tokens != NULL) {
        tokens->hash_start = hash->start;
        tokens->hash_size = hash->size;
        tokens->previous_start = previous->start;
        tokens->previous_size = previous->size;
        tokens->topic_start = topic == NULL ? 0 : topic->start;
        tokens->topic_size = topic == NULL ? 0 : topic->size;
    }
    version_size = snprintf(version_text, sizeof version_text, "%lld", version);

    /* Keys sorted: actor, aggregateId, idempotencyKey, payload, previousHash,
     * timestamp, type, version. The values written so far stay before it. */
    *start = out.size;
    if (!PUT_LITERAL("{\"actor\":") || !put_own(actor->start, actor->size)
        || !PUT_LITERAL(",\"aggregateId\":\"") || !put(aggregate_id, (size_t)id_size)
        || !PUT_LITERAL("\",\"idempotencyKey\":"))
        return FAILED;
    if (key == NULL ? !PUT_LITERAL("null") : !put_own(key->start, key->size))
        return FAILED;
    if (!PUT_LITERAL(",\"payload\":") || write_object(payload, payload_count) != SURE
        || !PUT_LITERAL(",\"previousHash\":") || !put_own(previous->start, previous->size)
        || !PUT_LITERAL(",\"timestamp\":")
        || !put_own(timestamp->start, timestamp->size) || !PUT_LITERAL(",\"type\":\"")
        || !put(type_name, (size_t)type_size) || !PUT_LITERAL("\",\"version\":")
        || !put(version_text, (size_t)version_size) || !PUT_LITERAL("}"))
        return FAILED;
    return SURE;
}

/* The hash of `direct_canonical`, in hex: SURE, UNSURE or FAILED as it says. */
static int
direct_hash(PyObject *raw, const char *aggregate_id, Py_ssize_t id_size, long long version,
            PyObject *type_name, char hex[64], ChainTokens *tokens)
{
    Py_ssize_t type_size;
    const char *type_chars = PyUnicode_AsUTF8AndSize(type_name, &type_size);
    size_t start;
    unsigned char digest[32];
    int written;
    if (type_chars == NULL) return FAILED;
    written = direct_canonical(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), aggregate_id,
                               id_size, version, type_chars, type_size, &start, tokens);
    if (written != SURE) return written;
    {
        const void *parts[1] = {out.data + start};
        const size_t sizes[1] = {out.size - start};
        if (!sha256(parts, sizes, 1, digest)) {
            PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
            return FAILED;
        }
    }
    to_hex(digest, hex);
    return SURE;
}

/* Whether the pending exception is one the Python loop turns into "this row fails". */
static int
failing_exception(void)
{
    return PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_KeyError)
           || PyErr_ExceptionMatches(PyExc_TypeError)
           || PyErr_ExceptionMatches(PyExc_AttributeError);
}

/* Whether the token at out.data[start ...] is the string `text` (a plain string's token). */
static int
token_is(size_t start, size_t size, const char *text, size_t text_size)
{
    const char *token = out.data + start;
    return size == text_size + 2 && token[0] == '"' && token[size - 1] == '"'
           && memcmp(token + 1, text, text_size) == 0;
}

/* Whether the chain fields `direct_canonical` found (`tokens`) pass as the Python
 * loop demands: the recorded event hash is `hex` (the document's hash), the
 * previous one `expected_previous`, and the topic starts with the aggregate's
 * topic and a dot, *prefix (read here for a first event: *prefix NULL, then set
 * if 1). 1: they do; 0: not shown here; -1: an exception is set. */
static int
direct_verdict(const ChainTokens *tokens, const char hex[64], PyObject *expected_previous,
               PyObject *topic, PyObject **prefix)
{
    Py_ssize_t expected_size;
    const char *expected = PyUnicode_AsUTF8AndSize(expected_previous, &expected_size);
    PyObject *read_prefix = NULL;
    int matched;
    if (expected == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (!token_is(tokens->hash_start, tokens->hash_size, hex, 64)
        || !token_is(tokens->previous_start, tokens->previous_size, expected,
                     (size_t)expected_size))
        return 0;
    if (*prefix == NULL) {
        /* the topic's text and a dot, decoded from after the bytes written */
        size_t size = tokens->topic_size;
        char *text;
        if (size < 2 || out.data[tokens->topic_start] != '"') return 0;
        if (!reserve(size - 1)) return -1;
        text = out.data + out.size;
        memcpy(text, out.data + tokens->topic_start + 1, size - 2);
        text[size - 2] = '.';
        read_prefix = PyUnicode_DecodeUTF8(text, (Py_ssize_t)(size - 1), NULL);
        if (read_prefix == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
            PyErr_Clear();
            return 0;
        }
    }
    matched = (int)PyUnicode_Tailmatch(topic, *prefix != NULL ? *prefix : read_prefix, 0,
                                       PY_SSIZE_T_MAX, -1);
    if (matched == 1 && *prefix == NULL) *prefix = Py_NewRef(read_prefix);
    Py_XDECREF(read_prefix);
    if (matched < 0) {
        if (!failing_exception()) return -1;
        PyErr_Clear();
        return 0;
    }
    return matched;
}

/* One row: 1 passed, 0 failed, -1 an exception other than a failure is set. */
static int
check_row(PyObject *row, PyObject *heads, PyObject *type_names, PyObject *keep,
          PyObject *as_type)
{
    PyObject *position, *hex_id, *version, *topic, *raw, *before, *link;
    PyObject *head, *aggregate_id = NULL, *state = NULL, *prefix = NULL, *expected_previous;
    PyObject *type_name = NULL, *recorded = NULL, *previous = NULL, *new_head = NULL;
    PyObject *fields = NULL, *args = NULL, *record = NULL;
    long long position_value, version_value;
    unsigned char before_digest[32], state_digest[32], link_digest[32];
    char link_hex[64], event_hex[64], position_text[24];
    ChainTokens tokens;
    const char *id_chars, *topic_chars;
    Py_ssize_t id_size, topic_size;
    int result = -1, position_size, matched;

    if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 7) return 0;
    position = PyTuple_GET_ITEM(row, 0);
    hex_id = PyTuple_GET_ITEM(row, 1);
    version = PyTuple_GET_ITEM(row, 2);
    topic = PyTuple_GET_ITEM(row, 3);
    raw = PyTuple_GET_ITEM(row, 4);
    before = PyTuple_GET_ITEM(row, 5);
    link = PyTuple_GET_ITEM(row, 6);
    if (!PyLong_CheckExact(position) || !PyLong_CheckExact(version) || !PyUnicode_CheckExact(hex_id)
        || !PyUnicode_CheckExact(topic) || !PyBytes_CheckExact(raw))
        return 0;
    position_value = PyLong_AsLongLong(position);
    version_value = PyLong_AsLongLong(version);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }

    head = PyDict_GetItemWithError(heads, hex_id);
    if (head == NULL && PyErr_Occurred()) return -1;
    Py_XINCREF(head); /* kept while the row is checked: `heads` changes at the end */
    if (head == NULL) {
        char dashed[36];
        if (version_value != 1) return 0;
        id_chars = PyUnicode_AsUTF8AndSize(hex_id, &id_size);
        if (id_chars == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (id_size != 32) return 0;
        for (int i = 0; i < 32; i++) {
            if (hex_value(id_chars[i]) < 0) return 0;
        }
        memcpy(dashed, id_chars, 8);
        dashed[8] = '-';
        memcpy(dashed + 9, id_chars + 8, 4);
        dashed[13] = '-';
        memcpy(dashed + 14, id_chars + 12, 4);
        dashed[18] = '-';
        memcpy(dashed + 19, id_chars + 16, 4);
        dashed[23] = '-';
        memcpy(dashed + 24, id_chars + 20, 12);
        aggregate_id = PyUnicode_FromStringAndSize(dashed, 36);
        if (aggregate_id == NULL) return -1;
    }
    else {
        if (version_value != PyLong_AsLongLong(PyTuple_GET_ITEM(head, 0)) + 1) {
            Py_DECREF(head);
            return 0;
        }
        aggregate_id = Py_NewRef(PyTuple_GET_ITEM(head, 3));
    }

    /* The log chain: sha256(link before + "position\0id\0version\0topic\0" + sha256(state)). */
    if (position_value == 1) {
        memcpy(before_digest, config.log_genesis, 32);
    }
    else if (!from_hex(before, before_digest)) {
        result = 0;
        goto done;
    }
    id_chars = PyUnicode_AsUTF8AndSize(aggregate_id, &id_size);
    topic_chars = PyUnicode_AsUTF8AndSize(topic, &topic_size);
    if (id_chars == NULL || topic_chars == NULL) {
        PyErr_Clear();
        result = 0;
        goto done;
    }
    {
        const void *parts[1] = {PyBytes_AS_STRING(raw)};
        const size_t sizes[1] = {(size_t)PyBytes_GET_SIZE(raw)};
        if (!sha256(parts, sizes, 1, state_digest)) goto hash_failed;
    }
    position_size = snprintf(position_text, sizeof position_text, "%lld", position_value);
    {
        char version_text[24];
        int version_size = snprintf(version_text, sizeof version_text, "%lld", version_value);
        const void *parts[10] = {before_digest, position_text, "", id_chars,    "",
                                 version_text,  "",          topic_chars, "", state_digest};
        const size_t sizes[10] = {32, (size_t)position_size, 1, (size_t)id_size, 1,
                                  (size_t)version_size, 1, (size_t)topic_size, 1, 32};
        if (!sha256(parts, sizes, 10, link_digest)) goto hash_failed;
    }
    to_hex(link_digest, link_hex);
    if (!equals_hex(link, link_hex)) {
        result = 0;
        goto done;
    }

    /* The aggregate's chain: read straight from the stored bytes where they
     * can be read with certainty, without decoding them; otherwise, or if
     * anything there does not pass, as the Python loop reads it. */
    if (head == NULL) {
        expected_previous = config.genesis_hash;
    }
    else {
        prefix = Py_NewRef(PyTuple_GET_ITEM(head, 2));
        expected_previous = PyTuple_GET_ITEM(head, 1);
    }
    type_name = type_name_of(type_names, topic);
    if (type_name == NULL) goto done;
    matched = direct_hash(raw, id_chars, id_size, version_value, type_name, event_hex, &tokens);
    if (matched < 0) goto done;
    if (matched) {
        matched = direct_verdict(&tokens, event_hex, expected_previous, topic, &prefix);
        if (matched < 0) goto done;
    }
    if (matched) {
        recorded = PyUnicode_FromStringAndSize(event_hex, 64);
        if (recorded == NULL) goto done;
    }
    else {
        state = PyObject_CallOneArg(config.loads, raw);
        if (state == NULL) goto fail_or_raise;
        if (!PyDict_CheckExact(state)) {
            result = 0;
            goto done;
        }
        if (head == NULL) {
            PyObject *aggregate_topic = PyDict_GetItemWithError(state, k_originator_topic);
            if (aggregate_topic == NULL) {
                if (PyErr_Occurred()) goto done;
                result = 0;
                goto done;
            }
            if (!PyUnicode_CheckExact(aggregate_topic)) {
                result = 0;
                goto done;
            }
            prefix = PyUnicode_FromFormat("%U.", aggregate_topic);
            if (prefix == NULL) goto done;
        }
        matched = (int)PyUnicode_Tailmatch(topic, prefix, 0, PY_SSIZE_T_MAX, -1);
        if (matched < 0) goto fail_or_raise;
        if (!matched) {
            result = 0;
            goto done;
        }
        matched = canonical_hash(state, aggregate_id, version, type_name, &recorded, &previous,
                                 event_hex);
        if (matched < 0) goto fail_or_raise;
        if (!matched) {
            result = 0;
            goto done;
        }
        matched = PyObject_RichCompareBool(previous, expected_previous, Py_EQ);
        if (matched < 0) goto fail_or_raise;
        if (!matched || !equals_hex(recorded, event_hex)) {
            result = 0;
            goto done;
        }
    }

    new_head = PyTuple_Pack(4, version, recorded, prefix, aggregate_id);
    if (new_head == NULL || PyDict_SetItem(heads, hex_id, new_head) < 0) goto done;
    if (keep != Py_None) {
        fields = PyTuple_Pack(5, position, hex_id, version, topic, raw);
        if (fields == NULL) goto done;
        args = PyTuple_Pack(1, fields);
        if (args == NULL) goto done;
        record = PyTuple_Type.tp_new((PyTypeObject *)as_type, args, NULL);
        if (record == NULL || PyList_Append(keep, record) < 0) goto done;
    }
    result = 1;
    goto done;

hash_failed:
    PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
    goto done;
fail_or_raise:
    if (failing_exception()) {
        PyErr_Clear();
        result = 0;
    }
done:
    Py_XDECREF(head);
    Py_XDECREF(aggregate_id);
    Py_XDECREF(state);
    Py_XDECREF(prefix);
    Py_XDECREF(type_name);
    Py_XDECREF(recorded);
    Py_XDECREF(previous);
    Py_XDECREF(new_head);
    Py_XDECREF(fields);
    Py_XDECREF(args);
    Py_XDECREF(record);
    return result;
}

static PyObject *
fastcheck_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *rows, *heads, *type_names, *keep, *as_type, *sequence;
    Py_ssize_t count, checked = 0;
    (void)module;
    if (!config.ready) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "check(rows, heads, type_names, keep, as_type)");
        return NULL;
    }
    rows = args[0];
    heads = args[1];
    type_names = args[2];
    keep = args[3];
    as_type = args[4];
    if (!PyDict_CheckExact(heads) || !PyDict_CheckExact(type_names)
        || (keep != Py_None && !PyList_CheckExact(keep)) || !PyType_Check(as_type)
        || !PyType_IsSubtype((PyTypeObject *)as_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "check(rows, heads: dict, type_names: dict, keep: list | None, as_type: tuple type)");
        return NULL;
    }
    sequence = PySequence_Fast(rows, "rows must be a sequence");
    if (sequence == NULL) return NULL;
    count = PySequence_Fast_GET_SIZE(sequence);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(sequence, i);
        int passed = check_row(row, heads, type_names, keep, as_type);
        if (passed < 0) {
            Py_DECREF(sequence);
            return NULL;
        }
        if (!passed) {
            PyObject *position = PyTuple_Check(row) && PyTuple_GET_SIZE(row) > 0
                                     ? PyTuple_GET_ITEM(row, 0)
                                     : Py_None;
            PyObject *result = Py_BuildValue("(On)", position, checked);
            Py_DECREF(sequence);
            return result;
        }
        checked++;
    }
    Py_DECREF(sequence);
    return Py_BuildValue("(On)", Py_None, checked);
}

static PyObject *
fastcheck_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(loads, dumps, sort_keys_option, log_genesis, genesis_hash)");
        return NULL;
    }
    if (!from_hex(args[3], config.log_genesis) || !PyUnicode_CheckExact(args[4])) {
        PyErr_SetString(PyExc_ValueError, "log_genesis and genesis_hash: 64 hex digits");
        return NULL;
    }
    /* orjson tells its keyword arguments by the interned name */
    PyObject *option = PyUnicode_InternFromString("option");
    PyObject *kwargs = option == NULL ? NULL : PyDict_New();
    if (kwargs == NULL || PyDict_SetItem(kwargs, option, args[2]) < 0) {
        Py_XDECREF(option);
        Py_XDECREF(kwargs);
        return NULL;
    }
    Py_DECREF(option);
    Py_XSETREF(config.dumps_kwargs, kwargs);
    Py_XSETREF(config.loads, Py_NewRef(args[0]));
    Py_XSETREF(config.dumps, Py_NewRef(args[1]));
    Py_XSETREF(config.genesis_hash, Py_NewRef(args[4]));
    config.ready = 1;
    Py_RETURN_NONE;
}

static PyObject *
fastcheck_canonical(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t id_size, type_size;
    const char *aggregate_id, *type_name;
    long long version;
    size_t start;
    int written;
    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1])
        || !PyLong_Check(args[2]) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "canonical(state: bytes, aggregate_id: str, version: int, type_name: str)");
        return NULL;
    }
    aggregate_id = PyUnicode_AsUTF8AndSize(args[1], &id_size);
    type_name = PyUnicode_AsUTF8AndSize(args[3], &type_size);
    version = PyLong_AsLongLong(args[2]);
    if (aggregate_id == NULL || type_name == NULL || PyErr_Occurred()) return NULL;
    written = direct_canonical(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                               aggregate_id, id_size, version, type_name, type_size, &start,
                               NULL);
    if (written == FAILED) return NULL;
    if (written == UNSURE) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(out.data + start, (Py_ssize_t)(out.size - start));
}

static PyMethodDef methods[] = {
    {"canonical", (PyCFunction)(void (*)(void))fastcheck_canonical, METH_FASTCALL,
     "canonical(state, aggregate_id, version, type_name) -> the canonical document's bytes, "
     "or None where they cannot be told from the stored bytes alone"},
    {"configure", (PyCFunction)(void (*)(void))fastcheck_configure, METH_FASTCALL,
     "configure(loads, dumps, sort_keys_option, log_genesis, genesis_hash)"},
    {"check", (PyCFunction)(void (*)(void))fastcheck_check, METH_FASTCALL,
     "check(rows, heads, type_names, keep, as_type) -> (first failing position or None, rows passed)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "domain._fastcheck",
    "The loop of domain.integrity.FastLogCheck.check, in C.", -1, methods, NULL, NULL, NULL, NULL,
};

static int
intern_keys(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } keys[] = {
        {&k_event_hash, "eventHash"},       {&k_previous_hash, "previousHash"},
        {&k_originator_topic, "originatorTopic"}, {&k_class_version, "class_version"},
        {&k_timestamp, "timestamp"},       {&k_actor, "actor"},
        {&k_idempotency_key, "idempotencyKey"}, {&k_aggregate_id, "aggregateId"},
        {&k_version, "version"},           {&k_type, "type"},
        {&k_payload, "payload"},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        *keys[i].slot = PyUnicode_InternFromString(keys[i].text);
        if (*keys[i].slot == NULL) return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__fastcheck(void)
{
    if (intern_keys() < 0) return NULL;
    config.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    config.context = EVP_MD_CTX_new();
    if (config.sha256 == NULL || config.context == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL's SHA-256 is not available");
        return NULL;
    }
    return PyModule_Create(&module_definition);
}
