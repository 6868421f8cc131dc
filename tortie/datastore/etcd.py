"""`EtcdBackend`: the `Backend` over etcd v3's JSON gateway (HTTP/1.1 + JSON, stdlib only).

Why the gateway: the CNI plugin starts once per pod with a ~100 ms budget, and a gRPC client
costs 200-300 ms just to import. The gateway speaks the same v3 API as JSON: keys and values
are base64, int64 fields are decimal strings, fields equal to their zero value are omitted
(no `kvs` in an empty range, no `succeeded` in a failed txn, no `type` on a PUT event).

Connections. One keep-alive HTTP connection per thread and endpoint (`threading.local`). A
request goes to the endpoint that last worked; if it cannot connect it fails over to the
next. A request that was sent but got no answer is retried elsewhere only when it is a read;
for a write the outcome is unknown and `Unavailable` says so (a retried conditional write
could otherwise report a false conflict). One exception: a *reused* keep-alive connection that
the server had already closed (etcd restarted) is retried once on a fresh connection.

Transactions. Every conditional write is one `/v3/kv/txn`; `txn()` exposes the general form:
its compares (`MOD == rev`, or `CREATE == 0` for "absent", `CREATE > 0` for "exists"), its puts
and deletes as the `success` branch, and a `request_range` of each compared key as the
`failure` branch, so a failed txn returns the current values in the same round trip.

Errors. Each gRPC status the gateway returns becomes one of the backend errors: compaction
(code 11 "required revision has been compacted") -> `Compacted`; Unavailable (14) ->
fail over; Unauthenticated (16, expired token) -> authenticate again and retry once;
PermissionDenied (7) and bad credentials -> `AuthError`. When no endpoint answers:
`Unavailable: could not reach etcd at http://127.0.0.1:2379: connection refused`.

Auth. With a username, the backend gets a token from `/v3/auth/authenticate` on first use and
sends it in the `Authorization` header; an expired token is replaced transparently.

TLS. `https://` endpoints use an `ssl.SSLContext` with the configured CA (or the system
store) and the client certificate and key, from files or inline PEM.

Watch stream framing (verified against etcd 3.4.23 here): `POST /v3/watch` with one
`{"create_request": {...}}` body answers with a chunked HTTP response that stays open; every
watch response is one JSON object on its own line, wrapped as `{"result": {...}}`. The first
is `{"result": {"header": ..., "created": true}}`. Events arrive as `"events": [...]`, one
response per revision batch (a txn's puts share one response). A start revision that was
compacted gives `created` and then `{"result": {"canceled": true, "compact_revision": "N"}}`.
A response with a header and no events is a progress notification. Stream-level failures
come as `{"error": {...}}`. Each watch has its own connection and closes by closing it.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tortie.datastore.backend import (
    KV,
    AuthError,
    Compacted,
    Compare,
    DatastoreError,
    Delete,
    EventType,
    KeyExists,
    KeyNotFound,
    Op,
    Put,
    RevisionConflict,
    TxnResult,
    Unavailable,
    WatchEvent,
    prefix_range_end,
)
from tortie.datastore.config import CalicoAPIConfig, ConfigError

__all__ = ["EtcdBackend", "EtcdWatcher"]

log = logging.getLogger(__name__)

# etcd's default --max-txn-ops.
MAX_TXN_OPS = 128

# gRPC status codes the gateway puts in its error bodies.
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_PERMISSION_DENIED = 7
_FAILED_PRECONDITION = 9
_OUT_OF_RANGE = 11
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16

_RETRYABLE_STALE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(d: dict[str, Any]) -> KV:
    return KV(
        key=_unb64(d["key"]).decode("utf-8", "surrogateescape"),
        value=_unb64(d.get("value", "")),
        mod_revision=int(d.get("mod_revision", 0)),
        create_revision=int(d.get("create_revision", 0)),
        version=int(d.get("version", 0)),
        lease=int(d.get("lease", 0)),
    )


def _event(d: dict[str, Any]) -> WatchEvent:
    prev = d.get("prev_kv")
    return WatchEvent(
        EventType.DELETE if d.get("type") == "DELETE" else EventType.PUT,
        _kv(d["kv"]),
        _kv(prev) if prev else None,
    )


def _describe(exc: BaseException, timeout: float | None = None) -> str:
    """A short human explanation of a connection-level failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        text = f"TLS error: {reason}"
        low = str(exc).lower()
        if "certificate required" in low or "bad certificate" in low or "unknown ca" in low:
            text += " (the server rejected our client certificate: check etcdCertFile/etcdKeyFile)"
        elif "wrong version number" in low or "record layer failure" in low:
            text += " (is this endpoint serving plain http? then use http://)"
        elif "eof occurred in violation of protocol" in low:
            text += (
                " (the server ended the TLS handshake: does it require a client certificate?"
                " set etcdCertFile/etcdKeyFile)"
            )
        return text
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


class _Endpoint:
    __slots__ = ("host", "port", "tls", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        scheme, rest = url.split("://", 1)
        self.tls = scheme == "https"
        host, _, port = rest.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)


class _Failure(Exception):
    """Internal: this endpoint failed; try the next one."""

    def __init__(self, endpoint: str, why: str) -> None:
        super().__init__(why)
        self.endpoint = endpoint
        self.why = why


def _grpc_error(body: Any, status: int, endpoint: str) -> tuple[int | None, str]:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # stream-level errors nest one level down
            return err.get("grpc_code"), str(err.get("message", ""))
        if "code" in body or "message" in body or "error" in body:
            return body.get("code"), str(body.get("message") or body.get("error") or "")
    return None, f"unexpected HTTP {status} response from {endpoint}: {str(body)[:200]}"


def _map_error(code: int | None, message: str, endpoint: str) -> DatastoreError:
    low = message.lower()
    if code == _OUT_OF_RANGE and "compacted" in low:
        return Compacted(None)
    if code == _PERMISSION_DENIED or "permission denied" in low:
        return AuthError(f"etcd at {endpoint}: {message}")
    if "user name is empty" in low:
        return AuthError(
            f"etcd at {endpoint} requires authentication: set etcdUsername and etcdPassword"
        )
    if "authentication failed" in low or code == _UNAUTHENTICATED:
        return AuthError(f"etcd at {endpoint}: {message}")
    return DatastoreError(f"etcd at {endpoint}: {message}")


class EtcdBackend:
    """A `Backend` talking to an etcd v3 cluster through its JSON gateway."""

    def __init__(
        self,
        config: CalicoAPIConfig | str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        page_size: int = 1000,
    ) -> None:
        if config is None:
            config = CalicoAPIConfig()
        elif isinstance(config, str):
            config = CalicoAPIConfig.for_endpoints(config)
        elif not isinstance(config, CalicoAPIConfig):
            config = CalicoAPIConfig.for_endpoints(list(config))
        self.config = config.validated()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.page_size = page_size
        self._endpoints = [_Endpoint(url) for url in self.config.etcd_endpoints]
        self._ssl: ssl.SSLContext | None = (
            self._make_ssl_context() if self.config.uses_tls else None
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._preferred = 0
        self._conns: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._watchers: weakref.WeakSet[EtcdWatcher] = weakref.WeakSet()
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdBackend({', '.join(self.endpoints)})"

    def __enter__(self) -> EtcdBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoints(self) -> list[str]:
        return [ep.url for ep in self._endpoints]

    # -- connections ---------------------------------------------------------------------------

    def _make_ssl_context(self) -> ssl.SSLContext:
        cfg = self.config
        try:
            if cfg.etcd_ca_cert_file:
                ctx = ssl.create_default_context(cafile=cfg.etcd_ca_cert_file)
            elif cfg.etcd_ca_cert:
                ctx = ssl.create_default_context(cadata=cfg.etcd_ca_cert)
            else:
                ctx = ssl.create_default_context()
        except (OSError, ssl.SSLError) as e:
            what = cfg.etcd_ca_cert_file or "inline etcdCACert"
            raise ConfigError(f"cannot load the etcd CA certificate {what}: {e}") from None
        if cfg.etcd_cert_file:
            try:
                ctx.load_cert_chain(cfg.etcd_cert_file, cfg.etcd_key_file)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(
                    f"cannot load the etcd client certificate {cfg.etcd_cert_file} / key "
                    f"{cfg.etcd_key_file}: {e}"
                ) from None
        elif cfg.etcd_cert:
            import tempfile  # only needed for inline PEM: keep the common import path light

            # ssl can only load a certificate chain from files: write them briefly, 0600.
            with tempfile.TemporaryDirectory(prefix="tortie-tls-") as d:
                cert, key = f"{d}/cert.pem", f"{d}/key.pem"
                for path, text in ((cert, cfg.etcd_cert), (key, cfg.etcd_key)):
                    with open(path, "w", encoding="ascii") as f:
                        f.write(text)
                try:
                    ctx.load_cert_chain(cert, key)
                except (OSError, ssl.SSLError) as e:
                    raise ConfigError(f"cannot load inline etcdCert/etcdKey: {e}") from None
        return ctx

    def _new_conn(self, ep: _Endpoint) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if ep.tls:
            conn = http.client.HTTPSConnection(
                ep.host, ep.port, timeout=self.connect_timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self.connect_timeout)
        with self._lock:
            self._conns.add(conn)
        return conn

    def _connect(self, conn: http.client.HTTPConnection, timeout: float | None) -> None:
        conn.connect()
        sock = conn.sock
        assert sock is not None
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _pooled(self, idx: int) -> tuple[http.client.HTTPConnection, bool]:
        pool: dict[int, http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get(idx)
        if conn is not None and conn.sock is not None:
            return conn, True
        if conn is None:
            conn = pool[idx] = self._new_conn(self._endpoints[idx])
        return conn, False

    def _discard(self, idx: int) -> None:
        pool = getattr(self._local, "pool", None)
        if pool and idx in pool:
            pool.pop(idx).close()

    # -- auth ----------------------------------------------------------------------------------

    def _auth_header(self) -> str | None:
        if not self.config.etcd_username:
            return None
        with self._auth_lock:
            if self._token is None:
                reply = self._call(
                    "/v3/auth/authenticate",
                    {"name": self.config.etcd_username, "password": self.config.etcd_password},
                    idempotent=True,
                    auth=False,
                )
                self._token = reply.get("token") or ""
                if not self._token:
                    log.info("etcd returned no auth token (auth disabled?); continuing without")
            return self._token or None

    def _drop_token(self, token: str | None) -> None:
        with self._auth_lock:
            if self._token == token:
                self._token = None

    # -- requests ------------------------------------------------------------------------------

    def _call(
        self, path: str, body: dict[str, Any], *, idempotent: bool, auth: bool = True
    ) -> dict[str, Any]:
        """POST `body` to `path` on the first endpoint that answers; return the JSON reply."""
        if self._closed:
            raise DatastoreError("backend is closed")
        payload = json.dumps(body).encode()
        failures: list[tuple[str, str]] = []
        n = len(self._endpoints)
        start = self._preferred
        reauthed = False
        for i in range(n):
            idx = (start + i) % n
            ep = self._endpoints[idx]
            while True:
                token = self._auth_header() if auth else None
                try:
                    status, reply = self._roundtrip(idx, path, payload, token, idempotent)
                except _Failure as f:
                    failures.append((f.endpoint, f.why))
                    break
                if status == 200:
                    self._preferred = idx
                    return reply
                code, message = _grpc_error(reply, status, ep.url)
                if code in (_UNAVAILABLE, _DEADLINE_EXCEEDED):
                    failures.append((ep.url, message))
                    if not idempotent and code == _DEADLINE_EXCEEDED:
                        raise Unavailable(
                            f"etcd at {ep.url}: {message}; the write may or may not have "
                            "been applied"
                        )
                    break
                if (
                    auth
                    and token is not None
                    and not reauthed
                    and (code == _UNAUTHENTICATED or "invalid auth token" in message)
                ):
                    log.info("etcd auth token rejected (%s); authenticating again", message)
                    self._drop_token(token)
                    reauthed = True
                    continue
                if "client sent an http request to an https server" in message.lower():
                    raise Unavailable(
                        f"could not reach etcd at {ep.url}: the server speaks TLS; use "
                        f"https://{ep.host}:{ep.port}"
                    )
                raise _map_error(code, message, ep.url)
        raise Unavailable(self._unreachable(failures))

    def _roundtrip(
        self,
        idx: int,
        path: str,
        payload: bytes,
        token: str | None,
        idempotent: bool,
        retry_stale: bool = True,
    ) -> tuple[int, Any]:
        ep = self._endpoints[idx]
        conn, reused = self._pooled(idx)
        if not reused:
            try:
                self._connect(conn, self.timeout)
            except (OSError, http.client.HTTPException) as e:
                self._discard(idx)
                raise _Failure(ep.url, _describe(e, self.connect_timeout)) from None
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        try:
            conn.request("POST", path, payload, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._discard(idx)
            if reused and retry_stale and isinstance(e, _RETRYABLE_STALE):
                # The server closed an idle keep-alive connection (e.g. etcd restarted).
                log.debug("stale connection to %s (%s); reconnecting", ep.url, e)
                return self._roundtrip(idx, path, payload, token, idempotent, False)
            why = _describe(e, self.timeout)
            if not reused and not ep.tls and isinstance(
                e, http.client.RemoteDisconnected | ConnectionResetError
            ):
                why += " (if this etcd serves TLS, use https://)"
            if not idempotent and not isinstance(e, ssl.SSLError):
                raise Unavailable(
                    f"lost the connection to etcd at {ep.url} during a write ({why}); "
                    "the write may or may not have been applied"
                ) from None
            raise _Failure(ep.url, why) from None
        if resp.will_close:
            self._discard(idx)
        try:
            reply = json.loads(data) if data else {}
        except ValueError:
            reply = data.decode("utf-8", "replace")
        return resp.status, reply

    def _unreachable(self, failures: list[tuple[str, str]]) -> str:
        if len(failures) == 1:
            url, why = failures[0]
            return f"could not reach etcd at {url}: {why}"
        return "could not reach etcd at " + ", ".join(f"{u} ({w})" for u, w in failures)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> KV:
        reply = self._call("/v3/kv/range", {"key": _b64(key)}, idempotent=True)
        kvs = reply.get("kvs")
        if not kvs:
            raise KeyNotFound(key)
        return _kv(kvs[0])

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KV], int]:
        pfx = prefix.encode("utf-8", "surrogateescape")
        start = pfx or b"\0"
        end = _b64(prefix_range_end(pfx))
        rev = revision or 0
        out: list[KV] = []
        while True:
            req: dict[str, Any] = {
                "key": _b64(start),
                "range_end": end,
                "limit": str(self.page_size),
            }
            if rev:
                req["revision"] = str(rev)
            reply = self._call("/v3/kv/range", req, idempotent=True)
            if not rev:
                rev = int(reply["header"]["revision"])
            page = reply.get("kvs") or ()
            out.extend(_kv(d) for d in page)
            if not reply.get("more") or not page:
                return out, rev
            start = _unb64(page[-1]["key"]) + b"\0"

    def current_revision(self) -> int:
        reply = self._call("/v3/maintenance/status", {}, idempotent=True)
        return int(reply["header"]["revision"])

    # -- writes --------------------------------------------------------------------------------

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
             failure: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call(
            "/v3/kv/txn",
            {"compare": compare, "success": success, "failure": failure},
            idempotent=False,
        )

    def create(self, key: str, value: bytes) -> KV:
        k = _b64(key)
        reply = self._txn(
            [{"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": k, "value": _b64(value)}}],
            [{"request_range": {"key": k}}],
        )
        if not reply.get("succeeded"):
            kvs = reply["responses"][0]["response_range"].get("kvs")
            raise KeyExists(key, _kv(kvs[0]) if kvs else None)
        rev = int(reply["header"]["revision"])
        return KV(key, bytes(value), rev, rev, 1)

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        k = _b64(key)
        if expect_revision is None:
            cmp = {"target": "CREATE", "key": k, "result": "GREATER", "create_revision": "0"}
        else:
            cmp = {
                "target": "MOD",
                "key": k,
                "result": "EQUAL",
                "mod_revision": str(int(expect_revision)),
            }
        reply = self._txn(
            [cmp],
            [{"request_put": {"key": k, "value": _b64(value), "prev_kv": True}}],
            [{"request_range": {"key": k}}],
        )
        if not reply.get("succeeded"):
            kvs = reply["responses"][0]["response_range"].get("kvs")
            if not kvs:
                raise KeyNotFound(key)
            raise RevisionConflict(key, expect_revision, _kv(kvs[0]).mod_revision)
        rev = int(reply["header"]["revision"])
        prev = reply["responses"][0]["response_put"].get("prev_kv")
        return self._written(key, value, rev, prev)

    def put(self, key: str, value: bytes) -> KV:
        reply = self._call(
            "/v3/kv/put",
            {"key": _b64(key), "value": _b64(value), "prev_kv": True},
            idempotent=False,
        )
        rev = int(reply["header"]["revision"])
        return self._written(key, value, rev, reply.get("prev_kv"))

    @staticmethod
    def _written(key: str, value: bytes, rev: int, prev: dict[str, Any] | None) -> KV:
        if prev:
            return KV(key, bytes(value), rev, int(prev.get("create_revision", rev)),
                      int(prev.get("version", 0)) + 1)
        return KV(key, bytes(value), rev, rev, 1)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Unconditional puts, MAX_TXN_OPS keys per transaction (atomic per transaction)."""
        ops: list[dict[str, Any]] = []
        rev = 0
        for key, value in items:
            ops.append({"request_put": {"key": _b64(key), "value": _b64(value)}})
            if len(ops) == MAX_TXN_OPS:
                rev = int(self._txn([], ops, [])["header"]["revision"])
                ops = []
        if ops:
            rev = int(self._txn([], ops, [])["header"]["revision"])
        return rev

    def delete(self, key: str, expect_revision: int | None = None) -> KV | None:
        k = _b64(key)
        if expect_revision is None:
            reply = self._call(
                "/v3/kv/deleterange", {"key": k, "prev_kv": True}, idempotent=False
            )
            prev = reply.get("prev_kvs")
            return _kv(prev[0]) if prev else None
        reply = self._txn(
            [{"target": "MOD", "key": k, "result": "EQUAL",
              "mod_revision": str(int(expect_revision))}],
            [{"request_delete_range": {"key": k, "prev_kv": True}}],
            [{"request_range": {"key": k}}],
        )
        if not reply.get("succeeded"):
            kvs = reply["responses"][0]["response_range"].get("kvs")
            if not kvs:
                raise KeyNotFound(key)
            raise RevisionConflict(key, expect_revision, _kv(kvs[0]).mod_revision)
        prev = reply["responses"][0]["response_delete_range"].get("prev_kvs")
        return _kv(prev[0]) if prev else None

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """One `/v3/kv/txn`: a compare per condition, the ops as `success`, and a range of
        each compared key as `failure` (so a failed txn returns the current values)."""
        compare: list[dict[str, Any]] = []
        for c in compares:
            k = _b64(c.key)
            if c.mod_revision is None:
                compare.append(
                    {"target": "CREATE", "key": k, "result": "GREATER", "create_revision": "0"}
                )
            elif c.mod_revision == 0:
                compare.append(
                    {"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"}
                )
            else:
                compare.append({"target": "MOD", "key": k, "result": "EQUAL",
                                "mod_revision": str(int(c.mod_revision))})
        success: list[dict[str, Any]] = []
        for op in ops:
            if isinstance(op, Put):
                success.append({"request_put": {"key": _b64(op.key), "value": _b64(op.value)}})
            elif isinstance(op, Delete):
                success.append({"request_delete_range": {"key": _b64(op.key)}})
            else:
                raise TypeError(f"not a txn operation: {op!r}")
        compared = list(dict.fromkeys(c.key for c in compares))
        failure = [{"request_range": {"key": _b64(key)}} for key in compared]
        reply = self._txn(compare, success, failure)
        rev = int(reply["header"]["revision"])
        if reply.get("succeeded"):
            return TxnResult(True, rev)
        current: dict[str, KV | None] = {}
        for key, resp in zip(compared, reply.get("responses") or (), strict=True):
            kvs = resp["response_range"].get("kvs")
            current[key] = _kv(kvs[0]) if kvs else None
        return TxnResult(False, rev, current)

    def delete_prefix(self, prefix: str) -> int:
        pfx = prefix.encode("utf-8", "surrogateescape")
        reply = self._call(
            "/v3/kv/deleterange",
            {"key": _b64(pfx or b"\0"), "range_end": _b64(prefix_range_end(pfx))},
            idempotent=False,
        )
        return int(reply.get("deleted", 0))

    def compact(self, revision: int) -> None:
        try:
            self._call("/v3/kv/compaction", {"revision": str(int(revision))}, idempotent=True)
        except Compacted:
            msg = f"cannot compact to revision {revision}: already compacted past it"
            raise Compacted(None, msg) from None

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> EtcdWatcher:
        pfx = prefix.encode("utf-8", "surrogateescape")
        compacted = False
        if start_revision > 0:
            # The gateway reports a compacted start only after "created"; check up front (a
            # range at a revision fails exactly when a watch from it would) so that watch()
            # itself raises Compacted, like the memory backend.
            try:
                self._call(
                    "/v3/kv/range",
                    {"key": _b64(pfx or b"\0"), "range_end": _b64(prefix_range_end(pfx)),
                     "revision": str(start_revision), "count_only": True},
                    idempotent=True,
                )
            except Compacted:
                compacted = True
            except DatastoreError as e:
                if "future revision" not in str(e):
                    raise
        watcher = EtcdWatcher(self, pfx, start_revision)
        watcher._open()
        if compacted:
            # Let etcd's cancel message tell us the compact revision, then fail.
            try:
                watcher._set_timeout(self.timeout)
                next(watcher)
            except Compacted:
                raise
            except (DatastoreError, StopIteration):
                pass
            finally:
                watcher.close()
            raise Compacted(None)
        with self._lock:
            self._watchers.add(watcher)
        return watcher

    def close(self) -> None:
        self._closed = True
        with self._lock:
            watchers = list(self._watchers)
            conns = list(self._conns)
        for w in watchers:
            w.close()
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover - best effort on shutdown
                pass


class EtcdWatcher:
    """One watch stream on its own HTTP connection (see the module docstring for framing)."""

    def __init__(self, backend: EtcdBackend, prefix: bytes, start_revision: int) -> None:
        self._backend = backend
        self.prefix = prefix.decode("utf-8", "surrogateescape")
        self._prefix = prefix
        self.start_revision = start_revision
        self.revision = max(start_revision - 1, 0)
        self.endpoint = ""
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._closed = False
        self._done = False

    def __repr__(self) -> str:
        return f"EtcdWatcher({self.prefix!r} from {self.start_revision} on {self.endpoint})"

    def _open(self) -> None:
        be = self._backend
        create: dict[str, Any] = {
            "key": _b64(self._prefix or b"\0"),
            "range_end": _b64(prefix_range_end(self._prefix)),
            "prev_kv": True,
            "progress_notify": True,
        }
        if self.start_revision > 0:
            create["start_revision"] = str(self.start_revision)
        payload = json.dumps({"create_request": create}).encode()
        failures: list[tuple[str, str]] = []
        n = len(be._endpoints)
        order = [(be._preferred + i) % n for i in range(n)]
        reauthed = False
        while order:
            idx = order.pop(0)
            ep = be._endpoints[idx]
            conn = be._new_conn(ep)
            try:
                be._connect(conn, be.timeout)
                sock = conn.sock
                assert sock is not None
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for opt, val in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                    if hasattr(socket, opt):
                        sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
                headers = {"Content-Type": "application/json"}
                token = be._auth_header()
                if token:
                    headers["Authorization"] = token
                conn.request("POST", "/v3/watch", payload, headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    data = resp.read()
                    conn.close()
                    try:
                        body: Any = json.loads(data)
                    except ValueError:
                        body = data.decode("utf-8", "replace")
                    code, message = _grpc_error(body, resp.status, ep.url)
                    if code == _UNAVAILABLE:
                        failures.append((ep.url, message))
                        continue
                    if token and not reauthed and (
                        code == _UNAUTHENTICATED or "invalid auth token" in message
                    ):
                        be._drop_token(token)
                        reauthed = True
                        order.insert(0, idx)
                        continue
                    raise _map_error(code, message, ep.url)
                self._conn, self._resp, self.endpoint = conn, resp, ep.url
                first = self._read_message()
                if not first.get("created"):
                    raise DatastoreError(f"etcd at {ep.url}: unexpected first watch message")
                sock.settimeout(None)  # from now on block until events (keepalive guards it)
                log.debug("watch %r from %d open on %s", self.prefix, self.start_revision, ep.url)
                return
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conn = self._resp = None
                failures.append((ep.url, _describe(e, be.timeout)))
        raise Unavailable(be._unreachable(failures))

    def _read_message(self) -> dict[str, Any]:
        """Read the next non-empty JSON line; return its `result` (raise on errors)."""
        resp = self._resp
        if resp is None:
            raise StopIteration
        while True:
            line = resp.readline()
            if not line:
                raise EOFError
            line = line.strip()
            if not line:
                continue
            msg = json.loads(line)
            if "error" in msg:
                code, message = _grpc_error(msg, 200, self.endpoint)
                if code == _UNAVAILABLE:
                    raise Unavailable(f"watch on {self.endpoint} failed: {message}")
                raise _map_error(code, message, self.endpoint)
            result: dict[str, Any] = msg.get("result") or {}
            if result.get("canceled"):
                crev = int(result.get("compact_revision", 0))
                if crev:
                    raise Compacted(crev)
                reason = result.get("cancel_reason") or "no reason given"
                raise Unavailable(f"watch canceled by etcd at {self.endpoint}: {reason}")
            return result

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        return self

    def __next__(self) -> list[WatchEvent]:
        if self._closed or self._done:
            raise StopIteration
        try:
            while True:
                result = self._read_message()
                events = result.get("events")
                if events:
                    batch = [_event(e) for e in events]
                    last = batch[-1].kv.mod_revision
                    if last > self.revision:
                        self.revision = last
                    return batch
                if result.get("created"):
                    continue
                # A progress notification: the stream is complete up to the header revision.
                hdr = int((result.get("header") or {}).get("revision", 0))
                if hdr > self.revision:
                    self.revision = hdr
                return []
        except StopIteration:
            raise
        except DatastoreError:
            self._finish()
            raise
        except (EOFError, OSError, ValueError, AttributeError, http.client.HTTPException) as e:
            self._finish()
            if self._closed:
                raise StopIteration from None
            why = "stream ended" if isinstance(e, EOFError) else _describe(e)
            raise Unavailable(f"watch on etcd at {self.endpoint} lost: {why}") from None

    def _set_timeout(self, timeout: float | None) -> None:
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)

    def _finish(self) -> None:
        self._done = True
        conn = self._conn
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop the watch; a thread blocked in `next()` gets StopIteration."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if conn is not None:
            conn.close()
