//! The `auction.v1` contracts: the generated messages, servers and clients of
//! the five services, plus the encoded descriptor set that server reflection
//! serves. The `.proto` files under `auction/v1/` are the source of truth; the
//! SDKs for other languages are generated from the same files.
//!
//! - [`v1`]: everything in package `auction.v1` (`v1::bidding_service_server`,
//!   `v1::bidding_service_client`, messages such as `v1::Money`, ...).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded `FileDescriptorSet` of our files and
//!   the well-known types they import, for reflection.

/// The generated Rust code of package `auction.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    tonic::include_proto!("auction.v1");
}

/// The encoded `FileDescriptorSet` of every contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/auction_descriptor.bin"));

/// The fully qualified names of the five public services, in the order the
/// README lists them; health and reflection report on each.
pub const SERVICE_NAMES: [&str; 5] = [
    "auction.v1.UserService",
    "auction.v1.CatalogService",
    "auction.v1.BiddingService",
    "auction.v1.PaymentService",
    "auction.v1.NotificationService",
];
