//! Watchlist (filled in below).
