//! Shared nothing: each program in this package stands alone.
