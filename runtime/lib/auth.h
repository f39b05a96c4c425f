/*
** auth.h -- an integration's OAuth2 token (auth.c): its settings, the one
** token its calls share, the token request and what the token endpoint
** answers. call.c sends the request and parks the calls that wait for
** it; this file knows no call. Not installed.
*/
#ifndef FLOWRUN_AUTH_H
#define FLOWRUN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "flowrun.h"

typedef struct fr_call fr_call;
typedef struct fr_request fr_request;

typedef struct fr_oauth {
  char *token_url, *client_id, *client_secret, *scope, *audience;
  char *refresh_token;                  /* set: the refresh_token grant (a new one replaces it) */
  bool client_body;                     /* client_auth = "body": id and secret in the form */
  char *token;                          /* the access token, or NULL */
  char *old_token, *old_refresh;        /* the ones given up last: still hidden (retire) */
  double expires_at;                    /* when it is refreshed (fr_clock ms); 0: never */
  unsigned gen;                         /* bumped with each token */
  fr_call *fetch;                       /* the token request in flight, or NULL */
  fr_call *whead, *wtail;               /* calls waiting for it (call.c) */
} fr_oauth;

/* Is there a token its calls may use now (not yet in its last tenth,
** at most the last 30 s, of expires_in)? */
bool fr_auth_fresh(flowrun *rt, const fr_oauth *o);
/* Fills rq (empty) with the token request but its URL (token_url):
** method, headers, form body. false: out of memory. */
bool fr_auth_request(const fr_oauth *o, fr_request *rq);
/* Takes the token endpoint's answer (status 0: none came, error says
** why): true with the new token kept (a secret), else false with the
** call's res.error written to msg. */
bool fr_auth_accept(flowrun *rt, fr_oauth *o, int status, const char *body, size_t len,
                    const char *error, char *msg, size_t size);
/* Sets rq's Authorization header to "Bearer TOKEN". false: no memory. */
bool fr_auth_header(const fr_oauth *o, fr_request *rq);
/* A call sent with token gen got 401: that token is dropped. */
void fr_auth_stale(flowrun *rt, fr_oauth *o, unsigned gen);
void fr_auth_free(fr_oauth *o);

#endif
