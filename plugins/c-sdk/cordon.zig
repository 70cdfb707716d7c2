//! The C SDK (cordon.h, cordon.c) for Zig: Zig 0.16+ has no @cImport, so the declarations are
//! repeated here. Build the plugin together with cordon.c:
//!   zig build-exe -target wasm32-wasi -O ReleaseSmall -fno-entry -mexec-model=reactor -lc \
//!       -I plugins/c-sdk app.zig plugins/c-sdk/cordon.c
//! and define `export fn cordon_plugin_describe() void` and
//! `export fn cordon_plugin_call(req: *const Request, res: *Result) void`.

/// A byte string that is not NUL-terminated.
pub const Str = extern struct {
    ptr: ?[*]const u8,
    len: usize,

    pub fn slice(self: Str) []const u8 {
        return if (self.ptr) |p| p[0..self.len] else &.{};
    }
};

pub const Request = extern struct {
    tool: Str,
    arguments: Str,
    principal: Str,
    call_id: Str,
    has_idempotency_key: bool,
    idempotency_key: Str,
};

pub const Result = opaque {};
pub const Tool = opaque {};
pub const Buf = extern struct {
    data: ?[*:0]u8 = null,
    len: usize = 0,
    cap: usize = 0,
};

pub const UNSET: c_int = -1;

pub const LogLevel = enum(c_int) { trace = 0, debug = 1, info = 2, warn = 3, @"error" = 4 };

pub extern fn cordon_add_tool(name: [*:0]const u8, title: ?[*:0]const u8, description: [*:0]const u8, input_schema: [*:0]const u8, output_schema: ?[*:0]const u8) *Tool;
pub extern fn cordon_tool_annotations(tool: *Tool, read_only: c_int, destructive: c_int, idempotent: c_int, open_world: c_int) void;
pub extern fn cordon_ok(res: *Result, text: ?[*:0]const u8, json: ?[*:0]const u8) void;
pub extern fn cordon_ok_text(res: *Result, text: [*:0]const u8) void;
pub extern fn cordon_ok_json(res: *Result, json: [*:0]const u8) void;
pub extern fn cordon_error(res: *Result, kind: [*:0]const u8, message: [*:0]const u8, retryable: bool) void;
pub extern fn cordon_is_tool(req: *const Request, name: [*:0]const u8) bool;
pub extern fn cordon_arg_number(req: *const Request, key: [*:0]const u8, out: *f64) bool;
pub extern fn cordon_arg_bool(req: *const Request, key: [*:0]const u8, out: *bool) bool;
pub extern fn cordon_arg_string(req: *const Request, key: [*:0]const u8, out: *[*:0]u8) bool;
pub extern fn cordon_buf_printf(buf: *Buf, fmt: [*:0]const u8, ...) void;
pub extern fn cordon_buf_json_string(buf: *Buf, s: [*:0]const u8) void;
pub extern fn cordon_buf_str(buf: *const Buf) [*:0]const u8;
pub extern fn cordon_log(level: LogLevel, fmt: [*:0]const u8, ...) void;
pub extern fn cordon_config(key: [*:0]const u8) ?[*:0]u8;
pub extern fn cordon_progress(done: f64, total: f64, message: ?[*:0]const u8) void;

/// What came back from an outbound request (see cordon.h): `err` is null when a response
/// arrived, else a wasi:http error-code name such as "HTTP-request-denied".
pub const HttpResponse = extern struct {
    status: c_int = 0,
    body: ?[*:0]u8 = null,
    body_len: usize = 0,
    err: ?[*:0]const u8 = null,

    pub fn bodySlice(self: HttpResponse) []const u8 {
        return if (self.body) |b| b[0..self.body_len] else &.{};
    }
};

pub extern fn cordon_http_request(method: [*:0]const u8, url: [*:0]const u8, headers: ?[*]const ?[*:0]const u8, body: ?[*]const u8, body_len: usize, out: *HttpResponse) bool;
pub extern fn cordon_http_get(url: [*:0]const u8, accept: ?[*:0]const u8, out: *HttpResponse) bool;
pub extern fn cordon_errorf(res: *Result, kind: [*:0]const u8, retryable: bool, fmt: [*:0]const u8, ...) void;
