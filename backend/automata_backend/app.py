"""The two ASGI apps of one instance: the main app (the only port the load
balancers see) and the admin app (lab-only fault injection)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from .load_balancer import BalancerClosed, DeadlineExceeded, LoadBalancerError, NoEndpointAvailable
from .metrics import Metrics
from .state import Backend, InvalidField, PoolTimeout, Refusal
from .tuning import ENV_OF

access_log = logging.getLogger("automata_backend.access")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_DELAY = 60.0
MAX_AI_SECONDS = 600.0
MAX_BODY_SIZE = 10 * 1024 * 1024
# Status for a request that ended without any response (client went away, or
# the grace period cut it); the same convention as NGINX.
NO_RESPONSE = 499


class EdgeMiddleware:
    """Identity headers, connection accounting, metrics and the access log.

    Pure ASGI (not BaseHTTPMiddleware) so it also sees WebSocket handshakes and
    error responses produced further in, and never buffers streamed bodies.
    """

    def __init__(self, app: ASGIApp, backend: Backend, metrics: Metrics | None) -> None:
        self.app = app
        self.backend = backend
        self.metrics = metrics  # None: do not count (the admin port is not traffic)
        settings = backend.settings
        self.identity = [(b"x-backend-instance", settings.instance.encode()),
                         (b"x-backend-version", settings.version.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        is_http = scope["type"] == "http"
        status = 0

        async def send_with_identity(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                message = {**message, "headers": [*message.get("headers", []), *self.identity]}
            elif kind == "websocket.close" and not status:
                status = 403  # closed before accepting: the server answers 403
            await send(message)

        counted = self.metrics is not None
        if counted:
            self.backend.active += 1
            self.backend.inflight_http += is_http
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_identity)
        except asyncio.CancelledError:
            # The shutdown grace period ran out.  A request not yet answered
            # gets a 503 from this instance (which balancers may retry)
            # instead of the server's anonymous 500; a started one is cut.
            if is_http and not status:
                await send_with_identity({"type": "http.response.start", "status": 503,
                                          "headers": [(b"content-type", b"application/json")]})
                await send_with_identity({"type": "http.response.body",
                                          "body": b'{"error": "shutdown grace period expired"}'})
            raise
        finally:
            duration = time.perf_counter() - started
            if counted:
                self.backend.active -= 1
                self.backend.inflight_http -= is_http
            method = scope.get("method", "GET")
            status = status or NO_RESPONSE
            if counted:
                route = scope.get("route")
                self.metrics.observe(route.path if route else "other", method, status,
                                     duration if is_http else None)
            access_log.info("access", extra={"fields": {
                "method": method, "path": scope["path"], "status": status,
                "duration_ms": round(duration * 1000, 2),
                "client": scope["client"][0] if scope.get("client") else None}})


async def _invalid_field(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidField)
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)


def _query_number(request: Request, name: str, default: float | None, maximum: float,
                  kind: type = float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidField(name, f"must be a {kind.__name__}, got {raw!r}") from None
    if not 0 <= value <= maximum:  # also refuses nan and inf
        raise InvalidField(name, f"must be between 0 and {maximum}, got {raw!r}")
    return value


def create_app(backend: Backend) -> ASGIApp:
    settings = backend.settings
    identity = {"instance": settings.instance, "version": settings.version}
    metrics = Metrics(backend)

    def refused(refusal: Refusal) -> JSONResponse:
        return JSONResponse({"error": refusal.reason, **identity}, status_code=refusal.status)

    def traffic(handler: Callable[[Request], Awaitable[Response]], *, uses_db: bool, traffic_class: str):
        """Wrap a traffic-class endpoint: the instance's class, its request
        timeout, faults and the breaker apply here, never to health or metrics."""

        async def run(request: Request) -> Response:
            refusal = await backend.admit()
            if refusal:
                return refused(refusal)
            if not uses_db:
                return await handler(request)
            try:
                async with backend.pool.connection():
                    return await handler(request)
            except PoolTimeout:
                return refused(Refusal(503, "database pool exhausted"))

        async def endpoint(request: Request) -> Response:
            if not backend.serves(traffic_class):
                return JSONResponse({"error": f"route of the {traffic_class} class; this instance serves "
                                              f"{backend.tuning.traffic_class}", **identity}, status_code=404)
            limit = backend.tuning.request_timeout
            if limit is None:
                return await run(request)
            deadline = asyncio.timeout(limit)
            try:
                async with deadline:
                    return await run(request)
            except TimeoutError:
                if not deadline.expired():
                    raise
                return refused(Refusal(504, f"request ran longer than {ENV_OF['request_timeout']} ({limit:g} s)"))

        return endpoint

    def echo(request: Request) -> dict:
        headers = {name: ", ".join(request.headers.getlist(name)) for name in request.headers}
        return {**identity, "method": request.method, "path": request.url.path,
                "query": dict(request.query_params),
                "client": request.client.host if request.client else None,
                "headers": headers}

    async def api(request: Request) -> Response:
        delay = _query_number(request, "delay", 0.0, MAX_DELAY)
        size = _query_number(request, "size", None, MAX_BODY_SIZE, kind=int)
        await asyncio.sleep(delay)
        if size is not None:
            return Response(b"x" * size, media_type="application/octet-stream")
        body = echo(request)
        if request.url.path == "/auth/login" and request.method == "POST":
            body["token"] = secrets.token_urlsafe(16)  # a fake session token, nothing checks it
        return JSONResponse(body)

    async def ai(request: Request) -> Response:
        seconds = _query_number(request, "seconds", 2.0, MAX_AI_SECONDS)
        if request.query_params.get("stream") not in ("1", "true"):
            await asyncio.sleep(seconds)
            return JSONResponse({**echo(request), "seconds": seconds})

        async def chunks():
            # One line per second keeps bytes flowing, so a proxy's read timeout
            # only fires if it is shorter than the gap between chunks.
            elapsed, count = 0.0, 0
            while elapsed < seconds:
                step = min(1.0, seconds - elapsed)
                await asyncio.sleep(step)
                elapsed += step
                count += 1
                yield json.dumps({"chunk": count, "elapsed": round(elapsed, 3), **identity}) + "\n"
            yield json.dumps({"done": True, "chunks": count, **identity}) + "\n"

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    async def ai_call(request: Request) -> Response:
        """The API calling the AI pool through the client-side balancer: the
        same method, path (under /ai/) and query; the answer wraps the AI
        instance's response, so a caller sees both hops."""
        pool = backend.ai_pool
        if pool is None:
            return refused(Refusal(503, f"no AI pool configured ({ENV_OF['ai_pool']})"))
        forwarded = {name: request.headers[name] for name in ("x-request-id", "content-type")
                     if name in request.headers}
        try:
            r = await pool.request(request.method, "/ai/" + request.path_params["path"],
                                   params=list(request.query_params.multi_items()),
                                   headers=forwarded, content=await request.body() or None)
        except (NoEndpointAvailable, BalancerClosed) as exc:
            return refused(Refusal(503, str(exc)))
        except DeadlineExceeded as exc:
            return refused(Refusal(504, str(exc)))
        except LoadBalancerError as exc:
            return refused(Refusal(502, str(exc)))
        try:
            answer = r.json()
        except ValueError:
            answer = r.text
        # A 5xx the balancer could not route around is the AI pool's failure,
        # not this instance's: 502, with the AI's own status in the body.
        return JSONResponse({**identity, "ai_endpoint": r.request.url.netloc.decode(), "ai_status": r.status_code,
                             "ai": answer}, status_code=502 if r.status_code >= 500 else r.status_code)

    async def health(request: Request) -> Response:
        status = backend.readiness()
        return JSONResponse({"status": status, **identity, "uptime_seconds": round(backend.uptime, 3)},
                            status_code=200 if status == "healthy" else 503)

    async def healthz(request: Request) -> Response:
        # Liveness ignores draining: a draining process is alive and must not
        # be killed before its grace period ends.
        alive = backend.faults["health"] == "ok"
        return JSONResponse({"status": "alive" if alive else "unhealthy", **identity},
                            status_code=200 if alive else 503)

    async def health_detailed(request: Request) -> Response:
        status = backend.readiness()
        pool, breaker = backend.pool, backend.breaker
        components = {
            "db_pool": {"status": "ok" if pool.active < pool.max_connections else "exhausted",
                        "active": pool.active, "idle": pool.idle, "pool_size": pool.pool_size,
                        "max_connections": pool.max_connections, "pool_timeout": pool.pool_timeout},
            "circuit_breaker": {"status": breaker.state, "consecutive_failures": breaker.consecutive_failures,
                                "failure_threshold": breaker.failure_threshold,
                                "recovery_timeout": breaker.recovery_timeout},
            "websockets": {"status": "ok", "open": backend.websockets_open},
            "uptime": {"status": "ok", "seconds": round(backend.uptime, 3)},
        }
        if backend.ai_pool is not None:
            endpoints = backend.ai_pool.snapshot()
            usable = sum(e["healthy"] and e["breaker"] == "closed" and not e["draining"] for e in endpoints)
            components["ai_pool"] = {"status": "ok" if usable else "unavailable",
                                     "strategy": backend.ai_pool.config.strategy,
                                     "discovery": backend.ai_pool.discovery.description, "endpoints": endpoints}
        return JSONResponse({"status": status, **identity, "components": components},
                            status_code=200 if status == "healthy" else 503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def performance(request: Request) -> Response:
        return JSONResponse(metrics.performance())

    async def websocket(ws: WebSocket) -> None:
        if not backend.serves("websocket"):
            refusal: Refusal | None = Refusal(404, f"route of the websocket class; this instance serves "
                                                   f"{backend.tuning.traffic_class}")
        else:
            refusal = Refusal(503, "draining") if backend.draining else await backend.admit()
        if refusal:
            await ws.send_denial_response(refused(refusal))
            return
        await ws.accept()
        backend.websockets_open += 1
        echo_task = asyncio.ensure_future(echo_messages(ws))
        drain_task = asyncio.ensure_future(backend.drain_started.wait())
        try:
            await ws.send_json({"type": "hello", **identity})
            await asyncio.wait({echo_task, drain_task}, return_when=asyncio.FIRST_COMPLETED)
            if not echo_task.done():
                echo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await echo_task
                # 1001 "going away": clients reconnect, and the balancer sends
                # them to an instance that is not shutting down.
                await ws.close(code=1001, reason="server shutting down")
            else:
                echo_task.result()
        finally:
            echo_task.cancel()
            drain_task.cancel()
            backend.websockets_open -= 1

    async def echo_messages(ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            metrics.websocket_messages.inc()
            if message.get("text") is None:
                await ws.close(code=1003, reason="text messages only")
                return
            await ws.send_json({"type": "echo", "instance": settings.instance, "data": message["text"]})

    routes = [
        Route("/health", health),
        Route("/healthz", healthz),
        Route("/health/detailed", health_detailed),
        Route("/metrics", prometheus),
        Route("/metrics/performance", performance),
        # Before /api/{path}: the more specific route wins in list order.
        Route("/api/ai/{path:path}", traffic(ai_call, uses_db=False, traffic_class="api"), methods=ALL_METHODS),
        Route("/api/{path:path}", traffic(api, uses_db=True, traffic_class="api"), methods=ALL_METHODS),
        Route("/auth/{path:path}", traffic(api, uses_db=True, traffic_class="api"), methods=ALL_METHODS),
        Route("/ai/{path:path}", traffic(ai, uses_db=False, traffic_class="ai"), methods=ALL_METHODS),
        WebSocketRoute("/ws", websocket),
    ]
    app = Starlette(routes=routes, exception_handlers={InvalidField: _invalid_field})
    return EdgeMiddleware(app, backend, metrics)


def create_admin_app(backend: Backend) -> ASGIApp:
    """Fault injection.  Served on its own port, which the balancers never
    point at, so no client of the load-balanced port can reach it."""

    async def fault(request: Request) -> Response:
        if request.method == "PUT":
            try:
                update = await request.json()
            except ValueError:
                raise InvalidField("body", "must be valid JSON") from None
            return JSONResponse(backend.update_faults(update))
        if request.method == "DELETE":
            return JSONResponse(backend.reset_faults())
        return JSONResponse(dict(backend.faults))

    app = Starlette(routes=[Route("/fault", fault, methods=["GET", "PUT", "DELETE"])],
                    exception_handlers={InvalidField: _invalid_field})
    return EdgeMiddleware(app, backend, metrics=None)
