#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::fmt;
use std::marker::PhantomData;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use schemars;
pub use serde;
pub use serde_json;

pub mod client;
pub mod http;
pub mod log;

/// Bindings generated from `wit/plugin.wit`. Plugin crates reach them through
/// [`export_plugin!`] and so need no `wit-bindgen` dependency of their own.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin-tools-tasks",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "cordon_sdk::bindings",
    });
}

use bindings::cordon::plugin::types as wit;

/// A setting the operator gave this plugin (`[plugins.NAME.config]` in `cordon.toml`), such as
/// an upstream base URL; `None` when it is not set.
///
/// Settings are not secret: credentials never reach the plugin, the host attaches them to
/// granted outbound requests (see [`http`]). Outside a component (native unit tests) there is
/// no host, and every setting is `None`.
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        bindings::cordon::plugin::host::config(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = key;
        None
    }
}

/// A plugin: a set of tools exported by one component.
pub trait Plugin {
    /// The tools this plugin offers. Called once per `describe` and once per `call`, so it should
    /// only build the list (cheap); schemas are generated only when the host asks for them.
    fn tools() -> Vec<Tool>;
}

/// Who is calling and which call this is. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    principal: String,
    call_id: String,
    idempotency_key: Option<String>,
}

impl Context {
    /// Builds a context, e.g. to call a handler from a unit test.
    pub fn new(principal: impl Into<String>, call_id: impl Into<String>, idempotency_key: Option<String>) -> Self {
        Self { principal: principal.into(), call_id: call_id.into(), idempotency_key }
    }

    /// The authenticated MCP caller.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Unique id of this call, for logs.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The call's idempotency key, when the caller sent one.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// Reports how far this call has got: `done` out of `total` (when known), with an optional
    /// short message, such as `cx.progress(3.0, Some(10.0), Some("page 3 of 10"))`.
    ///
    /// The host sends it to the MCP client as `notifications/progress` when the client asked for
    /// progress, and ignores it otherwise; it never fails and never waits for the client. `done`
    /// must grow from one report to the next (others are dropped), and the host thins reports
    /// that come too fast (10 a second, 1000 a call; the one that reaches `total` always gets
    /// through), so report at natural steps rather than in a tight loop. Messages are cut at
    /// 256 bytes. Outside a component (native unit tests) there is no client and it does
    /// nothing.
    pub fn progress(&self, done: f64, total: Option<f64>, message: Option<&str>) {
        #[cfg(target_arch = "wasm32")]
        {
            bindings::cordon::plugin::host::progress(done, total, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (done, total, message);
        }
    }
}

impl From<wit::CallContext> for Context {
    fn from(cx: wit::CallContext) -> Self {
        Self { principal: cx.principal, call_id: cx.call_id, idempotency_key: cx.idempotency_key }
    }
}

/// A typed failure a tool reports to its caller (the WIT `call-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// Machine-readable kind in `snake_case`, such as `not_found` or `upstream_unavailable`.
    pub kind: String,
    /// Human-readable explanation.
    pub message: String,
    /// Whether the same call may succeed if retried later.
    pub retryable: bool,
}

impl ToolError {
    /// Kind of the error returned when the arguments do not fit the tool's argument type.
    pub const INVALID_ARGUMENTS: &'static str = "invalid_arguments";
    /// Kind of the error returned when the plugin has no tool of the requested name.
    pub const UNKNOWN_TOOL: &'static str = "unknown_tool";
    /// Kind of the error returned when a handler's result cannot be serialized.
    pub const INTERNAL: &'static str = "internal";

    /// A non-retryable error of the given kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into(), retryable: false }
    }

    /// Marks the error as retryable: the same call may succeed later.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// An [`INVALID_ARGUMENTS`](Self::INVALID_ARGUMENTS) error.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_ARGUMENTS, message)
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for wit::CallError {
    fn from(e: ToolError) -> Self {
        Self { kind: e.kind, message: e.message, retryable: e.retryable }
    }
}

/// An argument type for tools that take no arguments: an object with no properties that allows
/// none.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

// Written by hand so that the schema does not carry this type's documentation into every tool.
impl JsonSchema for NoArgs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NoArgs".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {},
            "additionalProperties": false,
        })
    }
}

/// Plain-text output: no structured content and no output schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Structured output with a text rendering of your choice instead of the JSON itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithText<T> {
    /// The structured result.
    pub value: T,
    /// The text content shown alongside it.
    pub text: String,
}

impl<T> WithText<T> {
    /// Pairs a structured result with its text rendering.
    pub fn new(value: T, text: impl Into<String>) -> Self {
        Self { value, text: text.into() }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What a handler may return: any `Serialize + JsonSchema` type (structured output, whose text
/// is its JSON), [`Text`], or [`WithText`].
///
/// MCP structured output must be a JSON object: a type that serializes to anything else is sent
/// as text only, and gets no output schema.
pub trait IntoOutput: sealed::Sealed {
    #[doc(hidden)]
    fn output_schema() -> Option<Value>;
    #[doc(hidden)]
    fn into_output(self) -> Result<wit::ToolOutput, ToolError>;
}

impl<T: Serialize + JsonSchema> sealed::Sealed for T {}
impl<T: Serialize + JsonSchema> IntoOutput for T {
    fn output_schema() -> Option<Value> {
        let schema = root_schema::<T>(SchemaSettings::draft2020_12().for_serialize());
        (schema.get("type") == Some(&Value::from("object"))).then_some(schema)
    }

    fn into_output(self) -> Result<wit::ToolOutput, ToolError> {
        let text = to_json(&self)?;
        Ok(wit::ToolOutput { json: is_object(&text).then(|| text.clone()), text: Some(text) })
    }
}

impl sealed::Sealed for Text {}
impl IntoOutput for Text {
    fn output_schema() -> Option<Value> {
        None
    }

    fn into_output(self) -> Result<wit::ToolOutput, ToolError> {
        Ok(wit::ToolOutput { text: Some(self.0), json: None })
    }
}

impl<T: Serialize + JsonSchema> sealed::Sealed for WithText<T> {}
impl<T: Serialize + JsonSchema> IntoOutput for WithText<T> {
    fn output_schema() -> Option<Value> {
        T::output_schema()
    }

    fn into_output(self) -> Result<wit::ToolOutput, ToolError> {
        let json = to_json(&self.value)?;
        Ok(wit::ToolOutput { text: Some(self.text), json: is_object(&json).then_some(json) })
    }
}

// Serialized straight to text, not through `Value`, to keep the struct's field order.
fn to_json<T: Serialize>(value: &T) -> Result<String, ToolError> {
    serde_json::to_string(value)
        .map_err(|e| ToolError::new(ToolError::INTERNAL, format!("cannot serialize the result: {e}")))
}

// Compact JSON text is an object exactly when it starts with a brace.
fn is_object(json: &str) -> bool {
    json.starts_with('{')
}

/// Generates a self-contained root schema: subschemas are inlined because many MCP clients do
/// not follow `$ref`, and `$schema` is dropped because MCP fixes the dialect.
fn root_schema<T: JsonSchema>(settings: SchemaSettings) -> Value {
    settings
        .with(|s| {
            s.meta_schema = None;
            s.inline_subschemas = true;
        })
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

fn input_schema_of<A: JsonSchema>() -> Value {
    let mut schema = root_schema::<A>(SchemaSettings::draft2020_12().for_deserialize());
    if let Value::Object(map) = &mut schema {
        // An enum of object variants is a `oneOf` with no top-level type, but the host (and MCP)
        // require an object schema.
        map.entry("type").or_insert_with(|| "object".into());
        // Some MCP clients reject an object schema without `properties`, as schemars writes it
        // for an empty struct.
        map.entry("properties").or_insert_with(|| Value::Object(Default::default()));
    }
    schema
}

type Handler = Box<dyn Fn(&str, &Context) -> Result<wit::ToolOutput, ToolError>>;

/// Whether a tool may run as a task: the client gets a handle at once and polls it, instead of
/// holding its request open until the tool is done (the MCP tasks extension; the host decides
/// per call, and the operator may override it in `cordon.toml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskSupport {
    /// Always answered in the request (the default).
    #[default]
    Forbidden,
    /// A task when the client can take one and the call runs long.
    Optional,
    /// Only for clients that can take a task; others are refused before the tool runs.
    Required,
}

/// One tool: a name, a description, a typed handler and optional hints.
pub struct Tool {
    name: String,
    title: Option<String>,
    description: String,
    annotations: wit::Annotations,
    task_support: TaskSupport,
    // Function pointers so that listing tools for a `call` does not generate schemas.
    input_schema: fn() -> Value,
    output_schema: fn() -> Option<Value>,
    handler: Handler,
}

impl Tool {
    /// A tool whose handler takes arguments of type `A` (deserialized from the call's JSON
    /// arguments; its schema is the tool's input schema) and returns `O` (see [`IntoOutput`]).
    ///
    /// `A` should be a struct; add `#[serde(deny_unknown_fields)]` so its schema forbids
    /// unknown properties.
    pub fn new<A, O, F>(name: impl Into<String>, description: impl Into<String>, handler: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        O: IntoOutput + 'static,
        F: Fn(A, &Context) -> Result<O, ToolError> + 'static,
    {
        Self {
            name: name.into(),
            title: None,
            description: description.into(),
            annotations: wit::Annotations { read_only: None, destructive: None, idempotent: None, open_world: None },
            task_support: TaskSupport::Forbidden,
            input_schema: input_schema_of::<A>,
            output_schema: O::output_schema,
            handler: Box::new(move |arguments, cx| {
                // The host validated the arguments already; this is a backstop.
                let arguments = if arguments.trim().is_empty() { "{}" } else { arguments };
                let args: A = serde_json::from_str(arguments)
                    .map_err(|e| ToolError::invalid_arguments(format!("arguments do not fit the tool: {e}")))?;
                handler(args, cx)?.into_output()
            }),
        }
    }

    /// Sets the human-readable title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Declares that the tool does not modify its environment.
    pub fn read_only(mut self) -> Self {
        self.annotations.read_only = Some(true);
        self
    }

    /// Declares that the tool may perform destructive updates.
    pub fn destructive(mut self) -> Self {
        self.annotations.destructive = Some(true);
        self
    }

    /// Declares that repeating a call with the same arguments has no additional effect.
    pub fn idempotent(mut self) -> Self {
        self.annotations.idempotent = Some(true);
        self
    }

    /// Declares whether the tool interacts with an open world of external entities.
    pub fn open_world(mut self, open_world: bool) -> Self {
        self.annotations.open_world = Some(open_world);
        self
    }

    /// Declares whether the tool may run as a task ([`TaskSupport`]). A long tool a client may
    /// wait on for minutes should be [`TaskSupport::Optional`]. A task's run that asks the client
    /// something ends there and runs again from the start once answered, so ask before acting.
    pub fn task_support(mut self, support: TaskSupport) -> Self {
        self.task_support = support;
        self
    }

    /// The tool's name within its plugin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON Schema of the arguments.
    pub fn input_schema(&self) -> Value {
        (self.input_schema)()
    }

    /// The JSON Schema of the structured output, if the tool returns one.
    pub fn output_schema(&self) -> Option<Value> {
        (self.output_schema)()
    }

    fn descriptor(self) -> wit::ToolDescriptor {
        wit::ToolDescriptor {
            input_schema: self.input_schema().to_string(),
            output_schema: self.output_schema().map(|s| s.to_string()),
            name: self.name,
            title: self.title,
            description: self.description,
            annotations: self.annotations,
        }
    }
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("title", &self.title)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

fn describe(tools: Vec<Tool>) -> Vec<wit::ToolDescriptor> {
    tools.into_iter().map(Tool::descriptor).collect()
}

fn dispatch(tools: Vec<Tool>, name: &str, arguments: &str, cx: &Context) -> Result<wit::ToolOutput, ToolError> {
    let tool = tools
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ToolError::new(ToolError::UNKNOWN_TOOL, format!("this plugin has no tool named {name:?}")))?;
    (tool.handler)(arguments, cx)
}

/// Support for [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;

    use super::*;
    use bindings::exports::cordon::plugin::tasks::{Guest as Tasks, TaskSupport as WitTaskSupport};
    use bindings::exports::cordon::plugin::tools::Guest;

    /// Implements the component's exports for a [`Plugin`].
    pub struct Export<P>(PhantomData<fn() -> P>);

    impl<P: Plugin> Tasks for Export<P> {
        fn supported() -> Vec<(String, WitTaskSupport)> {
            P::tools()
                .into_iter()
                .filter_map(|tool| {
                    let support = match tool.task_support {
                        TaskSupport::Forbidden => return None,
                        TaskSupport::Optional => WitTaskSupport::Optional,
                        TaskSupport::Required => WitTaskSupport::Required,
                    };
                    Some((tool.name, support))
                })
                .collect()
        }
    }

    impl<P: Plugin> Guest for Export<P> {
        fn describe() -> Vec<wit::ToolDescriptor> {
            describe(P::tools())
        }

        fn call(tool: String, arguments: String, context: wit::CallContext) -> Result<wit::ToolOutput, wit::CallError> {
            dispatch(P::tools(), &tool, &arguments, &context.into()).map_err(Into::into)
        }
    }
}

/// Exports a [`Plugin`] as the component's `cordon:plugin/tools` implementation. Use it once, in
/// the plugin crate's root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __CordonExport = $crate::__private::Export<$plugin>;
        $crate::__private::bindings::export!(
            __CordonExport with_types_in $crate::__private::bindings
        );
    };
}

#[cfg(test)]
mod tests;
