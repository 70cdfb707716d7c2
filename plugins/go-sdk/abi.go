//go:build wasip1

// The canonical ABI of `cordon:plugin@0.1.0` (wit/plugin.wit) for wasm32, by hand, with the
// layouts plugins/c-sdk/cordon.c uses (size, alignment 4 unless said):
//
//	string / list          ptr@0 len@4                                          (8)
//	option<string>         tag:u8@0 ptr@4 len@8                                 (12)
//	option<bool>           tag:u8@0 value:u8@1                                  (2, align 1)
//	tool-descriptor        name@0 title@8 description@20 input-schema@28
//	                       output-schema@36 annotations@48 (4 x option<bool>)   (56)
//	tool-output            text@0 json@12                                       (24)
//	call-error             kind@0 message@8 retryable:u8@16                     (20)
//	result<output, error>  tag:u8@0 payload@4                                   (28)
//
// `describe` and `call` have more than one flat result, so they return a pointer to it; `call`'s
// 11 flat parameters are passed directly. Go's pointers are 64 bits wide on GOARCH=wasm, but
// linear-memory addresses fit in 32, which is what the ABI stores.

package cordon

import (
	"encoding/binary"
	"unsafe"
)

// addr is the linear-memory address of p, as the ABI stores it.
func addr(p unsafe.Pointer) uint32 { return uint32(uintptr(p)) }

// pointer is the linear-memory address a as a pointer. What is there is never Go's to move or
// collect: the host wrote it into the arena or the argument reserve, both package variables
// (unsafe.Add from nil says so, where a uintptr conversion would look like a lost Go pointer to
// vet).
//
//go:nosplit
func pointer(a uint32) unsafe.Pointer { return unsafe.Add(nil, uintptr(a)) }

// memory is the n bytes the host handed over at ptr.
func memory(ptr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(pointer(ptr)), n)
}

func putU32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }

func getU32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// putString stores s as (ptr, len). The host reads it after the export returns, so s must stay
// reachable until then: callers keep it in a package variable.
func putString(b []byte, s string) {
	putU32(b[0:], addr(unsafe.Pointer(unsafe.StringData(s))))
	putU32(b[4:], uint32(len(s)))
}

// putOptionString stores an option<string>: none for "".
func putOptionString(b []byte, s string) {
	if s == "" {
		b[0] = 0
		return
	}
	b[0] = 1
	putString(b[4:], s)
}

// words is a return area: uint64s, so that it is 8-aligned as the widest layout needs.
type words [8]uint64

func (w *words) bytes() []byte { return (*[64]byte)(unsafe.Pointer(w))[:] }

// ---- describe ---------------------------------------------------------------------------

// describeRet and descriptors stay reachable after `describe` returns: the host lifts them then.
var (
	describeRet words
	descriptors []uint32
)

//go:wasmexport cordon:plugin/tools@0.1.0#describe
func exportDescribe() uint32 {
	const size = 56
	descriptors = make([]uint32, len(tools)*size/4) // uint32s: 4-aligned
	list := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(descriptors))), len(tools)*size)
	for i, t := range tools {
		d := list[i*size : (i+1)*size]
		putString(d[0:], t.tool.Name)
		putOptionString(d[8:], t.tool.Title)
		putString(d[20:], t.tool.Description)
		putString(d[28:], t.tool.InputSchema)
		putOptionString(d[36:], t.tool.OutputSchema)
		a := t.tool.Annotations
		for j, h := range [4]Hint{a.ReadOnly, a.Destructive, a.Idempotent, a.OpenWorld} {
			if h != Unset {
				d[48+2*j] = 1
			}
			if h == Yes {
				d[48+2*j+1] = 1
			}
		}
	}
	r := describeRet.bytes()
	putU32(r[0:], addr(unsafe.Pointer(unsafe.SliceData(list))))
	putU32(r[4:], uint32(len(tools)))
	return addr(unsafe.Pointer(&describeRet))
}

// ---- call -------------------------------------------------------------------------------

// callRet and lastOutput, lastError keep the result alive until the host has lifted it.
var (
	callRet    words
	lastOutput Output
	lastError  *Error
)

//go:wasmexport cordon:plugin/tools@0.1.0#call
func exportCall(toolPtr, toolLen, argsPtr, argsLen, principalPtr, principalLen, callIDPtr, callIDLen,
	hasKey, keyPtr, keyLen uint32) uint32 {
	// Copies: the handler may keep anything it was given.
	req := &Request{
		Tool:      string(memory(toolPtr, toolLen)),
		Arguments: append([]byte(nil), memory(argsPtr, argsLen)...),
		Principal: string(memory(principalPtr, principalLen)),
		CallID:    string(memory(callIDPtr, callIDLen)),
	}
	if hasKey != 0 {
		req.HasIdempotencyKey = true
		req.IdempotencyKey = string(memory(keyPtr, keyLen))
	}
	lastOutput, lastError = dispatch(req)
	r := callRet.bytes()
	clear(r)
	if e := lastError; e != nil {
		if e.Kind == "" {
			e.Kind = "error"
		}
		r[0] = 1
		putString(r[4:], e.Kind)
		putString(r[12:], e.Message)
		if e.Retryable {
			r[20] = 1
		}
	} else {
		putOptionString(r[4:], lastOutput.Text)
		putOptionString(r[16:], lastOutput.JSON)
	}
	return addr(unsafe.Pointer(&callRet))
}

// ---- cabi_realloc -------------------------------------------------------------------------
//
// The host calls cabi_realloc to place what it passes in (a call's strings, what an import
// returns), and so does the preview-1 adapter the host links in (its state and its stack, on
// its first use). None of those is a moment where Go's allocator may run:
//
//   - the adapter's first use happens inside the runtime's own start-up (`_initialize` reads
//     the clock, the environment and random bytes through it), before Go's heap exists;
//   - while the host lowers values into the guest, the component may not call any import
//     (wasmtime traps with "cannot leave component instance"), and Go's allocator may call
//     some (taking arguments of 150 KB from the Go heap did, every time);
//   - an import that returns a string or list calls back while the Go code that made the
//     import is suspended in it.
//
// So cabi_realloc only ever bumps a pointer, in memory set aside beforehand, and is nosplit (no
// stack growth, no scheduler):
//
//   - before package initialization has run, and during the SDK's imports, in a static arena.
//     Allocations made during an import live only until the SDK has copied what the import
//     returned (see hostCall): the arena is then reset to where it was before the import. The
//     adapter's memory, taken before any import, is below every mark and never given back;
//   - otherwise (the host placing a call's arguments, between exports) in the argument
//     reserve, taken from the Go heap during initialization (see ReserveArguments).
//
// When the memory set aside does not suffice, cabi_realloc answers an address past the end of
// memory, and the host fails the call ("realloc return: beyond end of memory"): it cannot
// allocate without Go's runtime, and it may not report anything.

const (
	arenaSize = 512 << 10
	// defaultArguments is the host's default `max_input_bytes`.
	defaultArguments = 1 << 20
	// stringsSlack covers the call's other strings: tool name, principal, call id, key.
	stringsSlack = 64 << 10
	// outOfMemory is 8-aligned and, with any size, beyond the end of a 4 GiB memory.
	outOfMemory = 0xFFFF_FFF8
)

var (
	arena    [arenaSize / 8]uint64 // uint64s: 8-aligned
	arenaTop uint32                // bytes used
	ready    bool                  // package initialization has run
	inImport int                   // > 0 while a host import is running

	reserve    []uint64 // the argument reserve
	reserveTop uint32   // bytes used
)

func init() {
	ReserveArguments(defaultArguments)
	ready = true
}

// ReserveArguments sets aside room for a call's arguments of up to n bytes (serialized JSON).
// The SDK reserves the host's default `max_input_bytes` (1 MiB); a plugin whose operator may
// allow larger arguments calls this from an init function with that limit. Arguments that do
// not fit fail the call. The memory is taken from fresh heap pages, which stay untouched (and
// so cost the host no physical memory) until arguments fill them; it counts against the
// plugin's `memory_mb`.
func ReserveArguments(n int) {
	if size := n + stringsSlack; size > len(reserve)*8 {
		reserve = make([]uint64, (size+7)/8)
		reserveTop = 0
	}
}

//go:wasmexport cabi_realloc
//go:nosplit
func cabiRealloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	if newSize == 0 {
		return align
	}
	var p uint32
	if !ready || inImport > 0 {
		p = bump(addr(unsafe.Pointer(&arena)), arenaSize, &arenaTop, align, newSize)
	} else {
		p = bump(addr(unsafe.Pointer(unsafe.SliceData(reserve))), uint32(len(reserve)*8), &reserveTop, align, newSize)
	}
	if p != outOfMemory && oldPtr != 0 && oldSize != 0 {
		n := min(oldSize, newSize)
		copy(unsafe.Slice((*byte)(pointer(p)), n), unsafe.Slice((*byte)(pointer(oldPtr)), n))
	}
	return p
}

// bump takes size bytes aligned to align from the region [base, base+limit) of which *top are
// used, or answers outOfMemory.
//
//go:nosplit
func bump(base, limit uint32, top *uint32, align, size uint32) uint32 {
	at := (base + *top + align - 1) &^ (align - 1)
	if size > limit || at-base > limit-size {
		return outOfMemory
	}
	*top = at - base + size
	return at
}

// hostCall runs an import (f) that may make the host call cabi_realloc, and then whatever reads
// its results (also in f): allocations during it come from the arena and are given back after.
func hostCall(f func()) {
	mark := arenaTop
	inImport++
	f()
	inImport--
	arenaTop = mark
}
