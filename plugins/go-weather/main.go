// Command go-weather is temperature conversion and current weather from an HTTP API, a Cordon
// plugin in Go (see plugins/go-sdk). The same two tools are written in every language the
// examples cover (rust-weather, python-weather, js-weather, c-weather, zig-weather);
// tests/e2e/languages.rs runs one scenario against all of them.
//
//	weather_convert  {"value": 100, "from_unit": "celsius", "to_unit": "fahrenheit"}
//	                 → {"value": 212, "unit": "fahrenheit"}; colder than absolute zero →
//	                 call-error `below_absolute_zero`
//	weather_current  {"city": "Lisbon"} → GET <base_url>/v1/current?city=Lisbon through the
//	                 host's grants → {"city", "source", "weather": <the API's JSON>}
//
// Setting: `base_url` ([plugins.NAME.config]).
//
// Build (a reactor: the host calls the exports after `_initialize`; main is never run):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-weather.wasm .
package main

import (
	"cordon"
	"encoding/json"
	"math"
	"strings"
)

// main is required of package main but never runs: a c-shared module is a reactor, whose
// package initialization (_initialize) registers the tools and whose exports the host calls.
func main() {}

const unitsEnum = `["celsius","fahrenheit","kelvin"]`

// The schemas are the C example's, byte for byte, so that every language lists the same.
func init() {
	cordon.AddTool(cordon.Tool{
		Name:  "convert",
		Title: "Convert a temperature",
		Description: "Converts a temperature between celsius, fahrenheit and kelvin. Fails with " +
			"`below_absolute_zero` (not retryable) for a temperature colder than absolute zero.",
		InputSchema: `{"type":"object","properties":{` +
			`"value":{"type":"number","description":"The temperature to convert."},` +
			`"from_unit":{"type":"string","enum":` + unitsEnum + `,"description":"The unit of ` + "`value`" + `."},` +
			`"to_unit":{"type":"string","enum":` + unitsEnum + `,"description":"The unit to convert to."}},` +
			`"required":["value","from_unit","to_unit"],"additionalProperties":false}`,
		OutputSchema: `{"type":"object","properties":{` +
			`"value":{"type":"number","description":"The temperature in the target unit, rounded to 2 decimals."},` +
			`"unit":{"type":"string","enum":` + unitsEnum + `,"description":"The target unit."}},` +
			`"required":["value","unit"]}`,
		Annotations: cordon.Annotations{ReadOnly: cordon.Yes, Idempotent: cordon.Yes, OpenWorld: cordon.No},
	}, convert)
	cordon.AddTool(cordon.Tool{
		Name:  "current",
		Title: "Current weather",
		Description: "Fetches the current weather for a city from the weather API the operator configured " +
			"(GET <base_url>/v1/current?city=CITY) and returns the API's JSON answer. Fails with " +
			"`upstream_error` for a 4xx or 5xx status (retryable for 5xx), `egress_denied` when the " +
			"operator has not granted the API, and `not_configured` when no base URL is set.",
		InputSchema: `{"type":"object","properties":{` +
			`"city":{"type":"string","minLength":1,"description":"The city, e.g. ` + "`Lisbon`" + `."}},` +
			`"required":["city"],"additionalProperties":false}`,
		Annotations: cordon.Annotations{ReadOnly: cordon.Yes, OpenWorld: cordon.Yes},
	}, current)
}

// unit is a temperature scale and its absolute zero.
type unit struct {
	name         string
	absoluteZero float64
}

var (
	celsius    = &unit{"celsius", -273.15}
	fahrenheit = &unit{"fahrenheit", -459.67}
	kelvin     = &unit{"kelvin", 0}
	units      = []*unit{celsius, fahrenheit, kelvin}
)

func findUnit(name string) *unit {
	for _, u := range units {
		if u.name == name {
			return u
		}
	}
	return nil
}

func toKelvin(v float64, u *unit) float64 {
	switch u {
	case celsius:
		return v + 273.15
	case fahrenheit:
		return (v-32)*5/9 + 273.15
	}
	return v
}

func fromKelvin(k float64, u *unit) float64 {
	switch u {
	case celsius:
		return k - 273.15
	case fahrenheit:
		return (k-273.15)*9/5 + 32
	}
	return k
}

func convert(req *cordon.Request) (cordon.Output, error) {
	// Pointers tell a missing member from a zero one.
	var args struct {
		Value    *float64 `json:"value"`
		FromUnit *string  `json:"from_unit"`
		ToUnit   *string  `json:"to_unit"`
	}
	// The host checked the arguments against the schema; this is a backstop.
	if err := req.Decode(&args); err != nil || args.Value == nil || args.FromUnit == nil || args.ToUnit == nil {
		return cordon.Output{}, &cordon.Error{Kind: "invalid_arguments", Message: "value, from_unit and to_unit are required"}
	}
	from, to := findUnit(*args.FromUnit), findUnit(*args.ToUnit)
	if from == nil || to == nil {
		return cordon.Output{}, &cordon.Error{Kind: "invalid_arguments", Message: "units are celsius, fahrenheit or kelvin"}
	}
	value := *args.Value
	if value < from.absoluteZero {
		// %.6g is C's %g, so the message reads as the C example's.
		return cordon.Output{}, cordon.Errorf("below_absolute_zero", false, "%.6g %s is below absolute zero (%.6g %s)",
			value, from.name, from.absoluteZero, from.name)
	}
	result := math.Round(fromKelvin(toKelvin(value, from), to)*100) / 100
	return cordon.JSON(struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
	}{result, to.name})
}

// encodeComponent percent-encodes everything but RFC 3986's unreserved characters (unlike
// url.QueryEscape, which writes a space as "+", and url.PathEscape, which keeps sub-delims).
func encodeComponent(text string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		c := text[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

func current(req *cordon.Request) (cordon.Output, error) {
	var args struct {
		City *string `json:"city"`
	}
	if err := req.Decode(&args); err != nil || args.City == nil {
		return cordon.Output{}, &cordon.Error{Kind: "invalid_arguments", Message: "city is required"}
	}
	city := *args.City
	base, ok := cordon.Config("base_url")
	if !ok || !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return cordon.Output{}, &cordon.Error{Kind: "not_configured",
			Message: "set `base_url` (http:// or https://) under `[plugins.go-weather.config]` in cordon.toml"}
	}
	url := strings.TrimRight(base, "/") + "/v1/current?city=" + encodeComponent(city)
	cordon.Logf(cordon.LevelInfo, "%s asks for the weather in %s", req.Principal, city)

	response, err := cordon.HTTPGet(url, "application/json")
	if err != nil {
		// A refused request becomes `egress_denied` whatever is answered here.
		return cordon.Output{}, cordon.Errorf("upstream_unreachable", true, "GET %s failed: %v", url, err)
	}
	if response.Status >= 400 {
		return cordon.Output{}, cordon.Errorf("upstream_error", response.Status >= 500, "GET %s answered %d", url, response.Status)
	}
	// The body is passed through as it came; the host rejects a result that is not JSON, as it
	// does for the other languages (json.Marshal would refuse it here instead).
	weather := response.Body
	if len(weather) == 0 {
		weather = []byte("null")
	}
	cityJSON, _ := json.Marshal(city)
	sourceJSON, _ := json.Marshal(url)
	return cordon.Output{JSON: `{"city":` + string(cityJSON) + `,"source":` + string(sourceJSON) +
		`,"weather":` + string(weather) + `}`}, nil
}
