//! Example Cordon plugin in Rust: temperature conversion and current weather from an HTTP API.
//!
//! The same two tools are written in every language Cordon's examples cover (`python-weather`,
//! `js-weather`, `c-weather`, `zig-weather`), and `tests/e2e/languages.rs` runs one scenario
//! against all of them: they must behave identically. `current` reads the API's base URL from
//! the operator's settings; the host decides whether the request may leave:
//!
//! ```toml
//! [plugins.rust-weather.config]
//! base_url = "https://weather.example.com"
//!
//! [[plugins.rust-weather.http.grants]]
//! url = "https://weather.example.com/v1/"
//! ```

use cordon_sdk::http::Request;
use cordon_sdk::serde_json::{self, Value};
use cordon_sdk::{log, Context, Plugin, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
    Kelvin,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Celsius => "celsius",
            Unit::Fahrenheit => "fahrenheit",
            Unit::Kelvin => "kelvin",
        }
    }

    /// The lowest temperature in this unit: absolute zero.
    fn absolute_zero(self) -> f64 {
        match self {
            Unit::Celsius => -273.15,
            Unit::Fahrenheit => -459.67,
            Unit::Kelvin => 0.0,
        }
    }

    fn to_kelvin(self, value: f64) -> f64 {
        match self {
            Unit::Celsius => value + 273.15,
            Unit::Fahrenheit => (value - 32.0) * 5.0 / 9.0 + 273.15,
            Unit::Kelvin => value,
        }
    }

    fn from_kelvin(self, kelvin: f64) -> f64 {
        match self {
            Unit::Celsius => kelvin - 273.15,
            Unit::Fahrenheit => (kelvin - 273.15) * 9.0 / 5.0 + 32.0,
            Unit::Kelvin => kelvin,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConvertArgs {
    /// The temperature to convert.
    value: f64,
    /// The unit of `value`.
    from_unit: Unit,
    /// The unit to convert to.
    to_unit: Unit,
}

#[derive(Serialize, JsonSchema)]
struct Converted {
    /// The temperature in the target unit, rounded to 2 decimals.
    value: f64,
    /// The target unit.
    unit: Unit,
}

fn convert(args: ConvertArgs, _: &Context) -> Result<Converted, ToolError> {
    let zero = args.from_unit.absolute_zero();
    if args.value < zero {
        let unit = args.from_unit.name();
        return Err(ToolError::new(
            "below_absolute_zero",
            format!("{} {unit} is below absolute zero ({zero} {unit})", args.value),
        ));
    }
    let value = args.to_unit.from_kelvin(args.from_unit.to_kelvin(args.value));
    Ok(Converted { value: (value * 100.0).round() / 100.0, unit: args.to_unit })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CurrentArgs {
    /// The city, e.g. `Lisbon`.
    #[schemars(length(min = 1))]
    city: String,
}

fn base_url() -> Result<String, ToolError> {
    let base = cordon_sdk::config("base_url").unwrap_or_default();
    let base = base.trim();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ToolError::new(
            "not_configured",
            "set `base_url` (http:// or https://) under `[plugins.rust-weather.config]` in cordon.toml",
        ));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Serialize, JsonSchema)]
struct Current {
    /// The city asked for.
    city: String,
    /// The URL the weather came from.
    source: String,
    /// The weather API's JSON answer, as it sent it.
    weather: Value,
}

fn current(args: CurrentArgs, cx: &Context) -> Result<Current, ToolError> {
    let url = format!("{}/v1/current?city={}", base_url()?, encode_component(&args.city));
    log::info(format!("{} asks for the weather in {}", cx.principal(), args.city));
    let response = Request::get(url.as_str()).header("accept", "application/json").send()?.error_for_status()?;
    let weather: Value = serde_json::from_slice(&response.body)
        .map_err(|e| ToolError::new("upstream_error", format!("the weather API answered invalid JSON: {e}")))?;
    Ok(Current { city: args.city, source: url, weather })
}

struct Weather;

impl Plugin for Weather {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "convert",
                "Converts a temperature between celsius, fahrenheit and kelvin. Fails with \
                 `below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
                convert,
            )
            .title("Convert a temperature")
            .read_only()
            .idempotent()
            .open_world(false),
            Tool::new(
                "current",
                "Fetches the current weather for a city from the weather API the operator \
                 configured (GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. \
                 Fails with `upstream_error` for a 4xx or 5xx status (retryable for 5xx), \
                 `egress_denied` when the operator has not granted the API, and `not_configured` \
                 when no base URL is set.",
                current,
            )
            .title("Current weather")
            .read_only()
            .open_world(true),
        ]
    }
}

cordon_sdk::export_plugin!(Weather);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_two_decimals() {
        let cx = Context::new("tester", "call-1", None);
        let out = convert(ConvertArgs { value: 100.0, from_unit: Unit::Celsius, to_unit: Unit::Fahrenheit }, &cx)
            .ok()
            .expect("converted");
        assert_eq!(out.value, 212.0);
        let e = convert(ConvertArgs { value: -1.0, from_unit: Unit::Kelvin, to_unit: Unit::Celsius }, &cx)
            .err()
            .expect("below absolute zero");
        assert_eq!(e.kind, "below_absolute_zero");
    }

    #[test]
    fn cities_are_percent_encoded() {
        assert_eq!(encode_component("São Paulo"), "S%C3%A3o%20Paulo");
    }
}
