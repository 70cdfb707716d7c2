// Write Cordon tools in JavaScript.
//
// A plugin is an ES module built by componentize-js (SpiderMonkey, through StarlingMonkey)
// against the world `cordon:plugin/plugin` (`wit/plugin.wit`). It registers tools with
// `tool(...)` and re-exports `tools`, the object componentize-js implements the exported
// `cordon:plugin/tools` interface with:
//
//     import { tool, ToolError, tools } from "../js-sdk/cordon.js";
//     export { tools };
//
//     tool({
//         name: "echo",
//         description: "Returns the text it was given, unchanged. Use it to test the connection.",
//         inputSchema: {
//             type: "object",
//             properties: { text: { type: "string", description: "The text to send back." } },
//             required: ["text"],
//         },
//     }, ({ text }) => ({ text }));
//
// A handler (sync or async) gets the arguments, already validated by the host against
// `inputSchema`, and the call's context `{ principal, callId, idempotencyKey }`. It returns an
// object (structured output), a string (text only) or any other JSON value (sent as text), and
// fails with `throw new ToolError(kind, message, { retryable })`. `config(key)` reads the
// operator's settings, `log.info(...)` writes to the host's log, and `http.get(url)` (or the
// standard `fetch`) sends an outbound request through the host (`wasi:http`), which refuses what
// the operator has not granted.

import { config as hostConfig, log as hostLog } from "cordon:plugin/host@0.1.0";

// ---- errors ------------------------------------------------------------------------------------

export const INVALID_ARGUMENTS = "invalid_arguments";
export const UNKNOWN_TOOL = "unknown_tool";
export const INTERNAL = "internal";
export const EGRESS_DENIED = "egress_denied";
export const UPSTREAM_UNREACHABLE = "upstream_unreachable";
export const UPSTREAM_ERROR = "upstream_error";
export const INVALID_RESPONSE = "invalid_response";

/** A typed failure reported to the caller (the WIT `call-error`). */
export class ToolError extends Error {
    /**
     * @param {string} kind machine-readable snake_case, such as `not_found`
     * @param {string} message for people
     * @param {{retryable?: boolean}} [options] whether the same call may succeed later
     */
    constructor(kind, message, options = {}) {
        super(`${kind}: ${message}`);
        this.kind = kind;
        this.detail = message;
        this.retryable = Boolean(options.retryable);
    }
}

// ---- host functions ----------------------------------------------------------------------------

/** The operator's setting `key` (`[plugins.NAME.config]` in cordon.toml), or `fallback`. */
export function config(key, fallback = null) {
    const value = hostConfig(key);
    return value === null || value === undefined ? fallback : value;
}

/** Lines for the host's log, tagged by the host with the plugin and the call id. */
export const log = Object.freeze({
    trace: (message) => hostLog("trace", String(message)),
    debug: (message) => hostLog("debug", String(message)),
    info: (message) => hostLog("info", String(message)),
    warn: (message) => hostLog("warn", String(message)),
    error: (message) => hostLog("error", String(message)),
});

// ---- the registry ------------------------------------------------------------------------------

const registry = new Map();
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * Registers a tool.
 *
 * @param {object} spec `{ name, description, inputSchema, outputSchema?, title?, readOnly?,
 *     destructive?, idempotent?, openWorld? }`; `inputSchema` is a JSON Schema object
 *     (`additionalProperties: false` is added when it lists properties and says nothing about
 *     extras, as the host does).
 * @param {(args: object, cx: {principal: string, callId: string, idempotencyKey: string|null}) => any} handler
 */
export function tool(spec, handler) {
    const { name, description, inputSchema, outputSchema = null, title = null } = spec;
    if (typeof name !== "string" || !NAME.test(name)) throw new TypeError(`invalid tool name ${JSON.stringify(name)}`);
    if (registry.has(name)) throw new TypeError(`two tools are named ${JSON.stringify(name)}`);
    if (typeof description !== "string") throw new TypeError(`tool ${name}: a description is required`);
    if (typeof handler !== "function") throw new TypeError(`tool ${name}: the handler must be a function`);
    const input = inputSchema ?? { type: "object", properties: {} };
    if (input.type !== "object") throw new TypeError(`tool ${name}: inputSchema must have "type": "object"`);
    if (input.properties && input.additionalProperties === undefined) input.additionalProperties = false;
    registry.set(name, {
        descriptor: {
            name,
            title,
            description,
            inputSchema: JSON.stringify(input),
            outputSchema: outputSchema === null ? null : JSON.stringify(outputSchema),
            annotations: {
                readOnly: spec.readOnly ?? null,
                destructive: spec.destructive ?? null,
                idempotent: spec.idempotent ?? null,
                openWorld: spec.openWorld ?? null,
            },
        },
        handler,
    });
}

function callError(error) {
    return { kind: error.kind, message: error.detail, retryable: error.retryable };
}

function output(result) {
    if (typeof result === "string") return { text: result, json: null };
    let text;
    try {
        text = JSON.stringify(result === undefined ? null : result);
    } catch (e) {
        throw new ToolError(INTERNAL, `cannot serialize the result: ${e}`);
    }
    const isObject = result !== null && typeof result === "object" && !Array.isArray(result);
    return { text, json: isObject ? text : null };
}

/** `cordon:plugin/tools`, implemented from the registry: re-export it from the plugin's module. */
export const tools = {
    describe() {
        return [...registry.values()].map((t) => t.descriptor);
    },

    // componentize-js runs the event loop until the returned promise settles.
    async call(name, argumentsJson, context) {
        const found = registry.get(name);
        if (!found) throw callError(new ToolError(UNKNOWN_TOOL, `this plugin has no tool named ${JSON.stringify(name)}`));
        let args;
        try {
            args = JSON.parse(argumentsJson || "{}");
        } catch (e) {
            throw callError(new ToolError(INVALID_ARGUMENTS, `the arguments are not JSON: ${e}`));
        }
        const cx = Object.freeze({
            principal: context.principal,
            callId: context.callId,
            idempotencyKey: context.idempotencyKey ?? null,
        });
        try {
            return output(await found.handler(args, cx));
        } catch (e) {
            if (e instanceof ToolError) throw callError(e);
            // A bug, like a Rust panic: logged, then the call fails as `plugin_crashed`.
            log.error(`tool ${name} threw: ${e && e.stack ? `${e}\n${e.stack}` : e}`);
            throw e;
        }
    },
};

// ---- outbound HTTP -----------------------------------------------------------------------------

/** A whole HTTP response. */
export class Response {
    constructor(url, status, headers, body) {
        this.url = url;
        this.status = status;
        /** `[name, value]` pairs, in order, names in lower case. */
        this.headers = headers;
        /** A `Uint8Array`. */
        this.body = body;
    }

    /** The first value of a header, by case-insensitive name. */
    header(name) {
        const lower = name.toLowerCase();
        const found = this.headers.find(([n]) => n === lower);
        return found ? found[1] : null;
    }

    text() {
        return new TextDecoder().decode(this.body);
    }

    /** The body as JSON, or `ToolError("invalid_response")`. */
    json() {
        try {
            return JSON.parse(this.text());
        } catch (e) {
            throw new ToolError(INVALID_RESPONSE, `${this.url} did not answer with JSON: ${e}`);
        }
    }

    /** `ToolError("upstream_error")` for a 4xx or 5xx status (retryable for 5xx), else this. */
    raiseForStatus() {
        if (this.status >= 400) {
            throw new ToolError(UPSTREAM_ERROR, `${this.url} answered with status ${this.status}`, {
                retryable: this.status >= 500,
            });
        }
        return this;
    }
}

/**
 * Sends a request through the host with `fetch` (`wasi:http/outgoing-handler`) and reads the whole
 * response. The host mediates every request: one outside the operator's grants is refused before
 * any connection (the call then fails with `egress_denied`), credentials are attached by the
 * host, responses and time are capped, redirects are not followed.
 *
 * @param {string} method
 * @param {string} url `http://` or `https://`
 * @param {{headers?: object, body?: string|Uint8Array}} [options]
 * @returns {Promise<Response>}
 */
async function request(method, url, options = {}) {
    if (!/^https?:\/\/[^/?#]+/i.test(url)) {
        throw new ToolError(INVALID_ARGUMENTS, `${JSON.stringify(url)} is not an http:// or https:// URL`);
    }
    let response;
    let body;
    try {
        response = await fetch(url, { method, headers: options.headers ?? {}, body: options.body, redirect: "manual" });
        body = new Uint8Array(await response.arrayBuffer());
    } catch (e) {
        // A refusal by the host surfaces here too; the host then reports the call as `egress_denied`.
        throw new ToolError(UPSTREAM_UNREACHABLE, `no response from ${url}: ${e}`, { retryable: true });
    }
    const headers = [];
    response.headers.forEach((value, name) => headers.push([name.toLowerCase(), value]));
    return new Response(url, response.status, headers, body);
}

export const http = Object.freeze({
    request,
    get: (url, options = {}) => request("GET", url, options),
    post: (url, body, options = {}) => request("POST", url, { ...options, body }),
});
