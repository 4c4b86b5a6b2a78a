//! Search (filled in below).
