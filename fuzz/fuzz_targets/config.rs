//! `cordon.toml` parsing and checking ([`Config::parse`]), then what the host builds from a
//! config it accepted: rate limiters, tool scopes, each plugin's grants and limits.
//!
//! Invariants:
//! - a config that parses satisfies what `Config::check` promises for every plugin's limits;
//! - what `parse` accepts, the parts built from it at start accept too (rate limits, scopes);
//! - the meaning does not depend on the TOML's formatting: the document re-serialised by `toml`
//!   parses to the same config.
#![no_main]

use cordon_host::auth::ToolScope;
use cordon_host::config::Config;
use cordon_host::ratelimit::RateLimits;
use cordon_sandbox::grants::credentials::Credentials;
use cordon_sandbox::grants::PluginGrants;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text) else { return };

    // What `check` guarantees, for the defaults and every plugin section.
    let pool_memory = config.pool.max_memory_mb.saturating_mul(1 << 20) as usize;
    let names = std::iter::once("a plugin without a section").chain(config.plugins.keys().map(String::as_str));
    for name in names {
        let limits = config.limits_for(name);
        assert!(limits.memory_bytes <= pool_memory, "{name}: memory above the pool slot");
        assert!(limits.max_concurrency >= 1 && limits.max_concurrency <= config.pool.max_instances, "{name}");
        assert!(!limits.timeout.is_zero() && limits.fuel > 0, "{name}");
    }

    // Built at start from an accepted config: these must not refuse it.
    let rate_limits = RateLimits::new(&config.rate_limits).expect("a parsed config's rate limits build");
    for key in ["alice", "demo", ""] {
        let _ = rate_limits.principal(key);
        let _ = rate_limits.plugin(key);
        let _ = rate_limits.check(key, key);
    }
    // Token scopes are checked when the token table is built; it must not panic on any pattern.
    for token in &config.auth.tokens {
        if let Ok(scope) = ToolScope::from_patterns(&token.tools) {
            let _ = scope.allows("demo_echo");
            let _ = scope.describe();
        }
    }
    // Grants parse (no credential is loaded: secrets come from env and files).
    let no_credentials = Credentials::default();
    let protected = config.protected_paths(Path::new("data"), Path::new("plugins"), None);
    for plugin in config.plugins.values() {
        let _ = PluginGrants::new(&plugin.http, &plugin.dirs, &plugin.config, &no_credentials, &protected);
    }

    // Same document, `toml`'s own formatting: same config.
    let table: toml::Table = toml::from_str(text).expect("a parsed config is a TOML table");
    let again = toml::to_string(&table).expect("a TOML table serialises");
    let reparsed = Config::parse(&again).unwrap_or_else(|e| panic!("re-serialised config refused: {e:#}\n{again}"));
    assert_eq!(format!("{config:?}"), format!("{reparsed:?}"), "re-serialised config differs:\n{again}");
});
