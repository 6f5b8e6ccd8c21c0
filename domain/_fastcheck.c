/* The loop of `domain.integrity.FastLogCheck.check`, in C.
 *
 * Same rules, same verdicts: for each row it checks the log chain link the
 * recorder wrote at its position (recomputed from the link before it), the
 * aggregate's version order, and the aggregate's hash chain (the event's
 * hash recomputed over its canonical document, `domain.chain`). JSON is
 * decoded and the canonical document serialised by the same orjson
 * functions the Python loop calls; what C saves is the hashing, the hex
 * conversions and the per-row bookkeeping, which in Python cost a call and
 * an object each.
 *
 * Never more lenient than the Python loop: anything it does not expect
 * (a value of another type, a link that is not 64 lowercase hex digits)
 * fails the row, and the caller then checks the log in one pass, which says
 * what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
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

/* 64 lowercase hex digits to 32 bytes; 0 if `text` is anything else. */
static int
from_hex(PyObject *text, unsigned char out[32])
{
    Py_ssize_t size;
    const char *digits;
    if (!PyUnicode_CheckExact(text)) return 0;
    digits = PyUnicode_AsUTF8AndSize(text, &size);
    if (digits == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (size != 64) return 0;
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
    Py_ssize_t size;
    const char *chars;
    if (!PyUnicode_CheckExact(text)) return 0;
    chars = PyUnicode_AsUTF8AndSize(text, &size);
    if (chars == NULL) {
        PyErr_Clear();
        return 0;
    }
    return size == 64 && memcmp(chars, hex, 64) == 0;
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

/* Whether the pending exception is one the Python loop turns into "this row fails". */
static int
failing_exception(void)
{
    return PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_KeyError)
           || PyErr_ExceptionMatches(PyExc_TypeError)
           || PyErr_ExceptionMatches(PyExc_AttributeError);
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
    char link_hex[64], event_hex[64], header[64];
    const char *id_chars, *topic_chars;
    Py_ssize_t id_size, topic_size;
    int result = -1, header_size, matched;

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
    header_size = snprintf(header, sizeof header, "%lld", position_value);
    {
        char version_text[24];
        int version_size = snprintf(version_text, sizeof version_text, "%lld", version_value);
        const void *parts[9] = {before_digest, header, "", id_chars, "", version_text, "",
                                topic_chars, ""};
        const size_t sizes[9] = {32, (size_t)header_size, 1, (size_t)id_size, 1,
                                 (size_t)version_size, 1, (size_t)topic_size, 1};
        const void *with_state[10];
        size_t with_state_sizes[10];
        memcpy(with_state, parts, sizeof parts);
        memcpy(with_state_sizes, sizes, sizeof sizes);
        with_state[9] = state_digest;
        with_state_sizes[9] = 32;
        if (!sha256(with_state, with_state_sizes, 10, link_digest)) goto hash_failed;
    }
    to_hex(link_digest, link_hex);
    if (!equals_hex(link, link_hex)) {
        result = 0;
        goto done;
    }

    /* The aggregate's chain. */
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
        expected_previous = config.genesis_hash;
    }
    else {
        prefix = Py_NewRef(PyTuple_GET_ITEM(head, 2));
        expected_previous = PyTuple_GET_ITEM(head, 1);
    }
    matched = (int)PyUnicode_Tailmatch(topic, prefix, 0, PY_SSIZE_T_MAX, -1);
    if (matched < 0) goto fail_or_raise;
    if (!matched) {
        result = 0;
        goto done;
    }
    type_name = type_name_of(type_names, topic);
    if (type_name == NULL) goto done;
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

    new_head = PyTuple_Pack(4, version, recorded, prefix, aggregate_id);
    if (new_head == NULL || PyDict_SetItem(heads, hex_id, new_head) < 0) goto done;
    if (keep != Py_None) {
        fields = PyTuple_Pack(5, position, hex_id, version, topic, state);
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

static PyMethodDef methods[] = {
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
