//! MCP content from what guests hand over: `host.attach` blocks in tool results, resource
//! contents, prompt messages. Bytes become base64 here, so a guest deals in bytes only.
//!
//! Blocks are kept as MCP JSON (`{"type": "image", "data": …, "mimeType": …}`) rather than rmcp
//! types: a keyed call's result is stored and replayed as it was sent, and JSON is what is stored.

use base64::Engine as _;
use cordon_sandbox::bindings::{Content, ResourceBody, ResourceContents};
use serde_json::{json, Value};

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A content block as MCP JSON.
pub fn block(item: &Content) -> Value {
    match item {
        Content::Text(text) => json!({"type": "text", "text": text}),
        Content::Image(media) => json!({"type": "image", "data": base64(&media.data), "mimeType": media.mime_type}),
        Content::Audio(media) => json!({"type": "audio", "data": base64(&media.data), "mimeType": media.mime_type}),
        Content::Resource(contents) => json!({"type": "resource", "resource": resource_contents(contents)}),
    }
}

/// A resource's contents as MCP JSON: `{"uri", "mimeType"?, "text" | "blob"}`.
pub fn resource_contents(contents: &ResourceContents) -> Value {
    let mut out = json!({"uri": contents.uri});
    if let Some(mime_type) = &contents.mime_type {
        out["mimeType"] = json!(mime_type);
    }
    match &contents.body {
        ResourceBody::Text(text) => out["text"] = json!(text),
        ResourceBody::Blob(bytes) => out["blob"] = json!(base64(bytes)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_sandbox::bindings::Media;

    #[test]
    fn bytes_are_base64_and_fields_use_mcp_names() {
        let image = block(&Content::Image(Media { data: vec![1, 2, 3], mime_type: "image/png".into() }));
        assert_eq!(image, json!({"type": "image", "data": "AQID", "mimeType": "image/png"}));
        let audio = block(&Content::Audio(Media { data: b"RIFF".to_vec(), mime_type: "audio/wav".into() }));
        assert_eq!(audio["type"], "audio");
        let embedded = block(&Content::Resource(ResourceContents {
            uri: "test://x".into(),
            mime_type: Some("text/plain".into()),
            body: ResourceBody::Text("hi".into()),
        }));
        assert_eq!(
            embedded,
            json!({"type": "resource", "resource": {"uri": "test://x", "mimeType": "text/plain", "text": "hi"}})
        );
        let blob = resource_contents(&ResourceContents {
            uri: "test://b".into(),
            mime_type: None,
            body: ResourceBody::Blob(vec![0xff]),
        });
        assert_eq!(blob, json!({"uri": "test://b", "blob": "/w=="}));
    }

    #[test]
    fn every_block_parses_as_rmcp_content() {
        for item in [
            Content::Text("t".into()),
            Content::Image(Media { data: vec![0], mime_type: "image/png".into() }),
            Content::Audio(Media { data: vec![0], mime_type: "audio/wav".into() }),
            Content::Resource(ResourceContents {
                uri: "test://r".into(),
                mime_type: None,
                body: ResourceBody::Blob(vec![1]),
            }),
        ] {
            let value = block(&item);
            serde_json::from_value::<rmcp::model::ContentBlock>(value.clone())
                .unwrap_or_else(|e| panic!("{value} is not MCP content: {e}"));
        }
    }
}
