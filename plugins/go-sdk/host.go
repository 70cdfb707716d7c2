//go:build wasip1

package cordon

import (
	"fmt"
	"unsafe"
)

// The host functions of `cordon:plugin/host@0.1.0`, lowered by hand. A Go string parameter is
// passed as (ptr, len), which is the canonical ABI's flat string.

//go:wasmimport cordon:plugin/host@0.1.0 log
func hostLog(level int32, message string)

//go:wasmimport cordon:plugin/host@0.1.0 config
func hostConfig(key string, ret unsafe.Pointer)

//go:wasmimport cordon:plugin/host@0.1.0 progress
func hostProgress(done float64, hasTotal int32, total float64, hasMessage int32, message string)

// Level is a log line's level (the contract's log-level, by case index).
type Level int32

const (
	LevelTrace Level = iota
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
)

// Logf writes a line to the host's log (and to the MCP client when it asked for log messages).
func Logf(level Level, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	hostLog(int32(level), line)
}

// Config returns an operator setting ([plugins.NAME.config] in cordon.toml), and whether it is set.
func Config(key string) (string, bool) {
	var ret words
	var value string
	var ok bool
	hostCall(func() {
		hostConfig(key, unsafe.Pointer(&ret))
		r := ret.bytes()
		if r[0] != 0 {
			// A copy: the host wrote the text into the arena, which is reset after this.
			value, ok = string(memory(getU32(r[4:]), getU32(r[8:]))), true
		}
	})
	return value, ok
}

// Progress reports `done` out of `total` (a negative total when it is unknown), with an
// optional message ("" for none).
func Progress(done, total float64, message string) {
	var hasTotal, hasMessage int32
	if total >= 0 { // false for NaN too
		hasTotal = 1
	} else {
		total = 0
	}
	if message != "" {
		hasMessage = 1
	}
	hostProgress(done, hasTotal, total, hasMessage, message)
}
