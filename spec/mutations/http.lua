-- Mutations of how a call is made and labelled (scripts/mutate.lua says the
-- fields). Each is a bug the named spec must catch.
return {
  { name = "response-cap-doubled",
    promise = "max_response_bytes: a body over it gives error, reason too_large",
    file = "runtime/call.c",
    find = "if ((curl_off_t)(c->rbody.len + n) > c->ig->max_response_bytes) {",
    replace = "if ((curl_off_t)(c->rbody.len + n) > 2 * c->ig->max_response_bytes) {",
    spec = "spec/faults_spec.lua", filter = "over the limit" },
}
