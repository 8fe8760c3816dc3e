//! Placeholder; filled by its own issue.
#![deny(missing_docs)]
