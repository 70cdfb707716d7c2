//! Content a guest attaches to its result (`host.attach`), within the output cap while the guest
//! runs, not after.

use crate::bindings::{Content, ResourceBody};

/// What was attached, and what is left of the budget.
pub(super) struct Attachments {
    items: Vec<Content>,
    /// Bytes still allowed (the plugin's `max_output_bytes`).
    budget: usize,
    /// Whether something was refused for lack of budget (the call then fails as too large).
    overflowed: bool,
}

impl Attachments {
    pub(super) fn new(budget: usize) -> Attachments {
        Attachments { items: Vec::new(), budget, overflowed: false }
    }

    /// `host.attach`.
    pub(super) fn attach(&mut self, item: Content, label: &str) {
        let size = content_size(&item);
        if size > self.budget {
            if !self.overflowed {
                tracing::debug!(call = %label, size, "attached content past the output cap: the call will fail");
            }
            self.overflowed = true;
            return;
        }
        self.budget -= size;
        self.items.push(item);
    }

    /// The content attached, or `None` when the guest attached more than the output cap.
    pub(super) fn take(&mut self) -> Option<Vec<Content>> {
        if self.overflowed {
            return None;
        }
        Some(std::mem::take(&mut self.items))
    }
}

/// The size a content block counts for against the output cap.
pub fn content_size(item: &Content) -> usize {
    match item {
        Content::Text(text) => text.len(),
        Content::Image(media) | Content::Audio(media) => media.data.len() + media.mime_type.len(),
        Content::Resource(contents) => {
            let body = match &contents.body {
                ResourceBody::Text(text) => text.len(),
                ResourceBody::Blob(bytes) => bytes.len(),
            };
            contents.uri.len() + contents.mime_type.as_ref().map_or(0, String::len) + body
        }
    }
}
