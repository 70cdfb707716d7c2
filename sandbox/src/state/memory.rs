//! The instance's memory budget: every linear memory and table against one cap.

use wasmtime::ResourceLimiter;

/// One memory budget for the whole instance: every linear memory and every table of every core
/// instance in the component counts against the plugin's `memory_mb` together (a component
/// that instantiates many core modules gets the cap once, not once per memory). Table elements
/// count as [`TABLE_ELEMENT_BYTES`] each. Remembers whether the cap was hit so the host can
/// report `memory_limit` instead of a generic crash.
pub struct MemoryCap {
    max_bytes: usize,
    /// Bytes of linear memory and tables granted so far in this instance.
    used_bytes: usize,
    pub(crate) exceeded: bool,
}

/// What one table element costs against the memory cap: the host stores a pointer-sized
/// reference (and the pool reserves that much) per element.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Linear memories and tables one instance may have in all, and core instances: generous for
/// real components (componentize-py output has a dozen core instances), bounded for a hostile
/// one; each still counts against the memory budget.
pub(crate) const MAX_MEMORIES: usize = 32;
pub(crate) const MAX_TABLES: usize = 64;
pub(crate) const MAX_CORE_INSTANCES: usize = 64;

impl MemoryCap {
    pub(super) fn new(max_bytes: usize) -> MemoryCap {
        MemoryCap { max_bytes, used_bytes: 0, exceeded: false }
    }

    /// Charges `current → desired` bytes of one memory or table against the budget.
    fn grow(&mut self, current: usize, desired: usize, what: &str) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        match self.used_bytes.checked_add(more).filter(|&total| total <= self.max_bytes) {
            Some(total) => {
                self.used_bytes = total;
                Ok(true)
            }
            None => {
                self.exceeded = true;
                wasmtime::bail!("{what}: the instance's memory cap of {} bytes exceeded", self.max_bytes)
            }
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired, "linear memory")
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow(bytes(current), bytes(desired), "table")
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
