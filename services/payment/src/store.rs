//! The payment service's tables, on PostgreSQL or SQLite (one SQL text for
//! both, see [`crate::sql`]). Writers follow one pattern: the first
//! statement of a transaction is a write (the idempotency claim, the
//! processed-event mark, a conditional UPDATE), so SQLite takes its write
//! lock at once and PostgreSQL serialises same-key requests on the unique
//! index; order transitions are conditional on the order's `version`, and
//! ledger postings on their unique movement key, so nothing is applied twice.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use auction_platform::{Database, database};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::money::{Currency, Money};
use crate::rules::{self, Action, OrderFacts, OrderStatus, Outcome, Posting};
use crate::sql::{self, Arg, Row, Transaction};

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("payment database")]
    Database(#[from] sqlx::Error),
    /// A stored value does not parse (a bug or tampering).
    #[error("corrupt stored {0}")]
    Corrupt(&'static str),
    /// A conditional write found the row changed: lost a race.
    #[error("concurrent change")]
    Conflict,
    /// Staging bus events failed.
    #[error("outbox")]
    Outbox(#[source] sqlx::Error),
}

fn decimal(row: &Row, column: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(&row.text(column)?).map_err(|_| StoreError::Corrupt("amount"))
}

fn is_unique_violation(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(sqlx::Error::Database(database_error)) if database_error.is_unique_violation())
}

// ----- Orders -----

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// Id (deterministic UUIDv7, see `consumer`).
    pub order_id: Uuid,
    /// What produced it (unique).
    pub origin_key: String,
    /// Auction.
    pub auction_id: String,
    /// Item (empty when the close event did not say).
    pub item_id: String,
    /// Title.
    pub title: String,
    /// Seller.
    pub seller_id: Uuid,
    /// Buyer.
    pub buyer_id: Uuid,
    /// Status.
    pub status: OrderStatus,
    /// Pricing, fixed at creation.
    pub pricing: rules::Pricing,
    /// Refunded so far.
    pub refunded: Decimal,
    /// Pay before this.
    pub payment_due_at_ms: i64,
    /// Automatic release while SHIPPED.
    pub auto_release_at_ms: Option<i64>,
    /// Carrier.
    pub carrier: Option<String>,
    /// Tracking number.
    pub tracking_number: Option<String>,
    /// Tracking URL.
    pub tracking_url: Option<String>,
    /// When shipped.
    pub shipped_at_ms: Option<i64>,
    /// Open or last dispute.
    pub dispute_id: Option<Uuid>,
    /// The offer it came from.
    pub second_chance_offer_id: Option<Uuid>,
    /// Created.
    pub created_at_ms: i64,
    /// Paid.
    pub paid_at_ms: Option<i64>,
    /// Reached a terminal status.
    pub completed_at_ms: Option<i64>,
    /// Last change.
    pub updated_at_ms: i64,
    /// Raised by every transition.
    pub version: i64,
}

impl OrderRecord {
    /// What the rules see.
    pub fn facts(&self) -> OrderFacts {
        OrderFacts {
            order_id: self.order_id,
            buyer_id: self.buyer_id,
            seller_id: self.seller_id,
            currency: self.pricing.currency,
            total_due: self.pricing.total_due,
            seller_proceeds: self.pricing.seller_proceeds,
            refunded: self.refunded,
            status: self.status,
            payment_due_at_ms: self.payment_due_at_ms,
            auto_release_at_ms: self.auto_release_at_ms,
            shipped_at_ms: self.shipped_at_ms,
        }
    }

    /// An amount of the order as money.
    pub fn money(&self, amount: Decimal) -> Money {
        Money::new(self.pricing.currency, amount)
    }
}

const ORDER_COLUMNS: &str = "order_id, origin_key, auction_id, item_id, title, seller_id, buyer_id, status, currency, quantity, \
    unit_price, hammer_price, buyers_premium, buyers_premium_bps, buyer_service_fee, seller_commission, seller_commission_bps, \
    total_due, seller_proceeds, refunded_amount, payment_due_at_ms, auto_release_at_ms, carrier, tracking_number, tracking_url, \
    shipped_at_ms, dispute_id, second_chance_offer_id, created_at_ms, paid_at_ms, completed_at_ms, updated_at_ms, version";

fn order_from_row(row: &Row) -> Result<OrderRecord, StoreError> {
    let currency =
        Currency::parse(&row.text("currency")?).ok_or(StoreError::Corrupt("currency"))?;
    let bps = |column: &str| -> Result<u32, StoreError> {
        u32::try_from(row.int(column)?).map_err(|_| StoreError::Corrupt("rate"))
    };
    Ok(OrderRecord {
        order_id: row.id("order_id")?,
        origin_key: row.text("origin_key")?,
        auction_id: row.text("auction_id")?,
        item_id: row.text("item_id")?,
        title: row.text("title")?,
        seller_id: row.id("seller_id")?,
        buyer_id: row.id("buyer_id")?,
        status: OrderStatus::parse(&row.text("status")?).ok_or(StoreError::Corrupt("status"))?,
        pricing: rules::Pricing {
            currency,
            quantity: u32::try_from(row.int("quantity")?)
                .map_err(|_| StoreError::Corrupt("quantity"))?,
            unit_price: decimal(row, "unit_price")?,
            hammer_price: decimal(row, "hammer_price")?,
            buyers_premium: decimal(row, "buyers_premium")?,
            buyers_premium_bps: bps("buyers_premium_bps")?,
            buyer_service_fee: decimal(row, "buyer_service_fee")?,
            seller_commission: decimal(row, "seller_commission")?,
            seller_commission_bps: bps("seller_commission_bps")?,
            total_due: decimal(row, "total_due")?,
            seller_proceeds: decimal(row, "seller_proceeds")?,
        },
        refunded: decimal(row, "refunded_amount")?,
        payment_due_at_ms: row.int("payment_due_at_ms")?,
        auto_release_at_ms: row.opt_int("auto_release_at_ms")?,
        carrier: row.opt_text("carrier")?,
        tracking_number: row.opt_text("tracking_number")?,
        tracking_url: row.opt_text("tracking_url")?,
        shipped_at_ms: row.opt_int("shipped_at_ms")?,
        dispute_id: row.opt_id("dispute_id")?,
        second_chance_offer_id: row.opt_id("second_chance_offer_id")?,
        created_at_ms: row.int("created_at_ms")?,
        paid_at_ms: row.opt_int("paid_at_ms")?,
        completed_at_ms: row.opt_int("completed_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
        version: row.int("version")?,
    })
}

/// Inserts a new order; `false` when one with the same origin (or id)
/// exists already (a close delivered twice).
pub async fn insert_order(tx: &mut Transaction, order: &OrderRecord) -> Result<bool, StoreError> {
    let text = |amount: Decimal| Arg::Text(order.money(amount).text());
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33) ON CONFLICT DO NOTHING"
            ),
            &[
                Arg::id(order.order_id),
                Arg::text(order.origin_key.clone()),
                Arg::text(order.auction_id.clone()),
                Arg::text(order.item_id.clone()),
                Arg::text(order.title.clone()),
                Arg::id(order.seller_id),
                Arg::id(order.buyer_id),
                Arg::text(order.status.as_str()),
                Arg::text(order.pricing.currency.code()),
                Arg::Int(i64::from(order.pricing.quantity)),
                text(order.pricing.unit_price),
                text(order.pricing.hammer_price),
                text(order.pricing.buyers_premium),
                Arg::Int(i64::from(order.pricing.buyers_premium_bps)),
                text(order.pricing.buyer_service_fee),
                text(order.pricing.seller_commission),
                Arg::Int(i64::from(order.pricing.seller_commission_bps)),
                text(order.pricing.total_due),
                text(order.pricing.seller_proceeds),
                text(order.refunded),
                Arg::Int(order.payment_due_at_ms),
                Arg::OptInt(order.auto_release_at_ms),
                Arg::OptText(order.carrier.clone()),
                Arg::OptText(order.tracking_number.clone()),
                Arg::OptText(order.tracking_url.clone()),
                Arg::OptInt(order.shipped_at_ms),
                Arg::opt_id(order.dispute_id),
                Arg::opt_id(order.second_chance_offer_id),
                Arg::Int(order.created_at_ms),
                Arg::OptInt(order.paid_at_ms),
                Arg::OptInt(order.completed_at_ms),
                Arg::Int(order.updated_at_ms),
                Arg::Int(order.version),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Reads an order inside `tx` (locked on PostgreSQL until the end of it).
pub async fn load_order(
    tx: &mut Transaction,
    order_id: Uuid,
) -> Result<Option<OrderRecord>, StoreError> {
    let lock = if tx.is_postgres() { " FOR UPDATE" } else { "" };
    tx.fetch_optional(
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1{lock}"),
        &[Arg::id(order_id)],
    )
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// Reads an order.
pub async fn get_order(
    database: &Database,
    order_id: Uuid,
) -> Result<Option<OrderRecord>, StoreError> {
    sql::fetch_optional(
        database,
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"),
        &[Arg::id(order_id)],
    )
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// Filters of [`list_orders`].
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Orders where this user is buyer (and/or seller, see below).
    pub user_id: Option<Uuid>,
    /// As buyer.
    pub as_buyer: bool,
    /// As seller.
    pub as_seller: bool,
    /// Statuses; empty = all.
    pub statuses: Vec<OrderStatus>,
    /// One auction.
    pub auction_id: Option<String>,
}

/// Lists orders, newest first.
pub async fn list_orders(
    database: &Database,
    filter: &OrderFilter,
    offset: i64,
    limit: i64,
) -> Result<Vec<OrderRecord>, StoreError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
    let mut args = Vec::new();
    if let Some(user) = filter.user_id {
        args.push(Arg::id(user));
        let position = args.len();
        match (filter.as_buyer, filter.as_seller) {
            (true, false) => sql.push_str(&format!(" AND buyer_id = ${position}")),
            (false, true) => sql.push_str(&format!(" AND seller_id = ${position}")),
            (true, true) | (false, false) => sql.push_str(&format!(
                " AND (buyer_id = ${position} OR seller_id = ${position})"
            )),
        }
    }
    if !filter.statuses.is_empty() {
        let mut placeholders = Vec::new();
        for status in &filter.statuses {
            args.push(Arg::text(status.as_str()));
            placeholders.push(format!("${}", args.len()));
        }
        sql.push_str(&format!(" AND status IN ({})", placeholders.join(", ")));
    }
    if let Some(auction) = &filter.auction_id {
        args.push(Arg::text(auction.clone()));
        sql.push_str(&format!(" AND auction_id = ${}", args.len()));
    }
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    sql.push_str(&format!(
        " ORDER BY created_at_ms DESC, order_id DESC LIMIT ${} OFFSET ${}",
        args.len() - 1,
        args.len()
    ));
    sql::fetch_all(database, &sql, &args)
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

/// Every order of an auction (winners, for second-chance offers).
pub async fn orders_of_auction(
    tx: &mut Transaction,
    auction_id: &str,
) -> Result<Vec<OrderRecord>, StoreError> {
    tx.fetch_all(
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE auction_id = $1"),
        &[Arg::text(auction_id)],
    )
    .await?
    .iter()
    .map(order_from_row)
    .collect()
}

/// Writes `next` over the stored order if it is still at `version`;
/// [`StoreError::Conflict`] otherwise.
pub async fn update_order(
    tx: &mut Transaction,
    version: i64,
    next: &OrderRecord,
) -> Result<(), StoreError> {
    let updated = tx
        .execute(
            "UPDATE orders SET status = $1, refunded_amount = $2, auto_release_at_ms = $3, carrier = $4, tracking_number = $5, \
             tracking_url = $6, shipped_at_ms = $7, dispute_id = $8, paid_at_ms = $9, completed_at_ms = $10, updated_at_ms = $11, \
             version = $12 WHERE order_id = $13 AND version = $14",
            &[
                Arg::text(next.status.as_str()),
                Arg::Text(next.money(next.refunded).text()),
                Arg::OptInt(next.auto_release_at_ms),
                Arg::OptText(next.carrier.clone()),
                Arg::OptText(next.tracking_number.clone()),
                Arg::OptText(next.tracking_url.clone()),
                Arg::OptInt(next.shipped_at_ms),
                Arg::opt_id(next.dispute_id),
                Arg::OptInt(next.paid_at_ms),
                Arg::OptInt(next.completed_at_ms),
                Arg::Int(next.updated_at_ms),
                Arg::Int(next.version),
                Arg::id(next.order_id),
                Arg::Int(version),
            ],
        )
        .await?;
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// Applies a rule transition to `order` inside `tx`: the conditional update,
/// the history line (who, what, when) and the postings. `prepare` adjusts
/// the next record (shipment details, dispute id) before it is written.
/// Rule refusals come back as `Ok(Err(..))` with nothing written.
pub async fn transition(
    tx: &mut Transaction,
    order: &OrderRecord,
    action: &Action,
    actor: &str,
    label: &str,
    now_ms: i64,
    prepare: impl FnOnce(&mut OrderRecord),
) -> Result<Result<(OrderRecord, Outcome), rules::RuleError>, StoreError> {
    let outcome = match rules::apply(&order.facts(), action) {
        Ok(outcome) => outcome,
        Err(error) => return Ok(Err(error)),
    };
    let mut next = order.clone();
    next.status = outcome.order.status;
    next.refunded = outcome.order.refunded;
    next.auto_release_at_ms = outcome.order.auto_release_at_ms;
    next.shipped_at_ms = outcome.order.shipped_at_ms;
    next.updated_at_ms = now_ms;
    next.version = order.version + 1;
    if next.status == OrderStatus::Paid && order.status != OrderStatus::Paid {
        next.paid_at_ms = Some(now_ms);
    }
    if next.status.is_terminal() && !order.status.is_terminal() {
        next.completed_at_ms = Some(now_ms);
    }
    prepare(&mut next);
    update_order(tx, order.version, &next).await?;
    tx.execute(
        "INSERT INTO order_history (order_id, version, actor, action, from_status, to_status, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Arg::id(order.order_id),
            Arg::Int(next.version),
            Arg::text(actor),
            Arg::text(label),
            Arg::text(order.status.as_str()),
            Arg::text(next.status.as_str()),
            Arg::Int(now_ms),
        ],
    )
    .await?;
    book(tx, &outcome.postings, now_ms).await?;
    Ok(Ok((next, outcome)))
}

// ----- Ledger -----

/// Books postings: one `ledger_postings` row each (its unique movement key
/// refuses a second booking of the same movement: [`StoreError::Conflict`])
/// and one immutable entry per line.
pub async fn book(
    tx: &mut Transaction,
    postings: &[Posting],
    now_ms: i64,
) -> Result<(), StoreError> {
    for posting in postings {
        debug_assert!(posting.net().is_zero());
        if !posting.net().is_zero() {
            return Err(StoreError::Corrupt("unbalanced posting"));
        }
        let posting_id = Uuid::now_v7();
        let inserted = tx
            .execute(
                "INSERT INTO ledger_postings (posting_id, movement_key, posting_type, order_id, payout_id, currency, description, created_at_ms) \
                 VALUES ($1, $2, $3, $4, NULL, $5, $6, $7)",
                &[
                    Arg::id(posting_id),
                    Arg::text(posting.movement_key.clone()),
                    Arg::text(posting.posting_type.as_str()),
                    Arg::id(posting.order_id),
                    Arg::text(posting.currency.code()),
                    Arg::text(posting.description.clone()),
                    Arg::Int(now_ms),
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => return Err(StoreError::Conflict),
            Err(error) => return Err(error),
        }
        for line in &posting.lines {
            let money = Money::new(posting.currency, line.amount);
            let minor = money.minor().ok_or(StoreError::Corrupt("amount"))?;
            tx.execute(
                "INSERT INTO ledger_entries (entry_id, posting_id, posting_type, account_type, owner_id, currency, direction, amount, \
                 amount_minor, order_id, payout_id, created_at_ms, description) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '', $11, $12)",
                &[
                    Arg::id(Uuid::now_v7()),
                    Arg::id(posting_id),
                    Arg::text(posting.posting_type.as_str()),
                    Arg::text(line.account.type_name()),
                    Arg::Text(line.account.owner().map(|owner| owner.to_string()).unwrap_or_default()),
                    Arg::text(posting.currency.code()),
                    Arg::text(line.direction.as_str()),
                    Arg::Text(money.text()),
                    Arg::Int(minor),
                    Arg::id(posting.order_id),
                    Arg::Int(now_ms),
                    Arg::text(posting.description.clone()),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// A ledger entry as stored.
#[derive(Debug, Clone)]
pub struct EntryRecord {
    /// Id.
    pub entry_id: String,
    /// Posting.
    pub posting_id: String,
    /// Posting type name.
    pub posting_type: String,
    /// Account type name.
    pub account_type: String,
    /// Owner or empty.
    pub owner_id: String,
    /// Currency.
    pub currency: String,
    /// DEBIT or CREDIT.
    pub direction: String,
    /// Canonical amount.
    pub amount: String,
    /// Order or empty.
    pub order_id: String,
    /// Payout or empty.
    pub payout_id: String,
    /// Booked.
    pub created_at_ms: i64,
    /// Description.
    pub description: String,
}

/// Filters of ledger reads (AND).
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Account type name.
    pub account_type: Option<String>,
    /// Owner.
    pub owner_id: Option<String>,
    /// Currency.
    pub currency: Option<String>,
    /// Order.
    pub order_id: Option<String>,
    /// Posting.
    pub posting_id: Option<String>,
    /// Posting type name.
    pub posting_type: Option<String>,
    /// At or after.
    pub start_ms: Option<i64>,
    /// Before.
    pub end_ms: Option<i64>,
}

fn entry_where(filter: &EntryFilter, args: &mut Vec<Arg>) -> String {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut text = |column: &str, value: &Option<String>, sql: &mut String| {
        if let Some(value) = value {
            args.push(Arg::text(value.clone()));
            sql.push_str(&format!(" AND {column} = ${}", args.len()));
        }
    };
    text("account_type", &filter.account_type, &mut sql);
    text("owner_id", &filter.owner_id, &mut sql);
    text("currency", &filter.currency, &mut sql);
    text("order_id", &filter.order_id, &mut sql);
    text("posting_id", &filter.posting_id, &mut sql);
    text("posting_type", &filter.posting_type, &mut sql);
    if let Some(start) = filter.start_ms {
        args.push(Arg::Int(start));
        sql.push_str(&format!(" AND created_at_ms >= ${}", args.len()));
    }
    if let Some(end) = filter.end_ms {
        args.push(Arg::Int(end));
        sql.push_str(&format!(" AND created_at_ms < ${}", args.len()));
    }
    sql
}

/// Entries matching `filter`, oldest first (entry ids are UUIDv7).
pub async fn list_entries(
    database: &Database,
    filter: &EntryFilter,
    offset: i64,
    limit: i64,
) -> Result<Vec<EntryRecord>, StoreError> {
    let mut args = Vec::new();
    let mut sql = String::from(
        "SELECT entry_id, posting_id, posting_type, account_type, owner_id, currency, direction, amount, order_id, payout_id, \
         created_at_ms, description FROM ledger_entries",
    );
    sql.push_str(&entry_where(filter, &mut args));
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    sql.push_str(&format!(
        " ORDER BY entry_id LIMIT ${} OFFSET ${}",
        args.len() - 1,
        args.len()
    ));
    sql::fetch_all(database, &sql, &args)
        .await?
        .iter()
        .map(|row| {
            Ok(EntryRecord {
                entry_id: row.text("entry_id")?,
                posting_id: row.text("posting_id")?,
                posting_type: row.text("posting_type")?,
                account_type: row.text("account_type")?,
                owner_id: row.text("owner_id")?,
                currency: row.text("currency")?,
                direction: row.text("direction")?,
                amount: row.text("amount")?,
                order_id: row.text("order_id")?,
                payout_id: row.text("payout_id")?,
                created_at_ms: row.int("created_at_ms")?,
                description: row.text("description")?,
            })
        })
        .collect()
}

/// Debits, credits (minor units) and entry count matching `filter`.
pub async fn totals(
    tx: &mut Transaction,
    filter: &EntryFilter,
) -> Result<(i64, i64, i64), StoreError> {
    let mut args = Vec::new();
    let mut sql = String::from(
        "SELECT CAST(COALESCE(SUM(CASE WHEN direction = 'DEBIT' THEN amount_minor ELSE 0 END), 0) AS BIGINT) AS debits, \
         CAST(COALESCE(SUM(CASE WHEN direction = 'CREDIT' THEN amount_minor ELSE 0 END), 0) AS BIGINT) AS credits, \
         COUNT(*) AS entries FROM ledger_entries",
    );
    sql.push_str(&entry_where(filter, &mut args));
    let row = tx
        .fetch_optional(&sql, &args)
        .await?
        .ok_or(StoreError::Corrupt("totals"))?;
    Ok((row.int("debits")?, row.int("credits")?, row.int("entries")?))
}

/// Currencies with ledger entries or orders.
pub async fn currencies(tx: &mut Transaction) -> Result<Vec<String>, StoreError> {
    tx.fetch_all(
        "SELECT currency FROM ledger_entries UNION SELECT currency FROM orders ORDER BY currency",
        &[],
    )
    .await?
    .iter()
    .map(|row| row.text("currency"))
    .collect()
}

/// Postings of `currency` whose lines do not net to zero.
pub async fn unbalanced_postings(
    tx: &mut Transaction,
    currency: &str,
    end_ms: Option<i64>,
) -> Result<i64, StoreError> {
    let row = tx.fetch_optional("SELECT COUNT(*) AS n FROM (SELECT posting_id FROM ledger_entries WHERE currency = $1 AND created_at_ms < $2 GROUP BY posting_id \
         HAVING SUM(CASE WHEN direction = 'CREDIT' THEN amount_minor ELSE -amount_minor END) <> 0) AS unbalanced",
        &[Arg::text(currency), Arg::Int(end_ms.unwrap_or(i64::MAX))],
    )
    .await?;
    row.map_or(Ok(0), |row| row.int("n"))
}

/// Net ESCROW amount (credits - debits, minor units) per order of `currency`.
pub async fn escrow_by_order(
    tx: &mut Transaction,
    currency: &str,
    end_ms: Option<i64>,
) -> Result<Vec<(String, i64)>, StoreError> {
    tx.fetch_all("SELECT order_id, CAST(SUM(CASE WHEN direction = 'CREDIT' THEN amount_minor ELSE -amount_minor END) AS BIGINT) AS net \
         FROM ledger_entries WHERE account_type = 'ESCROW' AND currency = $1 AND created_at_ms < $2 GROUP BY order_id",
        &[Arg::text(currency), Arg::Int(end_ms.unwrap_or(i64::MAX))],
    )
    .await?
    .iter()
    .map(|row| Ok((row.text("order_id")?, row.int("net")?)))
    .collect()
}

/// Orders of `currency` whose money is held (PAID, SHIPPED, DISPUTED) and
/// every order with escrow entries, for reconciliation.
pub async fn orders_in_currency(
    tx: &mut Transaction,
    currency: &str,
) -> Result<Vec<OrderRecord>, StoreError> {
    tx.fetch_all(
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE currency = $1"),
        &[Arg::text(currency)],
    )
    .await?
    .iter()
    .map(order_from_row)
    .collect()
}

/// Payment attempts still PENDING in `currency`.
pub async fn pending_attempt_count(
    tx: &mut Transaction,
    currency: &str,
) -> Result<i64, StoreError> {
    let row = tx
        .fetch_optional(
            "SELECT COUNT(*) AS n FROM payment_attempts WHERE status = 'PENDING' AND currency = $1",
            &[Arg::text(currency)],
        )
        .await?;
    row.map_or(Ok(0), |row| row.int("n"))
}

// ----- Idempotency -----

/// The key of one mutating request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// Caller (user id, or `service:<name>`).
    pub caller: String,
    /// RPC method.
    pub method: &'static str,
    /// Client's request id.
    pub request_id: String,
    /// Hash of every request field but the request id.
    pub fingerprint: String,
}

/// A stored outcome.
#[derive(Debug, Clone)]
pub enum StoredOutcome {
    /// The encoded response.
    Answer(Vec<u8>),
    /// A deterministic refusal.
    Refusal {
        /// gRPC code.
        code: i32,
        /// Reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// A payment attempt with the provider, not settled when answered.
    InFlight {
        /// The attempt.
        attempt_id: Uuid,
    },
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// New: the request executes; its outcome is stored before commit.
    Fresh,
    /// Seen with the same content: answer this.
    Replay(StoredOutcome),
    /// Seen with other content.
    Reused,
}

/// Claims `key` as the first write of `tx`.
pub async fn claim(
    tx: &mut Transaction,
    key: &RequestKey,
    now_ms: i64,
) -> Result<Claim, StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (caller_id, method, request_id, fingerprint, outcome, created_at_ms) \
             VALUES ($1, $2, $3, $4, 'claimed', $5) ON CONFLICT DO NOTHING",
            &[
                Arg::text(key.caller.clone()),
                Arg::text(key.method),
                Arg::text(key.request_id.clone()),
                Arg::text(key.fingerprint.clone()),
                Arg::Int(now_ms),
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row = tx
        .fetch_optional(
            "SELECT fingerprint, outcome, response, error_code, error_reason, error_message, attempt_id FROM idempotency_keys \
             WHERE caller_id = $1 AND method = $2 AND request_id = $3",
            &[
                Arg::text(key.caller.clone()),
                Arg::text(key.method),
                Arg::text(key.request_id.clone()),
            ],
        )
        .await?
        .ok_or(StoreError::Conflict)?;
    if row.text("fingerprint")? != key.fingerprint {
        return Ok(Claim::Reused);
    }
    let outcome = match row.text("outcome")?.as_str() {
        "ok" => StoredOutcome::Answer(row.opt_bytes("response")?.unwrap_or_default()),
        "error" => StoredOutcome::Refusal {
            code: i32::try_from(row.opt_int("error_code")?.unwrap_or(2)).unwrap_or(2),
            reason: row.opt_text("error_reason")?.unwrap_or_default(),
            message: row.opt_text("error_message")?.unwrap_or_default(),
        },
        "inflight" => StoredOutcome::InFlight {
            attempt_id: row
                .opt_id("attempt_id")?
                .ok_or(StoreError::Corrupt("attempt id"))?,
        },
        _ => return Err(StoreError::Corrupt("idempotency outcome")),
    };
    Ok(Claim::Replay(outcome))
}

/// Stores the outcome of a claimed key in `tx`.
pub async fn finish(
    tx: &mut Transaction,
    key: &RequestKey,
    outcome: &StoredOutcome,
) -> Result<(), StoreError> {
    let (kind, response, code, reason, message, attempt) = match outcome {
        StoredOutcome::Answer(bytes) => ("ok", Some(bytes.clone()), None, None, None, None),
        StoredOutcome::Refusal {
            code,
            reason,
            message,
        } => (
            "error",
            None,
            Some(i64::from(*code)),
            Some(reason.clone()),
            Some(message.clone()),
            None,
        ),
        StoredOutcome::InFlight { attempt_id } => {
            ("inflight", None, None, None, None, Some(*attempt_id))
        }
    };
    let response = match response {
        Some(bytes) => Arg::Bytes(bytes),
        None => Arg::Bytes(Vec::new()),
    };
    tx.execute(
        "UPDATE idempotency_keys SET outcome = $1, response = $2, error_code = $3, error_reason = $4, error_message = $5, \
         attempt_id = $6 WHERE caller_id = $7 AND method = $8 AND request_id = $9",
        &[
            Arg::text(kind),
            response,
            Arg::OptInt(code),
            Arg::OptText(reason),
            Arg::OptText(message),
            Arg::opt_id(attempt),
            Arg::text(key.caller.clone()),
            Arg::text(key.method),
            Arg::text(key.request_id.clone()),
        ],
    )
    .await?;
    Ok(())
}

/// Forgets a key (a transient failure: the request may execute again).
pub async fn forget(tx: &mut Transaction, key: &RequestKey) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM idempotency_keys WHERE caller_id = $1 AND method = $2 AND request_id = $3",
        &[
            Arg::text(key.caller.clone()),
            Arg::text(key.method),
            Arg::text(key.request_id.clone()),
        ],
    )
    .await?;
    Ok(())
}

// ----- Payment attempts -----

/// A payment attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Id, also the provider's idempotency key.
    pub attempt_id: Uuid,
    /// Order.
    pub order_id: Uuid,
    /// Amount.
    pub amount: Money,
    /// PENDING, SUCCEEDED, DECLINED, FAILED.
    pub status: String,
    /// Reason for DECLINED / FAILED.
    pub failure_reason: String,
    /// Provider reference.
    pub provider_reference: String,
    /// Display of the method.
    pub method_description: String,
    /// Started.
    pub created_at_ms: i64,
    /// Outcome known.
    pub completed_at_ms: Option<i64>,
}

const ATTEMPT_COLUMNS: &str = "attempt_id, order_id, amount, currency, status, failure_reason, provider_reference, method_description, \
    created_at_ms, completed_at_ms";

fn attempt_from_row(row: &Row) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt_id: row.id("attempt_id")?,
        order_id: row.id("order_id")?,
        amount: Money::parse(&row.text("currency")?, &row.text("amount")?)
            .map_err(|_| StoreError::Corrupt("amount"))?,
        status: row.text("status")?,
        failure_reason: row.text("failure_reason")?,
        provider_reference: row.text("provider_reference")?,
        method_description: row.text("method_description")?,
        created_at_ms: row.int("created_at_ms")?,
        completed_at_ms: row.opt_int("completed_at_ms")?,
    })
}

/// Inserts a PENDING attempt.
pub async fn insert_attempt(
    tx: &mut Transaction,
    attempt: &AttemptRecord,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("INSERT INTO payment_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[
            Arg::id(attempt.attempt_id),
            Arg::id(attempt.order_id),
            Arg::Text(attempt.amount.text()),
            Arg::text(attempt.amount.currency.code()),
            Arg::text(attempt.status.clone()),
            Arg::text(attempt.failure_reason.clone()),
            Arg::text(attempt.provider_reference.clone()),
            Arg::text(attempt.method_description.clone()),
            Arg::Int(attempt.created_at_ms),
            Arg::OptInt(attempt.completed_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Settles a PENDING attempt (the first write of its transaction);
/// `false` when it was settled already (by the reconciler or a retry).
pub async fn settle_attempt(
    tx: &mut Transaction,
    attempt_id: Uuid,
    status: &str,
    failure_reason: &str,
    provider_reference: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            "UPDATE payment_attempts SET status = $1, failure_reason = $2, provider_reference = $3, completed_at_ms = $4 \
             WHERE attempt_id = $5 AND status = 'PENDING'",
            &[
                Arg::text(status),
                Arg::text(failure_reason),
                Arg::text(provider_reference),
                Arg::Int(now_ms),
                Arg::id(attempt_id),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// One attempt.
pub async fn get_attempt(
    database: &Database,
    attempt_id: Uuid,
) -> Result<Option<AttemptRecord>, StoreError> {
    sql::fetch_optional(
        database,
        &format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE attempt_id = $1"),
        &[Arg::id(attempt_id)],
    )
    .await?
    .as_ref()
    .map(attempt_from_row)
    .transpose()
}

/// An order's attempts, oldest first.
pub async fn attempts_of(
    database: &Database,
    order_id: Uuid,
) -> Result<Vec<AttemptRecord>, StoreError> {
    sql::fetch_all(
        database,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE order_id = $1 ORDER BY attempt_id"
        ),
        &[Arg::id(order_id)],
    )
    .await?
    .iter()
    .map(attempt_from_row)
    .collect()
}

/// PENDING attempts started before `before_ms`.
pub async fn stale_attempts(
    database: &Database,
    before_ms: i64,
) -> Result<Vec<AttemptRecord>, StoreError> {
    sql::fetch_all(
        database,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE status = 'PENDING' AND created_at_ms <= $1 ORDER BY created_at_ms LIMIT 100"
        ),
        &[Arg::Int(before_ms)],
    )
    .await?
    .iter()
    .map(attempt_from_row)
    .collect()
}

// ----- Deadlines -----

/// Orders in `status` whose `column` deadline is at or before `now_ms`.
pub async fn due_orders(
    database: &Database,
    status: OrderStatus,
    column: &'static str,
    now_ms: i64,
) -> Result<Vec<OrderRecord>, StoreError> {
    sql::fetch_all(
        database,
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 AND {column} IS NOT NULL AND {column} <= $2 ORDER BY {column} LIMIT 100"
        ),
        &[Arg::text(status.as_str()), Arg::Int(now_ms)],
    )
    .await?
    .iter()
    .map(order_from_row)
    .collect()
}

/// Orders awaiting payment whose deadline is at most `lead_ms` away and
/// that have not been reminded.
pub async fn orders_to_remind(
    database: &Database,
    now_ms: i64,
    lead_ms: i64,
) -> Result<Vec<OrderRecord>, StoreError> {
    sql::fetch_all(
        database,
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'AWAITING_PAYMENT' AND payment_due_reminded_at_ms IS NULL \
             AND payment_due_at_ms <= $1 AND payment_due_at_ms > $2 ORDER BY payment_due_at_ms LIMIT 100"
        ),
        &[Arg::Int(now_ms.saturating_add(lead_ms)), Arg::Int(now_ms)],
    )
    .await?
    .iter()
    .map(order_from_row)
    .collect()
}

/// Marks an order reminded (the first write of `tx`); `false` when it was
/// already (another node).
pub async fn mark_reminded(
    tx: &mut Transaction,
    order_id: Uuid,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            "UPDATE orders SET payment_due_reminded_at_ms = $1 WHERE order_id = $2 AND payment_due_reminded_at_ms IS NULL",
            &[Arg::Int(now_ms), Arg::id(order_id)],
        )
        .await?;
    Ok(updated == 1)
}

// ----- Disputes -----

/// A dispute as stored.
#[derive(Debug, Clone)]
pub struct DisputeRecord {
    /// Id.
    pub dispute_id: Uuid,
    /// Order.
    pub order_id: Uuid,
    /// Buyer.
    pub buyer_id: Uuid,
    /// Seller.
    pub seller_id: Uuid,
    /// NOT_RECEIVED or NOT_AS_DESCRIBED.
    pub reason: String,
    /// OPEN, RESPONDED, RESOLVED.
    pub status: String,
    /// Seller answers before this.
    pub respond_by_ms: i64,
    /// REFUND, PARTIAL_REFUND, RELEASE.
    pub resolution: Option<String>,
    /// Refunded amount (canonical text) for refunds.
    pub refund_amount: Option<String>,
    /// Admin's note.
    pub resolution_note: String,
    /// Admin who resolved it.
    pub resolved_by: Option<String>,
    /// Opened.
    pub created_at_ms: i64,
    /// Resolved.
    pub resolved_at_ms: Option<i64>,
    /// Messages, oldest first.
    pub messages: Vec<MessageRecord>,
}

/// One dispute message.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// Author.
    pub author_id: String,
    /// BUYER, SELLER, ADMIN.
    pub party: String,
    /// Text.
    pub body: String,
    /// Written.
    pub created_at_ms: i64,
}

const DISPUTE_COLUMNS: &str = "dispute_id, order_id, buyer_id, seller_id, reason, status, respond_by_ms, resolution, refund_amount, \
    resolution_note, resolved_by, created_at_ms, resolved_at_ms";

fn dispute_from_row(row: &Row) -> Result<DisputeRecord, StoreError> {
    Ok(DisputeRecord {
        dispute_id: row.id("dispute_id")?,
        order_id: row.id("order_id")?,
        buyer_id: row.id("buyer_id")?,
        seller_id: row.id("seller_id")?,
        reason: row.text("reason")?,
        status: row.text("status")?,
        respond_by_ms: row.int("respond_by_ms")?,
        resolution: row.opt_text("resolution")?,
        refund_amount: row.opt_text("refund_amount")?,
        resolution_note: row.text("resolution_note")?,
        resolved_by: row.opt_text("resolved_by")?,
        created_at_ms: row.int("created_at_ms")?,
        resolved_at_ms: row.opt_int("resolved_at_ms")?,
        messages: Vec::new(),
    })
}

/// Opens a dispute with its first message.
pub async fn insert_dispute(
    tx: &mut Transaction,
    dispute: &DisputeRecord,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("INSERT INTO disputes ({DISPUTE_COLUMNS}, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, '', NULL, $8, NULL, $8)"),
        &[
            Arg::id(dispute.dispute_id),
            Arg::id(dispute.order_id),
            Arg::id(dispute.buyer_id),
            Arg::id(dispute.seller_id),
            Arg::text(dispute.reason.clone()),
            Arg::text(dispute.status.clone()),
            Arg::Int(dispute.respond_by_ms),
            Arg::Int(dispute.created_at_ms),
        ],
    )
    .await?;
    for message in &dispute.messages {
        add_message(tx, dispute.dispute_id, message).await?;
    }
    Ok(())
}

/// Appends a message.
pub async fn add_message(
    tx: &mut Transaction,
    dispute_id: Uuid,
    message: &MessageRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO dispute_messages (dispute_id, position, author_id, party, body, created_at_ms) \
         SELECT $1, COALESCE(MAX(position), 0) + 1, $2, $3, $4, $5 FROM dispute_messages WHERE dispute_id = $1",
        &[
            Arg::id(dispute_id),
            Arg::text(message.author_id.clone()),
            Arg::text(message.party.clone()),
            Arg::text(message.body.clone()),
            Arg::Int(message.created_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Moves a dispute from `from` to `to` (conditional); `false` if it was
/// not in `from`.
pub async fn set_dispute_status(
    tx: &mut Transaction,
    dispute_id: Uuid,
    from: &[&str],
    to: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut args = vec![Arg::text(to), Arg::Int(now_ms), Arg::id(dispute_id)];
    let mut placeholders = Vec::new();
    for status in from {
        args.push(Arg::text(*status));
        placeholders.push(format!("${}", args.len()));
    }
    let updated = tx
        .execute(
            &format!(
                "UPDATE disputes SET status = $1, updated_at_ms = $2 WHERE dispute_id = $3 AND status IN ({})",
                placeholders.join(", ")
            ),
            &args,
        )
        .await?;
    Ok(updated == 1)
}

/// Records a dispute's resolution (conditional on it not being resolved).
pub async fn resolve_dispute(
    tx: &mut Transaction,
    dispute_id: Uuid,
    resolution: &str,
    refund_amount: Option<String>,
    note: &str,
    resolved_by: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            "UPDATE disputes SET status = 'RESOLVED', resolution = $1, refund_amount = $2, resolution_note = $3, resolved_by = $4, \
             resolved_at_ms = $5, updated_at_ms = $5 WHERE dispute_id = $6 AND status <> 'RESOLVED'",
            &[
                Arg::text(resolution),
                Arg::OptText(refund_amount),
                Arg::text(note),
                Arg::text(resolved_by),
                Arg::Int(now_ms),
                Arg::id(dispute_id),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// A dispute's status read inside `tx` (after the order's lock, so it is
/// current).
pub async fn dispute_status(
    tx: &mut Transaction,
    dispute_id: Uuid,
) -> Result<Option<String>, StoreError> {
    tx.fetch_optional(
        "SELECT status FROM disputes WHERE dispute_id = $1",
        &[Arg::id(dispute_id)],
    )
    .await?
    .map(|row| row.text("status"))
    .transpose()
}

async fn with_messages(
    database: &Database,
    mut dispute: DisputeRecord,
) -> Result<DisputeRecord, StoreError> {
    dispute.messages = sql::fetch_all(
        database,
        "SELECT author_id, party, body, created_at_ms FROM dispute_messages WHERE dispute_id = $1 ORDER BY position",
        &[Arg::id(dispute.dispute_id)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(MessageRecord {
            author_id: row.text("author_id")?,
            party: row.text("party")?,
            body: row.text("body")?,
            created_at_ms: row.int("created_at_ms")?,
        })
    })
    .collect::<Result<_, StoreError>>()?;
    Ok(dispute)
}

/// A dispute with its messages, read inside `tx` (mutating requests never
/// take a second connection while holding one: under load that could
/// exhaust the pool).
pub async fn load_dispute(
    tx: &mut Transaction,
    dispute_id: Uuid,
) -> Result<Option<DisputeRecord>, StoreError> {
    let Some(row) = tx
        .fetch_optional(
            &format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE dispute_id = $1"),
            &[Arg::id(dispute_id)],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut dispute = dispute_from_row(&row)?;
    dispute.messages = tx
        .fetch_all(
            "SELECT author_id, party, body, created_at_ms FROM dispute_messages WHERE dispute_id = $1 ORDER BY position",
            &[Arg::id(dispute_id)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(MessageRecord {
                author_id: row.text("author_id")?,
                party: row.text("party")?,
                body: row.text("body")?,
                created_at_ms: row.int("created_at_ms")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(dispute))
}

/// A dispute with its messages.
pub async fn get_dispute(
    database: &Database,
    dispute_id: Uuid,
) -> Result<Option<DisputeRecord>, StoreError> {
    let found = sql::fetch_optional(
        database,
        &format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE dispute_id = $1"),
        &[Arg::id(dispute_id)],
    )
    .await?;
    match found {
        Some(row) => Ok(Some(
            with_messages(database, dispute_from_row(&row)?).await?,
        )),
        None => Ok(None),
    }
}

/// Disputes of `user` (buyer or seller; `None` = all), open ones oldest
/// first, then resolved ones newest first.
pub async fn list_disputes(
    database: &Database,
    user: Option<Uuid>,
    statuses: &[String],
    offset: i64,
    limit: i64,
) -> Result<Vec<DisputeRecord>, StoreError> {
    let mut args = Vec::new();
    let mut sql = format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE 1 = 1");
    if let Some(user) = user {
        args.push(Arg::id(user));
        sql.push_str(&format!(
            " AND (buyer_id = ${0} OR seller_id = ${0})",
            args.len()
        ));
    }
    if !statuses.is_empty() {
        let mut placeholders = Vec::new();
        for status in statuses {
            args.push(Arg::text(status.clone()));
            placeholders.push(format!("${}", args.len()));
        }
        sql.push_str(&format!(" AND status IN ({})", placeholders.join(", ")));
    }
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    sql.push_str(&format!(
        " ORDER BY CASE WHEN status = 'RESOLVED' THEN 1 ELSE 0 END, \
         CASE WHEN status = 'RESOLVED' THEN -created_at_ms ELSE created_at_ms END, dispute_id LIMIT ${} OFFSET ${}",
        args.len() - 1,
        args.len()
    ));
    let rows = sql::fetch_all(database, &sql, &args).await?;
    let mut disputes = Vec::with_capacity(rows.len());
    for row in &rows {
        disputes.push(with_messages(database, dispute_from_row(row)?).await?);
    }
    Ok(disputes)
}

/// OPEN disputes whose seller did not answer by the deadline.
pub async fn overdue_disputes(database: &Database, now_ms: i64) -> Result<Vec<Uuid>, StoreError> {
    sql::fetch_all(
        database,
        "SELECT dispute_id FROM disputes WHERE status = 'OPEN' AND respond_by_ms <= $1 LIMIT 100",
        &[Arg::Int(now_ms)],
    )
    .await?
    .iter()
    .map(|row| row.id("dispute_id"))
    .collect()
}

/// Moves an overdue OPEN dispute to RESPONDED (first write of its own
/// transaction, conditional, so two nodes do it once).
pub async fn expire_dispute_response(
    database: &Database,
    dispute_id: Uuid,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = Transaction::begin(database).await?;
    let changed = tx
        .execute(
            "UPDATE disputes SET status = 'RESPONDED', updated_at_ms = $1 WHERE dispute_id = $2 AND status = 'OPEN' AND respond_by_ms <= $1",
            &[Arg::Int(now_ms), Arg::id(dispute_id)],
        )
        .await?;
    tx.commit().await?;
    Ok(changed == 1)
}

// ----- Second-chance offers -----

/// A second-chance offer as stored.
#[derive(Debug, Clone)]
pub struct OfferRecord {
    /// Id.
    pub offer_id: Uuid,
    /// Auction.
    pub auction_id: String,
    /// The cancelled order.
    pub original_order_id: Uuid,
    /// Seller.
    pub seller_id: Uuid,
    /// Recipient.
    pub recipient_id: Uuid,
    /// Price per unit.
    pub price: Money,
    /// Units.
    pub quantity: u32,
    /// Title.
    pub title: String,
    /// PENDING, ACCEPTED, DECLINED, EXPIRED.
    pub status: String,
    /// Answer before this.
    pub expire_at_ms: i64,
    /// The order made on acceptance.
    pub order_id: Option<Uuid>,
    /// Made.
    pub created_at_ms: i64,
}

const OFFER_COLUMNS: &str = "offer_id, auction_id, original_order_id, seller_id, recipient_id, price, currency, quantity, title, status, \
    expire_at_ms, order_id, created_at_ms";

fn offer_from_row(row: &Row) -> Result<OfferRecord, StoreError> {
    Ok(OfferRecord {
        offer_id: row.id("offer_id")?,
        auction_id: row.text("auction_id")?,
        original_order_id: row.id("original_order_id")?,
        seller_id: row.id("seller_id")?,
        recipient_id: row.id("recipient_id")?,
        price: Money::parse(&row.text("currency")?, &row.text("price")?)
            .map_err(|_| StoreError::Corrupt("price"))?,
        quantity: u32::try_from(row.int("quantity")?)
            .map_err(|_| StoreError::Corrupt("quantity"))?,
        title: row.text("title")?,
        status: row.text("status")?,
        expire_at_ms: row.int("expire_at_ms")?,
        order_id: row.opt_id("order_id")?,
        created_at_ms: row.int("created_at_ms")?,
    })
}

/// Inserts a PENDING offer; [`StoreError::Conflict`] when one is pending
/// for the same order already (unique partial index).
pub async fn insert_offer(tx: &mut Transaction, offer: &OfferRecord) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO second_chance_offers ({OFFER_COLUMNS}, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)"
            ),
            &[
                Arg::id(offer.offer_id),
                Arg::text(offer.auction_id.clone()),
                Arg::id(offer.original_order_id),
                Arg::id(offer.seller_id),
                Arg::id(offer.recipient_id),
                Arg::Text(offer.price.text()),
                Arg::text(offer.price.currency.code()),
                Arg::Int(i64::from(offer.quantity)),
                Arg::text(offer.title.clone()),
                Arg::text(offer.status.clone()),
                Arg::Int(offer.expire_at_ms),
                Arg::opt_id(offer.order_id),
                Arg::Int(offer.created_at_ms),
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_unique_violation(&error) => Err(StoreError::Conflict),
        Err(error) => Err(error),
    }
}

/// Reads an offer (inside a transaction).
pub async fn load_offer(
    tx: &mut Transaction,
    offer_id: Uuid,
) -> Result<Option<OfferRecord>, StoreError> {
    tx.fetch_optional(
        &format!("SELECT {OFFER_COLUMNS} FROM second_chance_offers WHERE offer_id = $1"),
        &[Arg::id(offer_id)],
    )
    .await?
    .as_ref()
    .map(offer_from_row)
    .transpose()
}

/// Offers made for an auction (to skip bidders already asked).
pub async fn offers_of_auction(
    tx: &mut Transaction,
    auction_id: &str,
) -> Result<Vec<OfferRecord>, StoreError> {
    tx.fetch_all(
        &format!("SELECT {OFFER_COLUMNS} FROM second_chance_offers WHERE auction_id = $1"),
        &[Arg::text(auction_id)],
    )
    .await?
    .iter()
    .map(offer_from_row)
    .collect()
}

/// Moves a PENDING offer to `to` (conditional); `false` if not pending.
pub async fn answer_offer(
    tx: &mut Transaction,
    offer_id: Uuid,
    to: &str,
    order_id: Option<Uuid>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            "UPDATE second_chance_offers SET status = $1, order_id = $2, updated_at_ms = $3 WHERE offer_id = $4 AND status = 'PENDING'",
            &[Arg::text(to), Arg::opt_id(order_id), Arg::Int(now_ms), Arg::id(offer_id)],
        )
        .await?;
    Ok(updated == 1)
}

/// Expires PENDING offers past their deadline; returns how many.
pub async fn expire_offers(database: &Database, now_ms: i64) -> Result<u64, StoreError> {
    let mut tx = Transaction::begin(database).await?;
    let expired = tx
        .execute(
            "UPDATE second_chance_offers SET status = 'EXPIRED', updated_at_ms = $1 WHERE status = 'PENDING' AND expire_at_ms <= $1",
            &[Arg::Int(now_ms)],
        )
        .await?;
    tx.commit().await?;
    Ok(expired)
}

/// Offers received (`as_seller` false) or made by `user`, newest first.
pub async fn list_offers(
    database: &Database,
    user: Uuid,
    as_seller: bool,
    statuses: &[String],
    offset: i64,
    limit: i64,
) -> Result<Vec<OfferRecord>, StoreError> {
    let column = if as_seller {
        "seller_id"
    } else {
        "recipient_id"
    };
    let mut args = vec![Arg::id(user)];
    let mut sql = format!("SELECT {OFFER_COLUMNS} FROM second_chance_offers WHERE {column} = $1");
    if !statuses.is_empty() {
        let mut placeholders = Vec::new();
        for status in statuses {
            args.push(Arg::text(status.clone()));
            placeholders.push(format!("${}", args.len()));
        }
        sql.push_str(&format!(" AND status IN ({})", placeholders.join(", ")));
    }
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    sql.push_str(&format!(
        " ORDER BY offer_id DESC LIMIT ${} OFFSET ${}",
        args.len() - 1,
        args.len()
    ));
    sql::fetch_all(database, &sql, &args)
        .await?
        .iter()
        .map(offer_from_row)
        .collect()
}

// ----- Bids and consumed events -----

/// Marks a batch's bus events handled, in one statement per chunk;
/// returns the ids that were not handled before (a redelivery is not).
pub async fn mark_processed(
    tx: &mut Transaction,
    event_ids: &[String],
    now_ms: i64,
) -> Result<HashSet<String>, StoreError> {
    let mut seen = HashSet::with_capacity(event_ids.len());
    let unique: Vec<&String> = event_ids.iter().filter(|id| seen.insert(*id)).collect();
    let mut fresh = HashSet::with_capacity(unique.len());
    for chunk in database::fixed_size_chunks(&unique) {
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|id| [Arg::text(id.as_str()), Arg::Int(now_ms)])
            .collect();
        let inserted = tx
            .fetch_all(
                &format!(
                    "INSERT INTO processed_events (event_id, processed_at_ms) VALUES {} \
                     ON CONFLICT DO NOTHING RETURNING event_id",
                    database::values_list(chunk.len(), 2)
                ),
                &args,
            )
            .await?;
        for row in inserted {
            fresh.insert(row.text("event_id")?);
        }
    }
    Ok(fresh)
}

/// A bidder's bid on an auction, by engine sequence.
#[derive(Debug, Clone)]
pub struct BidRecord {
    /// The auction.
    pub auction_id: String,
    /// The bidder.
    pub bidder_id: Uuid,
    /// The bid's private amount.
    pub amount: Money,
    /// The engine sequence of the bid.
    pub sequence: i64,
}

/// Keeps each bidder's last amount on an auction (by engine sequence):
/// the batch's latest bid per bidder and auction, one upsert per chunk.
pub async fn record_bids(tx: &mut Transaction, bids: &[BidRecord]) -> Result<(), StoreError> {
    // One row per (auction, bidder): an upsert may not touch a row twice.
    // The first of equal sequences wins, as one upsert after another would.
    let mut latest: Vec<&BidRecord> = Vec::with_capacity(bids.len());
    let mut slots: HashMap<(&str, Uuid), usize> = HashMap::with_capacity(bids.len());
    for bid in bids {
        match slots.get(&(bid.auction_id.as_str(), bid.bidder_id)) {
            Some(&slot) => {
                if let Some(kept) = latest.get_mut(slot)
                    && kept.sequence < bid.sequence
                {
                    *kept = bid;
                }
            }
            None => {
                slots.insert((bid.auction_id.as_str(), bid.bidder_id), latest.len());
                latest.push(bid);
            }
        }
    }
    for chunk in database::fixed_size_chunks(&latest) {
        let mut args = Vec::with_capacity(chunk.len() * 6);
        for bid in chunk {
            args.extend([
                Arg::text(bid.auction_id.as_str()),
                Arg::id(bid.bidder_id),
                Arg::Text(bid.amount.text()),
                Arg::Int(bid.amount.minor().ok_or(StoreError::Corrupt("amount"))?),
                Arg::text(bid.amount.currency.code()),
                Arg::Int(bid.sequence),
            ]);
        }
        tx.execute(
            &format!(
                "INSERT INTO auction_bids (auction_id, bidder_id, amount, amount_minor, currency, sequence) VALUES {} \
                 ON CONFLICT (auction_id, bidder_id) DO UPDATE SET amount = excluded.amount, amount_minor = excluded.amount_minor, \
                 currency = excluded.currency, sequence = excluded.sequence WHERE auction_bids.sequence < excluded.sequence",
                database::values_list(chunk.len(), 6)
            ),
            &args,
        )
        .await?;
    }
    Ok(())
}

/// Bidders of an auction with their last amounts, highest first.
pub async fn bids_of_auction(
    tx: &mut Transaction,
    auction_id: &str,
) -> Result<Vec<(Uuid, Money)>, StoreError> {
    tx.fetch_all(
        "SELECT bidder_id, amount, currency FROM auction_bids WHERE auction_id = $1 ORDER BY amount_minor DESC, sequence ASC",
        &[Arg::text(auction_id)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.id("bidder_id")?,
            Money::parse(&row.text("currency")?, &row.text("amount")?)
                .map_err(|_| StoreError::Corrupt("amount"))?,
        ))
    })
    .collect()
}
