//! {{name}}: a Cordon plugin in Zig, on the C helper (cordon.h, cordon.c, cordon.zig).
//!
//! Build with `make` (Zig from PyPI, installed into .venv on first use), then copy {{name}}.wasm
//! into Cordon's plugins folder: the tool is served as {{prefix}}_hello. It builds a WASI
//! preview-1 core module; Cordon wraps it into a component when it loads it.
const std = @import("std");
const cordon = @import("cordon");

export fn cordon_plugin_describe() void {
    const hello = cordon.cordon_add_tool(
        "hello",
        "Say hello",
        "Greets someone by name. Fails with `empty_name` when the name is blank.",
        \\{"type":"object","properties":{"name":{"type":"string","description":"Who to greet."}},"required":["name"],"additionalProperties":false}
    ,
        null,
    );
    cordon.cordon_tool_annotations(hello, 1, 0, 1, 0);
}

export fn cordon_plugin_call(req: *const cordon.Request, res: *cordon.Result) void {
    if (!cordon.cordon_is_tool(req, "hello")) return; // the helper answers `unknown_tool`
    var raw: [*:0]u8 = undefined;
    if (!cordon.cordon_arg_string(req, "name", &raw)) {
        return cordon.cordon_error(res, "invalid_arguments", "name is required", false);
    }
    const name = std.mem.trim(u8, std.mem.span(raw), " ");
    if (name.len == 0) {
        return cordon.cordon_error(res, "empty_name", "the name is blank", false);
    }
    var text: cordon.Buf = .{};
    cordon.cordon_buf_printf(&text, "Hello, %.*s!", @as(c_int, @intCast(name.len)), name.ptr);
    cordon.cordon_ok_text(res, cordon.cordon_buf_str(&text));
}
