//! The bounds every configuration source is read and rendered within. A document in the
//! repository or a KV value is data anyone with write access controls; without bounds one
//! value could exhaust the stack (deep nesting), memory (alias expansion, a huge list index)
//! or CPU (placeholders that multiply) of the whole process. Where SnakeYAML, which Spring
//! uses, has a limit of its own, the figure is SnakeYAML's default.
//!
//! A source that exceeds one is answered 500 naming the source and the bound, the way a
//! malformed file is; the README lists them.

/// Nested collections in one YAML document (SnakeYAML's `nestingDepthLimit`).
pub const MAX_NESTING: usize = 50;

/// Aliases to collections in one YAML document (SnakeYAML's `maxAliasesForCollections`).
pub const MAX_ALIASES: usize = 50;

/// Scalars in one document once its aliases are expanded: bounds what aliases can make of
/// a small text within the alias count.
pub const MAX_SCALARS: usize = 100_000;

/// Bytes of one file or KV value read as configuration (SnakeYAML's `codePointLimit`, 3 MB).
pub const MAX_DOCUMENT_BYTES: usize = 3 << 20;

/// Segments of one property name (`a.b[0].c` has four) when the `.yml` and `.json` views
/// nest it.
pub const MAX_NAME_SEGMENTS: usize = 100;

/// The largest list index a property name may carry (`list[99999]`): the views build the
/// list up to it.
pub const MAX_LIST_INDEX: usize = 100_000;

/// Placeholders nested in placeholders (`${a:${b:${c}}}`), defaults included.
pub const MAX_PLACEHOLDER_DEPTH: usize = 32;

/// Bytes of one value after its placeholders are resolved: references that each expand to
/// several others grow exponentially.
pub const MAX_RESOLVED_BYTES: usize = 1 << 20;

/// The first characters of a name or value, for an error that says where.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
