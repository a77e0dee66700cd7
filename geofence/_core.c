/*
 * geofence._core: the compiled twin of geofence/snapshot/search.py.
 *
 * One type, Lookup(partitions, table, fallback, tunnel_low, tunnel_high):
 * calling it with a plain address string (exact str, ASCII, no context) parses
 * the text, searches the partitions and returns the table entry of the
 * segment. Everything else (a context, a str subclass, bytes, a zone id, a
 * tunnel prefix, text the strict parsers refuse) is handed, unchanged, to
 * `fallback`, the Python path, which stays the reference: it raises the same
 * InvalidAddressError for bad input whichever core is active.
 *
 * The partitions are read in place through the buffer protocol (no copy).
 * Every index read from them is clamped or checked, so even inconsistent
 * arrays never make this code read out of bounds.
 *
 * The batch methods release the GIL while they parse and search.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Longest plain address text: a full IPv6 address with an IPv4 tail. */
#define MAX_TEXT 45
#define INDEX_LEN 65537
/* The segment id of text that is not a plain address: the fallback decides it. */
#define NOT_PLAIN INT32_MIN

/* ---------------------------------------------------------------------------------------
 * Strict text parsers: the same acceptance as socket.inet_pton (glibc), which
 * geofence.addr.parse_address uses. IPv4: four decimal octets 0-255, no leading
 * zeros, nothing else. IPv6: RFC 4291 text, at most one "::", 1-4 hex digits
 * per group, an optional dotted-quad tail; no zone id, no brackets, no spaces.
 * ------------------------------------------------------------------------------------- */

static int
parse4(const unsigned char *s, Py_ssize_t n, uint32_t *out)
{
    uint32_t value = 0, octet = 0;
    int octets = 0, digits = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char ch = s[k];
        if (ch >= '0' && ch <= '9') {
            if (digits && octet == 0) {
                return 0; /* a leading zero */
            }
            octet = octet * 10 + (uint32_t)(ch - '0');
            if (octet > 255) {
                return 0;
            }
            if (!digits) {
                if (++octets > 4) {
                    return 0;
                }
                digits = 1;
            }
        }
        else if (ch == '.' && digits) {
            if (octets == 4) {
                return 0;
            }
            value = (value << 8) | octet;
            octet = 0;
            digits = 0;
        }
        else {
            return 0;
        }
    }
    if (octets < 4 || !digits) {
        return 0;
    }
    *out = (value << 8) | octet;
    return 1;
}

/* 1 + the value of a hex digit, 0 for any other byte: one load, no branches. */
static const unsigned char HEX1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

static int
parse6(const unsigned char *s, Py_ssize_t n, uint64_t *hi, uint64_t *lo)
{
    uint16_t groups[8] = {0};
    int count = 0;      /* groups written */
    int gap = -1;       /* where "::" stands, in groups */
    int digits = 0;     /* hex digits in the current group */
    uint32_t group = 0;
    Py_ssize_t k = 0, token = 0;

    if (n == 0) {
        return 0;
    }
    if (s[0] == ':') {
        if (n < 2 || s[1] != ':') {
            return 0;
        }
        k = 1;
        token = 1;
    }
    while (k < n) {
        unsigned char ch = s[k++];
        int h = (int)HEX1[ch] - 1;
        if (h >= 0) {
            if (digits == 4) {
                return 0;
            }
            group = (group << 4) | (uint32_t)h;
            digits++;
            continue;
        }
        if (ch == ':') {
            token = k;
            if (digits == 0) {
                if (gap >= 0) {
                    return 0;
                }
                gap = count;
                continue;
            }
            if (k == n || count == 8) {
                return 0;
            }
            groups[count++] = (uint16_t)group;
            group = 0;
            digits = 0;
            continue;
        }
        if (ch == '.' && count <= 6) {
            uint32_t v4;
            if (!parse4(s + token, n - token, &v4)) {
                return 0;
            }
            groups[count++] = (uint16_t)(v4 >> 16);
            groups[count++] = (uint16_t)(v4 & 0xFFFF);
            digits = 0;
            k = n;
            break;
        }
        return 0;
    }
    if (digits) {
        if (count == 8) {
            return 0;
        }
        groups[count++] = (uint16_t)group;
    }
    if (gap >= 0) {
        if (count == 8) {
            return 0; /* "::" would stand for no group at all */
        }
        int move = count - gap;
        memmove(groups + 8 - move, groups + gap, (size_t)move * sizeof(uint16_t));
        memset(groups + gap, 0, (size_t)(8 - move - gap) * sizeof(uint16_t));
        count = 8;
    }
    if (count != 8) {
        return 0;
    }
    uint64_t h64 = 0, l64 = 0;
    for (int g = 0; g < 4; g++) {
        h64 = (h64 << 16) | groups[g];
        l64 = (l64 << 16) | groups[g + 4];
    }
    *hi = h64;
    *lo = l64;
    return 1;
}

/* ---------------------------------------------------------------------------------------
 * The search: the /16 bucket of the address bounds a binary search over the
 * starts (the twin of geofence.snapshot.partition.segment).
 * ------------------------------------------------------------------------------------- */

typedef struct {
    const uint32_t *v4_starts;
    const int32_t *v4_ids;
    const int32_t *v4_index;
    const uint64_t *v6_hi;
    const uint64_t *v6_lo;
    const int32_t *v6_ids;
    const int32_t *v6_index;
    Py_ssize_t n4, n6;
} Columns;

/* The bucket bounds [first, last] of prefix p, clamped into [0, n - 1]. */
static inline void
bucket(const int32_t *index, uint32_t p, Py_ssize_t n, Py_ssize_t *first, Py_ssize_t *last)
{
    Py_ssize_t a = index[p], b = index[p + 1];
    if (a < 0 || b >= n || a > b) {
        a = 0;
        b = n - 1;
    }
    *first = a;
    *last = b;
}

/* bisect_right of v over starts[lo, hi), minus one, at least 0: the segment of v. */
static inline Py_ssize_t
bisect4(const uint32_t *starts, uint32_t v, Py_ssize_t lo, Py_ssize_t hi)
{
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (v < starts[mid]) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo > 0 ? lo - 1 : 0;
}

/* The same over the (high, low) pairs of IPv6 starts. */
static inline Py_ssize_t
bisect6(const uint64_t *H, const uint64_t *L, uint64_t h, uint64_t l, Py_ssize_t lo,
        Py_ssize_t hi)
{
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (h < H[mid] || (h == H[mid] && l < L[mid])) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo > 0 ? lo - 1 : 0;
}

static inline int32_t
search4(const Columns *c, uint32_t v)
{
    Py_ssize_t lo, hi;
    bucket(c->v4_index, v >> 16, c->n4, &lo, &hi);
    return c->v4_ids[bisect4(c->v4_starts, v, lo, hi + 1)];
}

static inline int32_t
search6(const Columns *c, uint64_t h, uint64_t l)
{
    Py_ssize_t lo, hi;
    bucket(c->v6_index, (uint32_t)(h >> 48), c->n6, &lo, &hi);
    return c->v6_ids[bisect6(c->v6_hi, c->v6_lo, h, l, lo, hi + 1)];
}

/* ---------------------------------------------------------------------------------------
 * Batched search: the same answers as search4/search6, with the memory accesses of many
 * addresses overlapped. Each step touches one level (bucket index, the middle of the
 * bucket, the id) for every address of the batch after prefetching it for all of
 * them, so the cache misses of different addresses wait in parallel, not in turn.
 * ------------------------------------------------------------------------------------- */

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Items per batch step: their text is still in cache when it is parsed, the GIL is
 * released once per step, and the step's bookkeeping stays on the stack. */
#define CHUNK 512

typedef struct {
    int family;  /* 4, 6, or 0: not a plain address (the fallback decides) */
    uint64_t h;  /* IPv6 high half */
    uint64_t l;  /* IPv6 low half, or the IPv4 address */
} Query;

static void
search_batch(const Columns *c, const Query *q, int32_t *sids, Py_ssize_t m)
{
    Py_ssize_t lo[CHUNK], hi[CHUNK];
    for (Py_ssize_t k = 0; k < m; k++) {
        if (q[k].family == 4) {
            PREFETCH(&c->v4_index[q[k].l >> 16]);
        }
        else if (q[k].family == 6) {
            PREFETCH(&c->v6_index[q[k].h >> 48]);
        }
    }
    for (Py_ssize_t k = 0; k < m; k++) {
        if (q[k].family == 4) {
            bucket(c->v4_index, (uint32_t)(q[k].l >> 16), c->n4, &lo[k], &hi[k]);
            PREFETCH(&c->v4_starts[(lo[k] + hi[k] + 1) >> 1]);
        }
        else if (q[k].family == 6) {
            bucket(c->v6_index, (uint32_t)(q[k].h >> 48), c->n6, &lo[k], &hi[k]);
            PREFETCH(&c->v6_hi[(lo[k] + hi[k] + 1) >> 1]);
        }
    }
    for (Py_ssize_t k = 0; k < m; k++) {
        if (q[k].family == 4) {
            lo[k] = bisect4(c->v4_starts, (uint32_t)q[k].l, lo[k], hi[k] + 1);
            PREFETCH(&c->v4_ids[lo[k]]);
        }
        else if (q[k].family == 6) {
            lo[k] = bisect6(c->v6_hi, c->v6_lo, q[k].h, q[k].l, lo[k], hi[k] + 1);
            PREFETCH(&c->v6_ids[lo[k]]);
        }
    }
    for (Py_ssize_t k = 0; k < m; k++) {
        sids[k] = q[k].family == 4   ? c->v4_ids[lo[k]]
                  : q[k].family == 6 ? c->v6_ids[lo[k]]
                                     : NOT_PLAIN;
    }
}

/* ---------------------------------------------------------------------------------------
 * The Lookup type
 * ------------------------------------------------------------------------------------- */

#define NCOLS 7

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_buffer views[NCOLS];
    int held;             /* views[0 .. held) are acquired */
    Columns cols;
    PyObject *table;      /* a tuple */
    PyObject *fallback;
    int32_t tunnel_low, tunnel_high;
    /* Optional: a parsed-address type (geofence.addr.ParsedAddress) answered without
     * the fallback when it carries no tunnel, read through its slots' offsets. */
    PyObject *parsed_type;
    Py_ssize_t off_version, off_value, off_tunnel;
    PyObject *sixty_four;
} Lookup;

/* What a segment id answers: >= 0 a table slot, -1 the fallback decides. */
static inline Py_ssize_t
slot_of(const Lookup *self, int32_t sid)
{
    if (sid >= self->tunnel_low && sid <= self->tunnel_high) {
        return -1;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(self->table);
    Py_ssize_t slot = sid >= 0 ? (Py_ssize_t)sid : size + sid;
    return (slot >= 0 && slot < size) ? slot : -1;
}

/* Parse ASCII text into a query (family 0 when it is not a plain address). */
static inline void
parse_text(const unsigned char *s, Py_ssize_t n, Query *q)
{
    q->family = 0;
    if (n == 0 || n > MAX_TEXT) {
        return;
    }
    if (memchr(s, ':', (size_t)n) != NULL) {
        if (parse6(s, n, &q->h, &q->l)) {
            q->family = 6;
        }
        return;
    }
    uint32_t v;
    if (parse4(s, n, &v)) {
        q->l = v;
        q->family = 4;
    }
}

/* The table entry (borrowed) for an exact str, or NULL: ask the fallback. */
static inline PyObject *
lookup_str(Lookup *self, PyObject *text)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        PyErr_Clear();
        return NULL;
    }
#endif
    if (!PyUnicode_IS_ASCII(text)) {
        return NULL;
    }
    Query q;
    parse_text(PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text), &q);
    if (q.family == 0) {
        return NULL;
    }
    int32_t sid = q.family == 4 ? search4(&self->cols, (uint32_t)q.l) : search6(&self->cols, q.h, q.l);
    Py_ssize_t slot = slot_of(self, sid);
    return slot < 0 ? NULL : PyTuple_GET_ITEM(self->table, slot);
}

static PyObject *
call_fallback(Lookup *self, PyObject *ip)
{
    PyObject *args[2] = {NULL, ip};
    return PyObject_Vectorcall(self->fallback, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *
slot_entry(Lookup *self, int32_t sid)
{
    Py_ssize_t slot = slot_of(self, sid);
    return slot < 0 ? NULL : PyTuple_GET_ITEM(self->table, slot);
}

/* The table entry (borrowed) for a parsed address without a tunnel, or NULL: ask
 * the fallback (a tunnel, or values this code does not expect). */
static PyObject *
lookup_parsed(Lookup *self, PyObject *ip)
{
    char *base = (char *)ip;
    PyObject *tunnel = *(PyObject **)(base + self->off_tunnel);
    PyObject *version = *(PyObject **)(base + self->off_version);
    PyObject *value = *(PyObject **)(base + self->off_value);
    if (tunnel != Py_None || version == NULL || value == NULL || !PyLong_CheckExact(value) ||
        !PyLong_CheckExact(version)) {
        return NULL;
    }
    long family = PyLong_AsLong(version);
    if (family == 4) {
        unsigned long v = PyLong_AsUnsignedLong(value);
        if ((v == (unsigned long)-1 && PyErr_Occurred()) || v > 0xFFFFFFFFUL) {
            PyErr_Clear();
            return NULL;
        }
        return slot_entry(self, search4(&self->cols, (uint32_t)v));
    }
    if (family != 6 || Py_SIZE(value) < 0) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *high = PyNumber_Rshift(value, self->sixty_four);
    if (high == NULL) {
        PyErr_Clear();
        return NULL;
    }
    unsigned long long h = PyLong_AsUnsignedLongLong(high);
    Py_DECREF(high);
    if (h == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    unsigned long long l = PyLong_AsUnsignedLongLongMask(value);
    return slot_entry(self, search6(&self->cols, h, l));
}

static PyObject *
Lookup_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Lookup *self = (Lookup *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 1 || (nargs == 2 && args[1] == Py_None))) {
        PyObject *ip = args[0];
        PyObject *found = NULL;
        if (PyUnicode_CheckExact(ip)) {
            found = lookup_str(self, ip);
        }
        else if (self->parsed_type != NULL && Py_IS_TYPE(ip, (PyTypeObject *)self->parsed_type)) {
            found = lookup_parsed(self, ip);
        }
        if (found != NULL) {
            return Py_NewRef(found);
        }
        return call_fallback(self, ip);
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static int
take_column(Lookup *self, PyObject *parts, int k, Py_ssize_t itemsize, const char *name)
{
    PyObject *column = PyTuple_GET_ITEM(parts, k);
    Py_buffer *view = &self->views[k];
    if (PyObject_GetBuffer(column, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    self->held = k + 1;
    if (view->itemsize != itemsize || view->ndim != 1) {
        PyErr_Format(PyExc_TypeError, "column %s must hold %zd-byte items", name, itemsize);
        return -1;
    }
    return 0;
}

/* The offset of the object-valued slot `name` of `type` (a __slots__ member). */
static int
slot_offset(PyObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL) {
        return -1;
    }
    int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)descr)->d_member->type == Py_T_OBJECT_EX;
    if (ok) {
        *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_DECREF(descr);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "parsed_type.%s must be a __slots__ member", name);
        return -1;
    }
    return 0;
}

static const char *const COLUMN_NAMES[NCOLS] = {
    "v4_starts", "v4_ids", "v4_index", "v6_hi", "v6_lo", "v6_ids", "v6_index",
};
static const Py_ssize_t COLUMN_SIZES[NCOLS] = {4, 4, 4, 8, 8, 4, 4};

static PyObject *
Lookup_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"partitions",  "table",       "fallback", "tunnel_low",
                             "tunnel_high", "parsed_type", NULL};
    PyObject *parts, *table, *fallback, *parsed_type = Py_None;
    int tunnel_low, tunnel_high;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOii|O:Lookup", kwlist, &PyTuple_Type, &parts,
                                     &table, &fallback, &tunnel_low, &tunnel_high, &parsed_type)) {
        return NULL;
    }
    if (parsed_type != Py_None && !PyType_Check(parsed_type)) {
        PyErr_SetString(PyExc_TypeError, "parsed_type must be a type or None");
        return NULL;
    }
    if (PyTuple_GET_SIZE(parts) != NCOLS) {
        PyErr_SetString(PyExc_TypeError, "partitions must have 7 columns");
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    Lookup *self = (Lookup *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = Lookup_vectorcall;
    self->tunnel_low = tunnel_low;
    self->tunnel_high = tunnel_high;
    self->fallback = Py_NewRef(fallback);
    if (parsed_type != Py_None) {
        if (slot_offset(parsed_type, "version", &self->off_version) < 0 ||
            slot_offset(parsed_type, "value", &self->off_value) < 0 ||
            slot_offset(parsed_type, "tunnel", &self->off_tunnel) < 0) {
            goto fail;
        }
        self->sixty_four = PyLong_FromLong(64);
        if (self->sixty_four == NULL) {
            goto fail;
        }
        self->parsed_type = Py_NewRef(parsed_type);
    }
    self->table = PySequence_Tuple(table);
    if (self->table == NULL) {
        goto fail;
    }
    for (int k = 0; k < NCOLS; k++) {
        if (take_column(self, parts, k, COLUMN_SIZES[k], COLUMN_NAMES[k]) < 0) {
            goto fail;
        }
    }
    Py_buffer *v = self->views;
    Py_ssize_t n4 = v[0].shape[0], n6 = v[3].shape[0];
    if (n4 == 0 || v[1].shape[0] != n4 || n6 == 0 || v[4].shape[0] != n6 ||
        v[5].shape[0] != n6 || v[2].shape[0] != INDEX_LEN || v[6].shape[0] != INDEX_LEN) {
        PyErr_SetString(PyExc_ValueError, "partition columns have inconsistent lengths");
        goto fail;
    }
    self->cols = (Columns){
        .v4_starts = v[0].buf, .v4_ids = v[1].buf, .v4_index = v[2].buf,
        .v6_hi = v[3].buf, .v6_lo = v[4].buf, .v6_ids = v[5].buf, .v6_index = v[6].buf,
        .n4 = n4, .n6 = n6,
    };
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int
Lookup_traverse(Lookup *self, visitproc visit, void *arg)
{
    Py_VISIT(self->table);
    Py_VISIT(self->fallback);
    Py_VISIT(self->parsed_type);
    /* The columns' exporters are not visited: they hold no references back (arrays,
     * or memoryviews of a snapshot's bytes), and a memoryview that the collector
     * clears while this object still holds a buffer of it drops its managed buffer
     * (CPython's memory_clear), so its later release dereferences NULL. Unvisited,
     * the views count as referenced from outside the garbage until dealloc releases them. */
    return 0;
}

static int
Lookup_clear(Lookup *self)
{
    Py_CLEAR(self->table);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->parsed_type);
    Py_CLEAR(self->sixty_four);
    return 0;
}

static void
Lookup_dealloc(Lookup *self)
{
    PyObject_GC_UnTrack(self);
    for (int k = 0; k < self->held; k++) {
        PyBuffer_Release(&self->views[k]);
    }
    self->held = 0;
    Lookup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---------------------------------------------------------------------------------------
 * Batches
 * ------------------------------------------------------------------------------------- */

/* Set out[at + k] to the table entry for sids[k], k < n, or ask the fallback with
 * item(ctx, at + k) (NOT_PLAIN, tunnel prefixes, ids outside the table), in order. */
typedef PyObject *(*ItemFn)(void *ctx, Py_ssize_t k);

static int
gather_into(Lookup *self, PyObject *out, Py_ssize_t at, const int32_t *sids, Py_ssize_t n,
            ItemFn item, void *ctx)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t slot = sids[k] == NOT_PLAIN ? -1 : slot_of(self, sids[k]);
        PyObject *entry;
        if (slot >= 0) {
            entry = Py_NewRef(PyTuple_GET_ITEM(self->table, slot));
        }
        else {
            PyObject *ip = item(ctx, at + k);
            if (ip == NULL) {
                return -1;
            }
            entry = call_fallback(self, ip);
            Py_DECREF(ip);
            if (entry == NULL) {
                return -1;
            }
        }
        PyList_SET_ITEM(out, at + k, entry);
    }
    return 0;
}

/* The items of one chunk of many(), held (a reference each) while the GIL is released. */
typedef struct {
    PyObject *items[CHUNK];
    Py_ssize_t at; /* index of items[0] in the input */
} Held;

static PyObject *
held_item(void *ctx, Py_ssize_t k)
{
    Held *h = ctx;
    return Py_NewRef(h->items[k - h->at]);
}

/* many(items): [self(ip) for ip in items], parsed and searched without the GIL.
 *
 * A list or tuple is read in place (any other iterable is made a list first), one
 * chunk at a time: the chunk's items are held by a reference each while the GIL is
 * released, so another thread changing the list cannot free them meanwhile, and
 * each str is touched once, just before it is parsed (copying the whole input into
 * a tuple first touched every str twice, far apart in time). */
static PyObject *
Lookup_many(Lookup *self, PyObject *items)
{
    PyObject *seq = PySequence_Fast(items, "many() takes an iterable");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    Held held;
    const unsigned char *text[CHUNK];
    Py_ssize_t size[CHUNK];
    Query q[CHUNK];
    int32_t sids[CHUNK];
    for (Py_ssize_t at = 0; out != NULL && at < n; at += CHUNK) {
        if (PySequence_Fast_GET_SIZE(seq) != n) {
            /* The fallback ran Python code between two chunks, and it changed the list. */
            PyErr_SetString(PyExc_RuntimeError, "many(): the list changed size during the call");
            Py_CLEAR(out);
            break;
        }
        Py_ssize_t m = n - at < CHUNK ? n - at : CHUNK;
        PyObject **src = PySequence_Fast_ITEMS(seq) + at;
        held.at = at;
        for (Py_ssize_t k = 0; k < m; k++) {
            PyObject *ip = held.items[k] = Py_NewRef(src[k]);
            text[k] = NULL;
            if (PyUnicode_CheckExact(ip)) {
#if PY_VERSION_HEX < 0x030C0000
                if (PyUnicode_READY(ip) < 0) {
                    PyErr_Clear();
                    continue;
                }
#endif
                if (PyUnicode_IS_ASCII(ip)) {
                    text[k] = PyUnicode_1BYTE_DATA(ip);
                    size[k] = PyUnicode_GET_LENGTH(ip);
                }
            }
        }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < m; k++) {
            if (text[k]) {
                parse_text(text[k], size[k], &q[k]);
            }
            else {
                q[k].family = 0;
            }
        }
        search_batch(&self->cols, q, sids, m);
        Py_END_ALLOW_THREADS
        if (gather_into(self, out, at, sids, m, held_item, &held) < 0) {
            Py_CLEAR(out);
        }
        for (Py_ssize_t k = 0; k < m; k++) {
            Py_DECREF(held.items[k]);
        }
    }
    Py_DECREF(seq);
    return out;
}

typedef struct {
    const unsigned char *base;
    Py_ssize_t width;
} Packed;

static PyObject *
packed_item(void *ctx, Py_ssize_t k)
{
    Packed *p = ctx;
    return PyBytes_FromStringAndSize((const char *)p->base + k * p->width, p->width);
}

static int
get_packed(PyObject *arg, Py_buffer *view, Py_ssize_t width, const char *what)
{
    if (PyObject_GetBuffer(arg, view, PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->len % width) {
        PyErr_Format(PyExc_ValueError, "%s: buffer length %zd is not a multiple of %zd", what,
                     view->len, width);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Queries for packed big-endian addresses (width 4: IPv4, 16: IPv6). */
static void
packed_queries(const unsigned char *b, Py_ssize_t width, Query *q, Py_ssize_t m)
{
    for (Py_ssize_t k = 0; k < m; k++, b += width) {
        if (width == 4) {
            q[k].family = 4;
            q[k].l = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
            continue;
        }
        uint64_t h = 0, l = 0;
        for (int j = 0; j < 8; j++) {
            h = (h << 8) | b[j];
            l = (l << 8) | b[j + 8];
        }
        q[k].family = 6;
        q[k].h = h;
        q[k].l = l;
    }
}

/* Entries for a buffer of packed big-endian addresses; tunnel prefixes go to the
 * fallback as the packed bytes (which it unwraps like text). */
static PyObject *
many_packed(Lookup *self, PyObject *arg, Py_ssize_t width, const char *what)
{
    Py_buffer view;
    if (get_packed(arg, &view, width, what) < 0) {
        return NULL;
    }
    Py_ssize_t n = view.len / width;
    PyObject *out = PyList_New(n);
    Packed ctx = {view.buf, width};
    Query q[CHUNK];
    int32_t sids[CHUNK];
    for (Py_ssize_t at = 0; out != NULL && at < n; at += CHUNK) {
        Py_ssize_t m = n - at < CHUNK ? n - at : CHUNK;
        Py_BEGIN_ALLOW_THREADS
        packed_queries((const unsigned char *)view.buf + at * width, width, q, m);
        search_batch(&self->cols, q, sids, m);
        Py_END_ALLOW_THREADS
        if (gather_into(self, out, at, sids, m, packed_item, &ctx) < 0) {
            Py_CLEAR(out);
        }
    }
    PyBuffer_Release(&view);
    return out;
}

/* many_v4(buffer): entries for packed big-endian IPv4 addresses (4 bytes each). */
static PyObject *
Lookup_many_v4(Lookup *self, PyObject *arg)
{
    return many_packed(self, arg, 4, "many_v4");
}

/* many_v6(buffer): entries for packed big-endian IPv6 addresses (16 bytes each). */
static PyObject *
Lookup_many_v6(Lookup *self, PyObject *arg)
{
    return many_packed(self, arg, 16, "many_v6");
}

typedef struct {
    const unsigned char *data;
    const int64_t *pairs; /* (start, stop) per item; start < 0 is a null */
} Utf8;

static PyObject *
utf8_item(void *ctx, Py_ssize_t k)
{
    Utf8 *u = ctx;
    int64_t a = u->pairs[2 * k], b = u->pairs[2 * k + 1];
    if (a < 0) {
        return Py_NewRef(Py_None);
    }
    return PyUnicode_DecodeUTF8((const char *)u->data + a, b - a, "strict");
}

/* many_utf8(data, bounds): entries for strings given as UTF-8 bytes in `data`
 * and an int64 array of (start, stop) pairs; start < 0 marks a null (None).
 * Arrow string arrays arrive this way without a Python str per item. Non-ASCII
 * bytes are never part of a plain address: the parsers refuse them, and the
 * fallback gets the decoded str. */
static PyObject *
Lookup_many_utf8(Lookup *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "many_utf8(data, bounds) takes 2 arguments");
        return NULL;
    }
    Py_buffer data, bounds;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (get_packed(args[1], &bounds, 16, "many_utf8 bounds") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t n = bounds.len / 16;
    const int64_t *pairs = bounds.buf;
    PyObject *out = NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t a = pairs[2 * k], b = pairs[2 * k + 1];
        if (a >= 0 && (b < a || b > data.len)) {
            PyErr_Format(PyExc_ValueError, "many_utf8: item %zd lies outside the data", k);
            goto done;
        }
    }
    out = PyList_New(n);
    const unsigned char *base = data.buf;
    Utf8 ctx = {base, pairs};
    Query q[CHUNK];
    int32_t sids[CHUNK];
    for (Py_ssize_t at = 0; out != NULL && at < n; at += CHUNK) {
        Py_ssize_t m = n - at < CHUNK ? n - at : CHUNK;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < m; k++) {
            int64_t a = pairs[2 * (at + k)], b = pairs[2 * (at + k) + 1];
            q[k].family = 0;
            if (a >= 0) {
                parse_text(base + a, (Py_ssize_t)(b - a), &q[k]);
            }
        }
        search_batch(&self->cols, q, sids, m);
        Py_END_ALLOW_THREADS
        if (gather_into(self, out, at, sids, m, utf8_item, &ctx) < 0) {
            Py_CLEAR(out);
        }
    }
done:
    PyBuffer_Release(&bounds);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef Lookup_methods[] = {
    {"many", (PyCFunction)Lookup_many, METH_O,
     "many(items) -> list: [self(ip) for ip in items], parsed and searched without the GIL."},
    {"many_v4", (PyCFunction)Lookup_many_v4, METH_O,
     "many_v4(buffer) -> list: entries for packed big-endian IPv4 addresses."},
    {"many_v6", (PyCFunction)Lookup_many_v6, METH_O,
     "many_v6(buffer) -> list: entries for packed big-endian IPv6 addresses."},
    {"many_utf8", (PyCFunction)(void (*)(void))Lookup_many_utf8, METH_FASTCALL,
     "many_utf8(data, bounds) -> list: entries for UTF-8 strings at int64 (start, stop) "
     "pairs; start < 0 is a null."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geofence._core.Lookup",
    .tp_doc = PyDoc_STR(
        "Lookup(partitions, table, fallback, tunnel_low, tunnel_high)\n\n"
        "Calling it with a plain address str returns the table entry of its segment;\n"
        "every other call is handed to fallback unchanged (see geofence.snapshot.search)."),
    .tp_basicsize = sizeof(Lookup),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Lookup_new,
    .tp_dealloc = (destructor)Lookup_dealloc,
    .tp_traverse = (traverseproc)Lookup_traverse,
    .tp_clear = (inquiry)Lookup_clear,
    .tp_vectorcall_offset = offsetof(Lookup, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_methods = Lookup_methods,
};

/* parse(text) -> (version, value) | None: the parsers alone, for the parity tests. */
static PyObject *
core_parse(PyObject *module, PyObject *text)
{
    (void)module;
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) {
        Py_RETURN_NONE;
    }
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0 || n > MAX_TEXT) {
        Py_RETURN_NONE;
    }
    if (memchr(s, ':', (size_t)n) != NULL) {
        uint64_t h, l;
        if (!parse6(s, n, &h, &l)) {
            Py_RETURN_NONE;
        }
        PyObject *high = PyLong_FromUnsignedLongLong(h);
        PyObject *low = PyLong_FromUnsignedLongLong(l);
        PyObject *shift = PyLong_FromLong(64);
        PyObject *top = (high && shift) ? PyNumber_Lshift(high, shift) : NULL;
        PyObject *value = (top && low) ? PyNumber_Or(top, low) : NULL;
        Py_XDECREF(high);
        Py_XDECREF(low);
        Py_XDECREF(shift);
        Py_XDECREF(top);
        return value ? Py_BuildValue("(iN)", 6, value) : NULL;
    }
    uint32_t v;
    if (!parse4(s, n, &v)) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(ik)", 4, (unsigned long)v);
}

/* ---------------------------------------------------------------------------------------
 * Structural checks of snapshot columns (geofence/snapshot/invariants.py), run when a
 * snapshot opens, before any search reads the columns: the same contract as that
 * module's numpy and standard-library checks, in one pass per column.
 * ------------------------------------------------------------------------------------- */

enum {
    CHECK_OK = 0,
    CHECK_SHAPE = 1,      /* lengths differ, no segment, or not 65537 index entries */
    CHECK_WITHIN = 2,     /* an index entry points outside the starts */
    CHECK_ORDER = 3,      /* starts not strictly increasing */
    CHECK_IDS = 4,        /* an id names no record and is not an allowed negative id */
    CHECK_INDEX = 5,      /* an index entry is not the segment before its bucket */
};

/* A one-dimensional buffer of `itemsize`-byte items (0: 4- or 8-byte items). */
static int
get_column(PyObject *arg, Py_buffer *view, Py_ssize_t itemsize, const char *what)
{
    if (PyObject_GetBuffer(arg, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    int ok = itemsize ? view->itemsize == itemsize : (view->itemsize == 4 || view->itemsize == 8);
    if (view->ndim != 1 || !ok) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s-byte items", what,
                     itemsize == 8 ? "8" : itemsize == 4 ? "4" : "4- or 8");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static inline uint64_t
start_at(const Py_buffer *starts, Py_ssize_t i)
{
    return starts->itemsize == 4 ? ((const uint32_t *)starts->buf)[i]
                                 : ((const uint64_t *)starts->buf)[i];
}

static int
partition_code(const Py_buffer *starts, const Py_buffer *low, const Py_buffer *ids,
               const Py_buffer *index, Py_ssize_t records, uint64_t negatives, int shift)
{
    Py_ssize_t n = starts->len / starts->itemsize;
    const int32_t *id = ids->buf, *ix = index->buf;
    const uint64_t *lo = low != NULL ? low->buf : NULL;
    if (n == 0 || ids->len / 4 != n || (low != NULL && low->len / 8 != n) ||
        index->len / 4 != INDEX_LEN) {
        return CHECK_SHAPE;
    }
    for (Py_ssize_t p = 0; p < INDEX_LEN; p++) {
        if (ix[p] < 0 || ix[p] >= n) {
            return CHECK_WITHIN;
        }
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t a = start_at(starts, i - 1), b = start_at(starts, i);
        if (a > b || (a == b && (lo == NULL || lo[i - 1] >= lo[i]))) {
            return CHECK_ORDER;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t v = id[i];
        if (v >= 0 ? v >= records : (v < -63 || !((negatives >> -v) & 1))) {
            return CHECK_IDS;
        }
    }
    if (ix[0] != 0 || ix[INDEX_LEN - 1] != n - 1) {
        return CHECK_INDEX;
    }
    for (Py_ssize_t p = 1; p < INDEX_LEN - 1; p++) {
        /* Entry p is the segment holding address (p << shift) - 1. */
        uint64_t bound = (uint64_t)p << shift;
        Py_ssize_t i = ix[p];
        if (start_at(starts, i) >= bound || (i + 1 < n && start_at(starts, i + 1) < bound)) {
            return CHECK_INDEX;
        }
    }
    return CHECK_OK;
}

/* partition_problem(starts, low, ids, index, records, negatives, shift) -> int: 0 when
 * the columns of one family are consistent, else the CHECK_* code of the first broken
 * rule. starts: 4- or 8-byte unsigned items (IPv6: the high halves); low: None or the
 * IPv6 low halves; ids, index: 4-byte signed items; negatives: bit k allows id -k. */
static PyObject *
core_partition_problem(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "partition_problem takes 7 arguments");
        return NULL;
    }
    Py_ssize_t records = PyLong_AsSsize_t(args[4]);
    uint64_t negatives = PyLong_AsUnsignedLongLong(args[5]);
    long shift = PyLong_AsLong(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (shift < 0 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be within 0..63");
        return NULL;
    }
    Py_buffer starts, low, ids, index;
    int has_low = args[1] != Py_None;
    if (get_column(args[0], &starts, 0, "starts") < 0) {
        return NULL;
    }
    if (has_low && get_column(args[1], &low, 8, "low") < 0) {
        PyBuffer_Release(&starts);
        return NULL;
    }
    if (get_column(args[2], &ids, 4, "ids") < 0) {
        goto release_low;
    }
    if (get_column(args[3], &index, 4, "index") < 0) {
        PyBuffer_Release(&ids);
        goto release_low;
    }
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = partition_code(&starts, has_low ? &low : NULL, &ids, &index, records, negatives,
                          (int)shift);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&index);
    PyBuffer_Release(&ids);
    if (has_low) {
        PyBuffer_Release(&low);
    }
    PyBuffer_Release(&starts);
    return PyLong_FromLong(code);
release_low:
    if (has_low) {
        PyBuffer_Release(&low);
    }
    PyBuffer_Release(&starts);
    return NULL;
}

/* non_decreasing(values) -> bool: whether 4-byte unsigned items never step back. */
static PyObject *
core_non_decreasing(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (get_column(arg, &view, 4, "values") < 0) {
        return NULL;
    }
    const uint32_t *v = view.buf;
    Py_ssize_t n = view.len / 4, i = 1;
    while (i < n && v[i - 1] <= v[i]) {
        i++;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(i >= n);
}

/* relabel_runs(ids, relabel) -> (heads, labels): the twin of
 * geofence.snapshot.partition.relabel_runs, for policy compilation. Every id of the int32
 * buffer `ids` is replaced by relabel[id] (a negative id counts from the end, as in a
 * compiled table); `heads` are the positions where the new id differs from the one
 * before (position 0 always) and `labels` the new id there, both as bytes of native
 * int32. An id outside relabel is refused, never read. */
static PyObject *
core_relabel_runs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "relabel_runs(ids, relabel) takes 2 arguments");
        return NULL;
    }
    Py_buffer ids, map;
    if (PyObject_GetBuffer(args[0], &ids, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &map, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&ids);
        return NULL;
    }
    PyObject *result = NULL, *heads = NULL, *labels = NULL;
    if (ids.itemsize != 4 || map.itemsize != 4 || ids.ndim != 1 || map.ndim != 1) {
        PyErr_SetString(PyExc_TypeError, "relabel_runs: ids and relabel must hold int32 items");
        goto done;
    }
    Py_ssize_t n = ids.len / 4, size = map.len / 4;
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "relabel_runs: too many ids");
        goto done;
    }
    const int32_t *id = ids.buf, *to = map.buf;
    Py_ssize_t runs = 0;
    int32_t prev = 0;
    /* Two passes: count the runs, then fill buffers of the exact size. */
    for (int pass = 0; pass < 2; pass++) {
        int32_t *h = pass ? (int32_t *)PyBytes_AS_STRING(heads) : NULL;
        int32_t *l = pass ? (int32_t *)PyBytes_AS_STRING(labels) : NULL;
        runs = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t slot = id[k] >= 0 ? (Py_ssize_t)id[k] : size + id[k];
            if (slot < 0 || slot >= size) {
                PyErr_Format(PyExc_IndexError, "relabel_runs: id %d at %zd has no label",
                             (int)id[k], k);
                goto done;
            }
            int32_t label = to[slot];
            if (k == 0 || label != prev) {
                if (pass) {
                    h[runs] = (int32_t)k;
                    l[runs] = label;
                }
                runs++;
                prev = label;
            }
        }
        if (!pass) {
            heads = PyBytes_FromStringAndSize(NULL, runs * 4);
            labels = PyBytes_FromStringAndSize(NULL, runs * 4);
            if (heads == NULL || labels == NULL) {
                goto done;
            }
        }
    }
    result = PyTuple_Pack(2, heads, labels);
done:
    Py_XDECREF(heads);
    Py_XDECREF(labels);
    PyBuffer_Release(&map);
    PyBuffer_Release(&ids);
    return result;
}

static PyMethodDef core_methods[] = {
    {"parse", core_parse, METH_O,
     "parse(text) -> (version, value) | None: the strict text parsers of the fast path."},
    {"partition_problem", (PyCFunction)(void (*)(void))core_partition_problem, METH_FASTCALL,
     "partition_problem(starts, low, ids, index, records, negatives, shift) -> int: 0, or "
     "the code of the first broken invariant (geofence.snapshot.invariants)."},
    {"non_decreasing", core_non_decreasing, METH_O,
     "non_decreasing(values) -> bool: whether 4-byte unsigned items never step back."},
    {"relabel_runs", (PyCFunction)(void (*)(void))core_relabel_runs, METH_FASTCALL,
     "relabel_runs(ids, relabel) -> (heads, labels): relabelled runs of an int32 id column, "
     "as bytes of int32 (see geofence.snapshot.partition.relabel_runs)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "geofence._core",
    .m_doc = "The compiled fast path of geofence (see geofence.snapshot.search).",
    .m_size = -1,
    .m_methods = core_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    if (PyType_Ready(&LookupType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
