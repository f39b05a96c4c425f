-- Mutations of the library's error policy (scripts/mutate.lua says the
-- fields), caught by build/embed_test: its failing allocator and its
-- callbacks of other sizes.
return {
  { name = "embed-oom-sleep-timer",
    promise = "out of memory, sleep raises a memory error: the session never waits on a timer that is not armed",
    file = "runtime/lib/session.c",
    find = 'if (!fr_timer_arm(rt, &s->timer, until)) return luaL_error(L, "not enough memory");',
    replace = "fr_timer_arm(rt, &s->timer, until);",
    spec = "embed", filter = "out_of_memory" },
  { name = "embed-oom-response-body",
    promise = "a call whose response finds no memory raises a memory error in the flow, not a label",
    file = "runtime/lib/call.c",
    find = "  if (buf_add(&c->rbody, p, n)) return n;\n  c->oom = true;\n",
    replace = "  if (buf_add(&c->rbody, p, n)) return n;\n",
    spec = "embed", filter = "response_out_of_memory" },
  { name = "embed-oom-errmsg",
    promise = "an entry point out of memory returns FLOWRUN_ERR with flowrun_errmsg \"out of memory\"",
    file = "runtime/lib/base.c",
    find = "return len >= n && strcmp(s + len - n, \"not enough memory\") == 0",
    replace = "return len == n && strcmp(s, \"not enough memory\") == 0",
    spec = "embed", filter = "out_of_memory" },
  { name = "embed-callbacks-size",
    promise = "flowrun_callbacks: the library reads only the size the host gives",
    file = "runtime/lib/runtime.c",
    find = "size_t n = cb->size ? cb->size : offsetof(flowrun_callbacks, size);",
    replace = "size_t n = sizeof *cb;",
    spec = "embed", filter = "callbacks_size" },
}
