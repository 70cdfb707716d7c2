/* The canonical ABI of `cordon:plugin@0.1.0` (wit/plugin.wit) for wasm32, by hand.
 *
 * Memory layouts (size, alignment 4 unless said):
 *   string / list          ptr@0 len@4                                   (8)
 *   option<string>         tag:u8@0 ptr@4 len@8                          (12)
 *   option<bool>           tag:u8@0 value:u8@1                           (2, align 1)
 *   tool-descriptor        name@0 title@8 description@20 input-schema@28
 *                          output-schema@36 annotations@48 (4 x option<bool>)  (56)
 *   tool-output            text@0 json@12                                (24)
 *   call-error             kind@0 message@8 retryable:u8@16              (20)
 *   result<output, error>  tag:u8@0 payload@4                            (28)
 * `describe` and `call` have more than one flat result, so they return a pointer to it; `call`'s
 * 11 flat parameters are passed directly. `config` returns option<string> through a pointer the
 * caller passes as its last parameter. */
#include "cordon.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define HOST_IMPORT(name) __attribute__((import_module("cordon:plugin/host@0.1.0"), import_name(name)))

HOST_IMPORT("log") extern void cordon_host_log(int32_t level, const char *ptr, size_t len);
HOST_IMPORT("config") extern void cordon_host_config(const char *ptr, size_t len, void *ret);
HOST_IMPORT("progress")
extern void cordon_host_progress(double done, int32_t has_total, double total, int32_t has_message,
                                 const char *ptr, size_t len);

static void *alloc(size_t size) {
    void *p = calloc(1, size ? size : 1);
    if (!p) abort();
    return p;
}

static char *dup_n(const char *s, size_t n) {
    char *out = alloc(n + 1);
    memcpy(out, s, n);
    return out;
}

static void put_u32(uint8_t *at, uint32_t v) { memcpy(at, &v, 4); }

static void put_string(uint8_t *at, const char *s) {
    put_u32(at, (uint32_t)(uintptr_t)s);
    put_u32(at + 4, (uint32_t)strlen(s));
}

static void put_option_string(uint8_t *at, const char *s) {
    if (!s) {
        at[0] = 0;
        return;
    }
    at[0] = 1;
    put_string(at + 4, s);
}

EXPORT("cabi_realloc")
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size); /* malloc aligns to 16 */
    if (!p) abort();
    return p;
}

/* --- describe ---------------------------------------------------------------------------- */

struct cordon_tool {
    const char *name, *title, *description, *input_schema, *output_schema;
    int annotations[4];
};

static cordon_tool *tools;
static size_t tool_count, tool_cap;

cordon_tool *cordon_add_tool(const char *name, const char *title, const char *description,
                             const char *input_schema, const char *output_schema) {
    if (tool_count == tool_cap) {
        tool_cap = tool_cap ? tool_cap * 2 : 8;
        tools = realloc(tools, tool_cap * sizeof *tools);
        if (!tools) abort();
    }
    cordon_tool *t = &tools[tool_count++];
    *t = (cordon_tool){name, title, description, input_schema, output_schema,
                       {CORDON_UNSET, CORDON_UNSET, CORDON_UNSET, CORDON_UNSET}};
    return t;
}

void cordon_tool_annotations(cordon_tool *t, int read_only, int destructive, int idempotent,
                             int open_world) {
    t->annotations[0] = read_only;
    t->annotations[1] = destructive;
    t->annotations[2] = idempotent;
    t->annotations[3] = open_world;
}

static _Alignas(8) uint8_t describe_ret[8];

EXPORT("cordon:plugin/tools@0.1.0#describe")
uint8_t *cordon_export_describe(void) {
    tool_count = 0;
    cordon_plugin_describe();
    uint8_t *list = alloc(tool_count * 56);
    for (size_t i = 0; i < tool_count; i++) {
        const cordon_tool *t = &tools[i];
        uint8_t *d = list + i * 56;
        put_string(d + 0, t->name);
        put_option_string(d + 8, t->title);
        put_string(d + 20, t->description);
        put_string(d + 28, t->input_schema);
        put_option_string(d + 36, t->output_schema);
        for (int a = 0; a < 4; a++) {
            int v = t->annotations[a];
            d[48 + 2 * a] = v == CORDON_UNSET ? 0 : 1;
            d[48 + 2 * a + 1] = v == 1;
        }
    }
    put_u32(describe_ret, (uint32_t)(uintptr_t)list);
    put_u32(describe_ret + 4, (uint32_t)tool_count);
    return describe_ret;
}

/* --- call -------------------------------------------------------------------------------- */

struct cordon_result {
    bool set, is_error;
    const char *text, *json;             /* ok */
    const char *kind, *message;          /* error */
    bool retryable;
};

static char *copy_or_null(const char *s) { return s ? dup_n(s, strlen(s)) : NULL; }

void cordon_ok(cordon_result *res, const char *text, const char *json) {
    *res = (cordon_result){.set = true, .text = copy_or_null(text), .json = copy_or_null(json)};
}
void cordon_ok_text(cordon_result *res, const char *text) { cordon_ok(res, text, NULL); }
void cordon_ok_json(cordon_result *res, const char *json) { cordon_ok(res, NULL, json); }

void cordon_error(cordon_result *res, const char *kind, const char *message, bool retryable) {
    *res = (cordon_result){.set = true,
                           .is_error = true,
                           .kind = copy_or_null(kind),
                           .message = copy_or_null(message),
                           .retryable = retryable};
}

static char *vformat(const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) n = 0;
    char *out = alloc((size_t)n + 1);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    return out;
}

void cordon_errorf(cordon_result *res, const char *kind, bool retryable, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *message = vformat(fmt, ap);
    va_end(ap);
    cordon_error(res, kind, message, retryable);
}

bool cordon_is_tool(const cordon_request *req, const char *name) {
    size_t n = strlen(name);
    return req->tool.len == n && memcmp(req->tool.ptr, name, n) == 0;
}

static _Alignas(8) uint8_t call_ret[28];

EXPORT("cordon:plugin/tools@0.1.0#call")
uint8_t *cordon_export_call(const char *tool, size_t tool_len, const char *args, size_t args_len,
                            const char *principal, size_t principal_len, const char *call_id,
                            size_t call_id_len, int32_t has_key, const char *key, size_t key_len) {
    cordon_request req = {
        .tool = {tool, tool_len},
        .arguments = {args, args_len},
        .principal = {principal, principal_len},
        .call_id = {call_id, call_id_len},
        .has_idempotency_key = has_key != 0,
        .idempotency_key = {has_key ? key : NULL, has_key ? key_len : 0},
    };
    cordon_result res = {0};
    cordon_plugin_call(&req, &res);
    if (!res.set) {
        cordon_errorf(&res, "unknown_tool", false, "this plugin has no tool %.*s", (int)tool_len, tool);
    }
    memset(call_ret, 0, sizeof call_ret);
    if (res.is_error) {
        call_ret[0] = 1;
        put_string(call_ret + 4, res.kind ? res.kind : "error");
        put_string(call_ret + 12, res.message ? res.message : "");
        call_ret[20] = res.retryable;
    } else {
        call_ret[0] = 0;
        put_option_string(call_ret + 4, res.text);
        put_option_string(call_ret + 16, res.json);
    }
    return call_ret;
}

/* --- arguments: a small JSON scanner over the top-level object ---------------------------- */

typedef struct {
    const char *p, *end;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (unsigned)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0);
    }
    return v;
}

static void put_utf8(cordon_buf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)),
        u[2] = (char)(0x80 | (cp >> 6 & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    cordon_buf_printf(b, "%.*s", (int)n, u);
}

/* Reads a string literal at s->p (which is '"'); into `out` when not NULL. */
static bool read_string(scan *s, cordon_buf *out) {
    if (s->p >= s->end || *s->p != '"') return false;
    s->p++;
    while (s->p < s->end && *s->p != '"') {
        char c = *s->p++;
        if (c != '\\') {
            if (out) cordon_buf_printf(out, "%c", c);
            continue;
        }
        if (s->p >= s->end) return false;
        char e = *s->p++;
        unsigned cp = 0;
        switch (e) {
        case 'n': cp = '\n'; break;
        case 't': cp = '\t'; break;
        case 'r': cp = '\r'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'u':
            if (s->end - s->p < 4) return false;
            cp = hex4(s->p);
            s->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u') {
                unsigned lo = hex4(s->p + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s->p += 6;
                }
            }
            break;
        default: cp = (unsigned char)e; break; /* \" \\ \/ */
        }
        if (out) put_utf8(out, cp);
    }
    if (s->p >= s->end) return false;
    s->p++;
    return true;
}

/* Skips any value. */
static bool skip_value(scan *s) {
    ws(s);
    if (s->p >= s->end) return false;
    if (*s->p == '"') return read_string(s, NULL);
    if (*s->p == '{' || *s->p == '[') {
        int depth = 0;
        while (s->p < s->end) {
            if (*s->p == '"') {
                if (!read_string(s, NULL)) return false;
                continue;
            }
            if (*s->p == '{' || *s->p == '[') depth++;
            if (*s->p == '}' || *s->p == ']') depth--;
            s->p++;
            if (depth == 0) return true;
        }
        return false;
    }
    while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']') s->p++;
    return true;
}

/* Positions s->p at the value of the top-level member `key`. */
static bool find_member(const cordon_request *req, const char *key, scan *s) {
    s->p = req->arguments.ptr;
    s->end = req->arguments.ptr + req->arguments.len;
    ws(s);
    if (s->p >= s->end || *s->p != '{') return false;
    s->p++;
    for (;;) {
        ws(s);
        if (s->p >= s->end || *s->p == '}') return false;
        cordon_buf name = {0};
        if (!read_string(s, &name)) return false;
        ws(s);
        if (s->p >= s->end || *s->p != ':') return false;
        s->p++;
        ws(s);
        if (strcmp(cordon_buf_str(&name), key) == 0) return true;
        if (!skip_value(s)) return false;
        ws(s);
        if (s->p < s->end && *s->p == ',') s->p++;
    }
}

bool cordon_arg_number(const cordon_request *req, const char *key, double *out) {
    scan s;
    if (!find_member(req, key, &s)) return false;
    if (s.p >= s.end || !(*s.p == '-' || (*s.p >= '0' && *s.p <= '9'))) return false;
    const char *start = s.p;
    skip_value(&s);
    char *text = dup_n(start, (size_t)(s.p - start));
    *out = strtod(text, NULL);
    return true;
}

bool cordon_arg_bool(const cordon_request *req, const char *key, bool *out) {
    scan s;
    if (!find_member(req, key, &s)) return false;
    if (s.end - s.p >= 4 && memcmp(s.p, "true", 4) == 0) return *out = true, true;
    if (s.end - s.p >= 5 && memcmp(s.p, "false", 5) == 0) return *out = false, true;
    return false;
}

bool cordon_arg_string(const cordon_request *req, const char *key, char **out) {
    scan s;
    if (!find_member(req, key, &s)) return false;
    cordon_buf b = {0};
    if (!read_string(&s, &b)) return false;
    *out = dup_n(cordon_buf_str(&b), b.len);
    return true;
}

/* --- buffers ----------------------------------------------------------------------------- */

static void reserve(cordon_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data) abort();
    b->cap = cap;
}

void cordon_buf_printf(cordon_buf *b, const char *fmt, ...) {
    va_list ap, copy;
    va_start(ap, fmt);
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n > 0) {
        reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        b->len += (size_t)n;
    }
    va_end(ap);
}

void cordon_buf_json_string(cordon_buf *b, const char *s) {
    cordon_buf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': cordon_buf_printf(b, "\\\""); break;
        case '\\': cordon_buf_printf(b, "\\\\"); break;
        case '\n': cordon_buf_printf(b, "\\n"); break;
        case '\r': cordon_buf_printf(b, "\\r"); break;
        case '\t': cordon_buf_printf(b, "\\t"); break;
        default:
            if (*p < 0x20) cordon_buf_printf(b, "\\u%04x", *p);
            else cordon_buf_printf(b, "%c", *p);
        }
    }
    cordon_buf_printf(b, "\"");
}

const char *cordon_buf_str(const cordon_buf *b) { return b->data ? b->data : ""; }

/* --- host functions ---------------------------------------------------------------------- */

void cordon_log(cordon_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *line = vformat(fmt, ap);
    va_end(ap);
    cordon_host_log((int32_t)level, line, strlen(line));
}

char *cordon_config(const char *key) {
    _Alignas(4) uint8_t ret[12];
    cordon_host_config(key, strlen(key), ret);
    if (ret[0] == 0) return NULL;
    uint32_t ptr, len;
    memcpy(&ptr, ret + 4, 4);
    memcpy(&len, ret + 8, 4);
    return dup_n((const char *)(uintptr_t)ptr, len);
}

void cordon_progress(double done, double total, const char *message) {
    cordon_host_progress(done, total >= 0 && !isnan(total), total < 0 || isnan(total) ? 0 : total,
                         message != NULL, message ? message : "", message ? strlen(message) : 0);
}

/* --- outbound HTTP through wasi:http@0.2.12 ------------------------------------------------
 * The host links `wasi:http/outgoing-handler` for every plugin and decides each request against
 * the operator's grants (a refused request fails here with HTTP-request-denied, and the call
 * then fails with `egress_denied`). wasi-libc is preview-1 only, so these are the component
 * imports lowered by hand. When the host wraps this core module it embeds a world that names
 * wasi:http; the component imports only what the module uses.
 *
 * Layouts used below (wasm32):
 *   result<own<T>> / result<own<T>, ()>      tag:u8@0 handle@4                          (8)
 *   result<_, header-error>                  tag:u8@0 error:u8@1                         (2)
 *   result<_, stream-error>                  tag:u8@0 stream-error tag:u8@4 handle@8     (12)
 *   result<list<u8>, stream-error>           tag:u8@0 ptr@4 len@8 | stream-error@4       (12)
 *   error-code                               tag:u8@0 payload@8  (align 8: option<u64>)
 *   result<own<T>, error-code>               tag:u8@0 handle@8 | error-code@8
 *   result<_, error-code>                    tag:u8@0 error-code@8
 *   option<result<result<own<T>, error-code>, ()>>
 *                                            tag@0, result tag@8, inner tag@16,
 *                                            handle@24 | error-code@24
 * Return areas are given 64 bytes, aligned 8: more than any of these. */

#define HTTP_TYPES(name) __attribute__((import_module("wasi:http/types@0.2.12"), import_name(name)))
#define HTTP_HANDLER(name) __attribute__((import_module("wasi:http/outgoing-handler@0.2.12"), import_name(name)))
#define IO_STREAMS(name) __attribute__((import_module("wasi:io/streams@0.2.12"), import_name(name)))
#define IO_POLL(name) __attribute__((import_module("wasi:io/poll@0.2.12"), import_name(name)))

HTTP_TYPES("[constructor]fields") extern int32_t wasi_fields_new(void);
HTTP_TYPES("[method]fields.append")
extern void wasi_fields_append(int32_t fields, const char *name, size_t name_len, const char *value,
                               size_t value_len, void *ret);
HTTP_TYPES("[constructor]outgoing-request") extern int32_t wasi_outgoing_request_new(int32_t headers);
HTTP_TYPES("[method]outgoing-request.set-method")
extern int32_t wasi_request_set_method(int32_t request, int32_t tag, const char *other, size_t other_len);
HTTP_TYPES("[method]outgoing-request.set-scheme")
extern int32_t wasi_request_set_scheme(int32_t request, int32_t is_some, int32_t tag, const char *other,
                                       size_t other_len);
HTTP_TYPES("[method]outgoing-request.set-authority")
extern int32_t wasi_request_set_authority(int32_t request, int32_t is_some, const char *ptr, size_t len);
HTTP_TYPES("[method]outgoing-request.set-path-with-query")
extern int32_t wasi_request_set_path_with_query(int32_t request, int32_t is_some, const char *ptr, size_t len);
HTTP_TYPES("[method]outgoing-request.body") extern void wasi_request_body(int32_t request, void *ret);
HTTP_TYPES("[method]outgoing-body.write") extern void wasi_outgoing_body_write(int32_t body, void *ret);
HTTP_TYPES("[static]outgoing-body.finish")
extern void wasi_outgoing_body_finish(int32_t body, int32_t has_trailers, int32_t trailers, void *ret);
HTTP_TYPES("[method]future-incoming-response.subscribe") extern int32_t wasi_future_response_subscribe(int32_t future);
HTTP_TYPES("[method]future-incoming-response.get") extern void wasi_future_response_get(int32_t future, void *ret);
HTTP_TYPES("[method]incoming-response.status") extern int32_t wasi_response_status(int32_t response);
HTTP_TYPES("[method]incoming-response.consume") extern void wasi_response_consume(int32_t response, void *ret);
HTTP_TYPES("[method]incoming-body.stream") extern void wasi_incoming_body_stream(int32_t body, void *ret);
HTTP_HANDLER("handle")
extern void wasi_outgoing_handle(int32_t request, int32_t has_options, int32_t options, void *ret);
IO_STREAMS("[method]output-stream.blocking-write-and-flush")
extern void wasi_output_write(int32_t stream, const uint8_t *ptr, size_t len, void *ret);
IO_STREAMS("[method]input-stream.blocking-read")
extern void wasi_input_read(int32_t stream, uint64_t len, void *ret);
IO_STREAMS("[resource-drop]output-stream") extern void wasi_output_stream_drop(int32_t stream);
IO_POLL("[method]pollable.block") extern void wasi_pollable_block(int32_t pollable);
IO_POLL("[resource-drop]pollable") extern void wasi_pollable_drop(int32_t pollable);

/* wasi:http/types error-code, by case index. */
static const char *const ERROR_CODES[] = {
    "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
    "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout", "connection-read-timeout", "connection-write-timeout",
    "connection-limit-reached", "TLS-protocol-error", "TLS-certificate-error", "TLS-alert-received",
    "HTTP-request-denied", "HTTP-request-length-required", "HTTP-request-body-size",
    "HTTP-request-method-invalid", "HTTP-request-URI-invalid", "HTTP-request-URI-too-long",
    "HTTP-request-header-section-size", "HTTP-request-header-size", "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size", "HTTP-response-incomplete", "HTTP-response-header-section-size",
    "HTTP-response-header-size", "HTTP-response-body-size", "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size", "HTTP-response-transfer-coding", "HTTP-response-content-coding",
    "HTTP-response-timeout", "HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected",
    "configuration-error", "internal-error",
};

static const char *error_code_name(const uint8_t *error_code) {
    uint8_t tag = error_code[0];
    return tag < sizeof ERROR_CODES / sizeof ERROR_CODES[0] ? ERROR_CODES[tag] : "internal-error";
}

static bool http_fail(cordon_http_response *out, const char *why) {
    out->status = 0;
    out->error = why;
    return false;
}

/* wasi:http/types `method`, by case index; anything else is `other(string)`. */
static int32_t method_tag(const char *method) {
    static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (int32_t i = 0; i < (int32_t)(sizeof METHODS / sizeof METHODS[0]); i++)
        if (strcmp(method, METHODS[i]) == 0) return i;
    return 9;
}

bool cordon_http_request(const char *method, const char *url, const char *const *headers, const char *body,
                         size_t body_len, cordon_http_response *out) {
    static _Alignas(8) uint8_t ret[64];
    memset(out, 0, sizeof *out);

    /* scheme://authority/path?query */
    int32_t scheme;
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        scheme = 0;
        rest = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        scheme = 1;
        rest = url + 8;
    } else {
        return http_fail(out, "HTTP-request-URI-invalid");
    }
    size_t authority_len = strcspn(rest, "/?#");
    if (authority_len == 0) return http_fail(out, "HTTP-request-URI-invalid");
    const char *path = rest + authority_len;
    size_t path_len = strcspn(path, "#");
    if (path_len == 0) {
        path = "/";
        path_len = 1;
    }

    int32_t fields = wasi_fields_new();
    for (const char *const *h = headers; h && h[0] && h[1]; h += 2) {
        wasi_fields_append(fields, h[0], strlen(h[0]), h[1], strlen(h[1]), ret);
        if (ret[0] != 0) return http_fail(out, "invalid-header");
    }
    int32_t request = wasi_outgoing_request_new(fields);
    int32_t tag = method_tag(method);
    if (wasi_request_set_method(request, tag, method, tag == 9 ? strlen(method) : 0) != 0 ||
        wasi_request_set_scheme(request, 1, scheme, NULL, 0) != 0 ||
        wasi_request_set_authority(request, 1, rest, authority_len) != 0 ||
        wasi_request_set_path_with_query(request, 1, path, path_len) != 0)
        return http_fail(out, "HTTP-request-URI-invalid");

    /* The body is taken before the request is handed over, written after. */
    int32_t outgoing_body = -1;
    if (body) {
        wasi_request_body(request, ret);
        if (ret[0] != 0) return http_fail(out, "internal-error");
        memcpy(&outgoing_body, ret + 4, 4);
    }

    wasi_outgoing_handle(request, 0, 0, ret);
    if (ret[0] != 0) return http_fail(out, error_code_name(ret + 8));
    int32_t future;
    memcpy(&future, ret + 8, 4);

    if (body) {
        wasi_outgoing_body_write(outgoing_body, ret);
        if (ret[0] != 0) return http_fail(out, "internal-error");
        int32_t stream;
        memcpy(&stream, ret + 4, 4);
        /* blocking-write-and-flush takes at most 4096 bytes at a time. */
        for (size_t at = 0; at < body_len;) {
            size_t n = body_len - at < 4096 ? body_len - at : 4096;
            wasi_output_write(stream, (const uint8_t *)body + at, n, ret);
            if (ret[0] != 0) return http_fail(out, "connection-terminated");
            at += n;
        }
        /* The stream is a child of the body: it goes before the body is finished. */
        wasi_output_stream_drop(stream);
        wasi_outgoing_body_finish(outgoing_body, 0, 0, ret);
        if (ret[0] != 0) return http_fail(out, error_code_name(ret + 8));
    }

    int32_t pollable = wasi_future_response_subscribe(future);
    wasi_pollable_block(pollable);
    wasi_pollable_drop(pollable);
    wasi_future_response_get(future, ret);
    if (ret[0] == 0 || ret[8] != 0) return http_fail(out, "internal-error");
    if (ret[16] != 0) return http_fail(out, error_code_name(ret + 24));
    int32_t response;
    memcpy(&response, ret + 24, 4);
    out->status = wasi_response_status(response) & 0xffff;

    wasi_response_consume(response, ret);
    if (ret[0] != 0) return http_fail(out, "internal-error");
    int32_t incoming_body;
    memcpy(&incoming_body, ret + 4, 4);
    wasi_incoming_body_stream(incoming_body, ret);
    if (ret[0] != 0) return http_fail(out, "internal-error");
    int32_t input;
    memcpy(&input, ret + 4, 4);

    cordon_buf received = {0};
    reserve(&received, 0);
    received.data[0] = 0;
    for (;;) {
        wasi_input_read(input, 65536, ret);
        if (ret[0] != 0) {
            if (ret[4] == 1) break; /* closed: the whole body has arrived */
            out->body = received.data;
            out->body_len = received.len;
            return http_fail(out, "HTTP-response-incomplete");
        }
        uint32_t ptr, len;
        memcpy(&ptr, ret + 4, 4);
        memcpy(&len, ret + 8, 4);
        reserve(&received, len);
        memcpy(received.data + received.len, (const void *)(uintptr_t)ptr, len);
        received.len += len;
        received.data[received.len] = 0;
        if (len) free((void *)(uintptr_t)ptr); /* the host allocated it with cabi_realloc */
    }
    out->body = received.data;
    out->body_len = received.len;
    return true;
}

bool cordon_http_get(const char *url, const char *accept, cordon_http_response *out) {
    const char *headers[] = {"accept", accept, NULL, NULL};
    return cordon_http_request("GET", url, accept ? headers : NULL, NULL, 0, out);
}
