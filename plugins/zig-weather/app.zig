//! zig-weather: temperature conversion and current weather from an HTTP API, a Cordon plugin in
//! Zig on the C SDK (plugins/c-sdk/cordon.zig). The same two tools are written in every language
//! the examples cover (rust-weather, python-weather, js-weather, c-weather);
//! tests/e2e/languages.rs runs one scenario against all of them.
//!   weather_convert  {"value": 100, "from_unit": "celsius", "to_unit": "fahrenheit"} → {"value": 212, "unit": "fahrenheit"}
//!   weather_current  {"city": "Lisbon"} → GET <base_url>/v1/current?city=Lisbon through the host's grants
//! Setting: `base_url` ([plugins.NAME.config]).
const std = @import("std");
const cordon = @import("cordon");

const units_enum = "[\"celsius\",\"fahrenheit\",\"kelvin\"]";

export fn cordon_plugin_describe() void {
    const convert_tool = cordon.cordon_add_tool(
        "convert",
        "Convert a temperature",
        "Converts a temperature between celsius, fahrenheit and kelvin. Fails with " ++
            "`below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
        "{\"type\":\"object\",\"properties\":{" ++
            "\"value\":{\"type\":\"number\",\"description\":\"The temperature to convert.\"}," ++
            "\"from_unit\":{\"type\":\"string\",\"enum\":" ++ units_enum ++ ",\"description\":\"The unit of `value`.\"}," ++
            "\"to_unit\":{\"type\":\"string\",\"enum\":" ++ units_enum ++ ",\"description\":\"The unit to convert to.\"}}," ++
            "\"required\":[\"value\",\"from_unit\",\"to_unit\"],\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{" ++
            "\"value\":{\"type\":\"number\",\"description\":\"The temperature in the target unit, rounded to 2 decimals.\"}," ++
            "\"unit\":{\"type\":\"string\",\"enum\":" ++ units_enum ++ ",\"description\":\"The target unit.\"}}," ++
            "\"required\":[\"value\",\"unit\"]}",
    );
    cordon.cordon_tool_annotations(convert_tool, 1, cordon.UNSET, 1, 0);
    const current_tool = cordon.cordon_add_tool(
        "current",
        "Current weather",
        "Fetches the current weather for a city from the weather API the operator configured " ++
            "(GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. Fails with " ++
            "`upstream_error` for a 4xx or 5xx status (retryable for 5xx), `egress_denied` when the " ++
            "operator has not granted the API, and `not_configured` when no base URL is set.",
        "{\"type\":\"object\",\"properties\":{" ++
            "\"city\":{\"type\":\"string\",\"minLength\":1,\"description\":\"The city, e.g. `Lisbon`.\"}}," ++
            "\"required\":[\"city\"],\"additionalProperties\":false}",
        null,
    );
    cordon.cordon_tool_annotations(current_tool, 1, cordon.UNSET, cordon.UNSET, 1);
}

export fn cordon_plugin_call(req: *const cordon.Request, res: *cordon.Result) void {
    if (cordon.cordon_is_tool(req, "convert")) {
        convert(req, res);
    } else if (cordon.cordon_is_tool(req, "current")) {
        current(req, res);
    }
    // Any other name: the SDK answers `unknown_tool`.
}

const Unit = enum { celsius, fahrenheit, kelvin };

fn absoluteZero(unit: Unit) f64 {
    return switch (unit) {
        .celsius => -273.15,
        .fahrenheit => -459.67,
        .kelvin => 0,
    };
}

fn toKelvin(value: f64, unit: Unit) f64 {
    return switch (unit) {
        .celsius => value + 273.15,
        .fahrenheit => (value - 32) * 5 / 9 + 273.15,
        .kelvin => value,
    };
}

fn fromKelvin(kelvin: f64, unit: Unit) f64 {
    return switch (unit) {
        .celsius => kelvin - 273.15,
        .fahrenheit => (kelvin - 273.15) * 9 / 5 + 32,
        .kelvin => kelvin,
    };
}

fn argUnit(req: *const cordon.Request, key: [*:0]const u8) ?Unit {
    var raw: [*:0]u8 = undefined;
    if (!cordon.cordon_arg_string(req, key, &raw)) return null;
    return std.meta.stringToEnum(Unit, std.mem.span(raw));
}

fn convert(req: *const cordon.Request, res: *cordon.Result) void {
    var value: f64 = 0;
    // The host checked the arguments against the schema; this is a backstop.
    const from = argUnit(req, "from_unit");
    const to = argUnit(req, "to_unit");
    if (!cordon.cordon_arg_number(req, "value", &value) or from == null or to == null) {
        return cordon.cordon_error(res, "invalid_arguments", "value, from_unit and to_unit (celsius, fahrenheit or kelvin) are required", false);
    }
    const zero = absoluteZero(from.?);
    if (value < zero) {
        const name: [*:0]const u8 = @tagName(from.?);
        return cordon.cordon_errorf(res, "below_absolute_zero", false, "%g %s is below absolute zero (%g %s)", value, name, zero, name);
    }
    const result = @round(fromKelvin(toKelvin(value, from.?), to.?) * 100) / 100;
    var json: cordon.Buf = .{};
    cordon.cordon_buf_printf(&json, "{\"value\":%.17g,\"unit\":\"%s\"}", result, @as([*:0]const u8, @tagName(to.?)));
    cordon.cordon_ok_json(res, cordon.cordon_buf_str(&json));
}

fn current(req: *const cordon.Request, res: *cordon.Result) void {
    var city: [*:0]u8 = undefined;
    if (!cordon.cordon_arg_string(req, "city", &city)) {
        return cordon.cordon_error(res, "invalid_arguments", "city is required", false);
    }
    const configured = cordon.cordon_config("base_url") orelse "";
    var base: []const u8 = std.mem.span(configured);
    if (!std.mem.startsWith(u8, base, "http://") and !std.mem.startsWith(u8, base, "https://")) {
        return cordon.cordon_error(res, "not_configured", "set `base_url` (http:// or https://) under `[plugins.zig-weather.config]` in cordon.toml", false);
    }
    base = std.mem.trimEnd(u8, base, "/");

    var url: cordon.Buf = .{};
    cordon.cordon_buf_printf(&url, "%.*s/v1/current?city=", @as(c_int, @intCast(base.len)), base.ptr);
    // Percent-encodes everything but RFC 3986's unreserved characters.
    for (std.mem.span(city)) |b| {
        if (std.ascii.isAlphanumeric(b) or b == '-' or b == '.' or b == '_' or b == '~') {
            cordon.cordon_buf_printf(&url, "%c", @as(c_int, b));
        } else {
            cordon.cordon_buf_printf(&url, "%%%02X", @as(c_uint, b));
        }
    }
    const principal = req.principal.slice();
    cordon.cordon_log(.info, "%.*s asks for the weather in %s", @as(c_int, @intCast(principal.len)), principal.ptr, city);

    var response: cordon.HttpResponse = .{};
    if (!cordon.cordon_http_get(cordon.cordon_buf_str(&url), "application/json", &response)) {
        // A refused request becomes `egress_denied` whatever is answered here.
        return cordon.cordon_errorf(res, "upstream_unreachable", true, "GET %s failed: %s", cordon.cordon_buf_str(&url), response.err orelse "unknown");
    }
    if (response.status >= 400) {
        return cordon.cordon_errorf(res, "upstream_error", response.status >= 500, "GET %s answered %d", cordon.cordon_buf_str(&url), response.status);
    }
    var json: cordon.Buf = .{};
    cordon.cordon_buf_printf(&json, "{\"city\":");
    cordon.cordon_buf_json_string(&json, city);
    cordon.cordon_buf_printf(&json, ",\"source\":");
    cordon.cordon_buf_json_string(&json, cordon.cordon_buf_str(&url));
    // The body is passed through; the host rejects a result that is not JSON.
    const body: [*:0]const u8 = if (response.body_len > 0) response.body.? else "null";
    cordon.cordon_buf_printf(&json, ",\"weather\":%s}", body);
    cordon.cordon_ok_json(res, cordon.cordon_buf_str(&json));
}
