"""Example Cordon plugin in Python: temperature conversion and current weather from an HTTP API.

Built by `make plugins` into `plugins/dist/python-weather.wasm` (see
`docs/plugins-python.md`). `current` reads the API's base URL from the operator's settings; the host decides
whether the request may leave:

    [plugins.python-weather.config]
    base_url = "https://weather.example.com"

    [[plugins.python-weather.http.grants]]
    url = "https://weather.example.com/v1/"
"""

from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import quote

# `Tools` is the export componentize-py looks for: re-export it from the helper.
from cordon import Context, Tools, ToolError, config, http, log, tool  # noqa: F401

Unit = Literal["celsius", "fahrenheit", "kelvin"]

# The lowest temperature of each unit: absolute zero.
ABSOLUTE_ZERO = {"celsius": -273.15, "fahrenheit": -459.67, "kelvin": 0.0}


@dataclass
class Converted:
    value: float = field(metadata={"description": "The temperature in the target unit, rounded to 2 decimals."})
    unit: Unit = field(metadata={"description": "The target unit."})


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "celsius":
        return value + 273.15
    if unit == "fahrenheit":
        return (value - 32) * 5 / 9 + 273.15
    return value


def _from_kelvin(kelvin: float, unit: str) -> float:
    if unit == "celsius":
        return kelvin - 273.15
    if unit == "fahrenheit":
        return (kelvin - 273.15) * 9 / 5 + 32
    return kelvin


@tool(
    title="Convert a temperature",
    description="Converts a temperature between celsius, fahrenheit and kelvin. Fails with "
    "`below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
    read_only=True,
    idempotent=True,
    open_world=False,
)
def convert(
    value: Annotated[float, "The temperature to convert."],
    from_unit: Annotated[Unit, "The unit of `value`."],
    to_unit: Annotated[Unit, "The unit to convert to."],
) -> Converted:
    if value < ABSOLUTE_ZERO[from_unit]:
        raise ToolError(
            "below_absolute_zero",
            f"{value} {from_unit} is below absolute zero ({ABSOLUTE_ZERO[from_unit]} {from_unit})",
            retryable=False,
        )
    result = _from_kelvin(_to_kelvin(value, from_unit), to_unit)
    return Converted(value=round(result, 2), unit=to_unit)


def _base_url() -> str:
    base = (config("base_url") or "").strip()
    if not base.startswith(("http://", "https://")):
        raise ToolError(
            "not_configured",
            "set `base_url` (http:// or https://) under `[plugins.python-weather.config]` in cordon.toml",
        )
    return base.rstrip("/")


@tool(
    title="Current weather",
    description="Fetches the current weather for a city from the weather API the operator "
    "configured (GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. Fails "
    "with `upstream_error` for a 4xx or 5xx status (retryable for 5xx), `egress_denied` when the "
    "operator has not granted the API, and `not_configured` when no base URL is set.",
    read_only=True,
    open_world=True,
)
def current(city: Annotated[str, {"description": "The city, e.g. `Lisbon`.", "minLength": 1}], cx: Context) -> dict:
    url = f"{_base_url()}/v1/current?city={quote(city, safe='')}"
    log.info(f"{cx.principal} asks for the weather in {city}")
    response = http.get(url, headers={"accept": "application/json"}).raise_for_status()
    return {"city": city, "source": url, "weather": response.json()}
