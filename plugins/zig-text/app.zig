//! zig-text: text statistics, a Cordon plugin in Zig on the C SDK (plugins/c-sdk/cordon.zig).
//!   text_stats   {"text": "..."}              → {"bytes", "chars", "words", "lines"}
//!   text_repeat  {"text": "ab", "times": 3}   → "ababab"; over 65536 bytes → call-error `too_large`
const std = @import("std");
const cordon = @import("cordon");

const max_output = 65536;

export fn cordon_plugin_describe() void {
    const stats_tool = cordon.cordon_add_tool(
        "stats",
        "Text statistics",
        "Counts the bytes, characters (code points), words and lines of a text.",
        \\{"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}
    ,
        \\{"type":"object","properties":{"bytes":{"type":"integer"},"chars":{"type":"integer"},"words":{"type":"integer"},"lines":{"type":"integer"}},"required":["bytes","chars","words","lines"]}
    );
    cordon.cordon_tool_annotations(stats_tool, 1, 0, 1, 0);
    const repeat_tool = cordon.cordon_add_tool(
        "repeat",
        null,
        "Repeats a text a number of times (at most 65536 bytes of output).",
        \\{"type":"object","properties":{"text":{"type":"string"},"times":{"type":"integer","minimum":0}},"required":["text","times"],"additionalProperties":false}
    ,
        null,
    );
    cordon.cordon_tool_annotations(repeat_tool, 1, 0, 1, 0);
}

export fn cordon_plugin_call(req: *const cordon.Request, res: *cordon.Result) void {
    if (cordon.cordon_is_tool(req, "stats")) {
        stats(req, res);
    } else if (cordon.cordon_is_tool(req, "repeat")) {
        repeat(req, res);
    }
    // Any other name: the SDK answers `unknown_tool`.
}

fn stats(req: *const cordon.Request, res: *cordon.Result) void {
    var raw: [*:0]u8 = undefined;
    if (!cordon.cordon_arg_string(req, "text", &raw)) {
        return cordon.cordon_error(res, "invalid_arguments", "text is required", false);
    }
    const text = std.mem.span(raw);
    var chars: usize = 0;
    var words: usize = 0;
    var lines: usize = if (text.len == 0) 0 else 1;
    var in_word = false;
    for (text) |b| {
        if (b & 0xC0 != 0x80) chars += 1;
        if (b == '\n') lines += 1;
        const space = b == ' ' or b == '\t' or b == '\n' or b == '\r';
        if (!space and !in_word) words += 1;
        in_word = !space;
    }
    var json: cordon.Buf = .{};
    cordon.cordon_buf_printf(&json, "{\"bytes\":%lu,\"chars\":%lu,\"words\":%lu,\"lines\":%lu}", text.len, chars, words, lines);
    cordon.cordon_ok_json(res, cordon.cordon_buf_str(&json));
}

fn repeat(req: *const cordon.Request, res: *cordon.Result) void {
    var raw: [*:0]u8 = undefined;
    var times: f64 = 0;
    if (!cordon.cordon_arg_string(req, "text", &raw) or !cordon.cordon_arg_number(req, "times", &times)) {
        return cordon.cordon_error(res, "invalid_arguments", "text and times are required", false);
    }
    const text = std.mem.span(raw);
    const total = @as(f64, @floatFromInt(text.len)) * times;
    if (total > max_output) {
        var message: cordon.Buf = .{};
        cordon.cordon_buf_printf(&message, "%.0f bytes of output is over the limit of %d", total, @as(c_int, max_output));
        return cordon.cordon_error(res, "too_large", cordon.cordon_buf_str(&message), false);
    }
    var out: cordon.Buf = .{};
    var i: usize = 0;
    const n: usize = @intFromFloat(times);
    while (i < n) : (i += 1) {
        cordon.cordon_buf_printf(&out, "%s", raw);
        // Forwarded only when the client asked for progress; a no-op otherwise.
        if (i % 1024 == 1023) cordon.cordon_progress(@floatFromInt(i + 1), times, null);
    }
    cordon.cordon_log(.info, "repeated %lu bytes %lu times", text.len, n);
    cordon.cordon_ok_text(res, cordon.cordon_buf_str(&out));
}
