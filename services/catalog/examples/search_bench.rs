//! Search latency on PostgreSQL with many synthetic listings.
//!
//! Seeds N listings (default 1,000,000) into a fresh database on the test
//! PostgreSQL (`MESH_TEST_POSTGRES_URL`, default the suite's server), each
//! with a title of 5 and a description of 12 words from a 2,000-word
//! vocabulary (skewed, so some words are common), one of the 16 categories,
//! a price between 0.01 and 10,000.00 USD, mostly open English auctions.
//! Seeding runs inside PostgreSQL (`INSERT ... SELECT` over
//! `generate_series`, 50,000 rows per statement). Then it runs the same
//! search the `SearchListings` RPC runs (the catalog's `Searcher`, without
//! the gRPC layer) for keyword + category (with subcategories) +
//! price-range queries and prints p50/p95/p99/max.
//!
//! ```sh
//! deploy/local/backing-services.sh start && eval "$(deploy/local/backing-services.sh env)"
//! cargo run --release -p auction-catalog --example search_bench -- --listings 1000000 --queries 2000
//! ```
//!
//! `--database NAME` reuses a seeded database (skips seeding when it holds
//! listings); `--keep` leaves the database in place afterwards.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::float_arithmetic
)]

use std::time::{Duration, Instant};

use auction_catalog::search::Searcher;
use auction_platform::config::{Secret, StorageBackend, StorageConfig};
use auction_platform::{Database, MeshService as _};
use auction_proto::v1 as pb;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sqlx::Connection as _;

/// Rows per seeding statement.
const BATCH_ROWS: i64 = 50_000;
/// Words in the vocabulary.
const VOCABULARY_WORDS: usize = 2_000;

/// Real words first (so the vocabulary reads like a catalogue), then
/// generated ones from syllables.
fn vocabulary() -> Vec<String> {
    let real = [
        "leica", "nikon", "canon", "omega", "rolex", "seiko", "vintage", "antique", "silver",
        "gold", "brass", "oak", "walnut", "leather", "camera", "lens", "watch", "coin", "stamp",
        "card", "painting", "print", "chair", "table", "lamp", "vase", "phone", "laptop",
        "sneaker", "jacket", "rare", "mint", "boxed", "signed", "limited", "edition", "original",
        "restored", "chrome", "black", "white", "red", "blue", "green", "large", "small", "pocket",
        "digital", "film", "manual",
    ];
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "so", "du", "fa", "gri", "hol",
        "jen", "mar", "nor", "pil", "quo", "ret",
    ];
    let mut words: Vec<String> = real.iter().map(|word| (*word).to_owned()).collect();
    let mut index = 0_usize;
    while words.len() < VOCABULARY_WORDS {
        let a = syllables[index % syllables.len()];
        let b = syllables[(index / syllables.len()) % syllables.len()];
        let c = syllables[(index / (syllables.len() * syllables.len())) % syllables.len()];
        words.push(format!("{a}{b}{c}x"));
        index += 1;
    }
    words
}

struct Options {
    listings: i64,
    queries: usize,
    database: Option<String>,
    keep: bool,
    facets: bool,
}

fn options() -> Options {
    let mut options = Options {
        listings: 1_000_000,
        queries: 2_000,
        database: None,
        keep: false,
        facets: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--listings" => options.listings = arguments.next().unwrap().parse().unwrap(),
            "--queries" => options.queries = arguments.next().unwrap().parse().unwrap(),
            "--database" => options.database = arguments.next(),
            "--keep" => options.keep = true,
            "--facets" => options.facets = true,
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

#[tokio::main]
async fn main() {
    let options = options();
    let admin_url = std::env::var("MESH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".to_owned());
    let name = options
        .database
        .clone()
        .unwrap_or_else(|| format!("catalog_bench_{}", uuid::Uuid::now_v7().simple()));
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let storage = StorageConfig {
        backend: StorageBackend::Postgres,
        data_dir: std::env::temp_dir(),
        postgres_url: Some(Secret::new(format!("{base}/{name}"))),
        max_connections: 4,
    };
    let database = Database::open(&storage, "catalog", auction_catalog::Service::migrations())
        .await
        .expect("open and migrate");
    auction_catalog::demo::seed(&database, false).await.unwrap();
    let Database::Postgres(pool) = &database else {
        unreachable!("PostgreSQL was configured")
    };
    let categories = auction_catalog::store::list_categories(&database)
        .await
        .unwrap();
    let words = vocabulary();

    let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM listings")
        .fetch_one(pool)
        .await
        .unwrap();
    if present < options.listings {
        let started = Instant::now();
        let category_ids: Vec<uuid::Uuid> = categories.iter().map(|category| category.id).collect();
        let category_paths: Vec<String> = categories
            .iter()
            .map(|category| category.path.clone())
            .collect();
        let sellers: Vec<uuid::Uuid> = (0..1_000).map(|_| uuid::Uuid::now_v7()).collect();
        let parameters = pb::AuctionParameters {
            format: pb::AuctionFormat::English as i32,
            format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                pb::EnglishParameters {
                    starting_price: Some(pb::Money {
                        currency: "USD".to_owned(),
                        amount: "1.00".to_owned(),
                    }),
                    ..pb::EnglishParameters::default()
                },
            )),
        }
        .encode_to_vec();
        let now_ms = auction_platform::now_ms();
        sqlx::query("SELECT setseed(0.42)")
            .execute(pool)
            .await
            .unwrap();
        let mut seeded = present;
        while seeded < options.listings {
            let rows = BATCH_ROWS.min(options.listings - seeded);
            sqlx::query(SEED_BATCH)
                .bind(&words)
                .bind(&category_ids)
                .bind(&category_paths)
                .bind(now_ms)
                .bind(rows)
                .bind(&sellers)
                .bind(&parameters)
                .bind(seeded)
                .execute(pool)
                .await
                .expect("seed a batch");
            seeded += rows;
            println!(
                "seeded {seeded} listings ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
        sqlx::query("VACUUM ANALYZE listings")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("VACUUM ANALYZE items")
            .execute(pool)
            .await
            .unwrap();
        println!(
            "seeding {} listings took {:.1} s",
            options.listings - present,
            started.elapsed().as_secs_f64()
        );
    }
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('listings'))")
            .fetch_one(pool)
            .await
            .unwrap();
    println!("listings table with indexes: {size}");

    let searcher = Searcher::new(database.clone());
    let mut random = StdRng::seed_from_u64(7);
    let mut request = || {
        let word_count = random.gen_range(1..=2);
        let query: Vec<&str> = (0..word_count)
            .map(|_| words[random.gen_range(0..words.len())].as_str())
            .collect();
        let category = &categories[random.gen_range(0..categories.len())];
        let min_dollars = random.gen_range(0..5_000);
        let max_dollars = min_dollars + random.gen_range(50..5_000);
        pb::SearchListingsRequest {
            query: query.join(" "),
            filter: Some(pb::SearchFilter {
                category_ids: vec![category.id.to_string()],
                min_price: Some(pb::Money {
                    currency: "USD".to_owned(),
                    amount: min_dollars.to_string(),
                }),
                max_price: Some(pb::Money {
                    currency: "USD".to_owned(),
                    amount: max_dollars.to_string(),
                }),
                ..pb::SearchFilter::default()
            }),
            sort: pb::SearchSort::Relevance as i32,
            page_size: 20,
            page_token: String::new(),
            include_facets: options.facets,
        }
    };
    // Warm up the caches and the pool.
    for _ in 0..200 {
        searcher.search(&request()).await.expect("search");
    }
    let mut latencies = Vec::with_capacity(options.queries);
    let mut results = 0_usize;
    for _ in 0..options.queries {
        let request = request();
        let started = Instant::now();
        let response = searcher.search(&request).await.expect("search");
        latencies.push(started.elapsed());
        results += response.listings.len();
    }
    latencies.sort_unstable();
    println!(
        "{} keyword + category + price-range searches (relevance, 20 per page{}): \
         p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.1} results per page on average",
        options.queries,
        if options.facets { ", with facets" } else { "" },
        milliseconds(percentile(&latencies, 0.50)),
        milliseconds(percentile(&latencies, 0.95)),
        milliseconds(percentile(&latencies, 0.99)),
        milliseconds(percentile(&latencies, 1.0)),
        results as f64 / options.queries as f64,
    );
    database.close().await;
    if !options.keep && options.database.is_none() {
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    } else {
        println!("database kept: {name}");
    }
}

/// One batch of synthetic items and their listings, generated inside
/// PostgreSQL. Titles draw words with a square skew (low indices are
/// common), descriptions uniformly.
const SEED_BATCH: &str = "
WITH rows AS MATERIALIZED (
    SELECT g,
           gen_random_uuid() AS item_id,
           gen_random_uuid() AS listing_id,
           (SELECT string_agg(($1::text[])[1 + floor(power(random(), 2) * cardinality($1::text[]))::int], ' ')
              FROM generate_series(1, 5) WHERE g > 0) AS title,
           (SELECT string_agg(($1::text[])[1 + floor(random() * cardinality($1::text[]))::int], ' ')
              FROM generate_series(1, 12) WHERE g > 0) AS description,
           1 + floor(random() * cardinality($2::uuid[]))::int AS category,
           1 + floor(random() * 1000000)::bigint AS price_cents,
           random() AS kind,
           1 + floor(random() * cardinality($6::uuid[]))::int AS seller
      FROM generate_series($8::bigint + 1, $8::bigint + $5::bigint) AS g
), inserted_items AS (
    INSERT INTO items (id, seller_id, category_id, title, description, condition, attributes, created_at_ms, updated_at_ms)
    SELECT item_id, ($6::uuid[])[seller], ($2::uuid[])[category], title, description, 'used_good', '{}', $4::bigint - g, $4::bigint - g
      FROM rows
)
INSERT INTO listings (id, item_id, seller_id, title, description, attributes_text, category_id, category_path,
                      condition, format, parameters, currency, current_price, current_price_e4, bid_count,
                      reserve_state, status, start_at_ms, end_at_ms, current_end_at_ms, created_at_ms, updated_at_ms)
SELECT listing_id, item_id, ($6::uuid[])[seller], title, description, '', ($2::uuid[])[category], ($3::text[])[category],
       'used_good',
       CASE WHEN kind < 0.90 THEN 'english' WHEN kind < 0.95 THEN 'dutch' ELSE 'sealed_first_price' END,
       $7::bytea, 'USD', (price_cents / 100.0)::numeric(14, 2)::text, price_cents * 100, floor(kind * 40)::bigint,
       'none',
       CASE WHEN kind < 0.85 THEN 'open' WHEN kind < 0.92 THEN 'scheduled' ELSE 'closed' END,
       $4::bigint - g, $4::bigint + 86400000 + ((g * 7919) % 604800000), $4::bigint + 86400000 + ((g * 7919) % 604800000),
       $4::bigint - g, $4::bigint - g
  FROM rows
";
