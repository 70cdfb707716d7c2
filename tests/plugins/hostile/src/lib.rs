//! Fixture: tools that attack the host, each in one way, so the end-to-end tests can check that
//! Cordon contains them. `describe` itself stays fast and well-formed.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use cordon_sdk::{log, Context, NoArgs, Plugin, Text, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const MIB: usize = 1024 * 1024;

fn spin(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    let mut n = 0u64;
    loop {
        // black_box makes every iteration observable, so the loop cannot be optimized away.
        n = black_box(n.wrapping_add(1));
    }
}

fn alloc(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        // Write to every page so that the memory is really committed.
        for i in (0..MIB).step_by(4096) {
            chunk[i] = 0xa5;
        }
        hoard.push(black_box(chunk));
    }
}

/// The call's result goes through `black_box` before it is used, so this is not a tail call and
/// cannot become a loop. Frames stay small so that the wasm call stack, not the shadow stack in
/// linear memory, is what runs out.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = dive(depth + 1);
    black_box(below).wrapping_add(depth)
}

fn recurse(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    Ok(Text(dive(0).to_string()))
}

fn crash(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    panic!("hostile plugin: crash on purpose")
}

fn flood(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    let line = "flood flood flood flood flood flood flood flood flood flood flood flood flood!\n";
    Ok(Text(line.repeat(8 * MIB / line.len())))
}

/// What the sandbox let `probe` see. On Cordon every list is empty and both network attempts
/// fail.
#[derive(Serialize, JsonSchema)]
struct Probe {
    /// Names of the environment variables visible to the guest.
    env: Vec<String>,
    /// Paths found by listing `/` and `.`.
    files: Vec<String>,
    /// Paths among `/etc/passwd` and `/proc/self/environ` that could be read.
    read: Vec<String>,
    /// Outcome of a TCP connection to 127.0.0.1:80: `connected` or `error: ...`.
    tcp: String,
    /// Outcome of resolving `example.com`: `resolved: <addresses>` or `error: ...`.
    dns: String,
}

fn probe(_: NoArgs, _: &Context) -> Result<Probe, ToolError> {
    let env = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();

    let mut files = Vec::new();
    for dir in ["/", "."] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            files.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }

    let read = ["/etc/passwd", "/proc/self/environ"]
        .into_iter()
        .filter(|path| std::fs::read(path).is_ok())
        .map(String::from)
        .collect();

    let tcp = match std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], 80).into(),
        Duration::from_secs(2),
    ) {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("error: {e}"),
    };

    let dns = match std::net::ToSocketAddrs::to_socket_addrs(&("example.com", 80)) {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.map(|a| a.ip().to_string()).collect();
            format!("resolved: {}", addrs.join(", "))
        }
        Err(e) => format!("error: {e}"),
    };

    Ok(Probe {
        env,
        files,
        read,
        tcp,
        dns,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

#[derive(Serialize, JsonSchema)]
struct Slept {
    /// How long the tool slept, in milliseconds.
    slept_ms: u64,
}

fn sleep(a: SleepArgs, _: &Context) -> Result<Slept, ToolError> {
    std::thread::sleep(Duration::from_millis(a.ms));
    Ok(Slept { slept_ms: a.ms })
}

fn chatter(_: NoArgs, _: &Context) -> Result<Text, ToolError> {
    let chunk =
        "chatter chatter chatter chatter chatter chatter chatter chatter chatter!\n".repeat(1024);
    // Write errors are ignored: a host that closes the streams is doing its job.
    for _ in 0..(4 * MIB / chunk.len()) {
        let _ = std::io::stdout().write_all(chunk.as_bytes());
        let _ = std::io::stderr().write_all(chunk.as_bytes());
    }
    for i in 0..10_000 {
        log::info(format!("chatter line {i}"));
    }
    Ok(Text("ok".into()))
}

#[derive(Deserialize, JsonSchema)]
struct ForgeArgs {
    /// Text to log, printed and written to stderr as it is.
    text: String,
}

/// Tries to forge lines of the host's log: a newline, a fake host line, a terminal escape.
fn forge_log(a: ForgeArgs, _: &Context) -> Result<Text, ToolError> {
    log::warn(a.text.clone());
    let _ = writeln!(std::io::stderr(), "{}", a.text);
    Ok(Text("logged".into()))
}

struct Hostile;

impl Plugin for Hostile {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("spin", "Loops forever, burning CPU.", spin),
            Tool::new("alloc", "Allocates memory in 1 MiB chunks until it fails.", alloc),
            Tool::new("recurse", "Recurses without bound until the stack overflows.", recurse),
            Tool::new("crash", "Panics with a message.", crash),
            Tool::new("flood", "Returns 8 MiB of text.", flood),
            Tool::new(
                "probe",
                "Looks for environment variables, files, sockets and DNS, and reports what it found.",
                probe,
            ),
            Tool::new("sleep", "Sleeps for the given number of milliseconds.", sleep),
            Tool::new(
                "chatter",
                "Writes 4 MiB each to stdout and stderr and logs 10,000 lines, then returns \"ok\".",
                chatter,
            ),
            Tool::new("forge_log", "Logs the given text, newlines and escapes included.", forge_log),
        ]
    }
}

cordon_sdk::export_plugin!(Hostile);
