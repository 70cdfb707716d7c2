// Package cordon is the Cordon plugin SDK for Go: write a `cordon:plugin@0.1.0` plugin as a
// WASI preview-1 core module with Go's own wasip1 target, without generated bindings.
//
// The package implements the canonical-ABI exports the host calls
// (`cordon:plugin/tools@0.1.0#describe`, `#call` and `cabi_realloc`, see abi.go) and the host
// imports (log, config, progress, outbound HTTP through wasi:http), as plugins/c-sdk does for C.
// A plugin registers its tools from an init function:
//
//	func init() {
//		cordon.AddTool(cordon.Tool{
//			Name:        "echo",
//			Description: "Echoes its input.",
//			InputSchema: `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`,
//		}, echo)
//	}
//
//	func echo(req *cordon.Request) (cordon.Output, error) {
//		var args struct{ Text string `json:"text"` }
//		if err := req.Decode(&args); err != nil {
//			return cordon.Output{}, cordon.Errorf("invalid_arguments", false, "%v", err)
//		}
//		return cordon.Output{Text: args.Text}, nil
//	}
//
//	func main() {} // required by Go, never called: the module is a reactor
//
// and is built as a reactor (the host wraps the core module into a component when it loads it):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// Each call runs in a fresh instance, so the SDK never frees what it hands the host.
package cordon

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Hint is one of a tool's annotations: unset (the default, the client assumes MCP's default),
// or explicitly false or true.
type Hint uint8

// Unset leaves the hint out of the tool's annotations; No and Yes state it.
const (
	Unset Hint = iota
	No
	Yes
)

// Annotations are the MCP tool hints.
type Annotations struct {
	ReadOnly    Hint
	Destructive Hint
	Idempotent  Hint
	OpenWorld   Hint
}

// Tool describes one tool. Schemas are JSON texts (kept verbatim, as the C helper does, so the
// same schema reads the same in every language); OutputSchema and Title may be empty.
type Tool struct {
	Name         string
	Title        string
	Description  string
	InputSchema  string
	OutputSchema string
	Annotations  Annotations
}

// Request is one tool call. Arguments is a JSON object the host has already checked against
// the tool's input schema.
type Request struct {
	Tool           string
	Arguments      []byte
	Principal      string
	CallID         string
	IdempotencyKey string
	// HasIdempotencyKey tells an empty key from none.
	HasIdempotencyKey bool
}

// Decode unmarshals the arguments into v (encoding/json rules).
func (r *Request) Decode(v any) error {
	return json.Unmarshal(r.Arguments, v)
}

// Output is a successful result: text for people, serialized JSON for programs, or both.
// An empty field is left out of the result (an empty text says nothing, and an empty JSON text
// is not JSON).
type Output struct {
	Text string
	JSON string
}

// JSON marshals v as the structured result.
func JSON(v any) (Output, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Output{}, Errorf("internal_error", false, "cannot serialize the result: %v", err)
	}
	return Output{JSON: string(b)}, nil
}

// Error is a typed failure (the contract's `call-error`): a kind such as "not_found" that
// clients can branch on, a message for people, and whether retrying may succeed. A handler
// that returns an error wrapping none fails with kind "error" and the error's text.
type Error struct {
	Kind      string
	Message   string
	Retryable bool
}

func (e *Error) Error() string { return e.Kind + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(kind string, retryable bool, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...), Retryable: retryable}
}

// Handler runs one call of a tool.
type Handler func(req *Request) (Output, error)

type registered struct {
	tool    Tool
	handler Handler
}

// tools in the order they were added, which is the order `describe` lists them.
var tools []registered

// AddTool registers a tool and its handler. Call it from an init function: the host asks for
// the tools (`describe`) and calls them only after package initialization has run.
func AddTool(tool Tool, handler Handler) {
	tools = append(tools, registered{tool, handler})
}

// dispatch runs the handler of the requested tool; an unknown tool is the `unknown_tool` error.
func dispatch(req *Request) (Output, *Error) {
	for _, t := range tools {
		if t.tool.Name != req.Tool {
			continue
		}
		out, err := t.handler(req)
		if err == nil {
			return out, nil
		}
		var e *Error
		if errors.As(err, &e) {
			return Output{}, e
		}
		return Output{}, &Error{Kind: "error", Message: err.Error()}
	}
	return Output{}, Errorf("unknown_tool", false, "this plugin has no tool %s", req.Tool)
}
