"""Caller identity: who is calling (principals), what they may do (roles), and a record of it (audit).

A caller presents a bearer token, an mTLS client certificate, or both; the principals
file maps each credential to a principal (id, tenant, role). The tenant of every
request comes from the principal; the request's `tenant` field is only an operator's
override. See docs/security.md, "Identity".

Modules, one job each:

* `principals`: the principals file (format, validation, token hashing, atomic writes).
* `watcher`: reloads the file when it changes or on SIGHUP, parsing off the event loop.
* `credentials`: turns a token and/or certificate identity into a principal.
* `policy`: which role may call which method.
* `caller`: the per-call principal (a contextvar) and the tenant/session checks handlers use.
* `interceptor`: the gRPC server interceptor that authenticates and authorizes every call.
* `audit`: one line per mutating or executing call, through the server's log pipeline.
* `bootstrap`: builds all of the above from the server configuration, creating the
  zero-configuration principals file and local token on first start.
"""
