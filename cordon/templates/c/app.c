/* {{name}}: a Cordon plugin in C.
 *
 * Build with `make` (clang with wasi-libc: on Debian, apt-get install clang lld wasi-libc
 * libclang-rt-dev-wasm32), then copy {{name}}.wasm into Cordon's plugins folder: the tool is served
 * as {{prefix}}_hello. It builds a WASI preview-1 core module; Cordon wraps it into a component when
 * it loads it. cordon.h documents the helper: describe the tools, read arguments, answer. */
#include "cordon.h"

#include <string.h>

void cordon_plugin_describe(void) {
    cordon_tool *hello = cordon_add_tool(
        "hello", "Say hello", "Greets someone by name. Fails with `empty_name` when the name is blank.",
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"description\":\"Who to greet.\"}},"
        "\"required\":[\"name\"],\"additionalProperties\":false}",
        NULL);
    cordon_tool_annotations(hello, 1, 0, 1, 0);
}

void cordon_plugin_call(const cordon_request *req, cordon_result *res) {
    if (!cordon_is_tool(req, "hello")) return; /* the helper answers `unknown_tool` */
    char *name;
    if (!cordon_arg_string(req, "name", &name)) {
        cordon_error(res, "invalid_arguments", "name is required", false);
        return;
    }
    while (*name == ' ') name++;
    size_t len = strlen(name);
    while (len > 0 && name[len - 1] == ' ') name[--len] = '\0';
    if (len == 0) {
        cordon_error(res, "empty_name", "the name is blank", false);
        return;
    }
    cordon_log(CORDON_INFO, "greeting %s", name);
    cordon_buf text = {0};
    cordon_buf_printf(&text, "Hello, %s!", name);
    cordon_ok_text(res, cordon_buf_str(&text));
}
