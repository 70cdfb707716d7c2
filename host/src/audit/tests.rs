//! The audit log's unit tests.

use super::record::strip_url;
use super::writer::numbered;
use super::*;
use cordon_core::IdempotencyUse;
use serde_json::json;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cordon-audit-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(file: &Path) -> AuditConfig {
    AuditConfig { file: Some(file.to_path_buf()), ..AuditConfig::default() }
}

fn record(call_id: &str, key: Option<&str>, tool: &str, error: Option<&str>, time: SystemTime) -> AuditRecord {
    AuditRecord {
        time: timestamp(time),
        call_id: call_id.into(),
        principal: "alice".into(),
        tool: tool.into(),
        plugin: "demo".into(),
        idempotency_key: key.map(str::to_string),
        idempotency: if key.is_some() { IdempotencyUse::Miss } else { IdempotencyUse::None },
        outcome: if error.is_some() { Outcome::Error } else { Outcome::Ok },
        error_type: error.map(|_| "upstream_failed".to_string()),
        error_message: error.map(str::to_string),
        retryable: error.map(|_| true),
        ..AuditRecord::default()
    }
}

fn lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn redaction_is_recursive_and_case_insensitive() {
    let args = json!({
        "query": "weather",
        "API_Key": "k1",
        "nested": {"clientSecret": "s", "Password": 3, "ok": [1, {"x-auth-TOKEN": "t", "n": 2}]},
        "items": [{"authorization": "Bearer z", "credentials": {"a": 1}, "name": "n"}],
    });
    let expected = json!({
        "query": "weather",
        "API_Key": "[redacted]",
        "nested": {"clientSecret": "[redacted]", "Password": "[redacted]", "ok": [1, {"x-auth-TOKEN": "[redacted]", "n": 2}]},
        "items": [{"authorization": "[redacted]", "credentials": "[redacted]", "name": "n"}],
    });
    assert_eq!(redact(&args), expected);
    // The serializer redacts the same way, without a copy.
    let r = AuditRecord { arguments: Some(args), ..AuditRecord::default() };
    let written: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(written["arguments"], expected);
}

#[test]
fn arguments_are_written_only_when_configured() {
    let dir = temp_dir("args");
    let file = dir.join("audit.jsonl");
    let args = json!({"q": 1, "token": "t"});
    let off = AuditLog::start(&config(&file), &dir).unwrap();
    assert_eq!(off.arguments(&args), None);
    // Even a record that carries arguments is written without them.
    off.record(AuditRecord { call_id: "1".into(), arguments: Some(args.clone()), ..AuditRecord::default() });
    assert!(off.flush(Duration::from_secs(5)));
    let on = AuditLog::start(&AuditConfig { log_arguments: true, ..config(&file) }, &dir).unwrap();
    on.record(AuditRecord { call_id: "2".into(), arguments: on.arguments(&args), ..AuditRecord::default() });
    assert!(on.flush(Duration::from_secs(5)));
    let written = lines(&file);
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].arguments, None);
    assert_eq!(written[1].arguments, Some(json!({"q": 1, "token": "[redacted]"})));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("\"t\""), "{text}");
}

#[test]
fn the_queue_charges_the_arguments_a_record_holds() {
    let bare = AuditRecord::default().approximate_len();
    let held = AuditRecord {
        unhashed_arguments: Some(json!({})),
        arguments: Some(json!({})),
        arguments_len: 1 << 20,
        ..AuditRecord::default()
    };
    assert_eq!(held.approximate_len(), bare + (2 << 20));
}

#[test]
fn the_writer_hashes_arguments_left_unhashed() {
    let dir = temp_dir("hash");
    let file = dir.join("audit.jsonl");
    let args = json!({"b": [1, 2], "a": "x"});
    let log = AuditLog::start(&config(&file), &dir).unwrap();
    log.record(AuditRecord { call_id: "1".into(), unhashed_arguments: Some(args.clone()), ..AuditRecord::default() });
    // A keyed call's fingerprint is already known and stays as it is.
    log.record(AuditRecord { call_id: "2".into(), arguments_sha256: "abc".into(), ..AuditRecord::default() });
    assert!(log.flush(Duration::from_secs(5)));
    let written = lines(&file);
    assert_eq!(written[0].arguments_sha256, arguments_sha256(&args));
    assert_eq!(written[0].arguments_sha256.len(), 64);
    assert_eq!(written[1].arguments_sha256, "abc");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("unhashed"));
}

#[test]
fn files_rotate_by_size_and_keep_at_most_keep_files() {
    let dir = temp_dir("rotate");
    let file = dir.join("audit.jsonl");
    let one_line = serde_json::to_string(&record("c00", None, "demo_echo", None, SystemTime::now())).unwrap();
    // Two lines fit in a file, a third does not.
    let max = 2 * (one_line.len() as u64 + 1) + 10;
    let log = AuditLog::start(&AuditConfig { max_file_bytes: max, keep_files: 2, ..config(&file) }, &dir).unwrap();
    for i in 0..9 {
        log.record(record(&format!("c{i:02}"), None, "demo_echo", None, SystemTime::now()));
    }
    assert!(log.flush(Duration::from_secs(5)));
    assert_eq!(log.dropped(), 0);
    let ids = |p: &Path| lines(p).into_iter().map(|r| r.call_id).collect::<Vec<_>>();
    assert_eq!(ids(&file), ["c08"]);
    assert_eq!(ids(&numbered(&file, 1)), ["c06", "c07"]);
    assert_eq!(ids(&numbered(&file, 2)), ["c04", "c05"]);
    assert!(!numbered(&file, 3).exists());
    for f in [&file, &numbered(&file, 1), &numbered(&file, 2)] {
        assert!(std::fs::metadata(f).unwrap().len() <= max);
    }
    // A restart appends to the existing file and rotates from its real size.
    drop(log);
    let log = AuditLog::start(&AuditConfig { max_file_bytes: max, keep_files: 2, ..config(&file) }, &dir).unwrap();
    log.record(record("c09", None, "demo_echo", None, SystemTime::now()));
    log.record(record("c10", None, "demo_echo", None, SystemTime::now()));
    assert!(log.flush(Duration::from_secs(5)));
    assert_eq!(ids(&file), ["c10"]);
    assert_eq!(ids(&numbered(&file, 1)), ["c08", "c09"]);
}

#[test]
fn an_unwritable_file_never_fails_or_blocks_a_call() {
    let dir = temp_dir("unwritable");
    // A regular file where the log's directory should be: even root cannot create it.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let log = AuditLog::start(&config(&blocker.join("audit.jsonl")), &dir).unwrap();
    let started = Instant::now();
    for i in 0..100 {
        log.record(record(&format!("c{i}"), None, "demo_echo", None, SystemTime::now()));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(log.flush(Duration::from_secs(5)));
    assert_eq!(log.dropped(), 100);
}

#[test]
fn tracing_only_needs_no_file() {
    let dir = temp_dir("tracing");
    let log = AuditLog::start(&AuditConfig { file: Some(PathBuf::new()), ..AuditConfig::default() }, &dir).unwrap();
    log.record(record("c1", None, "demo_echo", None, SystemTime::now()));
    assert!(log.flush(Duration::from_secs(1)));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(AuditConfig::default().file_in(&dir), Some(dir.join("audit.jsonl")));
}

#[test]
fn errors_report_keeps_unreconciled_failures_per_key() {
    let dir = temp_dir("report");
    let file = dir.join("audit.jsonl");
    // Whole seconds: the log keeps milliseconds, and `since` compares with what was written.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(now - 3600);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let rotated = [
        record("c1", Some("batch-1"), "pay_send", Some("upstream 503"), at(1)),
        record("c2", Some("batch-2"), "pay_send", Some("first failure"), at(2)),
    ];
    let current = [
        record("c3", Some("batch-1"), "pay_send", None, at(3)),
        record("c4", Some("batch-2"), "pay_send", Some("second failure"), at(4)),
        record("c5", None, "notes_get", Some("not found"), at(5)),
        record("c6", Some("batch-3"), "pay_send", Some("declined"), at(6)),
    ];
    let text =
        |records: &[AuditRecord]| records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>();
    std::fs::write(numbered(&file, 1), text(&rotated)).unwrap();
    std::fs::write(&file, format!("{}not json\n{{\"time\": 5}}\n{{\"other\": \"json\"}}\n\n", text(&current))).unwrap();

    let report = errors_report(&file, None, &ErrorsFilter::default()).unwrap();
    assert_eq!(report.skipped_lines, 3);
    let keys: Vec<_> = report.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["batch-2", "c5", "batch-3"], "batch-1 failed, then succeeded: reconciled");
    let batch2 = &report.entries[0];
    assert_eq!(batch2.attempts, 2);
    assert_eq!(batch2.message.as_deref(), Some("second failure"));
    assert_eq!(batch2.call_id, "c4");
    assert_eq!(batch2.last_time, timestamp(at(4)));
    assert!(batch2.idempotency_key);
    assert!(!report.entries[1].idempotency_key);

    let by_tool = errors_report(&file, None, &ErrorsFilter { tool: Some("notes_get"), scope: None }).unwrap();
    assert_eq!(by_tool.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["c5"]);

    let recent = errors_report(&file, Some(at(4)), &ErrorsFilter::default()).unwrap();
    let keys: Vec<_> = recent.entries.iter().map(|e| (e.key.as_str(), e.attempts)).collect();
    assert_eq!(keys, [("batch-2", 1), ("c5", 1), ("batch-3", 1)]);

    assert!(errors_report(&dir.join("missing.jsonl"), None, &ErrorsFilter::default()).is_err());
}

/// Batch items reconcile by scope: the same key under two scopes is two groups, and
/// `--scope` reads only the item's own calls.
#[test]
fn errors_report_groups_and_filters_by_idempotency_scope() {
    let dir = temp_dir("report-scope");
    let file = dir.join("audit.jsonl");
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
    let scoped = |id: &str, scope: &str, error: Option<&str>, t| AuditRecord {
        idempotency_scope: Some(scope.into()),
        ..record(id, Some("same-key"), "pay_send", error, t)
    };
    let lines = [
        scoped("c1", "item-1", Some("declined"), at(1)),
        scoped("c2", "item-2", Some("declined"), at(2)),
        scoped("c3", "item-2", None, at(3)),
        record("c4", Some("same-key"), "pay_send", Some("unscoped"), at(4)),
    ];
    let text = lines.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>();
    std::fs::write(&file, text).unwrap();

    let all = errors_report(&file, None, &ErrorsFilter::default()).unwrap();
    let standing: Vec<_> = all.entries.iter().map(|e| (e.call_id.as_str(), e.idempotency_scope.as_deref())).collect();
    assert_eq!(standing, [("c1", Some("item-1")), ("c4", None)], "item-2 succeeded later; scopes never merge");
    let item1 = errors_report(&file, None, &ErrorsFilter { tool: None, scope: Some("item-1") }).unwrap();
    assert_eq!(item1.entries.iter().map(|e| e.call_id.as_str()).collect::<Vec<_>>(), ["c1"]);
    let item2 = errors_report(&file, None, &ErrorsFilter { tool: None, scope: Some("item-2") }).unwrap();
    assert!(item2.entries.is_empty(), "{:?}", item2.entries);
    let line: Value = serde_json::from_str(&serde_json::to_string(&lines[0]).unwrap()).unwrap();
    assert_eq!(line["idempotency_scope"], "item-1");
    let unscoped: Value = serde_json::from_str(&serde_json::to_string(&lines[3]).unwrap()).unwrap();
    assert!(unscoped.get("idempotency_scope").is_none(), "{unscoped}");
}

#[test]
fn refused_urls_and_since_are_cleaned_and_parsed() {
    assert_eq!(strip_url("https://user:pw@api.example.com:8443/v1/x?api_key=s#f"), "https://api.example.com:8443/v1/x");
    assert_eq!(strip_url("http://h?q=1"), "http://h");
    assert_eq!(parse_since("2025-05-01").unwrap(), humantime::parse_rfc3339("2025-05-01T00:00:00Z").unwrap());
    assert_eq!(
        parse_since("2025-05-01T12:00:00.250Z").unwrap(),
        humantime::parse_rfc3339("2025-05-01T12:00:00.250Z").unwrap()
    );
    let two_hours_ago = parse_since("2h").unwrap();
    let age = SystemTime::now().duration_since(two_hours_ago).unwrap();
    assert!(age >= Duration::from_secs(7200) && age < Duration::from_secs(7260));
    assert!(parse_since("yesterday-ish").is_err());
    let t = humantime::parse_rfc3339("2025-05-01T12:00:00.250Z").unwrap();
    assert_eq!(timestamp(t), "2025-05-01T12:00:00.250Z");
}
