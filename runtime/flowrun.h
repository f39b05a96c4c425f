/*
** flowrun.h -- the embedding API of flowrun.
**
** A runtime owns one Lua 5.4 state and one libcurl multi handle. Flows run
** as sessions (Lua coroutines); api_node, ask and sleep suspend only their
** own session. The host drives the loop with flowrun_step(), either blocking
** (chat servers) or not at all (one call per game frame), and hears what the
** sessions do through callbacks. Every entry point returns an int status and
** never lets a Lua error escape into the host; on failure flowrun_errmsg()
** says why.
*/
#ifndef FLOWRUN_H
#define FLOWRUN_H

#include <stddef.h>

#define FLOWRUN_VERSION "0.1.0"

/* What the shared libraries export: the functions below, nothing else
** (the library is built with -fvisibility=hidden). */
#if defined(__GNUC__)
#define FLOWRUN_API __attribute__((visibility("default")))
#else
#define FLOWRUN_API
#endif

typedef struct flowrun flowrun;        /* a runtime: opaque */
typedef struct lua_State lua_State;

enum {                                  /* return codes */
  FLOWRUN_OK = 0,
  FLOWRUN_ERR = -1,                     /* see flowrun_errmsg() */
  FLOWRUN_NOSESSION = -2,               /* no such session (send, stop) */
};

enum {                                  /* how a session ended */
  FLOWRUN_DONE = 0,                     /* returned from the flow */
  FLOWRUN_FAILED = 1,                   /* raised an error */
  FLOWRUN_PARKED = 2,                   /* with a store: its replay did not match its
                                           journal; kept in the store, not run (README:
                                           Changing a flow with live sessions) */
  FLOWRUN_REPLAYED = 3,                 /* with flowrun_replay_store: its replay matched its
                                           journal to the end; the message says what it
                                           does next, and where */
};

/* One request of an api_node call, as shown by --trace. Secrets are "***". */
typedef struct flowrun_trace {
  const char *session;                  /* NULL outside a session */
  const char *integration;
  const char *method;
  const char *url;
  const char *label;
  const char *reason;                   /* NULL but for error, timeout, max-connection */
  const char *error;                    /* NULL when reason is */
  int status;                           /* 0 when there was no response */
  int attempts;
  double elapsed_ms;
  /* The request as sent (the last attempt): "Name: value" lines, NULL-
     terminated, an Authorization value shown as "Scheme ***"; the body,
     NULL when there is none. For tools that replay a call (curl). */
  const char *const *headers;
  const char *body;
  size_t body_len;
  const char *at;                       /* "flow.lua:7": where api_node was called, NULL
                                           when not from a flow (a declarative step's: C) */
  const char *step;                     /* the declarative step it is, or NULL */
  const char *relative;                 /* the URL's path and query below the base URL,
                                           secrets *** (an api_key in the query) */
  /* The response as it came (NULL and 0 without one): its header block
     (status line first) and body, for tools that record calls. */
  const char *response_headers;
  size_t response_headers_len;
  const char *response_body;
  size_t response_body_len;
  /* One record per request: an attempt that is retried and a redirect
     that is followed have their own record (final 0) before the call's
     last one (final 1, once per call: count calls by it). elapsed_ms is
     that request's time in a record with final 0, the call's in the last. */
  int attempt;                          /* 1-based: the attempt the record is of */
  int hop;                              /* 0, or the redirects followed before it */
  int final;                            /* 1: the call's last record; 0: it went on */
} flowrun_trace;

/* What the host hears. Any callback may be NULL. Strings are valid only
** during the call. Callbacks must not call flowrun_step() or flowrun_free();
** flowrun_send() and flowrun_start() are fine, and flowrun_stop() of any
** session but the one the callback is about.
** The struct grows: later versions add fields after `size`, never before.
** Set size to sizeof(flowrun_callbacks) (a designated initializer:
** .size = sizeof(flowrun_callbacks)); the library reads that many bytes and
** takes the fields past them as NULL, so a host built against an older
** flowrun.h (one that has size) works with a newer library and the other
** way round. size 0 (a host that leaves it out of its initializer) means
** the fields up to ud. A binary built against a flowrun.h without size
** cannot be told apart: there were none as a shared library. */
typedef struct flowrun_callbacks {
  void (*say)(void *ud, const char *session, const char *text, size_t len);
  /* the session now waits for the user's next message; prompt is what it
     asked with (NULL when nothing). When a message is already there, ask
     does not wait: its prompt comes through say() instead. */
  void (*ask)(void *ud, const char *session, const char *prompt, size_t len);
  void (*end)(void *ud, const char *session, int how, const char *error);
  void (*trace)(void *ud, const flowrun_trace *t);
  void (*log)(void *ud, const char *session, const char *level,
              const char *msg);
  void *ud;
  size_t size;                          /* sizeof(flowrun_callbacks), or 0 */
  /* With a store (flowrun_open_store) say, ask and end run after the
     commit of the turn that made them, and stored runs for each message it
     stored (n: the message's number, flowrun_send_n; 0 for the start of
     the session). Then flush runs: write out what the callbacks gave, for
     the store then forgets those outputs (before that, a crash gives them
     again after the restart, with the same flowrun_output_seq). */
  void (*flush)(void *ud);
  void (*stored)(void *ud, const char *session, long long n);
  /* A declarative session comes to a step (its name): for coverage and
     tracing of the routes flows take. */
  void (*step)(void *ud, const char *session, const char *step);
  /* 1: trace hears every request, an attempt that is retried and a
     redirect that is followed too (flowrun_trace.final 0), before the
     call's last record; 0 (and a host built before this field): the last
     record only, one per call. */
  int trace_attempts;
  /* later fields here */
} flowrun_callbacks;

/* A new runtime with its own Lua state; NULL when out of memory.
** cb may be NULL.
** Out of memory, no entry point takes the host down: it returns
** FLOWRUN_ERR with flowrun_errmsg() "out of memory" (flowrun_new: NULL),
** and the runtime goes on; Lua code that runs out (a session's, an
** integrations file's) gets Lua's memory error, "not enough memory", so a
** session that meets it ends as failed with it. */
FLOWRUN_API flowrun *flowrun_new(const flowrun_callbacks *cb);
FLOWRUN_API void flowrun_free(flowrun *rt);
FLOWRUN_API const char *flowrun_errmsg(const flowrun *rt);
FLOWRUN_API lua_State *flowrun_lua(flowrun *rt);

/* The integrations file to use (README: An integrations file): opt (-I)
** if given, else $FLOWRUN_INTEGRATIONS, else integrations.lua beside flow
** (may be NULL), else in the current directory; NULL when there is none.
** buf (size bytes) may hold the returned path. */
FLOWRUN_API const char *flowrun_find_integrations(const char *opt, const char *flow,
                                                  char *buf, size_t size);

/* For tools that read flows without running them (flowrun check, graph)
** and for the REPL: env(NAME) of an unset variable gives the placeholder
** "${NAME}" instead of failing the load, so that linting needs no secrets;
** an integration that holds a placeholder is never called: api_node on it
** raises "environment variable NAME is not set". */
FLOWRUN_API void flowrun_env_placeholders(flowrun *rt, int on);

/* Loads an integrations file (README: An integrations file), replacing
** the current set. */
FLOWRUN_API int flowrun_load_integrations(flowrun *rt, const char *file);

/* Starts session `id` running FLOW with the given arguments (the flow's
** `args` and `...`). It starts running in the next flowrun_step(). Fails
** when the id is in use or the flow cannot be loaded. */
FLOWRUN_API int flowrun_start(flowrun *rt, const char *id, const char *flow,
                              int argc, const char *const *argv);

/* Delivers the user's next message to session `id`; text NULL closes the
** channel (its pending and later asks return nil, once the messages that
** came before are taken). The session resumes in the next flowrun_step().
** Fails with FLOWRUN_NOSESSION when there is no such session, and with
** FLOWRUN_ERR when it holds 1000 messages it has not asked for (this one is
** dropped: a host that floods a session must not grow without bound).
** id NULL: every live session (at shutdown, text NULL lets each one finish). */
FLOWRUN_API int flowrun_send(flowrun *rt, const char *id, const char *text, size_t len);

/* Ends session `id` now, wherever it waits (FLOWRUN_NOSESSION: none).
** From a callback: any session but the one the callback is about (the
** one running, whose say, ask or end it is; the one whose call a trace
** is of): FLOWRUN_ERR for that one, which the host stops after. */
FLOWRUN_API int flowrun_stop(flowrun *rt, const char *id);

/* Advances the loop: runs what is ready, waiting at most timeout_ms for
** something to happen (0: never wait; -1: wait as long as needed). Returns
** the number of live sessions plus calls in flight, or FLOWRUN_ERR (called
** from a callback; or libcurl failed this turn, out of memory say: the turn
** is done all the same, and the host may step again; or, with a store, a
** write failed: see flowrun_store_failed). */
FLOWRUN_API int flowrun_step(flowrun *rt, int timeout_ms);

/* flowrun_step with a time budget, for a host that must not be held up (a
** game frame, a REPL reading its input): after the wait (timeout_ms, as
** flowrun_step, not counted), the step works only until budget_ms have
** passed and leaves the rest to the next step. A unit of work is resuming
** one ready session (the first resume of a new one too), one socket's
** data, one timer; each kind gets at least one unit per step, so that all
** go on, and what waits is taken in the order it became ready. A step may
** run over by what one unit takes: a session that runs long by itself is
** the business of FLOWRUN_LIMIT_INSTRUCTIONS. The next step does not wait
** while work is left (flowrun_quiet() is 0). budget_ms <= 0: no budget,
** as flowrun_step. Returns as flowrun_step. */
FLOWRUN_API int flowrun_step_budget(flowrun *rt, int timeout_ms, double budget_ms);

/* Sessions ready to run now: left by a step whose budget ran out, or made
** ready since (a message, a call that ended, a sleep over). A host that
** reads its users' input only while this is small keeps what it read from
** piling up faster than the sessions run (flowrun host: 1000). */
FLOWRUN_API int flowrun_ready(const flowrun *rt);

/* Live sessions (started and not ended). */
FLOWRUN_API int flowrun_sessions(const flowrun *rt);

/* ---- tests: calls answered by the host, a virtual clock ---- */

/* A request as it would be sent (strings valid during the call). */
typedef struct flowrun_request {
  const char *session;                  /* NULL outside a session */
  const char *integration;
  const char *endpoint;                 /* the node's endpoint name, NULL when it gave a path */
  const char *method;
  const char *url;                      /* the whole URL of this hop */
  const char *target;                   /* its path and query: "/v1/orders/42?x=1" */
  const char *relative;                 /* below the integration's base URL: "/orders/42?x=1" */
  const char *const *headers;           /* "Name: value" lines, NULL-terminated */
  const char *body;                     /* NULL when there is none */
  size_t body_len;
  int attempt;                          /* 1, 2, ... (retries); hops of a redirect keep it */
} flowrun_request;

/* What a request gets: a response (status > 0: its header lines "Name:
** value", separated by newlines, and body), or a fault (status 0: reason
** is one a real call can end with: timeout, connect_timeout (label
** timeout), refused, reset, dns, tls, protocol (error), pool_full
** (max-connection); message its error text), after delay_ms (on
** the runtime's clock: a delay past the call's timeout_ms is a timeout at
** timeout_ms). Copied before the answer function returns. */
typedef struct flowrun_answer {
  int status;
  const char *headers;
  const char *body;
  size_t body_len;
  const char *reason, *message;
  double delay_ms;
} flowrun_answer;

/* Every call of rt is answered by answer(ud, request, out) instead of the
** network (answer NULL: the network again). Everything else a call does
** is as live: its timeout, retries and backoff, Retry-After, redirects,
** max_response_bytes, max_connections and queue_timeout_ms, labels and
** traces. answer returns FLOWRUN_OK, or FLOWRUN_ERR to end the call with
** label error, reason "internal" and out->message. Not from a callback. */
typedef int (*flowrun_answer_fn)(void *ud, const flowrun_request *rq, flowrun_answer *out);
FLOWRUN_API int flowrun_set_transport(flowrun *rt, flowrun_answer_fn answer, void *ud);

/* Makes rt's clock virtual (for tests; before any session starts and
** before flowrun_open_store): it starts at start_ms (ms since 1970; < 0:
** the wall clock's now, to the second) and moves only when flowrun_step (with a
** timeout other than 0) finds nothing to do but wait: then it jumps to the
** next timer (a sleep, an answer's delay, a timeout, a backoff) at once,
** however far. os.time, os.clock and
** os.date of now follow it. Calls over the network cannot be made then
** (give a transport). */
FLOWRUN_API int flowrun_virtual_clock(flowrun *rt, double start_ms);
/* The step a declarative session is at now, NULL for none (an imperative
** flow, no such session). Valid until the session runs again. */
FLOWRUN_API const char *flowrun_session_step(flowrun *rt, const char *id);
/* On a virtual clock: moves it ms on (what falls due fires in the next
** step). FLOWRUN_ERR on the real clock. */
FLOWRUN_API int flowrun_clock_advance(flowrun *rt, double ms);
/* The runtime's clock, ms since 1970 (virtual or the wall clock). */
FLOWRUN_API double flowrun_clock_ms(flowrun *rt);

/* Ends calls in flight now with label "error", reason "interrupted": the
** call session `id` waits on, or with id NULL the calls made outside any
** session (a REPL's api_node, which blocks until its call ends). Returns
** how many ended. Call it from the loop or a callback, not from a signal
** handler: there, write to a pipe that flowrun_watch() watches. */
FLOWRUN_API int flowrun_interrupt(flowrun *rt, const char *id);

/* Stops the Lua code of the session that runs right now (one stuck in a
** loop): it raises "file:line: interrupted!" at its next instruction or
** function call, also inside the coroutines it created, and again after
** (a pcall cannot swallow it), so it ends as a failed session; the others
** go on. Returns 1, or 0 when no session runs (nothing happens). Call it
** from a signal handler on the thread that runs the loop, as lua.c does
** for Ctrl-C (a watchdog thread sends that thread a signal: pthread_kill,
** as flowrun run does). Code stuck inside one C function (a pattern
** match) is out of its reach until that function returns. */
FLOWRUN_API int flowrun_break(flowrun *rt);

/* ---- the sandbox and its limits ----
** A flow sees the flow globals and a safe standard library (string, table,
** math, utf8, coroutine, os.time/clock/date/difftime, json, text-only load,
** require of Lua files), shared by every session and read-only. */

/* Grants flows a library they do not have: "io", "os" (all of it),
** "debug" or "package" (then require also loads C modules). */
FLOWRUN_API int flowrun_allow(flowrun *rt, const char *library);

/* Adds a function of the host to the flow globals (and a host's own Lua),
** as `name`. fn is a lua_CFunction; ud is its upvalue 1 (a light
** userdata): lua_touserdata(L, lua_upvalueindex(1)). A registered value
** is shared by every session: a table is shown to flows as a read-only
** view (the host may go on changing it). */
FLOWRUN_API int flowrun_register(flowrun *rt, const char *name,
                                 int (*fn)(lua_State *L), void *ud);
/* The same for the value on top of flowrun_lua(rt)'s stack (popped). */
FLOWRUN_API int flowrun_register_value(flowrun *rt, const char *name);

/* The id of the session whose code runs on L (inside a registered
** function), or NULL outside any session. */
FLOWRUN_API const char *flowrun_session_id(flowrun *rt, lua_State *L);

enum {                                  /* limits: what one session may take */
  FLOWRUN_LIMIT_INSTRUCTIONS,           /* between two waits; 100 000 000 */
  FLOWRUN_LIMIT_SESSION_MEMORY,         /* bytes a session holds; 64 MiB */
  FLOWRUN_LIMIT_MEMORY,                 /* bytes the runtime's Lua holds; 2 GiB */
  FLOWRUN_LIMIT_OUTPUT,                 /* bytes a session says and logs; 64 MiB */
  FLOWRUN_LIMIT_COUNT
};

/* Sets limit `which` to value (0: none; < 0: leave it) and returns the
** one before (FLOWRUN_ERR for an unknown limit). A session over a limit
** ends as failed, "file:line: instruction limit: ..."; the others go on.
** The memory limits hold for runtimes made by flowrun_new (the Lua module
** runs on its host's allocator). */
FLOWRUN_API long long flowrun_limit(flowrun *rt, int which, long long value);

/* How long (ms) the session running right now has run since it last
** waited, 0 when none runs. Safe from any thread: a watchdog reads it to
** call flowrun_break(), or to give up on a session stuck in C code. */
FLOWRUN_API long long flowrun_running_ms(flowrun *rt);

/* Pushes onto flowrun_lua(rt) a new globals table for Lua code the host
** runs itself (a REPL): what it lacks comes from the flow globals
** (api_node, say, ask, sleep, json, log, run_flow), then the standard
** library. */
FLOWRUN_API int flowrun_push_globals(flowrun *rt);

/* Forgets the compiled flows, so that the next flowrun_start() reads the
** flow file again (one being edited). Running sessions keep their code. */
FLOWRUN_API int flowrun_forget_flows(flowrun *rt);

/* s with every secret shown as "***", malloc'd (the caller frees it);
** NULL when out of memory. For the host's own output and logs. */
FLOWRUN_API char *flowrun_redact(flowrun *rt, const char *s);

/* Inside the trace callback, for the call t describes: the request as a
** curl command line a shell can run (malloc'd; the caller frees it). A
** secret read through env("NAME") is written as the shell variable "$NAME"
** where the request holds it as read, any other secret (or an encoded
** spelling of one) as ***; an Authorization value shows only its scheme
** unless it is such a variable (Basic credentials become curl's -u).
** NULL outside the callback or when out of memory. */
FLOWRUN_API char *flowrun_trace_curl(flowrun *rt, const flowrun_trace *t);

/* ---- durable sessions (README: Durable sessions) ----
** A store keeps every session's journal: after a crash or a restart the
** same store gives the sessions back, each replayed to where it was.
** Opens (creates) the SQLite file at path for this runtime, before any
** session starts, and starts the unfinished sessions it holds again. One
** process at a time: a store in use by another is refused.
** A path "postgresql://..." (or "postgres://...", a libpq URI) opens a
** store on PostgreSQL shared by many hosts (docs/scale-out.md): each
** host runs the sessions of the partitions it holds a lease on, and any
** host may start or send to any session (stored, the owner is woken; the
** outputs come to the host that sent the session's last message). A host
** that finds its lease taken stops (flowrun_store_failed). */
FLOWRUN_API int flowrun_open_store(flowrun *rt, const char *path);
/* A shared store's name for this host, before flowrun_open_store: unique
** among the hosts, the same after a restart (its outputs are addressed to
** it). Default: the machine's hostname and the process id. */
FLOWRUN_API int flowrun_store_node(flowrun *rt, const char *name);

/* The check to run before deploying a changed flow (README: Testing
** flows): opens the store at path read only (a runtime may be running
** it) and replays every unfinished session in it, waiting and parked ones
** too, against the flows as they are now, up to the end of its journal.
** There the session ends, and the end callback says how it went:
** FLOWRUN_REPLAYED, FLOWRUN_DONE (the flow ends where its journal does),
** or FLOWRUN_FAILED with the mismatch or the error the replay met. Nothing
** is written, no call is made, no sleep is waited for, no output but the
** ends is given; flowrun_start and flowrun_send are refused, and the store
** limits stay 0 (every session in memory). Before any session starts, as
** flowrun_open_store; step until none is left. */
FLOWRUN_API int flowrun_replay_store(flowrun *rt, const char *path);

/* Line coverage (flowrun test --coverage): with on, each line of a flow's
** files that a session runs is counted, from now (0: not counted, the
** counts forgotten). flowrun_lines calls fn for each line run so far, in
** no order (file as the flow was loaded from; a nonzero return stops). */
FLOWRUN_API int flowrun_count_lines(flowrun *rt, int on);
FLOWRUN_API int flowrun_lines(flowrun *rt,
                              int (*fn)(void *ud, const char *file, int line, long long n),
                              void *ud);

/* In the say, ask and end callbacks: the output's sequence number in its
** session (1, 2, ...; the same number for the same output when a replay
** gives it again), 0 without a store. */
FLOWRUN_API long long flowrun_output_seq(const flowrun *rt);

/* flowrun_send with the message's number n in its session (1, 2, ...):
** with a store, an n already stored is not taken again (stored is called
** again for it) and an n past the next is an error. Without a store, as
** flowrun_send. FLOWRUN_NOSESSION as flowrun_send. */
FLOWRUN_API int flowrun_send_n(flowrun *rt, const char *id, long long n,
                               const char *text, size_t len);

/* With a store: the messages stored for session id (0 once it started),
** also after it ended; -1 when the store has no such session or there is
** no store. */
FLOWRUN_API long long flowrun_stored(flowrun *rt, const char *id);

/* With a store: 1 once a write to it failed (a full disk, an I/O error).
** That turn is lost (nothing of it was given or acknowledged) and the
** runtime stops for good: flowrun_step returns FLOWRUN_ERR, flowrun_errmsg
** naming the store. Free it; a runtime opened on the store later goes on
** from the last commit. 0 otherwise. */
FLOWRUN_API int flowrun_store_failed(const flowrun *rt);

enum {                                  /* what a store keeps in memory */
  FLOWRUN_STORE_RESIDENT,               /* sessions at most (0: no cap); 0 */
  FLOWRUN_STORE_IDLE_MS,                /* a session waiting longer leaves (0: never); 0 */
  FLOWRUN_STORE_PARK,                   /* 1: a replay that does not match parks the
                                           session instead of failing it; 0 */
  FLOWRUN_STORE_TTL_S,                  /* a session waiting for a message longer gets
                                           its channel closed: its ask returns nil
                                           (0: never); 0 */
  FLOWRUN_STORE_ENDED_S,                /* an ended session's row (kept so that a line
                                           sent to it again is known) goes after
                                           this long (0: never); 604800 (7 days) */
  FLOWRUN_STORE_LEASE_MS,               /* a shared store's (PostgreSQL): a host that
                                           has not renewed its leases this long loses
                                           its partitions to the others; 10000 */
  FLOWRUN_STORE_COUNT
};

/* With a store, a session that waits for a message (in ask, none there)
** may leave memory: the least recently active when more than RESIDENT are
** in memory, any that waited longer than IDLE_MS. Its next message (or a
** flowrun_send to it) brings it back, replayed. Sets `which` to value when
** value >= 0; returns the value before. flowrun_sessions() counts the
** sessions in memory. */
FLOWRUN_API long long flowrun_store_limit(flowrun *rt, int which, long long value);

/* A store seen from outside (flowrun sessions), also while a runtime runs
** it. fn is called for each session it holds, the most recently active
** first; a nonzero return stops. FLOWRUN_ERR with a message in err. */
typedef struct flowrun_store_entry {
  const char *id, *flow;
  const char *state;                    /* "running", "waiting" (for a message), "ended" */
  long long messages;                   /* stored for it, ever */
  long long journal;                    /* records in its journal */
  long long active_ms;                  /* its last activity, ms since 1970 */
  const char *note;                     /* a parked session's: why */
} flowrun_store_entry;
FLOWRUN_API int flowrun_store_list(const char *path,
                                   int (*fn)(void *ud, const flowrun_store_entry *s), void *ud,
                                   char *err, size_t errlen);
/* Lets a parked session run again (after its flow was put back): the next
** runtime on the store replays it. Refused while a runtime holds the store.
** FLOWRUN_NOSESSION when it has no such parked session. */
FLOWRUN_API int flowrun_store_retry(const char *path, const char *id, char *err, size_t errlen);
/* Ends session id in the store at path now (its journal and messages go;
** the flow does not run again). Refused while a runtime holds the store.
** FLOWRUN_NOSESSION when it has no such unfinished session. */
FLOWRUN_API int flowrun_store_end(const char *path, const char *id, char *err, size_t errlen);

/* ---- figures for a host's dashboard (flowrun serve's /metrics) ---- */

/* Calls fn for each integration loaded (by name; those defined later at
** the end) with the calls holding one of its connections now (in_flight,
** at most its max_connections) and those waiting for one or for their
** turn under its rate_limit (queued). A nonzero return stops. */
FLOWRUN_API int flowrun_pool_stats(flowrun *rt,
                                   int (*fn)(void *ud, const char *integration,
                                             int in_flight, int queued),
                                   void *ud);

/* The store's commits since it opened (flowrun_open_store) and how long
** they took, measured around each commit on the monotonic clock: le[i]
** counts the commits that took at most le_s[i] seconds (cumulative, as a
** Prometheus histogram's buckets; the bounds are filled in too: 100 us, 250 us,
** 500 us, 1, 2.5, 5, 10, 25, 100 ms, 1 s). FLOWRUN_ERR without a store. */
#define FLOWRUN_STORE_BUCKETS 10
typedef struct flowrun_commits {
  long long commits;
  double seconds;                       /* their time, all together */
  double le_s[FLOWRUN_STORE_BUCKETS];
  long long le[FLOWRUN_STORE_BUCKETS];
} flowrun_commits;
FLOWRUN_API int flowrun_store_stats(const flowrun *rt, flowrun_commits *stats);

/* Is there nothing to run now: no call in flight, no session ready and no
** sleep due (every session waits for a message or sleeps on)? */
FLOWRUN_API int flowrun_quiet(const flowrun *rt);

/* Lets the loop wait on a host file descriptor too: cb runs from
** flowrun_step() when fd is readable. cb NULL removes the watch. */
FLOWRUN_API int flowrun_watch(flowrun *rt, int fd, void (*cb)(void *ud, int fd),
                              void *ud);

#endif
