//! Durable tasks (the MCP tasks extension): a long tool call answered at once with a handle the
//! client polls, run through the same call path as every other call ([`Cordon::call`]).
//!
//! A call to a tool that may run as a task ([`TaskSupport`]), from a client that can take one,
//! starts like any call. If it ends within the promotion window (`[tasks] promote_after_ms`) the
//! client gets its answer in the reply, as if tasks did not exist. Otherwise the task is stored
//! durably ([`TaskStore::create`]: `working`, held by this process) and only then is the handle
//! returned; the call goes on in the background and its end is stored ([`TaskStore::settle`]):
//!
//! | how the run ended | task |
//! |---|---|
//! | a result, or a tool error (`isError`) | `completed` with it |
//! | `plugin_crashed`, `internal`, `store_unavailable`, an unknown tool (protocol-level) | `failed` with it |
//! | the client's `tasks/cancel` | `cancelled` |
//! | the guest asked the client something | `input_required` with the questions |
//!
//! A question is never sent while a task runs: the run ends, the questions are stored, and
//! `tasks/update` keeps the answers to pending ones. When none is left pending the guest runs
//! again from the start in a fresh instance with every answer so far, exactly as a stateless
//! client's next try would (every call is a fresh instance anyway).
//!
//! What a re-run needs is in the row: the arguments, the principal and its token's id and
//! idempotency scope, the key the client sent. A task whose process died (its owner lock is
//! free) is taken over by the next process that looks ([`TaskStore::take_orphans`], at start and
//! every [`ORPHAN_SWEEP`]) and run once more under the same idempotency key, so a keyed call
//! recovers with the same upstream keys and its audit line says `recovery`. A task cut off while
//! its cancellation was pending is settled `cancelled` instead, and one whose token has since
//! been revoked `failed`: a re-run acts for the principal only while its token is good.
//!
//! Bounds: a principal has at most `max_running_per_principal` tasks running on this host (a
//! call past that answers in the request instead); each task runs under its plugin's limits like
//! any call; rows live `ttl_s`, then are purged.

use crate::app::Cordon;
use crate::auth::{Caller, TokenKind, ToolScope};
use crate::call::{CallRequest, ProtocolError};
use crate::idempotency::{self, KeySource, ProvidedKey};
use anyhow::{bail, Result};
use cordon_core::{AskKind, CallOutcome, ClientNeeds, ErrorType, PendingAsk, Principal, TaskSupport, ToolError};
use cordon_sandbox::link::{AskCapabilities, InputRound};
use cordon_state::tasks::{Answered, Created, NewTask, Settled, TaskRecord, TaskStatus, TaskStore};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often this process looks for tasks whose process died, and for cancellations asked of
/// its own tasks through another replica.
pub const ORPHAN_SWEEP: Duration = Duration::from_secs(5);

/// How often a process that runs tasks looks for cancellations stored for them.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// `[tasks]`.
///
/// ```toml
/// [tasks]
/// enabled = true              # false: every call answers in its request
/// promote_after_ms = 250      # a call still running after this becomes a task
/// ttl_s = 3600                # a task is forgotten this long after it was created
/// poll_interval_ms = 500      # the polling interval suggested to clients
/// max_running_per_principal = 32
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Whether task-supporting tools may run as tasks at all.
    pub enabled: bool,
    /// How long a call runs in its request before it becomes a task, milliseconds.
    pub promote_after_ms: u64,
    /// How long a task is kept after it was created, seconds.
    pub ttl_s: u64,
    /// The polling interval suggested to clients, milliseconds.
    pub poll_interval_ms: u64,
    /// Tasks one principal may have running on this host at once.
    pub max_running_per_principal: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self { enabled: true, promote_after_ms: 250, ttl_s: 3600, poll_interval_ms: 500, max_running_per_principal: 32 }
    }
}

impl TasksConfig {
    /// Checks the numbers.
    pub fn check(&self) -> Result<()> {
        if self.promote_after_ms > 60_000 {
            bail!("[tasks] promote_after_ms must be at most 60000");
        }
        if !(1..=30 * 86_400).contains(&self.ttl_s) {
            bail!("[tasks] ttl_s must be between 1 and 2592000 (30 days)");
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            bail!("[tasks] poll_interval_ms must be between 10 and 60000");
        }
        if self.max_running_per_principal == 0 {
            bail!("[tasks] max_running_per_principal must be at least 1");
        }
        Ok(())
    }
}

/// The tasks this process runs, over the store that keeps them.
pub(crate) struct Tasks {
    store: Arc<dyn TaskStore>,
    running: Mutex<HashMap<String, Running>>,
}

/// A task running here: whose, and how to stop it.
struct Running {
    principal: Arc<str>,
    cancel: CancellationToken,
}

impl Tasks {
    pub(crate) fn new(store: Arc<dyn TaskStore>) -> Arc<Tasks> {
        Arc::new(Tasks { store, running: Mutex::new(HashMap::new()) })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A call to a task-supporting tool from a client that can take a task, as its transport
/// received it.
pub struct TaskCall {
    /// The call. Its `link.cancel` is the request's: it stops the call only until it becomes a
    /// task (then only `tasks/cancel` does). Its events are not used: a task reports nothing
    /// to a request that has been answered.
    pub call: CallRequest,
    /// Whether the reply can carry the guest's questions (the 2026-07-28 `InputRequiredResult`):
    /// then questions asked within the promotion window are answered that way; otherwise the
    /// call becomes a task waiting for input.
    pub questions_in_reply: bool,
    /// What the client declared it can be asked, for the questions of every attempt.
    pub capabilities: AskCapabilities,
}

/// What a task-eligible call became.
pub enum Started {
    /// It ended within the promotion window: the reply carries its outcome.
    Answered(CallOutcome),
    /// It is a task (new, or the live task already holding the call's key).
    Task(Box<TaskRecord>),
}

/// The state of a task as a client sees it.
pub struct TaskView {
    /// The stored record.
    pub record: TaskRecord,
    /// Its tool's outcome, once `completed`.
    pub result: Option<CallOutcome>,
    /// The error that failed it, once `failed`.
    pub error: Option<ToolError>,
    /// The questions pending, by key, while `input_required`.
    pub questions: BTreeMap<String, PendingAsk>,
}

impl Cordon {
    /// Whether tasks are served (enabled, and a store that keeps them).
    pub fn serves_tasks(&self) -> bool {
        self.tasks.is_some()
    }

    /// The task support of `tool` as this host serves it: `forbidden` for every tool when tasks
    /// are not served; `None` for an unknown tool.
    pub fn task_support(&self, tool: &str) -> Option<TaskSupport> {
        let entry = self.catalog().tool(tool).map(|t| t.task_support)?;
        Some(if self.serves_tasks() { entry } else { TaskSupport::Forbidden })
    }

    /// Runs a task-eligible call (see the module docs): its answer if it ends within the
    /// promotion window, else a durable task.
    pub async fn call_or_task(self: &Arc<Self>, task_call: TaskCall) -> Result<Started, ProtocolError> {
        let TaskCall { mut call, questions_in_reply, capabilities } = task_call;
        let Some(tasks) = self.tasks.clone() else {
            return self.call(call).await.map(Started::Answered);
        };
        let config = self.config().tasks.clone();
        let principal = call.caller.principal.0.clone();
        let busy = tasks.running().values().filter(|r| r.principal == principal).count();
        if busy >= config.max_running_per_principal {
            tracing::info!(principal = %principal, busy, "at the task bound: the call answers in its request");
            call.link.events = None;
            return self.call(call).await.map(Started::Answered);
        }
        let tool =
            self.catalog().tool(&call.tool).cloned().ok_or_else(|| ProtocolError::UnknownTool(call.tool.clone()))?;
        let task_id = new_task_id();
        let now = now_ms();
        let arguments = Value::Object(call.arguments.clone().unwrap_or_default());
        let keyed = self
            .idempotency
            .key_for(
                call.idempotency_key.as_ref(),
                &crate::call::keying(&tool),
                &arguments,
                &call.caller.principal,
                call.caller.idempotency_scope.as_deref(),
            )
            .ok()
            .flatten();
        let answers = call.link.inputs.as_ref().map(|round| round.answers.clone()).unwrap_or_default();
        let new_task = NewTask {
            task_id: task_id.clone(),
            principal: principal.to_string(),
            token_id: call.caller.token_id.as_deref().map(str::to_string),
            idempotency_scope: call.caller.idempotency_scope.as_deref().map(str::to_string),
            plugin: tool.plugin.name.clone(),
            tool: tool.name.clone(),
            arguments: arguments.to_string(),
            key: keyed.as_ref().map(|k| (k.namespace().to_string(), k.key().to_string())),
            provided_key: call.idempotency_key.as_ref().map(|p| (p.source.as_str().to_string(), p.key.clone())),
            capabilities: capabilities_json(capabilities),
            answers: answers.clone(),
            owner: tasks.store.owner().to_string(),
            created_ms: now,
            expires_ms: now.saturating_add(config.ttl_s.saturating_mul(1000) as i64),
        };

        let request_cancel = std::mem::take(&mut call.link.cancel);
        let cancel = call.link.cancel.clone();
        call.link.events = None;
        call.link.inputs = Some(Arc::new(InputRound { answers, capabilities }));
        call.task_id = Some(task_id.as_str().into());
        let cordon = self.clone();
        let mut run = tokio::spawn(async move { cordon.call(call).await });

        enum Window {
            Ended(Result<Result<CallOutcome, ProtocolError>, tokio::task::JoinError>),
            Cancelled,
            Passed,
        }
        let window = tokio::select! {
            biased;
            joined = &mut run => Window::Ended(joined),
            () = request_cancel.cancelled() => Window::Cancelled,
            () = tokio::time::sleep(Duration::from_millis(config.promote_after_ms)) => Window::Passed,
        };
        let pending_questions = match window {
            Window::Ended(joined) => {
                let outcome = joined_outcome(joined)?;
                match &outcome {
                    Err(ToolError { client_needs: Some(needs), .. }) if !questions_in_reply => match &**needs {
                        ClientNeeds::Input { requests, .. } => Some(questions_json(requests)),
                        ClientNeeds::Capability(_) => return Ok(Started::Answered(outcome)),
                    },
                    _ => return Ok(Started::Answered(outcome)),
                }
            }
            Window::Cancelled => {
                cancel.cancel();
                return joined_outcome(run.await).map(Started::Answered);
            }
            Window::Passed => None,
        };

        // Durable before the handle leaves: a `tasks/get` right after the reply finds it.
        match tasks.store.create(new_task.clone()).await {
            Ok(Created::New) => {}
            Ok(Created::Existing(existing)) => {
                // A live task holds the call's key: this call is its duplicate (waiting for the
                // key, or replaying it) and is stopped; the client gets the task it already has.
                cancel.cancel();
                tokio::spawn(run);
                return Ok(Started::Task(existing));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "task store unavailable");
                cancel.cancel();
                let _ = run.await;
                return Ok(Started::Answered(Err(ToolError::new(
                    ErrorType::StoreUnavailable,
                    "the task store is unavailable; the call was stopped before it could become a task",
                ))));
            }
        }
        let mut record = fresh_record(new_task);
        if let Some(questions) = pending_questions {
            // It asked within the window on a wire that cannot carry the questions back.
            let settled = Settled::InputRequired(questions.clone());
            self.settle_task(&tasks, &record.task.task_id, 1, settled).await;
            record.status = TaskStatus::InputRequired;
            record.input_requests = Some(questions);
            return Ok(Started::Task(Box::new(record)));
        }
        tasks.running().insert(task_id.clone(), Running { principal, cancel: cancel.clone() });
        let cordon = self.clone();
        tokio::spawn(async move { cordon.supervise(tasks, task_id, 1, run, cancel).await });
        Ok(Started::Task(Box::new(record)))
    }

    /// Waits for a task's run to end and stores how it ended.
    async fn supervise(
        self: Arc<Self>,
        tasks: Arc<Tasks>,
        task_id: String,
        attempt: u32,
        run: JoinHandle<Result<CallOutcome, ProtocolError>>,
        cancel: CancellationToken,
    ) {
        let joined = run.await;
        let settled = settled_of(joined, cancel.is_cancelled());
        self.settle_task(&tasks, &task_id, attempt, settled).await;
        tasks.running().remove(&task_id);
    }

    async fn settle_task(&self, tasks: &Tasks, task_id: &str, attempt: u32, settled: Settled) {
        let status = match &settled {
            Settled::Completed(_) => "completed",
            Settled::Failed(_) => "failed",
            Settled::Cancelled => "cancelled",
            Settled::InputRequired(_) => "input_required",
        };
        match tasks.store.settle(task_id, tasks.store.owner(), attempt, settled, now_ms()).await {
            Ok(true) => tracing::debug!(task = %task_id, attempt, status, "task settled"),
            Ok(false) => {
                tracing::info!(task = %task_id, attempt, "task no longer held by this attempt: its end is not stored")
            }
            // Left `working` with this owner: once this process is gone it is recovered.
            Err(e) => tracing::error!(task = %task_id, error = %format!("{e:#}"), "cannot store how a task ended"),
        }
    }

    /// A task as `caller` may see it (`None`: no such task, or not theirs, or expired).
    pub async fn task(&self, caller: &Caller, task_id: &str) -> Result<Option<TaskView>, ToolError> {
        let tasks = self.tasks.as_ref().ok_or_else(not_served)?;
        let record = tasks.store.get(task_id, &caller.principal.0, now_ms()).await.map_err(store_unavailable)?;
        Ok(record.map(view))
    }

    /// A client's answers to a task's pending questions. `false`: no such task for `caller`.
    /// When no question is left pending, the task runs again with every answer so far.
    pub async fn answer_task(
        self: &Arc<Self>,
        caller: &Caller,
        task_id: &str,
        answers: BTreeMap<String, Value>,
    ) -> Result<bool, ToolError> {
        let tasks = self.tasks.clone().ok_or_else(not_served)?;
        let owner = tasks.store.owner().to_string();
        let answered = tasks
            .store
            .answer(task_id, &caller.principal.0, answers, &owner, now_ms())
            .await
            .map_err(store_unavailable)?;
        match answered {
            None => Ok(false),
            Some(Answered::Resume(record)) => {
                self.rerun(tasks, *record);
                Ok(true)
            }
            Some(Answered::StillWaiting | Answered::NotWaiting) => Ok(true),
        }
    }

    /// A client's `tasks/cancel`. `false`: no such task for `caller`. A running task here is
    /// stopped now; one running on another replica when that replica next looks.
    pub async fn cancel_task(&self, caller: &Caller, task_id: &str) -> Result<bool, ToolError> {
        let tasks = self.tasks.as_ref().ok_or_else(not_served)?;
        let status =
            tasks.store.request_cancel(task_id, &caller.principal.0, now_ms()).await.map_err(store_unavailable)?;
        if status == Some(TaskStatus::Working) {
            if let Some(running) = tasks.running().get(task_id) {
                running.cancel.cancel();
            }
        }
        Ok(status.is_some())
    }

    /// Runs attempt `record.attempts` of a task this process now holds (answers given, or taken
    /// over from a dead process).
    fn rerun(self: &Arc<Self>, tasks: Arc<Tasks>, record: TaskRecord) {
        let task = &record.task;
        let arguments = match serde_json::from_str::<Value>(&task.arguments) {
            Ok(Value::Object(arguments)) => arguments,
            _ => Map::new(),
        };
        let scope = ToolScope::from_patterns(std::slice::from_ref(&task.tool)).unwrap_or_else(|_| ToolScope::all());
        let caller = Caller {
            principal: Principal::new(task.principal.as_str()),
            token_id: task.token_id.as_deref().map(Arc::from),
            // The task was authorized for this one tool when it was created.
            scope,
            kind: if task.token_id.is_some() { TokenKind::Signed } else { TokenKind::None },
            idempotency_scope: task.idempotency_scope.as_deref().map(Arc::from),
        };
        let idempotency_key = task
            .provided_key
            .as_ref()
            .and_then(|(source, key)| KeySource::parse(source).map(|source| ProvidedKey { key: key.clone(), source }));
        let mut answers = task.answers.clone();
        answers.extend(record.answers.clone());
        let capabilities = parse_capabilities(&task.capabilities);
        let cancel = CancellationToken::new();
        let task_id = task.task_id.clone();
        let call = CallRequest {
            tool: task.tool.clone(),
            arguments: Some(arguments),
            caller,
            idempotency_key,
            link: cordon_sandbox::link::CallLink {
                cancel: cancel.clone(),
                events: None,
                inputs: Some(Arc::new(InputRound { answers, capabilities })),
            },
            task_id: Some(task_id.as_str().into()),
        };
        tasks
            .running()
            .insert(task_id.clone(), Running { principal: Arc::from(task.principal.as_str()), cancel: cancel.clone() });
        let attempt = record.attempts;
        let cordon = self.clone();
        let run = tokio::spawn({
            let cordon = cordon.clone();
            async move { cordon.call(call).await }
        });
        tokio::spawn(async move { cordon.supervise(tasks, task_id, attempt, run, cancel).await });
    }

    /// Takes over the tasks of processes that died and runs each once more (see the module
    /// docs); how many were taken.
    pub async fn recover_tasks(self: &Arc<Self>) -> usize {
        let Some(tasks) = self.tasks.clone() else { return 0 };
        let orphans = match tasks.store.take_orphans(tasks.store.owner(), now_ms()).await {
            Ok(orphans) => orphans,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot look for tasks to recover");
                return 0;
            }
        };
        let taken = orphans.len();
        for record in orphans {
            let (task_id, attempt) = (record.task.task_id.clone(), record.attempts);
            if record.cancel_requested {
                self.settle_task(&tasks, &task_id, attempt, Settled::Cancelled).await;
                continue;
            }
            if let Some(token) = &record.task.token_id {
                if self.revocations().is_revoked(token) {
                    let error = ToolError::new(ErrorType::Forbidden, "the token that created this task was revoked");
                    self.settle_task(&tasks, &task_id, attempt, Settled::Failed(idempotency::encode(&Err(error))))
                        .await;
                    continue;
                }
            }
            tracing::warn!(task = %task_id, tool = %record.task.tool, attempt,
                "recovering a task cut off by a crash: running it again with the same idempotency key");
            self.rerun(tasks.clone(), record);
        }
        taken
    }

    /// Stops the tasks whose cancellation was stored (through another replica).
    async fn poll_cancellations(&self, tasks: &Tasks) {
        if tasks.running().is_empty() {
            return;
        }
        match tasks.store.cancel_requested(tasks.store.owner()).await {
            Ok(ids) => {
                let running = tasks.running();
                for id in ids {
                    if let Some(task) = running.get(&id) {
                        task.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot look for cancelled tasks"),
        }
    }

    /// The background work of tasks: recovery at start and every [`ORPHAN_SWEEP`], cancellations
    /// stored elsewhere every [`CANCEL_POLL`], and the purge of expired rows.
    pub fn spawn_task_upkeep(self: &Arc<Self>) {
        let Some(tasks) = self.tasks.clone() else { return };
        let cordon = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick: u64 = 0;
            loop {
                let Some(cordon) = cordon.upgrade() else { return };
                if tick.is_multiple_of((ORPHAN_SWEEP.as_secs() / CANCEL_POLL.as_secs()).max(1)) {
                    cordon.recover_tasks().await;
                }
                cordon.poll_cancellations(&tasks).await;
                if tick.is_multiple_of(60) {
                    if let Err(e) = tasks.store.purge(now_ms()).await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot purge expired tasks");
                    }
                }
                drop(cordon);
                tick += 1;
                tokio::time::sleep(CANCEL_POLL).await;
            }
        });
    }
}

/// A new task's record as the store keeps it right after [`TaskStore::create`].
fn fresh_record(task: NewTask) -> TaskRecord {
    let updated_ms = task.created_ms;
    TaskRecord {
        answers: task.answers.clone(),
        task,
        status: TaskStatus::Working,
        result: None,
        error: None,
        input_requests: None,
        attempts: 1,
        cancel_requested: false,
        updated_ms,
    }
}

fn view(record: TaskRecord) -> TaskView {
    let decoded = |stored: &Option<String>| stored.as_deref().map(idempotency::decode);
    let result = match decoded(&record.result) {
        Some(Ok(outcome)) => Some(outcome),
        Some(Err(unreadable)) => Some(Err(unreadable)),
        None => None,
    };
    let error = match decoded(&record.error) {
        Some(Ok(Err(error))) | Some(Err(error)) => Some(error),
        Some(Ok(Ok(_))) => Some(ToolError::new(ErrorType::Internal, "the task failed")),
        None => None,
    };
    let questions = record.input_requests.as_deref().map(parse_questions).unwrap_or_default();
    TaskView { record, result, error, questions }
}

/// A joined run: its outcome, or `internal` for a run that panicked.
fn joined_outcome(
    joined: Result<Result<CallOutcome, ProtocolError>, tokio::task::JoinError>,
) -> Result<CallOutcome, ProtocolError> {
    joined.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a task's run failed");
        Ok(Err(ToolError::new(ErrorType::Internal, "the call failed inside the host")))
    })
}

/// How a task's run ended, as the store keeps it (see the module docs' table).
fn settled_of(joined: Result<Result<CallOutcome, ProtocolError>, tokio::task::JoinError>, cancelled: bool) -> Settled {
    let outcome = match joined_outcome(joined) {
        Ok(outcome) => outcome,
        Err(ProtocolError::UnknownTool(name)) => Err(ToolError::new(
            ErrorType::Internal,
            format!("the tool {name} is no longer served (its plugin was removed or reloaded without it)"),
        )),
    };
    match &outcome {
        Err(e) if cancelled && e.is(ErrorType::Cancelled) => Settled::Cancelled,
        Err(ToolError { client_needs: Some(needs), .. }) => match &**needs {
            ClientNeeds::Input { requests, .. } => Settled::InputRequired(questions_json(requests)),
            ClientNeeds::Capability(_) => Settled::Failed(idempotency::encode(&outcome)),
        },
        Err(e) if is_protocol_failure(e) => Settled::Failed(idempotency::encode(&outcome)),
        _ => Settled::Completed(idempotency::encode(&outcome)),
    }
}

/// Errors that are the host's or the plugin's failure rather than the tool's answer: a task
/// ending with one is `failed`, not `completed` with `isError`.
fn is_protocol_failure(error: &ToolError) -> bool {
    [ErrorType::PluginCrashed, ErrorType::Internal, ErrorType::StoreUnavailable, ErrorType::Cancelled]
        .iter()
        .any(|kind| error.is(*kind))
}

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn not_served() -> ToolError {
    ToolError::new(ErrorType::Internal, "this host serves no tasks")
}

fn store_unavailable(e: anyhow::Error) -> ToolError {
    tracing::error!(error = %format!("{e:#}"), "task store unavailable");
    ToolError::new(ErrorType::StoreUnavailable, "the task store is unavailable")
}

fn kind_name(kind: AskKind) -> &'static str {
    match kind {
        AskKind::Sample => "sample",
        AskKind::Elicit => "elicit",
        AskKind::ListRoots => "list_roots",
    }
}

fn kind_of(name: &str) -> Option<AskKind> {
    Some(match name {
        "sample" => AskKind::Sample,
        "elicit" => AskKind::Elicit,
        "list_roots" => AskKind::ListRoots,
        _ => return None,
    })
}

/// Pending questions as the store keeps them: `{key: {"kind", "params"}}`.
fn questions_json(requests: &BTreeMap<String, PendingAsk>) -> String {
    let map: Map<String, Value> = requests
        .iter()
        .map(|(key, ask)| (key.clone(), json!({"kind": kind_name(ask.kind), "params": ask.params})))
        .collect();
    Value::Object(map).to_string()
}

fn parse_questions(text: &str) -> BTreeMap<String, PendingAsk> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else { return BTreeMap::new() };
    map.into_iter()
        .filter_map(|(key, question)| {
            let kind = kind_of(question.get("kind")?.as_str()?)?;
            Some((key, PendingAsk { kind, params: question.get("params").cloned().unwrap_or(Value::Null) }))
        })
        .collect()
}

fn capabilities_json(capabilities: AskCapabilities) -> String {
    json!({"sample": capabilities.sample, "elicit": capabilities.elicit, "roots": capabilities.roots}).to_string()
}

fn parse_capabilities(text: &str) -> AskCapabilities {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
    AskCapabilities { sample: flag("sample"), elicit: flag("elicit"), roots: flag("roots") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_and_capabilities_survive_the_store() {
        let mut requests = BTreeMap::new();
        requests.insert("q1".to_string(), PendingAsk { kind: AskKind::Elicit, params: json!({"message": "Sure?"}) });
        requests.insert("q2".to_string(), PendingAsk { kind: AskKind::Sample, params: json!({"maxTokens": 5}) });
        assert_eq!(parse_questions(&questions_json(&requests)), requests);
        assert!(parse_questions("not json").is_empty());
        let capabilities = AskCapabilities { sample: false, elicit: true, roots: true };
        assert_eq!(parse_capabilities(&capabilities_json(capabilities)), capabilities);
        assert_eq!(parse_capabilities("{}"), AskCapabilities::default());
    }

    #[test]
    fn tool_errors_complete_a_task_and_host_failures_fail_it() {
        let ended = |outcome: CallOutcome, cancelled| settled_of(Ok(Ok(outcome)), cancelled);
        let tool_error = ToolError::from_guest("not_found".into(), "no such file".into(), false);
        assert!(matches!(ended(Err(tool_error), false), Settled::Completed(_)));
        let timeout = ToolError::new(ErrorType::Timeout, "too slow");
        assert!(matches!(ended(Err(timeout), false), Settled::Completed(_)));
        let crashed = ToolError::new(ErrorType::PluginCrashed, "trap");
        assert!(matches!(ended(Err(crashed), false), Settled::Failed(_)));
        assert!(matches!(ended(Err(ToolError::cancelled()), true), Settled::Cancelled));
        let needs = ClientNeeds::Input {
            requests: BTreeMap::from([(
                "k".to_string(),
                PendingAsk { kind: AskKind::Elicit, params: json!({"message": "?"}) },
            )]),
            answered: BTreeMap::new(),
        };
        match ended(Err(ToolError::needs(needs)), false) {
            Settled::InputRequired(questions) => assert!(parse_questions(&questions).contains_key("k")),
            _ => panic!("a question parks the task"),
        }
        let unknown = settled_of(Ok(Err(ProtocolError::UnknownTool("gone".into()))), false);
        assert!(matches!(unknown, Settled::Failed(_)));
    }
}
