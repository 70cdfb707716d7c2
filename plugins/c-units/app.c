/* c-units: unit conversion, a Cordon plugin in C (see plugins/c-sdk/cordon.h).
 *   units_convert  {"value": 3, "from": "mi", "to": "km"}  → {"value": 4.828032, "unit": "km"}
 *                  incompatible or unknown units → call-error `incompatible_units` / `unknown_unit`
 *   units_list     the units it knows, as text
 * Setting: `digits` ([plugins.NAME.config]), significant digits of the result (default 12). */
#include "cordon.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *dimension;
    double factor; /* to the dimension's base unit (m, kg, s); temperatures use offsets below */
    double offset;
} unit;

static const unit UNITS[] = {
    {"mm", "length", 0.001, 0},      {"cm", "length", 0.01, 0},       {"m", "length", 1, 0},
    {"km", "length", 1000, 0},       {"in", "length", 0.0254, 0},     {"ft", "length", 0.3048, 0},
    {"yd", "length", 0.9144, 0},     {"mi", "length", 1609.344, 0},   {"g", "mass", 0.001, 0},
    {"kg", "mass", 1, 0},            {"lb", "mass", 0.45359237, 0},   {"oz", "mass", 0.028349523125, 0},
    {"s", "time", 1, 0},             {"min", "time", 60, 0},          {"h", "time", 3600, 0},
    {"K", "temperature", 1, 0},      {"C", "temperature", 1, 273.15}, {"F", "temperature", 5.0 / 9, 255.3722222222222},
};
#define UNIT_COUNT (sizeof UNITS / sizeof UNITS[0])

static const unit *find_unit(const char *name) {
    for (size_t i = 0; i < UNIT_COUNT; i++)
        if (strcmp(UNITS[i].name, name) == 0) return &UNITS[i];
    return NULL;
}

void cordon_plugin_describe(void) {
    cordon_tool *convert = cordon_add_tool(
        "convert", "Convert units",
        "Converts a value between units of the same dimension (length, mass, time, temperature).",
        "{\"type\":\"object\",\"properties\":{"
        "\"value\":{\"type\":\"number\"},"
        "\"from\":{\"type\":\"string\",\"description\":\"unit symbol, such as km or F\"},"
        "\"to\":{\"type\":\"string\"}},"
        "\"required\":[\"value\",\"from\",\"to\"],\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"number\"},\"unit\":{\"type\":\"string\"}},"
        "\"required\":[\"value\",\"unit\"]}");
    cordon_tool_annotations(convert, 1, 0, 1, 0);
    cordon_tool *list = cordon_add_tool("list", NULL, "Lists the unit symbols this tool knows, by dimension.",
                                        "{\"type\":\"object\",\"properties\":{}}", NULL);
    cordon_tool_annotations(list, 1, 0, 1, 0);
}

static void convert(const cordon_request *req, cordon_result *res) {
    double value;
    char *from_name, *to_name;
    if (!cordon_arg_number(req, "value", &value) || !cordon_arg_string(req, "from", &from_name) ||
        !cordon_arg_string(req, "to", &to_name)) {
        cordon_error(res, "invalid_arguments", "value, from and to are required", false);
        return;
    }
    const unit *from = find_unit(from_name), *to = find_unit(to_name);
    if (!from || !to) {
        cordon_errorf(res, "unknown_unit", false, "unknown unit %s (units_list shows the known ones)",
                      from ? to_name : from_name);
        return;
    }
    if (strcmp(from->dimension, to->dimension) != 0) {
        cordon_errorf(res, "incompatible_units", false, "cannot convert %s (%s) to %s (%s)", from->name,
                      from->dimension, to->name, to->dimension);
        return;
    }
    double base = value * from->factor + from->offset;
    double result = (base - to->offset) / to->factor;
    cordon_log(CORDON_INFO, "convert %g %s to %s", value, from->name, to->name);
    const char *setting = cordon_config("digits");
    int digits = setting ? atoi(setting) : 12;
    if (digits < 1 || digits > 17) digits = 12;
    cordon_buf json = {0}, text = {0};
    cordon_buf_printf(&json, "{\"value\":%.*g,\"unit\":", digits, result);
    cordon_buf_json_string(&json, to->name);
    cordon_buf_printf(&json, "}");
    cordon_buf_printf(&text, "%g %s = %.*g %s", value, from->name, digits, result, to->name);
    cordon_ok(res, cordon_buf_str(&text), cordon_buf_str(&json));
}

static void list(cordon_result *res) {
    cordon_buf text = {0};
    const char *dimension = NULL;
    for (size_t i = 0; i < UNIT_COUNT; i++) {
        if (!dimension || strcmp(dimension, UNITS[i].dimension) != 0) {
            dimension = UNITS[i].dimension;
            cordon_buf_printf(&text, "%s%s:", i ? "\n" : "", dimension);
        }
        cordon_buf_printf(&text, " %s", UNITS[i].name);
    }
    cordon_ok_text(res, cordon_buf_str(&text));
}

void cordon_plugin_call(const cordon_request *req, cordon_result *res) {
    if (cordon_is_tool(req, "convert")) convert(req, res);
    else if (cordon_is_tool(req, "list")) list(res);
    /* any other name: the SDK answers `unknown_tool` */
}
