-- Mutations of what an integration asks of the wire (runtime/lib/wire.c):
-- multipart bodies, compressed responses, proxies, client certificates
-- (scripts/mutate.lua says the fields). Each is a bug the named spec must catch.
return {
  { name = "env-proxy-honoured",
    promise = "without proxy, the environment's http_proxy is ignored (today's silent libcurl default)",
    file = "runtime/lib/wire.c",
    find = "if (!ig->proxy_env) curl_easy_setopt(e, CURLOPT_PROXY, ig->proxy ? ig->proxy : \"\");",
    replace = "if (ig->proxy) curl_easy_setopt(e, CURLOPT_PROXY, ig->proxy);",
    spec = "spec/wire_spec.lua", filter = "environment" },
  { name = "compressed-cap-on-encoded",
    promise = "compressed: max_response_bytes counts decoded bytes, exactly (not the encoded Content-Length)",
    file = "runtime/lib/wire.c",
    find = "ig->compressed ? (curl_off_t)0 : ig->max_response_bytes);",
    replace = "ig->max_response_bytes);",
    spec = "spec/wire_spec.lua", filter = "exact on the decoded" },
  { name = "multipart-parts-once",
    promise = "multipart: the parts are sent again on a retry and after a 307 redirect",
    file = "runtime/lib/call.c",
    find = "    if (c->rq.parts) {                  /* a MIME body for this transfer */",
    replace = "    if (c->rq.parts && c->hops == 0 && c->attempts == 1) {",
    spec = "spec/wire_spec.lua", filter = "again after a 307" },
  { name = "client-key-dropped",
    promise = "key_file and key_password: the client certificate's key is used (mutual TLS succeeds)",
    file = "runtime/lib/wire.c",
    find = "curl_easy_setopt(e, CURLOPT_KEYPASSWD, ig->key_password ? ig->key_password : \"\");",
    replace = "curl_easy_setopt(e, CURLOPT_KEYPASSWD, \"\");",
    spec = "spec/wire_spec.lua", filter = "key_password" },
}
