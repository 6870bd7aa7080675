//! End-to-end tests of rir live in `tests/`; this crate has no library code.
