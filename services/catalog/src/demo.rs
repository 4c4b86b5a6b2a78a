//! Demo catalogue for `auctiond dev`: the category tree and a handful of
//! items from the demo seller, created on first start. The category tree is
//! also what a production catalogue starts from, so it is seeded whenever
//! the table is empty; demo items only when demo data is on.

use std::collections::HashMap;

use auction_platform::Database;
use uuid::Uuid;

use crate::store::{self, Category, Item, StoreError};

/// The category tree: (slug, parent slug, name); parents first.
pub const CATEGORY_TREE: &[(&str, Option<&str>, &str)] = &[
    ("electronics", None, "Electronics"),
    ("phones", Some("electronics"), "Phones"),
    ("cameras", Some("electronics"), "Cameras"),
    ("computers", Some("electronics"), "Computers"),
    ("collectibles", None, "Collectibles"),
    ("coins", Some("collectibles"), "Coins"),
    ("stamps", Some("collectibles"), "Stamps"),
    ("trading-cards", Some("collectibles"), "Trading cards"),
    ("art", None, "Art"),
    ("paintings", Some("art"), "Paintings"),
    ("prints", Some("art"), "Prints"),
    ("fashion", None, "Fashion"),
    ("watches", Some("fashion"), "Watches"),
    ("sneakers", Some("fashion"), "Sneakers"),
    ("home", None, "Home and garden"),
    ("furniture", Some("home"), "Furniture"),
];

/// The demo seller (the user service's demo account `alice`).
pub const DEMO_SELLER_ID: &str = "019ab000-0000-7000-8000-00000000a11c";

/// Demo items: (fixed id, category, title, description, condition).
const DEMO_ITEMS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "019ab000-0001-7000-8000-000000000001",
        "cameras",
        "Leica M6 rangefinder, 1986",
        "Black chrome body, recently serviced, light meter accurate.",
        "used_good",
    ),
    (
        "019ab000-0001-7000-8000-000000000002",
        "watches",
        "Omega Speedmaster Professional 3570.50",
        "Full set with box and papers, 2004.",
        "like_new",
    ),
    (
        "019ab000-0001-7000-8000-000000000003",
        "coins",
        "1909-S VDB Lincoln cent",
        "Graded VF-20, a key date of the series.",
        "used_good",
    ),
    (
        "019ab000-0001-7000-8000-000000000004",
        "trading-cards",
        "Charizard holo, Base Set 1999",
        "Unlimited edition, light edge wear.",
        "used_good",
    ),
    (
        "019ab000-0001-7000-8000-000000000005",
        "paintings",
        "Harbour at dawn, oil on canvas",
        "60 x 80 cm, signed, by a local artist.",
        "new",
    ),
    (
        "019ab000-0001-7000-8000-000000000006",
        "computers",
        "ThinkPad X1 Carbon Gen 11",
        "32 GB RAM, 1 TB SSD, battery at 96 %.",
        "refurbished",
    ),
    (
        "019ab000-0001-7000-8000-000000000007",
        "sneakers",
        "Nike Air Jordan 1 Chicago, size 42",
        "Deadstock, never worn.",
        "new",
    ),
    (
        "019ab000-0001-7000-8000-000000000008",
        "furniture",
        "Eames lounge chair replica",
        "Walnut and black leather, small scuff on the ottoman.",
        "used_good",
    ),
];

/// Seeds the category tree when it is empty, and the demo items with it when
/// `with_demo_items`; returns whether it seeded anything.
pub async fn seed(database: &Database, with_demo_items: bool) -> Result<bool, StoreError> {
    if store::count_categories(database).await? > 0 {
        return Ok(false);
    }
    // slug -> (id, path, number of children so far)
    let mut created: HashMap<&str, (Uuid, String, u32)> = HashMap::new();
    let mut roots = 0_u32;
    for (slug, parent, name) in CATEGORY_TREE {
        let id = Uuid::now_v7();
        let (parent_id, path, position) = match parent.and_then(|parent| created.get_mut(parent)) {
            Some((parent_id, parent_path, children)) => {
                *children += 1;
                (Some(*parent_id), format!("{parent_path}/{slug}"), *children)
            }
            None => {
                roots += 1;
                (None, (*slug).to_owned(), roots)
            }
        };
        store::insert_category(
            database,
            &Category {
                id,
                slug: (*slug).to_owned(),
                parent_id,
                path: path.clone(),
                name: (*name).to_owned(),
                position,
            },
        )
        .await?;
        created.insert(slug, (id, path, 0));
    }
    if with_demo_items {
        let seller_id: Uuid = DEMO_SELLER_ID
            .parse()
            .map_err(|_| StoreError::Corrupt("demo seller id"))?;
        let now_ms = store::now_ms();
        for (id, category, title, description, condition) in DEMO_ITEMS {
            store::insert_item(
                database,
                &Item {
                    id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt("demo item id"))?,
                    seller_id,
                    category_id: created
                        .get(category)
                        .map(|(id, _, _)| *id)
                        .ok_or(StoreError::Corrupt("demo item category"))?,
                    title: (*title).to_owned(),
                    description: (*description).to_owned(),
                    condition: (*condition).to_owned(),
                    attributes_json: "{}".to_owned(),
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                },
            )
            .await?;
        }
        tracing::info!(items = DEMO_ITEMS.len(), "demo items created");
    }
    Ok(true)
}
