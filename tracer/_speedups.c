/* The flat transitions hot path in C: what tracer/adapters/transitions.py does in
 * _Process.call, _FastSetState.call, _PyEvent and _PyModelTrace (and tracer/core.py in
 * _Stacks and Dispatcher._bulk_rows), without the interpreter's per-bytecode cost.
 * The Python classes stay the reference: every path here that is not the usual one
 * calls back into them, and they run alone where this module is not built
 * (AMINSPECT_PURE_PYTHON=1 forces that; tests run both).
 *
 * Rules, as for the Python hooks: never raise into the app except what the machine
 * itself raised, never change a return value, and never leave the machine half-hooked.
 * Any failure of our own bookkeeping is reported to the tracer's ``fail`` and the
 * trigger goes on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define PENDING (-1)
#define MOVES 8
#define REFERENCED (-2)

static PyObject *str_model, *str_channel, *str_capture, *str_current, *str_tick,
    *str_closed, *str_key, *str_captured, *str_next_position, *str_args, *str_kwargs,
    *str_error, *str_event, *str_name, *str_result, *str_capacity, *str_signalled;

static PyObject *EMPTY; /* the empty configuration */
static PyObject *ONE;

static long long
clock_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    if (PyTime_PerfCounterRaw(&t) < 0) {
        PyErr_Clear();
        return 0;
    }
    return (long long)t;
#else
    return (long long)_PyTime_GetPerfCounter();
#endif
}

/* tp_dealloc of every type here: untrack, drop the references (the type's tp_clear),
 * free. */
static void
gc_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* The pending exception, taken (NULL if none); and set again. 3.12 keeps one object. */
typedef struct {
    PyObject *type, *value, *traceback;
} SavedError;

static SavedError
take_error(void)
{
    SavedError e = {NULL, NULL, NULL};
#if PY_VERSION_HEX >= 0x030C0000
    e.value = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e.type, &e.value, &e.traceback);
#endif
    return e;
}

static void
restore_error(SavedError e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e.value);
#else
    PyErr_Restore(e.type, e.value, e.traceback);
#endif
}

/* The pending exception as one object (for tracer.fail), taken. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc != NULL && tb != NULL)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    return exc != NULL ? exc : Py_NewRef(Py_None);
}

/* Untrack ``tuple`` from the garbage collector when it holds only objects that cannot be
 * part of a cycle (ints, strs, None, untracked tuples): what a collection would do to it
 * at its first pass (_PyTuple_MaybeUntrack), done at birth. Records and rows wait in
 * buffers for tens of milliseconds; untracked, no young collection walks them. */
static void
untrack_plain(PyObject *tuple)
{
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyTuple_GET_ITEM(tuple, i);
        if (PyObject_IS_GC(x) && !(PyTuple_CheckExact(x) && !PyObject_GC_IsTracked(x)))
            return;
    }
    PyObject_GC_UnTrack(tuple);
}

/* ---------------------------------------------------------------------------------
 * ThreadStacks: tracer.core._local. Its ``stack`` is this thread's list of open events,
 * kept in the thread state's dict: a third of what a threading.local attribute costs,
 * and the C hooks reach it without an attribute lookup.
 */
static PyObject *str_stack_key;

/* This thread's stack (borrowed), made on first use; NULL with an exception set. */
static PyObject *
thread_stack(void)
{
    PyObject *d = PyThreadState_GetDict(); /* borrowed */
    if (d == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    PyObject *stack = PyDict_GetItemWithError(d, str_stack_key);
    if (stack != NULL && !PyList_CheckExact(stack)) {
        PyErr_SetString(PyExc_TypeError, "the open-event stack is not a list");
        return NULL;
    }
    if (stack == NULL) {
        if (PyErr_Occurred())
            return NULL;
        if ((stack = PyList_New(0)) == NULL)
            return NULL;
        int failed = PyDict_SetItem(d, str_stack_key, stack);
        Py_DECREF(stack); /* the dict holds it */
        if (failed < 0)
            return NULL;
    }
    return stack;
}

static PyObject *
ThreadStacks_get_stack(PyObject *self, void *closure)
{
    PyObject *stack = thread_stack();
    return stack == NULL ? NULL : Py_NewRef(stack);
}

static PyGetSetDef ThreadStacks_getset[] = {
    {"stack", (getter)ThreadStacks_get_stack, NULL, "this thread's open events", NULL},
    {NULL},
};

static PyTypeObject ThreadStacksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.ThreadStacks",
    .tp_doc = "Open events of synchronous code, per thread (see tracer.core._Stacks).",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_getset = ThreadStacks_getset,
};

/* ---------------------------------------------------------------------------------
 * ModelTrace: one traced (machine, model) pair (transitions._ModelTrace's fields), plus
 * what the hot path reads of its channel, which never changes once the channel is open.
 */
typedef struct {
    PyObject_HEAD
    PyObject *model;
    PyObject *channel;
    PyObject *current;
    PyObject *open;
    PyObject *pending_to;
    PyObject *tick;
    PyObject *key;       /* channel.key */
    PyObject *positions; /* channel.positions: the itertools.count behind next_position */
} ModelTrace;

static PyTypeObject ModelTraceType;

static int
ModelTrace_traverse(ModelTrace *self, visitproc visit, void *arg)
{
    Py_VISIT(self->model);
    Py_VISIT(self->channel);
    Py_VISIT(self->current);
    Py_VISIT(self->open);
    Py_VISIT(self->pending_to);
    Py_VISIT(self->tick);
    Py_VISIT(self->key);
    Py_VISIT(self->positions);
    return 0;
}

static int
ModelTrace_clear(ModelTrace *self)
{
    Py_CLEAR(self->model);
    Py_CLEAR(self->channel);
    Py_CLEAR(self->current);
    Py_CLEAR(self->open);
    Py_CLEAR(self->pending_to);
    Py_CLEAR(self->tick);
    Py_CLEAR(self->key);
    Py_CLEAR(self->positions);
    return 0;
}

static int
ModelTrace_init(ModelTrace *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"model", "channel", "current", NULL};
    PyObject *model, *channel, *current;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO", kwlist, &model, &channel, &current))
        return -1;
    PyObject *machine = PyObject_GetAttrString(channel, "machine");
    if (machine == NULL)
        return -1;
    PyObject *tick = PyObject_GetAttrString(machine, "mach_tick");
    Py_DECREF(machine);
    if (tick == NULL)
        return -1;
    PyObject *key = PyObject_GetAttrString(channel, "key");
    PyObject *positions = key == NULL ? NULL : PyObject_GetAttrString(channel, "positions");
    PyObject *open = positions == NULL ? NULL : PyList_New(0);
    if (open == NULL) {
        Py_DECREF(tick);
        Py_XDECREF(key);
        Py_XDECREF(positions);
        return -1;
    }
    if (!PyIter_Check(positions)) {
        PyErr_SetString(PyExc_TypeError, "channel.positions is not an iterator");
        Py_DECREF(tick);
        Py_DECREF(key);
        Py_DECREF(positions);
        Py_DECREF(open);
        return -1;
    }
    Py_XSETREF(self->model, Py_NewRef(model));
    Py_XSETREF(self->channel, Py_NewRef(channel));
    Py_XSETREF(self->current, Py_NewRef(current));
    Py_XSETREF(self->open, open);
    Py_XSETREF(self->pending_to, Py_NewRef(Py_None));
    Py_XSETREF(self->tick, tick);
    Py_XSETREF(self->key, key);
    Py_XSETREF(self->positions, positions);
    return 0;
}

/* The channel's next position (channel.next_position()), as a C integer; -1 with an
 * exception set on failure. */
static long long
next_position(ModelTrace *mt)
{
    PyObject *p = Py_TYPE(mt->positions)->tp_iternext(mt->positions);
    if (p == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "channel positions ran out");
        return -1;
    }
    long long pos = PyLong_AsLongLong(p);
    Py_DECREF(p);
    return pos;
}

static PyMemberDef ModelTrace_members[] = {
    {"model", T_OBJECT_EX, offsetof(ModelTrace, model), 0, NULL},
    {"channel", T_OBJECT_EX, offsetof(ModelTrace, channel), READONLY, "fixed: key and positions come from it"},
    {"current", T_OBJECT_EX, offsetof(ModelTrace, current), 0, NULL},
    {"open", T_OBJECT_EX, offsetof(ModelTrace, open), 0, NULL},
    {"pending_to", T_OBJECT_EX, offsetof(ModelTrace, pending_to), 0, NULL},
    {"tick", T_OBJECT_EX, offsetof(ModelTrace, tick), 0, NULL},
    {NULL},
};

static PyTypeObject ModelTraceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.ModelTrace",
    .tp_doc = "One traced (machine, model) pair (see _ModelTrace).",
    .tp_basicsize = sizeof(ModelTrace),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ModelTrace_init,
    .tp_dealloc = gc_dealloc,
    .tp_traverse = (traverseproc)ModelTrace_traverse,
    .tp_clear = (inquiry)ModelTrace_clear,
    .tp_members = ModelTrace_members,
};

/* ---------------------------------------------------------------------------------
 * Event: one trigger of a flat synchronous machine (transitions._Event's fields).
 */
typedef struct {
    PyObject_HEAD
    PyObject *channel;
    PyObject *mt;
    PyObject *parent;
    PyObject *source;
    PyObject *before;
    PyObject *after;
    PyObject *reenter;
    long long position;
    long long seq;
    long long started_ns;
} Event;

static PyTypeObject EventType;

static int
Event_traverse(Event *self, visitproc visit, void *arg)
{
    Py_VISIT(self->channel);
    Py_VISIT(self->mt);
    Py_VISIT(self->parent);
    Py_VISIT(self->source);
    Py_VISIT(self->before);
    Py_VISIT(self->after);
    Py_VISIT(self->reenter);
    return 0;
}

static int
Event_clear(Event *self)
{
    Py_CLEAR(self->channel);
    Py_CLEAR(self->mt);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->source);
    Py_CLEAR(self->before);
    Py_CLEAR(self->after);
    Py_CLEAR(self->reenter);
    return 0;
}

static PyObject *
Event_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Event *self = (Event *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->position = PENDING;
        self->seq = PENDING;
    }
    return (PyObject *)self;
}

/* What nested records name as parent or source: the event itself, which from now on
 * needs its seq back from the sender. */
static PyObject *
Event_get_capture(Event *self, void *closure)
{
    self->seq = REFERENCED;
    return Py_NewRef(self);
}

/* The event's first state write is about to happen (transitions._Event.first_write). */
static PyObject *
Event_first_write(Event *self, PyObject *arg)
{
    if (Py_TYPE(arg) != &ModelTraceType) {
        PyErr_SetString(PyExc_TypeError, "first_write takes a ModelTrace");
        return NULL;
    }
    ModelTrace *mt = (ModelTrace *)arg;
    long long pos = next_position(mt);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    self->position = pos;
    Py_XSETREF(self->before, Py_NewRef(mt->current));
    Py_XSETREF(self->after, Py_NewRef(mt->current));
    Py_XSETREF(self->reenter, Py_NewRef(EMPTY));
    Py_RETURN_NONE;
}

static PyMemberDef Event_members[] = {
    {"channel", T_OBJECT_EX, offsetof(Event, channel), 0, NULL},
    {"mt", T_OBJECT_EX, offsetof(Event, mt), 0, NULL},
    {"parent", T_OBJECT_EX, offsetof(Event, parent), 0, NULL},
    {"source", T_OBJECT_EX, offsetof(Event, source), 0, NULL},
    {"before", T_OBJECT_EX, offsetof(Event, before), 0, NULL},
    {"after", T_OBJECT_EX, offsetof(Event, after), 0, NULL},
    {"reenter", T_OBJECT_EX, offsetof(Event, reenter), 0, NULL},
    {"position", T_LONGLONG, offsetof(Event, position), 0, NULL},
    {"seq", T_LONGLONG, offsetof(Event, seq), 0, NULL},
    {"started_ns", T_LONGLONG, offsetof(Event, started_ns), 0, NULL},
    {NULL},
};

static PyGetSetDef Event_getset[] = {
    {"capture", (getter)Event_get_capture, NULL, NULL, NULL},
    {NULL},
};

static PyMethodDef Event_methods[] = {
    {"first_write", (PyCFunction)Event_first_write, METH_O, NULL},
    {NULL},
};

static PyTypeObject EventType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.Event",
    .tp_doc = "One trigger of a flat synchronous transitions machine (see _Event).",
    .tp_basicsize = sizeof(Event),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Event_new,
    .tp_dealloc = gc_dealloc,
    .tp_traverse = (traverseproc)Event_traverse,
    .tp_clear = (inquiry)Event_clear,
    .tp_members = Event_members,
    .tp_getset = Event_getset,
    .tp_methods = Event_methods,
};

/* ---------------------------------------------------------------------------------
 * Hooks. Both are installed as instance attributes of the machine and called by
 * transitions as ``machine._process(trigger)`` and ``machine.set_state(state, model)``.
 * ``links`` names, in order, what a hook calls back into (see ``_Tracer._c_hooks`` in
 * transitions.py); they pickle as the original they replaced (``reduce``).
 */
enum {
    L_ORIGINAL,     /* the callable replaced */
    L_REDUCE,       /* what __reduce__ returns */
    L_MODELS,       /* tracer.models: {id(model): _ModelTrace} */
    L_ASYNC_STACK,  /* tracer.core._event_stack (a ContextVar) */
    L_POP_EVENT,    /* tracer.core.pop_event */
    L_CLOSE_FAST,   /* tracer.close_fast(mt, ev, ed) */
    L_SALVAGE,      /* tracer.salvage_fast(mt, ev, ed) */
    L_FAIL,         /* tracer.fail(exc) */
    L_CHANGE_CACHE, /* tracer.change_cache */
    L_CHANGES,      /* tracer.changes(before, after, reenter) */
    L_MASKS,        /* tracer.core._MASKS */
    L_CONFIG_MASK,  /* tracer.core.config_mask */
    L_SANITIZE,     /* sanitize_args */
    L_SANITIZER,    /* tracer.sanitizer (None or a callable) */
    L_ERROR_OF,     /* tracer.core.error_of */
    L_DISPATCHER,   /* tracer.dispatcher */
    L_BUFFER,       /* dispatcher._buffer (a deque) */
    L_APPEND,       /* dispatcher._buffer.append */
    L_DROP_OLDEST,  /* dispatcher._drop_oldest */
    L_WAKE,         /* dispatcher._wake.set */
    L_EVENT_CODE,   /* the wire code of an event record */
    L_CACHE,        /* tracer.cache: {state value: configuration} */
    L_LEAVES,       /* tracer.leaves(config) */
    L_WRITTEN,      /* tracer.written(ev, mt, state, model, previous) */
    L_GENERAL,      /* the Python twin (_Process.call or _FastSetState.call) */
    L_CHANGE_CODE,  /* Transition._change_state.__code__, or None */
    L_COUNT
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t capacity; /* dispatcher.capacity: fixed when the dispatcher is made */
    PyObject *links[L_COUNT];
    /* The last few moves, by the identity of (before, after, reenter): a machine makes
     * few distinct moves, and this skips building a key and a dict lookup per record.
     * Entries hold their objects, so an address cannot be reused while cached. */
    PyObject *moves[MOVES][4]; /* before, after, reenter, (exited, entered, mask) */
    int next_move;
} Hook;

static PyTypeObject ProcessHookType, SetStateHookType;

static int
Hook_traverse(Hook *self, visitproc visit, void *arg)
{
    for (int i = 0; i < L_COUNT; i++)
        Py_VISIT(self->links[i]);
    for (int i = 0; i < MOVES; i++)
        for (int j = 0; j < 4; j++)
            Py_VISIT(self->moves[i][j]);
    return 0;
}

static int
Hook_clear(Hook *self)
{
    for (int i = 0; i < L_COUNT; i++)
        Py_CLEAR(self->links[i]);
    for (int i = 0; i < MOVES; i++)
        for (int j = 0; j < 4; j++)
            Py_CLEAR(self->moves[i][j]);
    return 0;
}

/* (exited, entered, mask) of the move before -> after re-entering reenter: from the
 * hook's own cache, else the tracer's (tracer.change_cache, tracer.changes). New ref,
 * or NULL with an exception set. */
static PyObject *
find_move(Hook *self, PyObject *before, PyObject *after, PyObject *reenter)
{
    for (int i = 0; i < MOVES; i++) {
        PyObject **m = self->moves[i];
        if (m[0] == before && m[1] == after && m[2] == reenter)
            return Py_NewRef(m[3]);
    }
    PyObject *key = PyTuple_Pack(3, before, after, reenter);
    if (key == NULL)
        return NULL;
    PyObject *found = PyDict_GetItemWithError(self->links[L_CHANGE_CACHE], key);
    if (found != NULL)
        Py_INCREF(found);
    else if (!PyErr_Occurred())
        found = PyObject_Vectorcall(self->links[L_CHANGES], &PyTuple_GET_ITEM(key, 0), 3, NULL);
    Py_DECREF(key);
    if (found == NULL)
        return NULL;
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 3) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "a change is (exited, entered, mask)");
        return NULL;
    }
    /* Replace the oldest entry; its objects are released last (that may run code). */
    PyObject **m = self->moves[self->next_move];
    self->next_move = (self->next_move + 1) % MOVES;
    PyObject *old[4] = {m[0], m[1], m[2], m[3]};
    m[0] = Py_NewRef(before);
    m[1] = Py_NewRef(after);
    m[2] = Py_NewRef(reenter);
    m[3] = Py_NewRef(found);
    for (int j = 0; j < 4; j++)
        Py_XDECREF(old[j]);
    return found;
}

static PyObject *Process_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);
static PyObject *SetState_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);

static PyObject *
Hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "hooks take their links positionally");
        return NULL;
    }
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != L_COUNT) {
        PyErr_Format(PyExc_TypeError, "a hook takes %d links", L_COUNT);
        return NULL;
    }
    Hook *self = (Hook *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    for (int i = 0; i < L_COUNT; i++)
        self->links[i] = Py_NewRef(PyTuple_GET_ITEM(args, i));
    /* The hot path reads these with the concrete dict and list API. */
    static const int dicts[] = {L_MODELS, L_CHANGE_CACHE, L_MASKS, L_CACHE};
    for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
        if (!PyDict_CheckExact(self->links[dicts[i]])) {
            PyErr_Format(PyExc_TypeError, "hook link %d must be a dict", dicts[i]);
            Py_DECREF(self);
            return NULL;
        }
    }
    if (!PyContextVar_CheckExact(self->links[L_ASYNC_STACK])) {
        PyErr_SetString(PyExc_TypeError, "the async stack link must be a ContextVar");
        Py_DECREF(self);
        return NULL;
    }
    PyObject *capacity = PyObject_GetAttrString(self->links[L_DISPATCHER], "capacity");
    self->capacity = capacity == NULL ? -1 : PyLong_AsSsize_t(capacity);
    Py_XDECREF(capacity);
    if (self->capacity == -1 && PyErr_Occurred()) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = type == &ProcessHookType ? Process_vectorcall : SetState_vectorcall;
    return (PyObject *)self;
}

static PyObject *
Hook_reduce(Hook *self, PyObject *unused)
{
    return Py_NewRef(self->links[L_REDUCE]);
}

static PyObject *
Hook_get_original(Hook *self, void *closure)
{
    return Py_NewRef(self->links[L_ORIGINAL]);
}

static PyMethodDef Hook_methods[] = {
    {"__reduce__", (PyCFunction)Hook_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef Hook_getset[] = {
    {"original", (getter)Hook_get_original, NULL, NULL, NULL},
    {NULL},
};

/* Report the pending exception to the tracer (tracer.fail) and clear it. */
static void
report(Hook *self)
{
    PyObject *exc = take_exception();
    PyObject *r = PyObject_CallOneArg(self->links[L_FAIL], exc);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_DECREF(exc);
}

/* The innermost open event: this thread's stack, else this asyncio task's. New ref
 * (None when there is none); ``stack`` gets a new ref to this thread's list. */
static PyObject *
innermost(Hook *self, PyObject **stack)
{
    if ((*stack = thread_stack()) == NULL)
        return NULL;
    Py_INCREF(*stack);
    Py_ssize_t n = PyList_GET_SIZE(*stack);
    if (n)
        return Py_NewRef(PyList_GET_ITEM(*stack, n - 1));
    PyObject *astack;
    if (PyContextVar_Get(self->links[L_ASYNC_STACK], NULL, &astack) < 0) {
        Py_CLEAR(*stack);
        return NULL;
    }
    PyObject *top = Py_None;
    if (astack != NULL && PyTuple_Check(astack) && PyTuple_GET_SIZE(astack))
        top = PyTuple_GET_ITEM(astack, PyTuple_GET_SIZE(astack) - 1);
    Py_INCREF(top);
    Py_XDECREF(astack);
    return top;
}

/* Set ev's parent (same channel) or source (another channel) from the open event
 * ``parent``. 0 on success. */
static int
link_parent(Event *ev, PyObject *parent)
{
    PyObject *pch = PyObject_GetAttr(parent, str_channel);
    if (pch == NULL)
        return -1;
    PyObject *cap = PyObject_GetAttr(parent, str_capture);
    if (cap == NULL) {
        Py_DECREF(pch);
        return -1;
    }
    if (pch == ev->channel) {
        Py_DECREF(pch);
        Py_SETREF(ev->parent, cap);
        return 0;
    }
    PyObject *source = PyTuple_Pack(2, pch, cap);
    Py_DECREF(pch);
    Py_DECREF(cap);
    if (source == NULL)
        return -1;
    Py_SETREF(ev->source, source);
    return 0;
}

static PyObject *
call3(PyObject *fn, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[3] = {a, b, c};
    return PyObject_Vectorcall(fn, args, 3, NULL);
}

/* The record of an event that returned normally, as the tuple the dispatcher takes
 * (core._Item). New ref, or NULL with an exception set. */
static PyObject *
build_record(Hook *self, Event *ev, ModelTrace *mt, PyObject *ed)
{
    PyObject *record = NULL, *args = NULL, *error = NULL, *exited = NULL, *entered = NULL,
             *mask = NULL, *event = NULL, *name = NULL, *position = NULL, *started = NULL,
             *duration = NULL, *captured = NULL, *count = NULL, *ed_args = NULL,
             *ed_kwargs = NULL, *result = NULL;
    PyObject *ch = mt->channel;
    int truth, has_args;

    /* Arguments, through the sanitizer, only when there are any (or a sanitizer). */
    if ((ed_args = PyObject_GetAttr(ed, str_args)) == NULL)
        goto done;
    if ((ed_kwargs = PyObject_GetAttr(ed, str_kwargs)) == NULL)
        goto done;
    if ((has_args = PyObject_IsTrue(ed_args)) < 0)
        goto done;
    if (!has_args && (has_args = PyObject_IsTrue(ed_kwargs)) < 0)
        goto done;
    if (has_args || self->links[L_SANITIZER] != Py_None) {
        args = call3(self->links[L_SANITIZE], ed_args, ed_kwargs, self->links[L_SANITIZER]);
        if (args == NULL)
            goto done;
    }
    else {
        args = Py_NewRef(Py_None);
    }

    if ((error = PyObject_GetAttr(ed, str_error)) == NULL)
        goto done;
    if (error != Py_None) {
        Py_SETREF(error, PyObject_CallOneArg(self->links[L_ERROR_OF], error));
        if (error == NULL)
            goto done;
    }

    if (ev->position != PENDING) { /* the event wrote its state */
        if (ev->before == NULL || ev->after == NULL || ev->reenter == NULL) {
            PyErr_SetString(PyExc_AttributeError, "an event wrote without a configuration");
            goto done;
        }
        PyObject *found = find_move(self, ev->before, ev->after, ev->reenter);
        if (found == NULL)
            goto done;
        exited = Py_NewRef(PyTuple_GET_ITEM(found, 0));
        entered = Py_NewRef(PyTuple_GET_ITEM(found, 1));
        mask = Py_NewRef(PyTuple_GET_ITEM(found, 2));
        Py_DECREF(found);
    }
    else { /* no write: the event takes its place now */
        mask = PyDict_GetItemWithError(self->links[L_MASKS], mt->current);
        if (mask != NULL)
            Py_INCREF(mask);
        else if (!PyErr_Occurred())
            mask = PyObject_CallOneArg(self->links[L_CONFIG_MASK], mt->current);
        if (mask == NULL)
            goto done;
        exited = PyTuple_New(0);
        entered = PyTuple_New(0);
        if (exited == NULL || entered == NULL)
            goto done;
        long long pos = next_position(mt);
        if (pos == -1 && PyErr_Occurred())
            goto done;
        ev->position = pos;
    }
    if ((position = PyLong_FromLongLong(ev->position)) == NULL)
        goto done;

    if ((event = PyObject_GetAttr(ed, str_event)) == NULL)
        goto done;
    if ((name = PyObject_GetAttr(event, str_name)) == NULL)
        goto done;
    if ((result = PyObject_GetAttr(ed, str_result)) == NULL)
        goto done;
    if ((truth = PyObject_IsTrue(result)) < 0)
        goto done;
    if ((started = PyLong_FromLongLong(ev->started_ns)) == NULL)
        goto done;
    if ((duration = PyLong_FromLongLong(clock_ns() - ev->started_ns)) == NULL)
        goto done;

    if ((record = PyTuple_New(16)) == NULL)
        goto done;
    /* An event something nested named needs its seq back from the sender; any other is
     * freed here. PyTuple_SET_ITEM steals: each slot gets its own reference. */
    PyTuple_SET_ITEM(record, 0, Py_NewRef(mt->key));
    PyTuple_SET_ITEM(record, 1, Py_NewRef(position));
    PyTuple_SET_ITEM(record, 2, Py_NewRef(ev->seq != PENDING ? (PyObject *)ev : Py_None));
    PyTuple_SET_ITEM(record, 3, Py_NewRef(ev->parent));
    PyTuple_SET_ITEM(record, 4, Py_NewRef(ev->source));
    PyTuple_SET_ITEM(record, 5, Py_NewRef(mask));
    PyTuple_SET_ITEM(record, 6, Py_NewRef(self->links[L_EVENT_CODE]));
    PyTuple_SET_ITEM(record, 7, Py_NewRef(name));
    PyTuple_SET_ITEM(record, 8, Py_NewRef(started));
    PyTuple_SET_ITEM(record, 9, Py_NewRef(duration));
    PyTuple_SET_ITEM(record, 10, Py_NewRef(args));
    PyTuple_SET_ITEM(record, 11, Py_NewRef(truth ? Py_True : Py_False));
    PyTuple_SET_ITEM(record, 12, Py_NewRef(error));
    PyTuple_SET_ITEM(record, 13, Py_NewRef(exited));
    PyTuple_SET_ITEM(record, 14, Py_NewRef(entered));
    PyTuple_SET_ITEM(record, 15, Py_NewRef(mt->tick));

    untrack_plain(record);

    /* ch.captured += 1, once the record is whole (a salvaged one counts itself) */
    if ((captured = PyObject_GetAttr(ch, str_captured)) == NULL
        || (count = PyNumber_Add(captured, ONE)) == NULL
        || PyObject_SetAttr(ch, str_captured, count) < 0)
        Py_CLEAR(record);

done:
    Py_XDECREF(args);
    Py_XDECREF(error);
    Py_XDECREF(exited);
    Py_XDECREF(entered);
    Py_XDECREF(mask);
    Py_XDECREF(event);
    Py_XDECREF(name);
    Py_XDECREF(position);
    Py_XDECREF(started);
    Py_XDECREF(duration);
    Py_XDECREF(captured);
    Py_XDECREF(count);
    Py_XDECREF(ed_args);
    Py_XDECREF(ed_kwargs);
    Py_XDECREF(result);
    return record;
}

/* Dispatcher.enqueue(record), inlined. 0 on success. */
static int
enqueue(Hook *self, PyObject *record)
{
    PyObject *d = self->links[L_DISPATCHER], *r;
    Py_ssize_t n = PyObject_Size(self->links[L_BUFFER]);
    if (n < 0)
        return -1;
    if (n >= self->capacity) {
        if ((r = PyObject_CallNoArgs(self->links[L_DROP_OLDEST])) == NULL)
            return -1;
        Py_DECREF(r);
    }
    if ((r = PyObject_CallOneArg(self->links[L_APPEND], record)) == NULL)
        return -1;
    Py_DECREF(r);
    PyObject *signalled = PyObject_GetAttr(d, str_signalled);
    if (signalled == NULL)
        return -1;
    int is = PyObject_IsTrue(signalled);
    Py_DECREF(signalled);
    if (is < 0)
        return -1;
    if (!is) { /* one wake-up per batch, not per record */
        if (PyObject_SetAttr(d, str_signalled, Py_True) < 0)
            return -1;
        if ((r = PyObject_CallNoArgs(self->links[L_WAKE])) == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Open the event of ``mt`` for ``trigger`` on this thread's stack. New ref to the event
 * (*stack: a new ref to the stack), or NULL with an exception set. */
static Event *
open_event(Hook *self, ModelTrace *mt, PyObject **stack)
{
    Event *ev = (Event *)EventType.tp_alloc(&EventType, 0);
    if (ev == NULL)
        return NULL;
    ev->position = ev->seq = PENDING;
    ev->mt = Py_NewRef(mt);
    ev->channel = Py_NewRef(mt->channel);
    ev->parent = Py_NewRef(Py_None);
    ev->source = Py_NewRef(Py_None);
    PyObject *parent = innermost(self, stack);
    if (parent == NULL) {
        Py_DECREF(ev);
        return NULL;
    }
    int failed = parent != Py_None && link_parent(ev, parent) < 0;
    Py_DECREF(parent);
    ev->started_ns = clock_ns();
    if (failed || PyList_Append(*stack, (PyObject *)ev) < 0) {
        Py_CLEAR(*stack);
        Py_DECREF(ev);
        return NULL;
    }
    return ev;
}

/* Close ``ev``, which returned normally: pop it (pop_event mends a stack a callback left
 * unbalanced) and hand its record on. Reports its own failures. */
static void
close_event(Hook *self, Event *ev, ModelTrace *mt, PyObject *ed, PyObject *stack)
{
    Py_ssize_t n = PyList_GET_SIZE(stack);
    if (n && PyList_GET_ITEM(stack, n - 1) == (PyObject *)ev) {
        if (PyList_SetSlice(stack, n - 1, n, NULL) < 0)
            report(self);
    }
    else {
        PyObject *r = PyObject_CallOneArg(self->links[L_POP_EVENT], (PyObject *)ev);
        if (r == NULL)
            report(self);
        Py_XDECREF(r);
    }
    PyObject *closed = PyObject_GetAttr(mt->channel, str_closed);
    int is_closed = closed == NULL ? -1 : PyObject_IsTrue(closed);
    Py_XDECREF(closed);
    if (is_closed) {
        if (is_closed < 0)
            report(self);
        return;
    }
    PyObject *record = build_record(self, ev, mt, ed);
    if (record == NULL) { /* the channel must not wait for this position forever */
        report(self);
        PyObject *r = call3(self->links[L_SALVAGE], (PyObject *)mt, (PyObject *)ev, ed);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        return;
    }
    if (enqueue(self, record) < 0)
        report(self);
    Py_DECREF(record);
}

/* _Process.call: ``machine._process(trigger)`` of a flat synchronous machine, where
 * trigger is partial(event._trigger, event_data). */
static PyObject *
Process_vectorcall(PyObject *callable, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    Hook *self = (Hook *)callable;
    PyObject *original = self->links[L_ORIGINAL];
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL)
        return PyObject_Vectorcall(self->links[L_GENERAL], argv, nargsf, kwnames);
    PyObject *trigger = argv[0];

    /* Which model. A trigger we do not know runs untouched (its writes record as forced). */
    PyObject *ed = NULL, *stack = NULL, *result;
    ModelTrace *mt = NULL;
    PyObject *targs = PyObject_GetAttr(trigger, str_args);
    if (targs != NULL && PyTuple_Check(targs) && PyTuple_GET_SIZE(targs) >= 1) {
        ed = Py_NewRef(PyTuple_GET_ITEM(targs, 0));
        PyObject *model = PyObject_GetAttr(ed, str_model);
        if (model != NULL) {
            PyObject *id = PyLong_FromVoidPtr(model);
            Py_DECREF(model);
            if (id != NULL) {
                mt = (ModelTrace *)PyDict_GetItemWithError(self->links[L_MODELS], id);
                Py_XINCREF(mt);
                Py_DECREF(id);
            }
        }
    }
    Py_XDECREF(targs);
    if (mt == NULL || Py_TYPE(mt) != &ModelTraceType) {
        PyErr_Clear();
        Py_XDECREF(ed);
        Py_XDECREF(mt);
        return PyObject_CallOneArg(original, trigger);
    }

    Event *ev = open_event(self, mt, &stack);
    if (ev == NULL) { /* nothing of this trigger is traced; the reason goes to stats */
        report(self);
        Py_DECREF(ed);
        Py_DECREF(mt);
        return PyObject_CallOneArg(original, trigger);
    }
    result = PyObject_CallOneArg(original, trigger);
    if (result == NULL) { /* the machine raised: record it, then raise it unchanged */
        SavedError raised = take_error();
        PyObject *r = call3(self->links[L_CLOSE_FAST], (PyObject *)mt, (PyObject *)ev, ed);
        if (r == NULL)
            PyErr_Clear(); /* close_fast reports its own failures; never mask the app's */
        Py_XDECREF(r);
        restore_error(raised);
    }
    else {
        close_event(self, ev, mt, ed, stack);
    }
    Py_DECREF(ed);
    Py_DECREF(mt);
    Py_DECREF(stack);
    Py_DECREF(ev);
    return result;
}

/* The event's own write (from Transition._change_state, for the event on top of this
 * thread's stack, of the same model, to a state seen before): _FastSetState.call's
 * usual case. Returns 1 when it handled the call (*result set: the original's result,
 * or NULL with the machine's exception), 0 when the general path must. */
static int
own_write(Hook *self, PyObject *state, PyObject *model, PyObject **result)
{
    PyObject *stack = thread_stack();
    if (stack == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_INCREF(stack);
    Py_ssize_t n = PyList_GET_SIZE(stack);
    Event *ev = n ? (Event *)PyList_GET_ITEM(stack, n - 1) : NULL;
    if (ev == NULL || Py_TYPE(ev) != &EventType || ev->mt == NULL
        || Py_TYPE(ev->mt) != &ModelTraceType || ((ModelTrace *)ev->mt)->model != model) {
        Py_DECREF(stack);
        return 0;
    }
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed: our caller */
    if (frame == NULL) {
        Py_DECREF(stack);
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(code); /* compared by identity only; the frame holds it */
    if ((PyObject *)code != self->links[L_CHANGE_CODE]) {
        Py_DECREF(stack);
        return 0;
    }
    Py_INCREF(ev);
    Py_DECREF(stack);
    ModelTrace *mt = (ModelTrace *)Py_NewRef(ev->mt);
    PyObject *previous = Py_NewRef(mt->current);

    if (ev->position == PENDING) { /* ev.first_write(mt), inlined */
        PyObject *r = Event_first_write(ev, (PyObject *)mt);
        if (r == NULL)
            report(self);
        Py_XDECREF(r);
    }
    PyObject *args[5] = {state, model};
    *result = PyObject_Vectorcall(self->links[L_ORIGINAL], args, 2, NULL);
    if (*result == NULL)
        goto done; /* a failed write: the event records its error */
    PyObject *after = PyDict_GetItemWithError(self->links[L_CACHE], state);
    if (after == NULL) { /* unhashable, or not seen before: the general bookkeeping */
        PyErr_Clear();
        PyObject *wargs[5] = {(PyObject *)ev, (PyObject *)mt, state, model, previous};
        PyObject *r = PyObject_Vectorcall(self->links[L_WRITTEN], wargs, 5, NULL);
        if (r == NULL)
            report(self);
        Py_XDECREF(r);
        goto done;
    }
    Py_SETREF(mt->current, Py_NewRef(after));
    int same = after == previous ? 1 : PyObject_RichCompareBool(after, previous, Py_EQ);
    if (same < 0) {
        report(self);
    }
    else if (same) { /* an external self-transition exits and re-enters */
        PyObject *leaves = PyObject_CallOneArg(self->links[L_LEAVES], after);
        PyObject *reenter = NULL;
        if (leaves != NULL && ev->reenter != NULL)
            reenter = PyNumber_Or(ev->reenter, leaves);
        Py_XDECREF(leaves);
        if (reenter == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_AttributeError, "reenter");
            report(self);
        }
        else {
            Py_XSETREF(ev->reenter, reenter);
        }
    }
    Py_XSETREF(ev->after, Py_NewRef(after));

done:
    Py_DECREF(ev);
    Py_DECREF(mt);
    Py_DECREF(previous);
    return 1;
}

/* _FastSetState.call: ``machine.set_state(state, model=None)``. */
static PyObject *
SetState_vectorcall(PyObject *callable, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    Hook *self = (Hook *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *result = NULL;
    if (kwnames == NULL && nargs == 2 && argv[1] != Py_None
        && own_write(self, argv[0], argv[1], &result))
        return result;
    /* Every other write, as Python would take it (same errors for a bad call). */
    return PyObject_Vectorcall(self->links[L_GENERAL], argv, nargsf, kwnames);
}

/* The two hook types differ only in name (Hook_new picks the vectorcall). */
#define HOOK_TYPE(name, doc)                                                            \
    {                                                                                   \
        PyVarObject_HEAD_INIT(NULL, 0)                                                  \
        .tp_name = "tracer._speedups." name,                                            \
        .tp_doc = doc,                                                                  \
        .tp_basicsize = sizeof(Hook),                                                   \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL, \
        .tp_vectorcall_offset = offsetof(Hook, vectorcall),                             \
        .tp_call = PyVectorcall_Call,                                                   \
        .tp_new = Hook_new,                                                             \
        .tp_dealloc = gc_dealloc,                                                       \
        .tp_traverse = (traverseproc)Hook_traverse,                                     \
        .tp_clear = (inquiry)Hook_clear,                                                \
        .tp_methods = Hook_methods,                                                     \
        .tp_getset = Hook_getset,                                                       \
    }

static PyTypeObject ProcessHookType =
    HOOK_TYPE("ProcessHook", "machine._process of a traced flat machine (see _Process).");
static PyTypeObject SetStateHookType =
    HOOK_TYPE("SetStateHook", "machine.set_state of a traced flat machine (see _FastSetState).");

/* ---------------------------------------------------------------------------------
 * The sender's usual batch (core.Dispatcher._bulk_rows): records of one channel, next in
 * order, none naming a parent or source, turned into rows.
 *
 * bulk_rows(items, key, first_position, first_seq, offset) -> list of rows, or None when
 * the batch is not the usual one (the caller then takes it record by record). Gives each
 * holder (an event a nested record named) its seq.
 */
static PyObject *str_seq;

static PyObject *
bulk_rows(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    long long first_pos, first_seq, offset;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "bulk_rows takes 5 arguments");
        return NULL;
    }
    PyObject *items = argv[0], *key = argv[1];
    if (!PyList_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "items must be a list");
        return NULL;
    }
    if ((first_pos = PyLong_AsLongLong(argv[2])) == -1 && PyErr_Occurred())
        return NULL;
    if ((first_seq = PyLong_AsLongLong(argv[3])) == -1 && PyErr_Occurred())
        return NULL;
    if ((offset = PyLong_AsLongLong(argv[4])) == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(it) || PyTuple_GET_SIZE(it) != 16
            || PyTuple_GET_ITEM(it, 3) != Py_None || PyTuple_GET_ITEM(it, 4) != Py_None
            || !PyLong_CheckExact(PyTuple_GET_ITEM(it, 1))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(it, 8)))
            Py_RETURN_NONE;
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(it, 0), key, Py_EQ);
        if (same < 0)
            return NULL;
        long long pos = PyLong_AsLongLong(PyTuple_GET_ITEM(it, 1));
        if (pos == -1 && PyErr_Occurred())
            return NULL;
        if (!same || pos != first_pos + i)
            Py_RETURN_NONE;
    }
    PyObject *rows = PyList_New(n);
    if (rows == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PyList_GET_ITEM(items, i);
        long long stamp = PyLong_AsLongLong(PyTuple_GET_ITEM(it, 8));
        if (stamp == -1 && PyErr_Occurred())
            goto fail;
        PyObject *seq = PyLong_FromLongLong(first_seq + i);
        PyObject *when = PyLong_FromLongLong(stamp + offset);
        PyObject *row = PyTuple_New(13);
        if (seq == NULL || when == NULL || row == NULL) {
            Py_XDECREF(seq);
            Py_XDECREF(when);
            Py_XDECREF(row);
            goto fail;
        }
        PyObject *holder = PyTuple_GET_ITEM(it, 2);
        if (holder != Py_None) { /* an event a nested record named: it needs its seq */
            if (Py_TYPE(holder) == &EventType)
                ((Event *)holder)->seq = first_seq + i;
            else if (PyObject_SetAttr(holder, str_seq, seq) < 0) {
                Py_DECREF(seq);
                Py_DECREF(when);
                Py_DECREF(row);
                goto fail;
            }
        }
        /* (seq, tick, time, duration, kind, name, args, accepted, error, exited, entered,
         * parent_seq, source): tracer.codec's positional layout. */
        static const int from[] = {-1, 15, -1, 9, 6, 7, 10, 11, 12, 13, 14};
        PyTuple_SET_ITEM(row, 0, seq);
        PyTuple_SET_ITEM(row, 2, when);
        for (int f = 1; f < 11; f++) {
            if (f != 2)
                PyTuple_SET_ITEM(row, f, Py_NewRef(PyTuple_GET_ITEM(it, from[f])));
        }
        PyTuple_SET_ITEM(row, 11, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(row, 12, Py_NewRef(Py_None));
        untrack_plain(row);
        PyList_SET_ITEM(rows, i, row);
    }
    return rows;

fail:
    Py_DECREF(rows); /* unset slots are NULL: list dealloc skips them */
    return NULL;
}

static PyMethodDef speedups_functions[] = {
    {"bulk_rows", (PyCFunction)(void (*)(void))bulk_rows, METH_FASTCALL, NULL},
    {NULL},
};

static int
speedups_exec(PyObject *module)
{
#define INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    INTERN(str_model, "model");
    INTERN(str_channel, "channel");
    INTERN(str_capture, "capture");
    INTERN(str_current, "current");
    INTERN(str_tick, "tick");
    INTERN(str_closed, "closed");
    INTERN(str_key, "key");
    INTERN(str_captured, "captured");
    INTERN(str_next_position, "next_position");
    INTERN(str_args, "args");
    INTERN(str_kwargs, "kwargs");
    INTERN(str_error, "error");
    INTERN(str_event, "event");
    INTERN(str_name, "name");
    INTERN(str_result, "result");
    INTERN(str_capacity, "capacity");
    INTERN(str_signalled, "_signalled");
    INTERN(str_seq, "seq");
    INTERN(str_stack_key, "aminspect.tracer.open_events");
#undef INTERN
    if ((EMPTY = PyFrozenSet_New(NULL)) == NULL || (ONE = PyLong_FromLong(1)) == NULL)
        return -1;
    if (PyType_Ready(&EventType) < 0 || PyType_Ready(&ModelTraceType) < 0
        || PyType_Ready(&ThreadStacksType) < 0
        || PyType_Ready(&ProcessHookType) < 0
        || PyType_Ready(&SetStateHookType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Event", (PyObject *)&EventType) < 0
        || PyModule_AddObjectRef(module, "ModelTrace", (PyObject *)&ModelTraceType) < 0
        || PyModule_AddObjectRef(module, "ThreadStacks", (PyObject *)&ThreadStacksType) < 0
        || PyModule_AddObjectRef(module, "ProcessHook", (PyObject *)&ProcessHookType) < 0
        || PyModule_AddObjectRef(module, "SetStateHook", (PyObject *)&SetStateHookType) < 0
        || PyModule_AddIntConstant(module, "LINKS", L_COUNT) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tracer._speedups",
    .m_doc = "The flat transitions hot path in C (see tracer/adapters/transitions.py).",
    .m_size = 0,
    .m_slots = speedups_slots,
    .m_methods = speedups_functions,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
