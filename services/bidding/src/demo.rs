//! Demo auctions for `auctiond dev`: on first start (no auction yet) a few
//! running auctions of several formats over the catalog's demo items, from
//! the demo seller, so a newcomer sees activity at once. Created through the
//! shards like any auction (recorded in the log, timers armed), never by the
//! production default.

use std::str::FromStr;

use auction_engine::{
    AuctionId, AuctionSpec, Currency, DutchSpec, EnglishSpec, FormatSpec, SealedPricing,
    SealedSpec, Timestamp, UserId,
};
use rust_decimal::Decimal;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::BiddingError;
use crate::log::Log;
use crate::shard::{self, Clock, IdempotencyKey, Metadata, Shards};

/// The demo seller (the user service's demo account `alice`).
const DEMO_SELLER: &str = "019ab000-0000-7000-8000-00000000a11c";

fn usd(text: &str) -> Result<Decimal, BiddingError> {
    Decimal::from_str(text)
        .map_err(|error| BiddingError::Internal(format!("demo amount {text}: {error}")))
}

/// Creates the demo auctions when the log has none; returns how many.
pub async fn seed(shards: &Shards, log: &Log, clock: &dyn Clock) -> Result<usize, BiddingError> {
    if !log
        .list_auction_ids(None, false, 1)
        .await
        .map_err(BiddingError::Unavailable)?
        .is_empty()
    {
        return Ok(0);
    }
    let seller =
        Uuid::from_str(DEMO_SELLER).map_err(|error| BiddingError::Internal(error.to_string()))?;
    let now = clock.now();
    let minutes = |count: i64| Timestamp::from_unix_ms(now.unix_ms() + count * 60_000);
    let mut english_with_reserve = EnglishSpec::new(usd("100.00")?, minutes(120));
    english_with_reserve.reserve_price = Some(usd("450.00")?);
    english_with_reserve.buy_it_now_price = Some(usd("1500.00")?);
    let english_ending_soon = EnglishSpec::new(usd("25.00")?, minutes(3));
    let demos: Vec<(&str, &str, FormatSpec)> = vec![
        (
            "019ab000-0001-7000-8000-000000000001",
            "Leica M6 rangefinder, 1986",
            FormatSpec::English(english_with_reserve),
        ),
        (
            "019ab000-0001-7000-8000-000000000003",
            "1909-S VDB Lincoln cent",
            FormatSpec::English(english_ending_soon),
        ),
        (
            "019ab000-0001-7000-8000-000000000006",
            "ThinkPad X1 Carbon Gen 11 (3 units)",
            FormatSpec::Dutch(DutchSpec {
                start_price: usd("1400.00")?,
                price_step: usd("10.00")?,
                tick_interval_ms: 10_000,
                floor_price: usd("700.00")?,
                quantity: 3,
            }),
        ),
        (
            "019ab000-0001-7000-8000-000000000005",
            "Harbour at dawn, oil on canvas",
            FormatSpec::Sealed(SealedSpec {
                pricing: SealedPricing::SecondPrice,
                starting_price: usd("50.00")?,
                reserve_price: None,
                end_at: minutes(30),
            }),
        ),
    ];
    let count = demos.len();
    for (index, (item_id, title, format)) in demos.into_iter().enumerate() {
        let auction_id = Uuid::now_v7();
        let original_end_ms = match &format {
            FormatSpec::English(english) => Some(english.end_at.unix_ms()),
            FormatSpec::Sealed(sealed) => Some(sealed.end_at.unix_ms()),
            FormatSpec::Dutch(_) | FormatSpec::Live(_) => None,
        };
        let spec = AuctionSpec {
            auction_id: AuctionId(auction_id.as_u128()),
            seller: UserId(seller.as_u128()),
            currency: Currency::USD,
            start_at: now,
            format,
        };
        let (reply, answer) = oneshot::channel();
        shards.send(
            auction_id,
            shard::Request::Create {
                spec: Box::new(spec),
                metadata: Metadata {
                    item_id: item_id.to_owned(),
                    title: title.to_owned(),
                    seller_handle: "alice".to_owned(),
                    seller_id: seller.to_string(),
                    original_end_ms,
                    ..Metadata::default()
                },
                key: IdempotencyKey {
                    caller: Uuid::nil(),
                    method: "CreateAuction",
                    request_id: format!("demo-{index}"),
                    fingerprint: auction_id.to_string(),
                },
                reply,
            },
        )?;
        answer.await.map_err(|_| BiddingError::ShuttingDown)??;
    }
    tracing::info!(
        auctions = count,
        "demo auctions created (English, Dutch, sealed)"
    );
    Ok(count)
}
