//! What a tool can do with the MCP client during a call: add images, sounds and embedded
//! resources to its result ([`attach`]), ask the client's model for a completion ([`sample`]),
//! ask the user for input ([`elicit`]), list the client's roots ([`list_roots`]), and ask several
//! of these at once ([`ask_all`]).
//!
//! ```no_run
//! use cordon_sdk::client::{self, Content};
//! use cordon_sdk::serde_json::json;
//! # fn png_bytes() -> Vec<u8> { vec![] }
//! # fn run() -> Result<(), cordon_sdk::ToolError> {
//! client::attach(Content::image(png_bytes(), "image/png"));
//! let answer = client::sample(&json!({
//!     "messages": [{"role": "user", "content": {"type": "text", "text": "Summarize: …"}}],
//!     "maxTokens": 200
//! }))?;
//! let summary = answer["content"]["text"].as_str().unwrap_or_default();
//! # Ok(()) }
//! ```
//!
//! Asking waits for the client, within the tool's timeout. A client that cannot be asked (it did
//! not declare the capability, or it is connected without a session, as over stateless HTTP)
//! gives a [`ToolError`] of kind `unsupported` at once; returning it with `?` tells the caller
//! why. Outside a component (native unit tests) there is no client: [`attach`] does nothing and
//! the asks fail with `unsupported`.

use crate::ToolError;
use serde_json::Value;

/// One block of MCP content for [`attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// More text.
    Text(String),
    /// An image: its bytes and type, such as `image/png` (sent base64-encoded).
    Image {
        /// The raw bytes.
        data: Vec<u8>,
        /// The MIME type.
        mime_type: String,
    },
    /// A sound, such as `audio/wav`.
    Audio {
        /// The raw bytes.
        data: Vec<u8>,
        /// The MIME type.
        mime_type: String,
    },
    /// An embedded resource with text contents.
    TextResource {
        /// The resource's URI.
        uri: String,
        /// Its MIME type, if known.
        mime_type: Option<String>,
        /// Its text.
        text: String,
    },
    /// An embedded resource with binary contents (sent base64-encoded as `blob`).
    BlobResource {
        /// The resource's URI.
        uri: String,
        /// Its MIME type, if known.
        mime_type: Option<String>,
        /// Its bytes.
        data: Vec<u8>,
    },
}

impl Content {
    /// An image block.
    pub fn image(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Content::Image { data: data.into(), mime_type: mime_type.into() }
    }

    /// An audio block.
    pub fn audio(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Content::Audio { data: data.into(), mime_type: mime_type.into() }
    }

    /// An embedded text resource.
    pub fn text_resource(uri: impl Into<String>, mime_type: Option<&str>, text: impl Into<String>) -> Self {
        Content::TextResource { uri: uri.into(), mime_type: mime_type.map(str::to_owned), text: text.into() }
    }

    #[cfg(target_arch = "wasm32")]
    fn into_wit(self) -> crate::bindings::cordon::plugin::types::Content {
        use crate::bindings::cordon::plugin::types::{Content as C, Media, ResourceBody, ResourceContents};
        match self {
            Content::Text(text) => C::Text(text),
            Content::Image { data, mime_type } => C::Image(Media { data, mime_type }),
            Content::Audio { data, mime_type } => C::Audio(Media { data, mime_type }),
            Content::TextResource { uri, mime_type, text } => {
                C::Resource(ResourceContents { uri, mime_type, body: ResourceBody::Text(text) })
            }
            Content::BlobResource { uri, mime_type, data } => {
                C::Resource(ResourceContents { uri, mime_type, body: ResourceBody::Blob(data) })
            }
        }
    }
}

/// Adds a block to the current call's result, after its text and before its JSON. Dropped if
/// the call fails; counts against the plugin's `max_output_bytes` (past it, the call fails with
/// `output_too_large`).
pub fn attach(content: Content) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::cordon::plugin::host::attach(&content.into_wit());
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = content;
    }
}

/// `sampling/createMessage`: `params` as MCP defines them (`messages`, `maxTokens`, …); the
/// client's result (`role`, `content`, `model`, `stopReason`).
pub fn sample(params: &Value) -> Result<Value, ToolError> {
    ask(params, |request| {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::cordon::plugin::host::sample(request)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(no_client("sampling/createMessage"))
        }
    })
}

/// `elicitation/create`: `params` as MCP defines them (`message`, `requestedSchema`); the
/// client's result (`action`: `accept`, `decline` or `cancel`, and `content` when accepted).
pub fn elicit(params: &Value) -> Result<Value, ToolError> {
    ask(params, |request| {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::cordon::plugin::host::elicit(request)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(no_client("elicitation/create"))
        }
    })
}

/// One question for [`ask_all`]: a key naming it, an MCP method (`sampling/createMessage`,
/// `elicitation/create` or `roots/list`) and its params.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Names the question; the same every time the call runs.
    pub key: String,
    /// The MCP method.
    pub method: String,
    /// Its params.
    pub params: Value,
}

impl Question {
    /// A question asking `method` with `params`, under `key`.
    pub fn new(key: impl Into<String>, method: impl Into<String>, params: Value) -> Self {
        Self { key: key.into(), method: method.into(), params }
    }
}

/// Asks several questions at once; the answers in the same order. A client with a session is
/// asked each in turn. A stateless client (MCP's 2026-07-28 revision) gets all of them in one
/// `InputRequiredResult` and calls again with its answers: the host then runs the call again
/// from the start and answers from what the client sent. So ask the same questions under the
/// same keys every time, and do nothing before asking that must not happen twice.
pub fn ask_all(questions: &[Question]) -> Vec<Result<Value, ToolError>> {
    #[cfg(target_arch = "wasm32")]
    let answers = {
        use crate::bindings::cordon::plugin::host;
        let requests: Vec<host::InputRequest> = questions
            .iter()
            .map(|q| host::InputRequest { key: q.key.clone(), method: q.method.clone(), params: q.params.to_string() })
            .collect();
        host::ask(&requests)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let answers: Vec<Result<String, crate::wit::CallError>> =
        questions.iter().map(|q| Err(no_client(&q.method))).collect();
    answers.into_iter().map(|answer| ask(&Value::Null, |_| answer)).collect()
}

/// `roots/list`: the client's roots (`{"roots": [{"uri", "name"?}]}`).
pub fn list_roots() -> Result<Value, ToolError> {
    ask_all(&[Question::new("roots", "roots/list", serde_json::json!({}))])
        .pop()
        .unwrap_or_else(|| Err(ToolError::new("client_error", "no answer")))
}

#[cfg(not(target_arch = "wasm32"))]
fn no_client(method: &str) -> crate::wit::CallError {
    crate::wit::CallError {
        kind: "unsupported".into(),
        message: format!("no MCP client to ask {method} outside a component"),
        retryable: false,
    }
}

fn ask(params: &Value, send: impl FnOnce(&str) -> Result<String, crate::wit::CallError>) -> Result<Value, ToolError> {
    let answer = send(&params.to_string()).map_err(|e| {
        let error = ToolError::new(e.kind, e.message);
        if e.retryable {
            error.retryable()
        } else {
            error
        }
    })?;
    serde_json::from_str(&answer)
        .map_err(|e| ToolError::new("client_error", format!("the client's answer is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natively_there_is_no_client_to_ask() {
        let error = sample(&serde_json::json!({"messages": [], "maxTokens": 1})).unwrap_err();
        assert_eq!(error.kind, "unsupported");
        assert_eq!(elicit(&serde_json::json!({})).unwrap_err().kind, "unsupported");
        assert_eq!(list_roots().unwrap_err().kind, "unsupported");
        let answers = ask_all(&[
            Question::new("a", "elicitation/create", serde_json::json!({})),
            Question::new("b", "roots/list", serde_json::json!({})),
        ]);
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|a| a.as_ref().is_err_and(|e| e.kind == "unsupported")));
        attach(Content::image(vec![1, 2], "image/png"));
    }
}
