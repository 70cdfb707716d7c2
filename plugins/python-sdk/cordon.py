"""Write Cordon tools in Python.

A plugin is a module of decorated functions; componentize-py turns it into a component of the
world `cordon:guest/plugin-http` (`plugins/wit/world.wit`: the `cordon:plugin/plugin` contract
plus `wasi:http/outgoing-handler`). The module must re-export `Tools`, the class componentize-py
looks for to implement the exported `cordon:plugin/tools` interface:

    from typing import Annotated
    from cordon import Tools, ToolError, tool

    @tool(description="Returns the text it was given, unchanged. Use it to test the connection.")
    def echo(text: Annotated[str, "The text to send back."]) -> dict:
        return {"text": text}

The input schema comes from the type hints: `str`, `int`, `float`, `bool`, `Literal[...]`,
`Enum` subclasses, `list[T]`, `dict[str, T]`, `Optional[T]`, dataclasses (also as the single
parameter holding every argument), each optionally wrapped in `Annotated[T, "description"]` or
`Annotated[T, {"minimum": 0, ...}]`. A parameter with a default is optional. A parameter typed
`Context` receives the caller's identity and the call id instead of an argument.

A tool returns a dict or a dataclass (structured output; a dataclass return type also declares
the output schema), a `str` (text only), or any other JSON value (sent as text). It fails with
`raise ToolError(kind, message, retryable=False)`. `config(key)` reads the operator's settings,
`log.info(...)` writes to the host's log and `http.get(url)` sends an outbound request through
the host, which refuses what the operator has not granted.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import traceback
import types as _pytypes
import typing
from typing import Any, Callable, Literal, Optional, Union
from urllib.parse import urlsplit

try:  # Inside the component: the bindings componentize-py generates for the world.
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.imports import cordon_plugin_types as _wit
    from wit_world.imports import host as _host
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _http

    _IN_COMPONENT = True
except ImportError:  # Natively (unit tests of this module): no host.
    _IN_COMPONENT = False
    _exports = None

__all__ = [
    "Context",
    "ToolError",
    "Tools",
    "config",
    "http",
    "log",
    "tool",
]

# ---- errors ------------------------------------------------------------------------------------

INVALID_ARGUMENTS = "invalid_arguments"
UNKNOWN_TOOL = "unknown_tool"
INTERNAL = "internal"
EGRESS_DENIED = "egress_denied"
UPSTREAM_UNREACHABLE = "upstream_unreachable"
UPSTREAM_ERROR = "upstream_error"
RESPONSE_TOO_LARGE = "response_too_large"
INVALID_RESPONSE = "invalid_response"


class ToolError(Exception):
    """A typed failure reported to the caller (the WIT `call-error`).

    `kind` is machine-readable snake_case (`not_found`, `upstream_unavailable`...), `message` is
    for people, `retryable` says whether the same call may succeed later.
    """

    def __init__(self, kind: str, message: str, retryable: bool = False):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retryable = retryable


# ---- host functions ----------------------------------------------------------------------------


def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """The operator's setting `key` (`[plugins.NAME.config]` in cordon.toml), or `default`."""
    if not _IN_COMPONENT:
        return default
    value = _host.config(key)
    return default if value is None else value


class _Log:
    """Lines for the host's log, tagged by the host with the plugin and the call id."""

    def _write(self, level: str, message: str) -> None:
        if _IN_COMPONENT:
            _host.log(getattr(_host.LogLevel, level.upper()), str(message))
        else:
            print(f"[{level}] {message}")

    def trace(self, message: str) -> None:
        self._write("trace", message)

    def debug(self, message: str) -> None:
        self._write("debug", message)

    def info(self, message: str) -> None:
        self._write("info", message)

    def warn(self, message: str) -> None:
        self._write("warn", message)

    def error(self, message: str) -> None:
        self._write("error", message)

    __call__ = info


log = _Log()


@dataclasses.dataclass(frozen=True)
class Context:
    """Who is calling and which call this is. Never contains a credential."""

    principal: str
    call_id: str
    idempotency_key: Optional[str] = None


# ---- schemas from type hints -------------------------------------------------------------------

_NONE = type(None)


def _annotated(tp: Any) -> tuple[Any, dict]:
    """Strips `Annotated[...]`: the bare type and the schema keywords its metadata adds."""
    extra: dict = {}
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp = args[0]
        for meta in args[1:]:
            if isinstance(meta, str):
                extra.setdefault("description", meta)
            elif isinstance(meta, dict):
                extra.update(meta)
    return tp, extra


def _optional(tp: Any) -> tuple[Any, bool]:
    """`Optional[T]` (or `T | None`) → (T, True); anything else → (tp, False)."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is getattr(_pytypes, "UnionType", None):
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return tp, False


def schema_of(tp: Any) -> dict:
    """The JSON Schema of a type hint."""
    tp, extra = _annotated(tp)
    tp, _ = _optional(tp)
    tp, more = _annotated(tp)
    schema = _bare_schema(tp)
    schema.update(more)
    schema.update(extra)
    return schema


def _bare_schema(tp: Any) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return _enum_schema(list(args))
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp])
    if tp is list or origin is list:
        return {"type": "array", "items": schema_of(args[0])} if args else {"type": "array"}
    if tp is dict or origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": schema_of(args[1])}
        return {"type": "object"}
    if dataclasses.is_dataclass(tp):
        return _dataclass_schema(tp)
    if origin is Union or origin is getattr(_pytypes, "UnionType", None):
        return {"anyOf": [schema_of(a) for a in args]}
    raise TypeError(f"no JSON Schema for the type hint {tp!r}")


def _enum_schema(values: list) -> dict:
    schema: dict = {"enum": values}
    kinds = {type(v) for v in values}
    if kinds == {str}:
        schema["type"] = "string"
    elif kinds <= {int} and kinds:
        schema["type"] = "integer"
    return schema


def _dataclass_schema(cls: Any) -> dict:
    hints = typing.get_type_hints(cls, include_extras=True)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        prop = schema_of(hints[f.name])
        if "description" in f.metadata:
            prop["description"] = f.metadata["description"]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if f.default is not dataclasses.MISSING and f.default is not None:
            prop.setdefault("default", _jsonable(f.default))
        if not has_default:
            required.append(f.name)
        properties[f.name] = prop
    schema: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(cls.__name__ + "("):  # not the generated signature
        schema["description"] = doc
    return schema


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _convert(tp: Any, value: Any) -> Any:
    """Turns a JSON value (already valid against the schema) into the hinted Python type."""
    tp, _ = _annotated(tp)
    tp, _ = _optional(tp)
    tp, _ = _annotated(tp)
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return tp(value)
    if (tp is list or origin is list) and args:
        return [_convert(args[0], v) for v in value]
    if (tp is dict or origin is dict) and len(args) == 2:
        return {k: _convert(args[1], v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return tp(**{name: _convert(hints[name], v) for name, v in value.items()})
    return value


# ---- the registry ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tool:
    name: str
    description: str
    title: Optional[str]
    annotations: dict
    input_schema: dict
    output_schema: Optional[dict]
    fn: Callable
    bind: Callable[[dict, Context], list]


_TOOLS: dict[str, _Tool] = {}


def tool(
    fn: Optional[Callable] = None,
    *,
    description: Optional[str] = None,
    name: Optional[str] = None,
    title: Optional[str] = None,
    read_only: Optional[bool] = None,
    destructive: Optional[bool] = None,
    idempotent: Optional[bool] = None,
    open_world: Optional[bool] = None,
):
    """Registers a function as a tool (`@tool` or `@tool(description=..., ...)`).

    The description defaults to the function's docstring; the name to the function's name.
    `read_only`, `destructive`, `idempotent` and `open_world` are the MCP annotations (`None`:
    not stated).
    """

    def register(fn: Callable) -> Callable:
        tool_name = name or fn.__name__
        if tool_name in _TOOLS:
            raise ValueError(f"two tools are named {tool_name!r}")
        text = description if description is not None else (inspect.getdoc(fn) or "")
        input_schema, bind = _parameters(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        returns, _ = _annotated(hints.get("return", Any))
        output_schema = _dataclass_schema(returns) if dataclasses.is_dataclass(returns) else None
        _TOOLS[tool_name] = _Tool(
            name=tool_name,
            description=text,
            title=title,
            annotations={
                "read_only": read_only,
                "destructive": destructive,
                "idempotent": idempotent,
                "open_world": open_world,
            },
            input_schema=input_schema,
            output_schema=output_schema,
            fn=fn,
            bind=bind,
        )
        return fn

    return register(fn) if fn is not None else register


def _parameters(fn: Callable):
    """The input schema of `fn` and a function binding (arguments, context) to its parameters."""
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args and **kwargs cannot become a schema")
        if p.name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {p.name!r} needs a type hint")
    is_context = [_annotated(hints[p.name])[0] is Context for p in params]
    args = [p for p, cx in zip(params, is_context) if not cx]

    # A single dataclass parameter holds every argument.
    if len(args) == 1 and dataclasses.is_dataclass(_annotated(hints[args[0].name])[0]):
        cls = _annotated(hints[args[0].name])[0]
        schema = _dataclass_schema(cls)

        def bind(arguments: dict, cx: Context) -> list:
            return [cx if c else _convert(cls, arguments) for c in is_context]

        return schema, bind

    properties, required = {}, []
    for p in args:
        prop = schema_of(hints[p.name])
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        elif p.default is not None:
            prop.setdefault("default", _jsonable(p.default))
        properties[p.name] = prop
    schema: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required

    def bind(arguments: dict, cx: Context) -> list:
        out = []
        for p, c in zip(params, is_context):
            if c:
                out.append(cx)
            elif p.name in arguments:
                out.append(_convert(hints[p.name], arguments[p.name]))
            else:
                out.append(p.default)
        return out

    return schema, bind


def descriptors() -> list[dict]:
    """What `describe` reports, as plain data (for tests and `Tools.describe`)."""
    return [
        {
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
            "annotations": t.annotations,
        }
        for t in _TOOLS.values()
    ]


def run(name: str, arguments: str, cx: Context) -> tuple[Optional[str], Optional[str]]:
    """Runs tool `name`: its output as (text, json), or a `ToolError`."""
    found = _TOOLS.get(name)
    if found is None:
        raise ToolError(UNKNOWN_TOOL, f"this plugin has no tool named {name!r}")
    try:
        args = json.loads(arguments or "{}")
    except ValueError as e:
        raise ToolError(INVALID_ARGUMENTS, f"the arguments are not JSON: {e}") from None
    if not isinstance(args, dict):
        raise ToolError(INVALID_ARGUMENTS, "the arguments must be a JSON object")
    try:
        bound = found.bind(args, cx)
    except (TypeError, ValueError, KeyError) as e:
        raise ToolError(INVALID_ARGUMENTS, f"the arguments do not fit {name}: {e}") from None
    try:
        result = found.fn(*bound)
    except ToolError:
        raise
    except Exception:
        # A bug, like a Rust panic: the call fails as `plugin_crashed`; the traceback is logged.
        log.error(traceback.format_exc())
        raise
    return _output(result)


def _output(result: Any) -> tuple[Optional[str], Optional[str]]:
    if isinstance(result, str):
        return result, None
    try:
        text = json.dumps(_jsonable(result), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ToolError(INTERNAL, f"cannot serialize the result: {e}") from None
    return text, (text if text.startswith("{") else None)


# ---- the exported interface --------------------------------------------------------------------

if _IN_COMPONENT:

    class Tools(_exports.Tools):
        """`cordon:plugin/tools`, implemented from the registry of `@tool` functions."""

        def describe(self) -> list:
            return [
                _wit.ToolDescriptor(
                    name=t["name"],
                    title=t["title"],
                    description=t["description"],
                    input_schema=json.dumps(t["input_schema"]),
                    output_schema=None if t["output_schema"] is None else json.dumps(t["output_schema"]),
                    annotations=_wit.Annotations(**t["annotations"]),
                )
                for t in descriptors()
            ]

        def call(self, tool: str, arguments: str, context: Any) -> Any:
            cx = Context(context.principal, context.call_id, context.idempotency_key)
            try:
                text, json_text = run(tool, arguments, cx)
            except ToolError as e:
                raise Err(_wit.CallError(kind=e.kind, message=e.message, retryable=e.retryable))
            return _wit.ToolOutput(text=text, json=json_text)

else:

    class Tools:  # type: ignore[no-redef]
        """Natively there is nothing to export."""


# ---- outbound HTTP -----------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    """A whole HTTP response."""

    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, by case-insensitive name."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or `ToolError("invalid_response")`."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ToolError(INVALID_RESPONSE, f"{self.url} did not answer with JSON: {e}") from None

    def raise_for_status(self) -> "Response":
        """`ToolError("upstream_error")` for a 4xx or 5xx status (retryable for 5xx), else self."""
        if self.status >= 400:
            raise ToolError(
                UPSTREAM_ERROR,
                f"{self.url} answered with status {self.status}",
                retryable=self.status >= 500,
            )
        return self


class _Http:
    """A small blocking client over `wasi:http/outgoing-handler`.

    The host mediates every request: one outside the operator's grants is refused before any
    connection (the call then fails with `egress_denied`), credentials are attached by the host,
    responses and time are capped, redirects are not followed.
    """

    READ_CHUNK = 64 * 1024
    WRITE_CHUNK = 4096

    def get(self, url: str, headers: Optional[dict] = None) -> Response:
        return self.request("GET", url, headers)

    def post(self, url: str, body: bytes | str, headers: Optional[dict] = None) -> Response:
        return self.request("POST", url, headers, body)

    def request(
        self, method: str, url: str, headers: Optional[dict] = None, body: bytes | str | None = None
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ToolError(INVALID_ARGUMENTS, f"{url!r} is not an http:// or https:// URL")
        if not _IN_COMPONENT:
            raise ToolError(UPSTREAM_UNREACHABLE, "HTTP is only available inside a component run by Cordon")
        if isinstance(body, str):
            body = body.encode()
        entries = [(k, str(v).encode()) for k, v in (headers or {}).items()]
        if body is not None and not any(k.lower() == "content-length" for k, _ in entries):
            entries.append(("content-length", str(len(body)).encode()))
        try:
            fields = _http.Fields.from_list(entries)
        except Err as e:
            raise ToolError(INVALID_ARGUMENTS, f"the request to {url} has a forbidden or malformed header ({e.value})")
        request = _http.OutgoingRequest(fields)
        request.set_method(_method(method))
        request.set_scheme(_http.Scheme_Https() if parts.scheme == "https" else _http.Scheme_Http())
        request.set_authority(parts.netloc)
        request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        outgoing_body = request.body() if body is not None else None
        try:
            future = _outgoing.handle(request, None)
        except Err as e:
            raise _failed(e.value, url) from None
        if outgoing_body is not None:
            _write_body(outgoing_body, body)
        with future:
            while True:
                got = future.get()
                if got is not None:
                    break
                with future.subscribe() as pollable:
                    pollable.block()
        # option<result<result<incoming-response, error-code>>>: Ok(Ok(response)) on success.
        if isinstance(got, Err):
            raise ToolError(UPSTREAM_UNREACHABLE, f"the response from {url} was already taken", retryable=True)
        if isinstance(got.value, Err):
            raise _failed(got.value.value, url)
        response = got.value.value
        with response:
            status = response.status()
            with response.headers() as fields:
                resp_headers = [(n, v.decode("utf-8", errors="replace")) for n, v in fields.entries()]
            incoming = response.consume()
            data = _read_body(incoming, url)
        return Response(url=url, status=status, headers=resp_headers, body=data)


def _method(method: str) -> Any:
    upper = method.upper()
    known = {
        "GET": "Get",
        "HEAD": "Head",
        "POST": "Post",
        "PUT": "Put",
        "DELETE": "Delete",
        "CONNECT": "Connect",
        "OPTIONS": "Options",
        "TRACE": "Trace",
        "PATCH": "Patch",
    }
    if upper in known:
        return getattr(_http, "Method_" + known[upper])()
    return _http.Method_Other(method)


def _write_body(outgoing_body: Any, body: bytes) -> None:
    with outgoing_body.write() as stream:
        for i in range(0, len(body), _Http.WRITE_CHUNK):
            stream.blocking_write_and_flush(body[i : i + _Http.WRITE_CHUNK])
    _http.OutgoingBody.finish(outgoing_body, None)


def _read_body(incoming: Any, url: str) -> bytes:
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(_Http.READ_CHUNK))
            except Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                raise _failed(_http.http_error_code(e.value.value), url) from None
    _http.IncomingBody.finish(incoming)
    return b"".join(chunks)


def _failed(code: Any, url: str) -> ToolError:
    name = type(code).__name__.removeprefix("ErrorCode_") if code is not None else "unknown"
    if name == "HttpRequestDenied":
        return ToolError(EGRESS_DENIED, f"the host refused the request to {url}")
    if name == "HttpResponseBodySize":
        return ToolError(RESPONSE_TOO_LARGE, f"the response from {url} exceeds the host's size cap")
    detail = getattr(code, "value", None)
    why = f"{name}" + (f" ({detail})" if detail not in (None, "") else "")
    return ToolError(UPSTREAM_UNREACHABLE, f"no response from {url}: {why}", retryable=True)


http = _Http()
