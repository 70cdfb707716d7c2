//go:build wasip1

package cordon

import (
	"slices"
	"strings"
	"unsafe"
)

// Outbound HTTP through wasi:http@0.2.12. The host links `wasi:http/outgoing-handler` for every
// plugin and decides each request against the operator's grants (a refused request fails here
// with HTTP-request-denied, and the call then fails with `egress_denied`). Go's wasip1 port
// (like wasi-libc) is preview 1 only and its net/http cannot dial, so these are the component
// imports lowered by hand, with the names and layouts plugins/c-sdk/cordon.c uses. When the
// host wraps this core module it embeds a world that names wasi:http; the component imports
// only what the module uses.
//
// Layouts used below (wasm32):
//
//	result<own<T>> / result<own<T>, ()>      tag:u8@0 handle@4                          (8)
//	result<_, header-error>                  tag:u8@0 error:u8@1                        (2)
//	result<_, stream-error>                  tag:u8@0 stream-error tag:u8@4 handle@8    (12)
//	result<list<u8>, stream-error>           tag:u8@0 ptr@4 len@8 | stream-error@4      (12)
//	error-code                               tag:u8@0 payload@8  (align 8: option<u64>)
//	result<own<T>, error-code>               tag:u8@0 handle@8 | error-code@8
//	result<_, error-code>                    tag:u8@0 error-code@8
//	option<result<result<own<T>, error-code>, ()>>
//	                                         tag@0, result tag@8, inner tag@16,
//	                                         handle@24 | error-code@24
//
// A return area (words) is 64 bytes, aligned 8: more than any of these.

//go:wasmimport wasi:http/types@0.2.12 [constructor]fields
func wasiFieldsNew() int32

//go:wasmimport wasi:http/types@0.2.12 [method]fields.append
func wasiFieldsAppend(fields int32, name, value string, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [constructor]outgoing-request
func wasiOutgoingRequestNew(headers int32) int32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-method
func wasiRequestSetMethod(request, tag int32, other string) int32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-scheme
func wasiRequestSetScheme(request, isSome, tag int32, other string) int32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-authority
func wasiRequestSetAuthority(request, isSome int32, authority string) int32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-path-with-query
func wasiRequestSetPathWithQuery(request, isSome int32, pathWithQuery string) int32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.body
func wasiRequestBody(request int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-body.write
func wasiOutgoingBodyWrite(body int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [static]outgoing-body.finish
func wasiOutgoingBodyFinish(body, hasTrailers, trailers int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]future-incoming-response.subscribe
func wasiFutureResponseSubscribe(future int32) int32

//go:wasmimport wasi:http/types@0.2.12 [method]future-incoming-response.get
func wasiFutureResponseGet(future int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-response.status
func wasiResponseStatus(response int32) int32

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-response.consume
func wasiResponseConsume(response int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-body.stream
func wasiIncomingBodyStream(body int32, ret unsafe.Pointer)

//go:wasmimport wasi:http/outgoing-handler@0.2.12 handle
func wasiOutgoingHandle(request, hasOptions, options int32, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [method]output-stream.blocking-write-and-flush
func wasiOutputWrite(stream int32, ptr unsafe.Pointer, n uint32, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [method]input-stream.blocking-read
func wasiInputRead(stream int32, n uint64, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [resource-drop]output-stream
func wasiOutputStreamDrop(stream int32)

//go:wasmimport wasi:io/poll@0.2.12 [method]pollable.block
func wasiPollableBlock(pollable int32)

//go:wasmimport wasi:io/poll@0.2.12 [resource-drop]pollable
func wasiPollableDrop(pollable int32)

// errorCodes are wasi:http/types error-code's cases, by index.
var errorCodes = [...]string{
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
}

// methods are wasi:http/types method's cases, by index; anything else is `other(string)`.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// HTTPError says why no response arrived. Its text is the wasi:http error-code's name, such as
// "HTTP-request-denied" (no grant covers the URL: the call then fails with `egress_denied`
// whatever the plugin answers) or "connection-refused".
type HTTPError struct {
	Code string
}

func (e *HTTPError) Error() string { return e.Code }

// Header is one request header.
type Header struct {
	Name, Value string
}

// Response is what came back: the status and the whole body (no response headers).
type Response struct {
	Status int
	Body   []byte
}

// HTTPGet sends a GET with an `accept` header ("" for none).
func HTTPGet(url, accept string) (*Response, error) {
	var headers []Header
	if accept != "" {
		headers = []Header{{"accept", accept}}
	}
	return HTTPRequest("GET", url, headers, nil)
}

// HTTPRequest sends a request (a nil body for none) and reads the whole response. It returns
// an *HTTPError when no response arrived; a response is returned whatever its status.
// Credentials the operator configured are attached by the host, never seen here.
func HTTPRequest(method, url string, headers []Header, body []byte) (*Response, error) {
	var (
		resp *Response
		code string
	)
	// One hostCall around it all: the host may allocate for any of these imports (an
	// error-code can carry a string), and nothing is kept from them but what is copied.
	hostCall(func() { resp, code = send(method, url, headers, body) })
	if code != "" {
		return resp, &HTTPError{Code: code}
	}
	return resp, nil
}

func errorCodeName(errorCode []byte) string {
	if int(errorCode[0]) < len(errorCodes) {
		return errorCodes[errorCode[0]]
	}
	return "internal-error"
}

// send does the request; a non-empty code names why no (whole) response arrived.
func send(method, url string, headers []Header, body []byte) (*Response, string) {
	var area words
	ret := area.bytes()

	// scheme://authority/path?query
	var scheme int32
	var rest string
	switch {
	case strings.HasPrefix(url, "http://"):
		scheme, rest = 0, url[len("http://"):]
	case strings.HasPrefix(url, "https://"):
		scheme, rest = 1, url[len("https://"):]
	default:
		return nil, "HTTP-request-URI-invalid"
	}
	authorityLen := strings.IndexAny(rest, "/?#")
	if authorityLen < 0 {
		authorityLen = len(rest)
	}
	if authorityLen == 0 {
		return nil, "HTTP-request-URI-invalid"
	}
	authority, path := rest[:authorityLen], rest[authorityLen:]
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		path = "/"
	}

	fields := wasiFieldsNew()
	for _, h := range headers {
		wasiFieldsAppend(fields, h.Name, h.Value, unsafe.Pointer(&area))
		if ret[0] != 0 {
			return nil, "invalid-header"
		}
	}
	request := wasiOutgoingRequestNew(fields)
	tag := int32(len(methods))
	for i, m := range methods {
		if m == method {
			tag = int32(i)
		}
	}
	other := ""
	if tag == int32(len(methods)) {
		other = method
	}
	if wasiRequestSetMethod(request, tag, other) != 0 ||
		wasiRequestSetScheme(request, 1, scheme, "") != 0 ||
		wasiRequestSetAuthority(request, 1, authority) != 0 ||
		wasiRequestSetPathWithQuery(request, 1, path) != 0 {
		return nil, "HTTP-request-URI-invalid"
	}

	// The body is taken before the request is handed over, written after.
	var outgoingBody int32
	if body != nil {
		wasiRequestBody(request, unsafe.Pointer(&area))
		if ret[0] != 0 {
			return nil, "internal-error"
		}
		outgoingBody = int32(getU32(ret[4:]))
	}

	wasiOutgoingHandle(request, 0, 0, unsafe.Pointer(&area))
	if ret[0] != 0 {
		return nil, errorCodeName(ret[8:])
	}
	future := int32(getU32(ret[8:]))

	if body != nil {
		wasiOutgoingBodyWrite(outgoingBody, unsafe.Pointer(&area))
		if ret[0] != 0 {
			return nil, "internal-error"
		}
		stream := int32(getU32(ret[4:]))
		// blocking-write-and-flush takes at most 4096 bytes at a time.
		for chunk := range slices.Chunk(body, 4096) {
			wasiOutputWrite(stream, unsafe.Pointer(unsafe.SliceData(chunk)), uint32(len(chunk)), unsafe.Pointer(&area))
			if ret[0] != 0 {
				return nil, "connection-terminated"
			}
		}
		// The stream is a child of the body: it goes before the body is finished.
		wasiOutputStreamDrop(stream)
		wasiOutgoingBodyFinish(outgoingBody, 0, 0, unsafe.Pointer(&area))
		if ret[0] != 0 {
			return nil, errorCodeName(ret[8:])
		}
	}

	pollable := wasiFutureResponseSubscribe(future)
	wasiPollableBlock(pollable)
	wasiPollableDrop(pollable)
	wasiFutureResponseGet(future, unsafe.Pointer(&area))
	if ret[0] == 0 || ret[8] != 0 {
		return nil, "internal-error"
	}
	if ret[16] != 0 {
		return nil, errorCodeName(ret[24:])
	}
	response := int32(getU32(ret[24:]))
	resp := &Response{Status: int(wasiResponseStatus(response) & 0xffff), Body: []byte{}}

	wasiResponseConsume(response, unsafe.Pointer(&area))
	if ret[0] != 0 {
		return resp, "internal-error"
	}
	incomingBody := int32(getU32(ret[4:]))
	wasiIncomingBodyStream(incomingBody, unsafe.Pointer(&area))
	if ret[0] != 0 {
		return resp, "internal-error"
	}
	input := int32(getU32(ret[4:]))

	for {
		mark := arenaTop
		wasiInputRead(input, 64<<10, unsafe.Pointer(&area))
		if ret[0] != 0 {
			if ret[4] == 1 { // closed: the whole body has arrived
				return resp, ""
			}
			return resp, "HTTP-response-incomplete"
		}
		resp.Body = append(resp.Body, memory(getU32(ret[4:]), getU32(ret[8:]))...)
		arenaTop = mark // the chunk is copied: its arena space is free again
	}
}
