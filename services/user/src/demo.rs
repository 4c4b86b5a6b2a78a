//! Demo accounts for `auctiond dev`, created on first start so a newcomer
//! can log in and bid at once. Their ids are fixed so the other services'
//! demo data can refer to them without calling this service. Never seeded
//! by the production default (`demo.seed_on_first_start = false`).

use auction_platform::Database;

use crate::store::{self, NewUser, StoreError};

/// The password of every demo account (documented in the README; dev only).
pub const DEMO_PASSWORD: &str = "demo-password";

/// A demo account: id, username, display name, roles.
pub struct DemoUser {
    /// Fixed UUIDv7-shaped id.
    pub id: &'static str,
    /// Login name; the e-mail is `<username>@demo.auction.local`.
    pub username: &'static str,
    /// Shown to other users.
    pub display_name: &'static str,
    /// Roles held.
    pub roles: &'static [&'static str],
}

/// The demo accounts.
pub const DEMO_USERS: [DemoUser; 5] = [
    DemoUser {
        id: "019ab000-0000-7000-8000-00000000a11c",
        username: "alice",
        display_name: "Alice (seller)",
        roles: &["bidder", "seller"],
    },
    DemoUser {
        id: "019ab000-0000-7000-8000-000000000b0b",
        username: "bob",
        display_name: "Bob",
        roles: &["bidder"],
    },
    DemoUser {
        id: "019ab000-0000-7000-8000-0000000ca201",
        username: "carol",
        display_name: "Carol",
        roles: &["bidder"],
    },
    DemoUser {
        id: "019ab000-0000-7000-8000-00000000da7e",
        username: "dave",
        display_name: "Dave (auctioneer)",
        roles: &["bidder", "seller", "auctioneer"],
    },
    DemoUser {
        id: "019ab000-0000-7000-8000-00000000ad31",
        username: "admin",
        display_name: "Demo admin",
        roles: &["admin"],
    },
];

/// Creates the demo accounts when the user table is empty; returns whether
/// it did.
pub async fn seed(database: &Database) -> Result<bool, StoreError> {
    if store::count_users(database).await? > 0 {
        return Ok(false);
    }
    let now_ms = store::now_ms();
    for user in &DEMO_USERS {
        let id = user
            .id
            .parse()
            .map_err(|_| StoreError::Invalid("demo user id"))?;
        store::insert_user(
            database,
            &NewUser {
                id,
                email: format!("{}@demo.auction.local", user.username),
                username: user.username.to_owned(),
                password: DEMO_PASSWORD.to_owned(),
                display_name: user.display_name.to_owned(),
                roles: user.roles.iter().map(|role| (*role).to_owned()).collect(),
            },
            now_ms,
        )
        .await?;
    }
    tracing::info!(
        accounts = DEMO_USERS.len(),
        "demo accounts created (password: {DEMO_PASSWORD})"
    );
    Ok(true)
}
