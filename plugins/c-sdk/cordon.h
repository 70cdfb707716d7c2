/* Cordon plugin SDK for C (and Zig, through @cImport): write a `cordon:plugin@0.1.0` plugin as a
 * WASI preview-1 core module without generated bindings. cordon.c implements the canonical-ABI
 * exports (`cordon:plugin/tools@0.1.0#describe`, `#call`, `cabi_realloc`) and the host imports;
 * a plugin defines two functions:
 *
 *     void cordon_plugin_describe(void);       // calls cordon_add_tool() once per tool
 *     void cordon_plugin_call(const cordon_request *req, cordon_result *res);
 *
 * and sets the result with cordon_ok_text / cordon_ok_json / cordon_ok / cordon_error.
 * Build (wasi-libc): clang --target=wasm32-wasi -O2 -mexec-model=reactor app.c cordon.c -o x.wasm
 * The host wraps the core module into a component when it loads it (or `cordon wrap`).
 *
 * Each call runs in a fresh instance, so nothing here is ever freed: allocate freely. */
#ifndef CORDON_H
#define CORDON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A byte string that is not NUL-terminated (as the host passes it). */
typedef struct {
    const char *ptr;
    size_t len;
} cordon_str;

/* One tool call. `arguments` is a JSON object the host has already checked against the input
 * schema. */
typedef struct {
    cordon_str tool;
    cordon_str arguments;
    cordon_str principal;
    cordon_str call_id;
    bool has_idempotency_key;
    cordon_str idempotency_key;
} cordon_request;

typedef struct cordon_result cordon_result;
typedef struct cordon_tool cordon_tool;

/* Implemented by the plugin. */
void cordon_plugin_describe(void);
void cordon_plugin_call(const cordon_request *req, cordon_result *res);

/* --- describe ---------------------------------------------------------------------------- */

/* Adds a tool. `title` and `output_schema` may be NULL. Strings must outlive the call (string
 * literals do). */
cordon_tool *cordon_add_tool(const char *name, const char *title, const char *description,
                             const char *input_schema, const char *output_schema);

/* Annotations: CORDON_UNSET (the default), 0 or 1. */
#define CORDON_UNSET (-1)
void cordon_tool_annotations(cordon_tool *tool, int read_only, int destructive, int idempotent,
                             int open_world);

/* --- results ----------------------------------------------------------------------------- */

/* Success with text, JSON (serialized), or both; either may be NULL. The strings are copied. */
void cordon_ok(cordon_result *res, const char *text, const char *json);
void cordon_ok_text(cordon_result *res, const char *text);
void cordon_ok_json(cordon_result *res, const char *json);
/* A typed failure (`call-error`): kind such as "not_found", a message, whether to retry. */
void cordon_error(cordon_result *res, const char *kind, const char *message, bool retryable);
/* The same with a printf-style message. */
void cordon_errorf(cordon_result *res, const char *kind, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* True when the request is for the tool `name`. */
bool cordon_is_tool(const cordon_request *req, const char *name);

/* --- arguments (top-level members of the arguments object) ------------------------------- */

/* Each returns false when the member is absent or of another JSON type. */
bool cordon_arg_number(const cordon_request *req, const char *key, double *out);
bool cordon_arg_bool(const cordon_request *req, const char *key, bool *out);
/* A NUL-terminated, unescaped copy (UTF-8) of a string member. */
bool cordon_arg_string(const cordon_request *req, const char *key, char **out);

/* --- building JSON or text --------------------------------------------------------------- */

/* A growable, always NUL-terminated buffer. Start with `cordon_buf b = {0};`. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} cordon_buf;

void cordon_buf_printf(cordon_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` as a JSON string literal, quotes included. */
void cordon_buf_json_string(cordon_buf *buf, const char *s);
/* The contents ("" when empty). */
const char *cordon_buf_str(const cordon_buf *buf);

/* --- host functions ---------------------------------------------------------------------- */

typedef enum {
    CORDON_TRACE = 0,
    CORDON_DEBUG = 1,
    CORDON_INFO = 2,
    CORDON_WARN = 3,
    CORDON_ERROR = 4,
} cordon_log_level;

/* A line in the host's log (and to the MCP client when it asked for log messages). */
void cordon_log(cordon_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An operator setting ([plugins.NAME.config]), NUL-terminated, or NULL when not set. */
char *cordon_config(const char *key);
/* Progress: `done` out of `total` (pass a negative total when unknown); message may be NULL. */
void cordon_progress(double done, double total, const char *message);

/* --- outbound HTTP (wasi:http, through the host's grants) -------------------------------- */

/* What came back. `error` is NULL when a response arrived (whatever its status); otherwise it
 * names why not, as a wasi:http error-code such as "HTTP-request-denied" (no grant covers the
 * URL: the call then fails with `egress_denied` whatever the plugin answers) or
 * "connection-refused". */
typedef struct {
    int status;
    char *body; /* NUL-terminated (the body may itself hold NULs: use body_len) */
    size_t body_len;
    const char *error;
} cordon_http_response;

/* Sends a request and reads the whole response. `headers` is NULL or a NULL-terminated list of
 * name, value pairs: {"accept", "application/json", NULL}. `body` is NULL for none. Returns true
 * when a response arrived. Credentials the operator configured are attached by the host. */
bool cordon_http_request(const char *method, const char *url, const char *const *headers, const char *body,
                         size_t body_len, cordon_http_response *out);
/* A GET with an optional `accept` header. */
bool cordon_http_get(const char *url, const char *accept, cordon_http_response *out);

#ifdef __cplusplus
}
#endif

#endif
