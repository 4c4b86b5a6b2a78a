//! The payment service over the real wire (gRPC against the whole mesh on
//! port 0), on SQLite and PostgreSQL: orders from auction closes (a real
//! close in the bidding service, and a close delivered twice), every payment
//! path of the sandbox (success, declines, a provider timeout reconciled
//! later), escrow (ship, confirm, automatic release), refunds, disputes each
//! way, unpaid cancellation with a second-chance offer, idempotency under
//! concurrent retries, authorization, and the reconciliation of the books.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod bidding_close;
mod disputes;
mod escrow;
mod events;
mod orders;
mod pay;
mod properties;
mod second_chance;
