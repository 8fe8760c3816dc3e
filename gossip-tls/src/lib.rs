//! Placeholder; filled by the TLS work.
#![deny(missing_docs)]
