-- Mutations of the runtime on a store shared by many hosts (docs/scale-out.md;
-- runtime/lib/journal.c, session.c, runtime/cli/serve.c). Each is a bug
-- spec/shared_store_spec.lua must catch.
return {
  { name = "shared-outputs-given-by-owner",
    promise = "an output goes to the host that sent the session's last message, not to the owner's",
    file = "runtime/lib/journal.c",
    find = "else if (rc == 0 && !queue_output(rt, id, seq, kind, how, text, len)) rt->dur->failed = true;",
    replace = "else if (!queue_output(rt, id, seq, kind, how, text, len)) rt->dur->failed = true;",
    spec = "spec/shared_store_spec.lua", filter = "reaches the owner" },
  { name = "shared-send-local",
    promise = "a message to a shared store goes through the inbox to the session's owner",
    file = "runtime/lib/session.c",
    find = "if (fr_dur_shared(rt)) return fr_dur_send(rt, id, n, text, len);",
    replace = "if (0) return fr_dur_send(rt, id, n, text, len);",
    spec = "spec/shared_store_spec.lua", filter = "reaches the owner" },
  { name = "shared-lost-partition-ignored",
    promise = "a host whose partition another host took stops at once, fenced out",
    file = "runtime/lib/journal.c",
    find = "if (lost[p]) {                      /* another host has it: this one stops */",
    replace = "if (0 && lost[p]) {",
    spec = "spec/shared_store_spec.lua", filter = "fenced out" },
  { name = "shared-repeat-not-resent",
    promise = "a numbered webhook sent again to another host after its host died gets its answer there",
    file = "runtime/cli/serve.c",
    find = "again = number == last && !(s->last_reply && s->last_number == number) && sv->shared;",
    replace = "again = false;",
    spec = "spec/shared_store_spec.lua", filter = "sent again to another host" },
}
