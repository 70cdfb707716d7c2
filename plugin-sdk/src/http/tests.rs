use super::*;

fn target(url: &str) -> Target {
    Target::parse(url).unwrap_or_else(|e| panic!("{url} parses: {e}"))
}

fn parts(url: &str) -> (bool, String, String) {
    let t = target(url);
    (t.https, t.authority, t.path_with_query)
}

fn invalid(url: &str) -> String {
    match Target::parse(url) {
        Err(HttpError::InvalidUrl(message)) => message,
        other => panic!("{url} should be an invalid URL, got {other:?}"),
    }
}

#[test]
fn parses_scheme_authority_and_path() {
    assert_eq!(
        parts("https://api.example.com/v1/users?id=7&x=y"),
        (true, "api.example.com".into(), "/v1/users?id=7&x=y".into())
    );
    assert_eq!(parts("http://localhost:8080/health"), (false, "localhost:8080".into(), "/health".into()));
    assert_eq!(parts("HTTPS://Example.COM"), (true, "Example.COM".into(), "/".into()));
    assert_eq!(parts("http://127.0.0.1:9/"), (false, "127.0.0.1:9".into(), "/".into()));
    assert_eq!(parts("http://example.com?q=1"), (false, "example.com".into(), "/?q=1".into()));
    assert_eq!(parts("http://[::1]:3000/x"), (false, "[::1]:3000".into(), "/x".into()));
    assert_eq!(parts("https://[2001:db8::1]/"), (true, "[2001:db8::1]".into(), "/".into()));
}

#[test]
fn drops_the_fragment() {
    assert_eq!(target("https://a.example/p?q=1#frag").path_with_query, "/p?q=1");
    assert_eq!(target("https://a.example#frag").path_with_query, "/");
}

#[test]
fn rejects_what_cannot_be_sent() {
    for (url, why) in [
        ("ftp://example.com/file", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/path", "does not start with"),
        ("", "does not start with"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://:80/", "no host"),
        ("https://user:pw@example.com/", "user info"),
        ("https://good.example@evil.example/", "user info"),
        ("http://example.com:/", "not a number"),
        ("http://example.com:http/", "not a number"),
        ("http://example.com:0/", "out of range"),
        ("http://example.com:65536/", "out of range"),
        ("http://example.com:123456/", "not a number"),
        ("http://exa mple.com/", "contains ' '"),
        ("http://example.com/a b", "contains ' '"),
        ("http://example.com/\r\nx: y", "contains '\\r'"),
        ("http://exa\\mple.com/", "backslash"),
        ("http://[::1/", "missing its `]`"),
        ("http://[::1]x/", "after the IPv6"),
        ("http://[zz]/", "IPv6 address is malformed"),
        ("http://ex<ample.com/", "characters a host name cannot"),
    ] {
        let message = invalid(url);
        assert!(message.contains(why), "{url}: {message:?} lacks {why:?}");
    }
}

#[test]
fn methods_are_normalized_only_when_standard() {
    assert_eq!(Request::new("get", "http://x").method(), "GET");
    assert_eq!(Request::new("Patch", "http://x").method(), "PATCH");
    assert_eq!(Request::new("PROPFIND", "http://x").method(), "PROPFIND");
    assert_eq!(Request::new("purge", "http://x").method(), "purge");
    assert_eq!(Request::post("http://x", "b").method(), "POST");
    assert!(is_token("M-SEARCH"));
    assert!(!is_token(""));
    assert!(!is_token("GET /"));
    assert!(!is_token("GÉT"));
}

#[test]
fn natively_send_validates_then_fails() {
    let e = Request::get("gopher://x").send().expect_err("bad URL");
    assert!(matches!(e, HttpError::InvalidUrl(_)), "{e:?}");

    let e = Request::new("BAD METHOD", "http://x").send().expect_err("bad method");
    assert!(matches!(e, HttpError::InvalidRequest(_)), "{e:?}");

    let e = Request::get("https://example.com/").send().expect_err("no host to send through");
    match e {
        HttpError::Failed { url, message } => {
            assert_eq!(url, "https://example.com/");
            assert!(message.contains("only available inside a component"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn errors_map_to_tool_errors() {
    let denied: ToolError = HttpError::Denied { url: "https://evil.example/x".into() }.into();
    assert_eq!(denied.kind, EGRESS_DENIED);
    assert!(!denied.retryable);
    assert!(denied.message.contains("https://evil.example/x"), "{denied}");
    assert!(denied.message.contains("grants"), "{denied}");

    let bad: ToolError = HttpError::InvalidUrl("invalid URL \"x\": no".into()).into();
    assert_eq!(
        (bad.kind.as_str(), bad.message.as_str(), bad.retryable),
        (ToolError::INVALID_ARGUMENTS, "invalid URL \"x\": no", false)
    );

    let bad: ToolError = HttpError::InvalidRequest("bad header".into()).into();
    assert_eq!((bad.kind.as_str(), bad.retryable), (ToolError::INVALID_ARGUMENTS, false));

    let failed: ToolError =
        HttpError::Failed { url: "https://api.example/".into(), message: "ConnectionRefused".into() }.into();
    assert_eq!(failed.kind, UPSTREAM_UNREACHABLE);
    assert!(failed.retryable);
    assert_eq!(failed.message, "the request to https://api.example/ failed: ConnectionRefused");

    let big: ToolError =
        HttpError::ResponseTooLarge { url: "https://api.example/big".into(), limit: Some(1024) }.into();
    assert_eq!((big.kind.as_str(), big.retryable), (RESPONSE_TOO_LARGE, false));
    assert!(big.message.contains("1024 bytes"), "{big}");
}

fn response(status: u16, body: &str) -> Response {
    Response {
        url: "https://api.example/thing".into(),
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn error_for_status_keeps_success_and_redirects() {
    for status in [200, 204, 301, 399] {
        assert!(response(status, "").error_for_status().is_ok(), "{status}");
    }
    assert!(response(204, "").is_success());
    assert!(!response(301, "").is_success());
}

#[test]
fn error_for_status_maps_4xx_and_5xx() {
    let e = response(404, "no such thing").error_for_status().expect_err("404");
    assert_eq!((e.kind.as_str(), e.retryable), (UPSTREAM_ERROR, false));
    assert_eq!(e.message, "https://api.example/thing answered HTTP 404: no such thing");

    let e = response(503, "").error_for_status().expect_err("503");
    assert_eq!((e.kind.as_str(), e.retryable), (UPSTREAM_ERROR, true));
    assert_eq!(e.message, "https://api.example/thing answered HTTP 503");

    let long = "é".repeat(500);
    let e = response(500, &long).error_for_status().expect_err("500");
    assert!(e.message.ends_with('…'), "{}", e.message);
    assert!(e.message.chars().count() < 300, "{}", e.message);
}

#[test]
fn response_helpers() {
    let r = response(200, r#"{"a": 1}"#);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("x-missing"), None);
    assert_eq!(r.text(), r#"{"a": 1}"#);
    let v: serde_json::Value = r.json().expect("JSON");
    assert_eq!(v["a"], 1);

    let e = response(200, "<html>").json::<serde_json::Value>().expect_err("not JSON");
    assert_eq!((e.kind.as_str(), e.retryable), (INVALID_RESPONSE, false));
    assert!(e.message.contains("https://api.example/thing"), "{}", e.message);
}

#[test]
fn builder_keeps_headers_and_body() {
    let r = Request::post("https://api.example/", "hi")
        .header("accept", "application/json")
        .header("x-a", "1")
        .header("x-a", "2");
    assert_eq!(r.url(), "https://api.example/");
    assert_eq!(r.headers.len(), 3);
    assert_eq!(r.body.as_deref(), Some(&b"hi"[..]));
}

#[test]
fn config_is_none_natively() {
    assert_eq!(crate::config("base_url"), None);
}
