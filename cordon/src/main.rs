//! The `cordon` command line.
//!
//! Exit codes: 0 success; 1 a tool error (`cordon call`) or a runtime failure (`serve`);
//! 2 a usage error — bad flags, a bad config file, an unknown tool, arguments that are not a
//! JSON object.

/// mimalloc instead of glibc malloc: a call allocates on one thread and frees some of it on another
/// (the audit writer, tokio workers), and glibc then contends on its arena lock with a futex
/// wake-up per contended free; mimalloc frees across threads without a lock (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cordon::mcp;
use cordon::server::HttpOptions;
use cordon::tls::TlsFiles;
use cordon_core::Principal;
use cordon_host::auth::Caller;
use cordon_host::call::{CallRequest, ProtocolError};
use cordon_host::idempotency::{KeySource, ProvidedKey};
use cordon_host::{auth, Config, Cordon, Paths};
use cordon_state::Shared;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "cordon", version, about = "Serve MCP tools implemented as sandboxed WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the plugins over MCP (Streamable HTTP by default, or stdio).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Speak MCP on stdin/stdout (for Claude Desktop, Claude Code). Logs go to stderr.
        #[arg(long, conflicts_with = "listen")]
        stdio: bool,
        /// Address for Streamable HTTP [default: 127.0.0.1:8787, or [server] listen]
        #[arg(long, env = "CORDON_LISTEN")]
        listen: Option<String>,
        /// Stateless HTTP: no sessions, JSON responses instead of SSE.
        #[arg(long, env = "CORDON_STATELESS")]
        stateless: bool,
        /// Serve HTTP without bearer tokens (only on a loopback address; callers are `anonymous`).
        #[arg(long, env = "CORDON_ALLOW_UNAUTHENTICATED")]
        allow_unauthenticated: bool,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key; reloaded on SIGHUP)
        /// [default: [server] tls_cert]
        #[arg(long, env = "CORDON_TLS_CERT", requires = "tls_key", conflicts_with = "stdio")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert [default: [server] tls_key]
        #[arg(long, env = "CORDON_TLS_KEY", requires = "tls_cert", conflicts_with = "stdio")]
        tls_key: Option<PathBuf>,
    },
    /// Print every tool (name, description, schemas), every plugin and every refused file as JSON.
    Tools {
        #[command(flatten)]
        common: Common,
    },
    /// Run one tool call in process, through the same path as the server, and print the result.
    Call {
        /// Published tool name, e.g. demo_echo.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
        /// Idempotency key: a second call with the same key returns the first's result.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Describe a plugin file: world, tools, schemas, digest, lint findings, and what the
    /// current config grants it.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Check a plugin's tool contracts (descriptions, documented properties, closed schemas).
    /// Exits 1 when a finding is an error.
    Lint {
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Create a plugin project that builds with `make` into NAME.wasm.
    New {
        /// The plugin's name (its tools are published as NAME_<tool>).
        name: String,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: cordon::scaffold::Lang,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Make a component of a WASI preview-1 core module (Zig, C, Go): the same wrapping the
    /// server applies to a core module in the plugins folder.
    Wrap {
        /// The core module (.wasm).
        input: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Fetch a plugin published as an OCI artifact, verify it (digest pins, and a signature
    /// with --key or [plugins.NAME] signed_by), and install it into the plugins folder, where a
    /// running server picks it up.
    Pull {
        /// oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST, or a plugin name whose
        /// [plugins.NAME] source says where.
        reference: String,
        /// Install as NAME.wasm [default: the repository's last path segment].
        #[arg(long)]
        name: Option<String>,
        /// Require a cosign-compatible signature by this PEM public key [default: [plugins.NAME]
        /// signed_by].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Refuse a component larger than this many MiB.
        #[arg(long, default_value_t = cordon::distribution::DEFAULT_MAX_PULL_MB)]
        max_mb: u64,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Publish a component as an OCI artifact (the wasm layout wkg and Wassette read); prints
    /// its manifest digest.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// oci://REGISTRY/REPOSITORY:TAG
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Sign a published artifact with a local key, stored in the registry the way cosign stores
    /// its signatures (`cosign verify --key … --insecure-ignore-tlog` accepts it).
    Sign {
        /// oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST
        reference: String,
        /// The PKCS#8 PEM private key (ECDSA P-256), e.g. from `cordon key new`.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Signing keys for `cordon sign`.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Bearer tokens for HTTP callers.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and clean the idempotency store.
    #[command(subcommand)]
    Idempotency(IdempotencyCommand),
    /// Query the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Tool-level errors per idempotency key (latest attempt), leaving out keys that later
    /// succeeded: the reconciliation pass after a Messages Batch.
    Errors {
        /// Only records since: RFC 3339, a date (YYYY-MM-DD), or an age such as 2h.
        #[arg(long, value_parser = cordon_host::audit::parse_since)]
        since: Option<std::time::SystemTime>,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
        /// Only calls whose token carried this idempotency scope (a batch item's custom_id).
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum IdempotencyCommand {
    /// Recent records, newest first, as JSON lines.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Every record with this key (one per principal, plugin and tool), with its stored outcome.
    Show {
        /// The idempotency key.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete finished records that expired, or that are older than --older-than.
    Purge {
        /// Age, e.g. `30m`, `12h`, `7d`; records created before now minus this are deleted.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print the SHA-256 of a token, for `[[auth.tokens]] sha256` (reads stdin without TOKEN).
    Hash {
        /// The token; omit it to read one line from stdin (keeps it out of shell history).
        token: Option<String>,
    },
    /// Generate a random token and print it with the config lines that accept it.
    New {
        /// Principal the token authenticates as.
        #[arg(long)]
        principal: String,
    },
    /// Mint a short-lived host-signed token (signed with the data directory's key).
    Issue {
        /// Principal the token authenticates as.
        #[arg(long)]
        subject: String,
        /// Tools it may list and call: glob patterns over tool names, comma-separated
        /// (e.g. 'demo_*,payments_charge') [default: every tool]
        #[arg(long, value_delimiter = ',')]
        tools: Vec<String>,
        /// Lifetime, e.g. 15m, 12h, 7d.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: std::time::Duration,
        /// Key the token's calls by this scope (a batch item's custom_id): a call that names no
        /// key of its own is keyed by scope, tool and arguments, so a resubmitted item — with a
        /// fresh token for the same scope — replays instead of acting again.
        #[arg(long)]
        idempotency_scope: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a host-signed token by id; a running server refuses it from its next request.
    Revoke {
        /// The token id (`id` printed by `cordon token issue`).
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new ECDSA P-256 key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    New {
        /// Path prefix of the two files.
        #[arg(long, default_value = "cordon")]
        out: PathBuf,
    },
}

/// How to reach a registry.
#[derive(Args)]
struct RegistryArgs {
    /// Registry user [default: the Docker config file's entry for the registry, else anonymous].
    #[arg(long, env = "CORDON_REGISTRY_USERNAME", requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from stdin (with --username).
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Plain HTTP instead of HTTPS; only to a loopback registry.
    #[arg(long)]
    plain_http: bool,
}

impl RegistryArgs {
    fn flags(&self) -> Result<cordon::distribution::RegistryFlags> {
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        } else {
            None
        };
        Ok(cordon::distribution::RegistryFlags {
            username: self.username.clone(),
            password,
            plain_http: self.plain_http,
        })
    }
}

#[derive(Args)]
struct Common {
    /// Folder of plugin components (*.wasm) [default: ./plugins, or [paths] plugins]
    #[arg(long, env = "CORDON_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Data directory (compile cache) [default: ./cordon-data, or [paths] data]
    #[arg(long, env = "CORDON_DATA")]
    data: Option<PathBuf>,
    /// Config file [default: ./cordon.toml if it exists]
    #[arg(long, env = "CORDON_CONFIG")]
    config: Option<PathBuf>,
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn runtime(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. });
    init_logging(quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Dropping the runtime would wait for its blocking threads, and one may be parked reading
    // stdin (the stdio transport) or running an abandoned call: the work that matters is done.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Serve { common, stdio, listen, stateless, allow_unauthenticated, tls_cert, tls_key } => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let tls = match (tls_cert.or_else(|| config.server.tls_cert.clone()), tls_key.or_else(|| config.server.tls_key.clone())) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(usage(anyhow::anyhow!("HTTPS needs both a certificate and a key: set [server] tls_cert and tls_key (or --tls-cert and --tls-key)"))),
            };
            let options = HttpOptions {
                listen: listen.unwrap_or_else(|| config.server.listen.clone()),
                stateless: stateless || config.server.stateless,
                allow_unauthenticated,
                tls,
            };
            // Check the address and auth before the (possibly slow) plugin load.
            let store = Shared::open(&config.store, &paths.data).await.map_err(runtime)?;
            let revocations = store.revocations().await.map_err(runtime)?;
            let plan = match stdio {
                true => None,
                false => Some(options.plan(&config, &paths.data, revocations.clone()).map_err(runtime)?),
            };
            let cordon = Cordon::start_with_store(config, paths, store, revocations).await.map_err(runtime)?;
            // Only a server recovers and upkeeps tasks: a one-shot command would take them over
            // and exit mid-run.
            cordon.spawn_task_upkeep();
            let served = match plan {
                None => cordon::server::serve_stdio(cordon.clone()).await,
                Some(plan) => cordon::server::serve_http(cordon.clone(), plan).await,
            };
            cordon.flush_audit(std::time::Duration::from_secs(5));
            if let Shared::Postgres(pg) = cordon.store() {
                pg.leave().await;
            }
            served.map_err(runtime)?;
            Ok(0)
        }
        Command::Idempotency(command) => idempotency_command(command).await,
        Command::Inspect { file, common } => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let examined = cordon::inspect::examine(&config, &paths.data, &file).await.map_err(runtime)?;
            let section = paths.config_file.as_deref().and_then(|path| plugin_section(path, &examined.plugin.name));
            print_json(&cordon::inspect::inspection(&examined, &config, section));
            Ok(0)
        }
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = cordon::scaffold::create(&name, lang, &dir).map_err(usage)?;
            eprintln!("created {} ({} files); build it with: make -C {}", dir.display(), files.len(), dir.display());
            Ok(0)
        }
        Command::Wrap { input, output } => {
            let core =
                std::fs::read(&input).with_context(|| format!("cannot read {}", input.display())).map_err(usage)?;
            let component = cordon_sandbox::wrap::wrap(&core).map_err(runtime)?;
            std::fs::write(&output, &component)
                .with_context(|| format!("cannot write {}", output.display()))
                .map_err(runtime)?;
            eprintln!("{}: component of {} bytes", output.display(), component.len());
            Ok(0)
        }
        Command::Lint { file, common } => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let examined = cordon::inspect::examine(&config, &paths.data, &file).await.map_err(runtime)?;
            for finding in &examined.findings {
                print_line(&serde_json::to_string(finding).unwrap_or_default());
            }
            let (errors, warnings) = examined.findings.iter().fold((0, 0), |(e, w), f| match f.severity {
                cordon_host::registry::lint::Severity::Error => (e + 1, w),
                cordon_host::registry::lint::Severity::Warning => (e, w + 1),
            });
            eprintln!("{}: {} tool(s), {errors} error(s), {warnings} warning(s)", file.display(), examined.tools.len());
            Ok(if examined.has_errors() { 1 } else { 0 })
        }
        Command::Audit(AuditCommand::Errors { since, tool, scope, common }) => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let Some(path) = config.audit.file_in(&paths.data) else {
                return Err(usage(anyhow::anyhow!("the audit file is turned off ([audit] file = \"\")")));
            };
            let filter = cordon_host::audit::ErrorsFilter { tool: tool.as_deref(), scope: scope.as_deref() };
            let report = cordon_host::audit::errors_report(&path, since, &filter).map_err(runtime)?;
            print_json(&serde_json::to_value(&report).unwrap_or_default());
            Ok(0)
        }
        Command::Pull { reference, name, key, max_mb, registry, common } => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let request = cordon::distribution::PullRequest { reference, name, key, max_mb };
            let flags = registry.flags().map_err(usage)?;
            let pulled = cordon::distribution::pull(&config, &paths.plugins, request, &flags).await.map_err(runtime)?;
            print_json(&pulled);
            Ok(0)
        }
        Command::Push { file, reference, registry } => {
            let flags = registry.flags().map_err(usage)?;
            print_json(&cordon::distribution::push(&file, &reference, &flags).await.map_err(runtime)?);
            Ok(0)
        }
        Command::Sign { reference, key, registry } => {
            let flags = registry.flags().map_err(usage)?;
            print_json(&cordon::distribution::sign(&reference, &key, &flags).await.map_err(runtime)?);
            Ok(0)
        }
        Command::Key(KeyCommand::New { out }) => {
            let (private, public) = cordon::distribution::new_key(&out).map_err(runtime)?;
            eprintln!(
                "wrote {} (keep it secret) and {} (for [plugins.NAME] signed_by and cordon pull --key)",
                private.display(),
                public.display()
            );
            Ok(0)
        }
        Command::Token(TokenCommand::Hash { token }) => {
            let token = match token {
                Some(token) => token,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("cannot read the token from stdin").map_err(usage)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if token.is_empty() {
                return Err(usage(anyhow::anyhow!("the token is empty")));
            }
            println!("{}", auth::hash_token(&token));
            Ok(0)
        }
        Command::Token(TokenCommand::Issue { subject, tools, ttl, idempotency_scope, common }) => {
            let (_, paths) = resolve(&common).map_err(usage)?;
            // Bad patterns are refused now rather than on first use.
            auth::ToolScope::from_patterns(&tools).map_err(usage)?;
            let signer = auth::signed::Signer::load_or_create(&paths.data).map_err(runtime)?;
            let (token, claims) = signer
                .issue_scoped(&subject, &tools, idempotency_scope.as_deref(), ttl, std::time::SystemTime::now())
                .map_err(usage)?;
            let expires = humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(claims.exp));
            let mut printed = serde_json::json!({ "token": token, "id": claims.jti, "subject": claims.sub,
                "tools": claims.tools, "expires": expires.to_string() });
            if let Some(scope) = &claims.idempotency_scope {
                printed["idempotency_scope"] = scope.as_str().into();
            }
            println!("{printed}");
            Ok(0)
        }
        Command::Token(TokenCommand::Revoke { id, common }) => {
            let (config, paths) = resolve(&common).map_err(usage)?;
            let revocations = maintenance_store(&config, &paths).await?.revocations().await.map_err(runtime)?;
            let fresh = revocations.revoke(&id).await.map_err(runtime)?;
            println!("{}", if fresh { format!("revoked {id}") } else { format!("{id} was already revoked") });
            Ok(0)
        }
        Command::Token(TokenCommand::New { principal }) => {
            let token = format!("cdn_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            println!("token: {token}");
            println!();
            println!("[[auth.tokens]]");
            println!("principal = {principal:?}");
            println!("sha256 = \"{}\"", auth::hash_token(&token));
            Ok(0)
        }
        Command::Tools { common } => {
            let cordon = start(&common).await?;
            print_json(&cordon.catalog().to_json());
            Ok(0)
        }
        Command::Call { tool, arguments, idempotency_key, common } => {
            let arguments = match serde_json::from_str::<Value>(&arguments) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(usage(anyhow::anyhow!("arguments must be a JSON object, e.g. '{{\"text\": \"hi\"}}'")))
                }
                Err(e) => return Err(usage(anyhow::anyhow!("arguments are not valid JSON: {e}"))),
            };
            let cordon = start(&common).await?;
            let caller = Caller::unrestricted(Principal::new(cordon.config().server.stdio_principal.as_str()));
            let idempotency_key = idempotency_key.map(|key| ProvidedKey { key, source: KeySource::Cli });
            // No client to cancel or to report to: the link is inert.
            let link = Default::default();
            let request =
                CallRequest { tool, arguments: Some(arguments), caller, idempotency_key, link, task_id: None };
            let outcome = cordon.call(request).await;
            // The guest's output reaches the log in its instance's teardown, after the result.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), cordon.teardowns().wait_idle()).await;
            // The audit line is written by a background thread: let it land before exiting.
            cordon.flush_audit(std::time::Duration::from_secs(5));
            if let Shared::Postgres(pg) = cordon.store() {
                pg.leave().await;
            }
            match outcome {
                Ok(Ok(success)) => {
                    print_json(&serde_json::to_value(mcp::success_result(success)).unwrap_or_default());
                    Ok(0)
                }
                Ok(Err(error)) => {
                    print_json(&serde_json::to_value(mcp::error_result(&error)).unwrap_or_default());
                    Ok(1)
                }
                Err(e @ ProtocolError::UnknownTool(_)) => Err(usage(e.into())),
            }
        }
    }
}

/// The configured store for a maintenance command: it joins no replica set.
async fn maintenance_store(config: &cordon_host::Config, paths: &Paths) -> Result<Shared, Failure> {
    match config.store.postgres_url().map_err(usage)? {
        None => Ok(Shared::Local(paths.data.clone())),
        Some(url) => {
            let pg = cordon_state::postgres::Postgres::connect_for_maintenance(&url, &config.store)
                .await
                .map_err(runtime)?;
            Ok(Shared::Postgres(pg))
        }
    }
}

async fn idempotency_command(command: IdempotencyCommand) -> Result<u8, Failure> {
    let common = match &command {
        IdempotencyCommand::List { common, .. }
        | IdempotencyCommand::Show { common, .. }
        | IdempotencyCommand::Purge { common, .. } => common,
    };
    let (config, paths) = resolve(common).map_err(usage)?;
    let store = maintenance_store(&config, &paths).await?.records().map_err(runtime)?;
    match command {
        IdempotencyCommand::List { limit, .. } => {
            for record in store.list(None, limit).await.map_err(runtime)? {
                print_line(&serde_json::to_string(&record).unwrap_or_default());
            }
            Ok(0)
        }
        IdempotencyCommand::Show { key, .. } => {
            let records = store.list(Some(&key), usize::MAX >> 1).await.map_err(runtime)?;
            if records.is_empty() {
                return Err(runtime(anyhow::anyhow!("no record with key {key:?}")));
            }
            print_json(&serde_json::to_value(records).unwrap_or_default());
            Ok(0)
        }
        IdempotencyCommand::Purge { older_than, .. } => {
            let now = std::time::SystemTime::now();
            let purged = match older_than {
                Some(age) => store.purge_created_before(now - age).await,
                None => store.purge(now).await,
            }
            .map_err(runtime)?;
            println!("purged {purged} record(s)");
            Ok(0)
        }
    }
}

/// The host for a one-shot command (`cordon tools`, `cordon call`): at most one call, so no
/// spare instances are made for calls that will never come.
async fn start(common: &Common) -> Result<Arc<Cordon>, Failure> {
    let (mut config, paths) = resolve(common).map_err(usage)?;
    config.pool.spares_per_plugin = 0;
    Cordon::start(config, paths).await.map_err(runtime)
}

/// Flags and environment over the config file over defaults.
fn resolve(common: &Common) -> Result<(Config, Paths)> {
    let config = match &common.config {
        Some(path) => Config::load(path)?,
        None if Path::new("cordon.toml").exists() => Config::load(Path::new("cordon.toml"))?,
        None => Config::default(),
    };
    let plugins =
        common.plugins.clone().or_else(|| config.paths.plugins.clone()).unwrap_or_else(|| PathBuf::from("plugins"));
    let data =
        common.data.clone().or_else(|| config.paths.data.clone()).unwrap_or_else(|| PathBuf::from("cordon-data"));
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let config_file = match &common.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from("cordon.toml")).filter(|p| p.exists()),
    };
    Ok((config, Paths { plugins, data, config_file }))
}

/// `[plugins.NAME]` as written in the config file (secret references, never values), as JSON.
fn plugin_section(config_file: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(config_file).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let section = table.get("plugins")?.get(name)?;
    serde_json::to_value(section).ok()
}

/// One line to stdout; a closed pipe ends the output quietly.
fn print_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_json(value: &Value) {
    use std::io::Write;
    let text = match serde_json::to_string_pretty(value) {
        Ok(text) => text,
        Err(e) => return eprintln!("error: cannot print the result: {e}"),
    };
    // A reader that stopped early (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot print the result: {e}");
        }
    }
}

/// Logs go to stderr only (stdout is the MCP channel under `--stdio`). `CORDON_LOG` or
/// `RUST_LOG` set the filter; the default is `info` when serving and `warn` otherwise, with rmcp
/// at `warn` either way: it logs three `info` lines per stateless HTTP request (each one a
/// session to it), one of them the client's whole `initialize` params, which cost a busy server
/// more than the tool call did (BENCHMARKS.md).
fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info,rmcp=warn" };
    let filter =
        std::env::var("CORDON_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
