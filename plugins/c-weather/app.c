/* c-weather: temperature conversion and current weather from an HTTP API, a Cordon plugin in C
 * (see plugins/c-sdk/cordon.h). The same two tools are written in every language the examples
 * cover (rust-weather, python-weather, js-weather, zig-weather); tests/e2e/languages.rs runs one
 * scenario against all of them.
 *   weather_convert  {"value": 100, "from_unit": "celsius", "to_unit": "fahrenheit"}
 *                    → {"value": 212, "unit": "fahrenheit"}; colder than absolute zero →
 *                    call-error `below_absolute_zero`
 *   weather_current  {"city": "Lisbon"} → GET <base_url>/v1/current?city=Lisbon through the
 *                    host's grants → {"city", "source", "weather": <the API's JSON>}
 * Setting: `base_url` ([plugins.NAME.config]). */
#include "cordon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define UNITS_ENUM "[\"celsius\",\"fahrenheit\",\"kelvin\"]"

void cordon_plugin_describe(void) {
    cordon_tool *convert = cordon_add_tool(
        "convert", "Convert a temperature",
        "Converts a temperature between celsius, fahrenheit and kelvin. Fails with "
        "`below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
        "{\"type\":\"object\",\"properties\":{"
        "\"value\":{\"type\":\"number\",\"description\":\"The temperature to convert.\"},"
        "\"from_unit\":{\"type\":\"string\",\"enum\":" UNITS_ENUM ",\"description\":\"The unit of `value`.\"},"
        "\"to_unit\":{\"type\":\"string\",\"enum\":" UNITS_ENUM ",\"description\":\"The unit to convert to.\"}},"
        "\"required\":[\"value\",\"from_unit\",\"to_unit\"],\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{"
        "\"value\":{\"type\":\"number\",\"description\":\"The temperature in the target unit, rounded to 2 decimals.\"},"
        "\"unit\":{\"type\":\"string\",\"enum\":" UNITS_ENUM ",\"description\":\"The target unit.\"}},"
        "\"required\":[\"value\",\"unit\"]}");
    cordon_tool_annotations(convert, 1, CORDON_UNSET, 1, 0);
    cordon_tool *current = cordon_add_tool(
        "current", "Current weather",
        "Fetches the current weather for a city from the weather API the operator configured "
        "(GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. Fails with "
        "`upstream_error` for a 4xx or 5xx status (retryable for 5xx), `egress_denied` when the "
        "operator has not granted the API, and `not_configured` when no base URL is set.",
        "{\"type\":\"object\",\"properties\":{"
        "\"city\":{\"type\":\"string\",\"minLength\":1,\"description\":\"The city, e.g. `Lisbon`.\"}},"
        "\"required\":[\"city\"],\"additionalProperties\":false}",
        NULL);
    cordon_tool_annotations(current, 1, CORDON_UNSET, CORDON_UNSET, 1);
}

typedef struct {
    const char *name;
    double absolute_zero;
} unit;

static const unit UNITS[] = {{"celsius", -273.15}, {"fahrenheit", -459.67}, {"kelvin", 0}};

static const unit *find_unit(const char *name) {
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcmp(UNITS[i].name, name) == 0) return &UNITS[i];
    return NULL;
}

static double to_kelvin(double v, const unit *u) {
    if (u == &UNITS[0]) return v + 273.15;
    if (u == &UNITS[1]) return (v - 32) * 5 / 9 + 273.15;
    return v;
}

static double from_kelvin(double k, const unit *u) {
    if (u == &UNITS[0]) return k - 273.15;
    if (u == &UNITS[1]) return (k - 273.15) * 9 / 5 + 32;
    return k;
}

static void convert(const cordon_request *req, cordon_result *res) {
    double value;
    char *from_name, *to_name;
    /* The host checked the arguments against the schema; this is a backstop. */
    if (!cordon_arg_number(req, "value", &value) || !cordon_arg_string(req, "from_unit", &from_name) ||
        !cordon_arg_string(req, "to_unit", &to_name)) {
        cordon_error(res, "invalid_arguments", "value, from_unit and to_unit are required", false);
        return;
    }
    const unit *from = find_unit(from_name), *to = find_unit(to_name);
    if (!from || !to) {
        cordon_error(res, "invalid_arguments", "units are celsius, fahrenheit or kelvin", false);
        return;
    }
    if (value < from->absolute_zero) {
        cordon_errorf(res, "below_absolute_zero", false, "%g %s is below absolute zero (%g %s)", value, from->name,
                      from->absolute_zero, from->name);
        return;
    }
    double result = round(from_kelvin(to_kelvin(value, from), to) * 100) / 100;
    cordon_buf json = {0};
    cordon_buf_printf(&json, "{\"value\":%.17g,\"unit\":", result);
    cordon_buf_json_string(&json, to->name);
    cordon_buf_printf(&json, "}");
    cordon_ok_json(res, cordon_buf_str(&json));
}

/* Percent-encodes everything but RFC 3986's unreserved characters. */
static void encode_component(cordon_buf *out, const char *text) {
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            cordon_buf_printf(out, "%c", *p);
        else
            cordon_buf_printf(out, "%%%02X", *p);
    }
}

static void current(const cordon_request *req, cordon_result *res) {
    char *city;
    if (!cordon_arg_string(req, "city", &city)) {
        cordon_error(res, "invalid_arguments", "city is required", false);
        return;
    }
    char *base = cordon_config("base_url");
    if (!base || (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)) {
        cordon_error(res, "not_configured",
                     "set `base_url` (http:// or https://) under `[plugins.c-weather.config]` in cordon.toml", false);
        return;
    }
    size_t base_len = strlen(base);
    while (base_len && base[base_len - 1] == '/') base[--base_len] = 0;

    cordon_buf url = {0};
    cordon_buf_printf(&url, "%s/v1/current?city=", base);
    encode_component(&url, city);
    cordon_log(CORDON_INFO, "%.*s asks for the weather in %s", (int)req->principal.len, req->principal.ptr, city);

    cordon_http_response response;
    if (!cordon_http_get(cordon_buf_str(&url), "application/json", &response)) {
        /* A refused request becomes `egress_denied` whatever is answered here. */
        cordon_errorf(res, "upstream_unreachable", true, "GET %s failed: %s", cordon_buf_str(&url), response.error);
        return;
    }
    if (response.status >= 400) {
        cordon_errorf(res, "upstream_error", response.status >= 500, "GET %s answered %d", cordon_buf_str(&url),
                      response.status);
        return;
    }
    cordon_buf json = {0};
    cordon_buf_printf(&json, "{\"city\":");
    cordon_buf_json_string(&json, city);
    cordon_buf_printf(&json, ",\"source\":");
    cordon_buf_json_string(&json, cordon_buf_str(&url));
    /* The body is passed through; the host rejects a result that is not JSON. */
    cordon_buf_printf(&json, ",\"weather\":%s}", response.body_len ? response.body : "null");
    cordon_ok_json(res, cordon_buf_str(&json));
}

void cordon_plugin_call(const cordon_request *req, cordon_result *res) {
    if (cordon_is_tool(req, "convert")) convert(req, res);
    else if (cordon_is_tool(req, "current")) current(req, res);
}
