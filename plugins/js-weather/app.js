// Example Cordon plugin in JavaScript: temperature conversion and current weather from an HTTP API.
//
// Built by `make plugins` into `plugins/dist/js-weather.wasm` (see
// `docs/plugins-javascript.md`). `current` reads the API's base URL from the operator's settings; the host decides
// whether the request may leave:
//
//     [plugins.js-weather.config]
//     base_url = "https://weather.example.com"
//
//     [[plugins.js-weather.http.grants]]
//     url = "https://weather.example.com/v1/"

import { config, http, log, tool, ToolError, tools } from "../js-sdk/cordon.js";

// The export componentize-js implements `cordon:plugin/tools` with.
export { tools };

const UNITS = ["celsius", "fahrenheit", "kelvin"];
// The lowest temperature of each unit: absolute zero.
const ABSOLUTE_ZERO = { celsius: -273.15, fahrenheit: -459.67, kelvin: 0 };

const toKelvin = { celsius: (v) => v + 273.15, fahrenheit: (v) => ((v - 32) * 5) / 9 + 273.15, kelvin: (v) => v };
const fromKelvin = { celsius: (k) => k - 273.15, fahrenheit: (k) => ((k - 273.15) * 9) / 5 + 32, kelvin: (k) => k };

tool(
    {
        name: "convert",
        title: "Convert a temperature",
        description:
            "Converts a temperature between celsius, fahrenheit and kelvin. Fails with " +
            "`below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
        inputSchema: {
            type: "object",
            properties: {
                value: { type: "number", description: "The temperature to convert." },
                from_unit: { type: "string", enum: UNITS, description: "The unit of `value`." },
                to_unit: { type: "string", enum: UNITS, description: "The unit to convert to." },
            },
            required: ["value", "from_unit", "to_unit"],
        },
        outputSchema: {
            type: "object",
            properties: {
                value: { type: "number", description: "The temperature in the target unit, rounded to 2 decimals." },
                unit: { type: "string", enum: UNITS, description: "The target unit." },
            },
            required: ["value", "unit"],
        },
        readOnly: true,
        idempotent: true,
        openWorld: false,
    },
    ({ value, from_unit, to_unit }) => {
        if (value < ABSOLUTE_ZERO[from_unit]) {
            throw new ToolError(
                "below_absolute_zero",
                `${value} ${from_unit} is below absolute zero (${ABSOLUTE_ZERO[from_unit]} ${from_unit})`,
                { retryable: false },
            );
        }
        const result = fromKelvin[to_unit](toKelvin[from_unit](value));
        return { value: Math.round(result * 100) / 100, unit: to_unit };
    },
);

function baseUrl() {
    const base = (config("base_url") ?? "").trim();
    if (!/^https?:\/\//.test(base)) {
        throw new ToolError(
            "not_configured",
            "set `base_url` (http:// or https://) under `[plugins.js-weather.config]` in cordon.toml",
        );
    }
    return base.replace(/\/+$/, "");
}

tool(
    {
        name: "current",
        title: "Current weather",
        description:
            "Fetches the current weather for a city from the weather API the operator configured " +
            "(GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. Fails with " +
            "`upstream_error` for a 4xx or 5xx status (retryable for 5xx), `egress_denied` when the " +
            "operator has not granted the API, and `not_configured` when no base URL is set.",
        inputSchema: {
            type: "object",
            properties: { city: { type: "string", minLength: 1, description: "The city, e.g. `Lisbon`." } },
            required: ["city"],
        },
        readOnly: true,
        openWorld: true,
    },
    async ({ city }, cx) => {
        const url = `${baseUrl()}/v1/current?city=${encodeURIComponent(city)}`;
        log.info(`${cx.principal} asks for the weather in ${city}`);
        const response = (await http.get(url, { headers: { accept: "application/json" } })).raiseForStatus();
        return { city, source: url, weather: response.json() };
    },
);
