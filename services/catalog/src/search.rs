//! Search and discovery over listings.
//!
//! - **Full text**: PostgreSQL matches `websearch_to_tsquery('english', q)`
//!   against a stored, weighted `tsvector` (title A, attribute values B,
//!   description C) through a GIN index and ranks with `ts_rank`; SQLite
//!   matches an FTS5 table (porter stemming) and ranks with `bm25` (column
//!   weights 10/5/1). Words are ANDed, `"quoted phrases"` and `-exclusions`
//!   work on both.
//! - **Filters** (all ANDed; values of one filter ORed): category with its
//!   subcategories (a prefix of the category's slug path), current price
//!   range in one currency, format, status, ending before, seller,
//!   condition, buy-it-now available, live session.
//! - **Sorts** with keyset cursors: each page token holds the sort key of
//!   the page's last row and a hash of the other request fields, so pages
//!   never repeat or skip a listing because others were added.
//! - **Facets**: counts per category (children of the filtered category,
//!   or the roots) and per format, each computed with every filter but its
//!   own dimension.
//! - **Trending**: listings ranked by time-decayed bidding and watching
//!   activity of the last hour. **Recommended**: active listings in the
//!   caller's interest categories and the categories of what they watch and
//!   bid on, excluding what they already follow.

use std::collections::{HashMap, HashSet};

use auction_platform::Database;
use auction_platform::auth;
use auction_proto::v1::{
    AuctionFormat, AuctionStatus, CategoryFacet, FormatFacet, ItemCondition,
    ListRecommendedListingsRequest, ListRecommendedListingsResponse, ListTrendingListingsRequest,
    ListTrendingListingsResponse, RecommendationReason, RecommendedListing, SearchFacets,
    SearchListingsRequest, SearchListingsResponse, SearchSort,
};
use prost::Message as _;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::items::{self, parse_id};
use crate::listings::{self, ListingRecord, listing_columns};
use crate::money;
use crate::pagination;
use crate::rules::{RuleError, RuleKind};
use crate::sql::{self, Arg};

/// Longest query, in characters.
pub const QUERY_MAX_CHARS: usize = 200;
/// Most matches counted for `total_size_estimate` (beyond it, the estimate
/// says "at least this many", which a UI shows as "1,000+"). Counting is a
/// second pass over the matches: at 10,000 it doubled the time of searches
/// for common words at a million listings.
pub const COUNT_LIMIT: i64 = 1_000;
/// Most category facets returned.
pub const MAX_CATEGORY_FACETS: usize = 50;
/// Activity older than this does not count for trending.
pub const TRENDING_WINDOW_MS: i64 = 3_600_000;
/// Trending activity loses half its weight every this long.
pub const TRENDING_HALF_LIFE_MS: f64 = 15.0 * 60_000.0;
/// Weight of one bid in the trending score.
pub const TRENDING_BID_WEIGHT: f64 = 3.0;
/// Weight of one new watcher in the trending score.
pub const TRENDING_WATCH_WEIGHT: f64 = 1.0;

/// One term of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A word (letters and digits only).
    Word(String),
    /// Words that must appear in this order.
    Phrase(Vec<String>),
}

/// A keyword query: terms to include (ANDed) and terms to exclude.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keywords {
    /// Must match.
    pub include: Vec<Term>,
    /// Must not match.
    pub exclude: Vec<Term>,
}

fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Parses a query: words, `"quoted phrases"`, `-exclusions`.
pub fn parse_keywords(query: &str) -> Result<Keywords, CatalogError> {
    if query.chars().count() > QUERY_MAX_CHARS {
        return Err(CatalogError::Invalid {
            field: "query",
            message: format!("must be at most {QUERY_MAX_CHARS} characters"),
        });
    }
    let mut keywords = Keywords::default();
    let mut rest = query.trim();
    while !rest.is_empty() {
        let negative = rest.starts_with('-');
        if negative {
            rest = &rest[1..];
        }
        let (term, remaining) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let words = words_of(&quoted[..end]);
            let remaining = quoted.get(end + 1..).unwrap_or("");
            let term = match words.len() {
                0 => None,
                1 => words.into_iter().next().map(Term::Word),
                _ => Some(Term::Phrase(words)),
            };
            (term, remaining)
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let words = words_of(&rest[..end]);
            let term = match words.len() {
                0 => None,
                1 => words.into_iter().next().map(Term::Word),
                // "wi-fi" is one token to a person: match it as a phrase.
                _ => Some(Term::Phrase(words)),
            };
            (term, &rest[end..])
        };
        if let Some(term) = term {
            if negative {
                keywords.exclude.push(term);
            } else {
                keywords.include.push(term);
            }
        }
        rest = remaining.trim_start();
    }
    if keywords.include.is_empty() && !keywords.exclude.is_empty() {
        return Err(CatalogError::Invalid {
            field: "query",
            message: "name at least one word to search for, not only exclusions".to_owned(),
        });
    }
    Ok(keywords)
}

impl Keywords {
    /// The FTS5 query: each term quoted (so no word is read as an
    /// operator), ANDed, then `NOT` each exclusion.
    pub fn to_fts5(&self) -> String {
        let quote = |term: &Term| match term {
            Term::Word(word) => format!("\"{word}\""),
            Term::Phrase(words) => format!("\"{}\"", words.join(" ")),
        };
        let mut text = self
            .include
            .iter()
            .map(quote)
            .collect::<Vec<_>>()
            .join(" AND ");
        for term in &self.exclude {
            text.push_str(" NOT ");
            text.push_str(&quote(term));
        }
        text
    }

    /// The text `websearch_to_tsquery` reads (the same terms, re-written
    /// from what was parsed so both backends read one language).
    pub fn to_websearch(&self) -> String {
        let render = |term: &Term| match term {
            Term::Word(word) => word.clone(),
            Term::Phrase(words) => format!("\"{}\"", words.join(" ")),
        };
        let mut parts: Vec<String> = self.include.iter().map(render).collect();
        parts.extend(self.exclude.iter().map(|term| format!("-{}", render(term))));
        parts.join(" ")
    }
}

/// A filter dimension that facets leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Category,
    Format,
}

/// The filters of a search, checked.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Category slug paths (each with its subtree); `None` = no filter;
    /// `Some(empty)` = unknown categories only (nothing matches).
    pub category_paths: Option<Vec<String>>,
    /// Currency of the price range.
    pub currency: Option<String>,
    /// Minimum price (units of 0.0001).
    pub min_price: Option<i64>,
    /// Maximum price (units of 0.0001).
    pub max_price: Option<i64>,
    /// Formats (storage names).
    pub formats: Vec<&'static str>,
    /// Statuses (storage names); never empty.
    pub statuses: Vec<&'static str>,
    /// Current end at or before (ms); excludes live lots.
    pub end_before_ms: Option<i64>,
    /// Seller.
    pub seller_id: Option<Uuid>,
    /// Conditions (storage names).
    pub conditions: Vec<&'static str>,
    /// Only with buy-it-now available.
    pub buy_it_now_only: bool,
    /// Only lots of this session.
    pub live_session_id: Option<Uuid>,
}

/// A statement under construction: its text and arguments, placeholders
/// numbered as they are added.
#[derive(Default)]
struct Statement {
    text: String,
    args: Vec<Arg>,
}

impl Statement {
    fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }
}

/// The full-text part of a search on one backend.
enum FullText {
    /// No keywords.
    None,
    /// PostgreSQL: the websearch text.
    Postgres(String),
    /// SQLite: the FTS5 query.
    Sqlite(String),
}

impl FullText {
    fn new(database: &Database, keywords: &Keywords) -> Self {
        if keywords.include.is_empty() {
            return Self::None;
        }
        match database {
            Database::Postgres(_) => Self::Postgres(keywords.to_websearch()),
            Database::Sqlite(_) => Self::Sqlite(keywords.to_fts5()),
        }
    }

    /// `FROM ...` and the score expression; the query is bound once.
    fn source_and_score(&self, statement: &mut Statement) -> (String, String) {
        match self {
            Self::None => (
                "FROM listings l".to_owned(),
                // A typed zero: PostgreSQL reads a bare 0.0 as NUMERIC.
                "CAST(0 AS DOUBLE PRECISION)".to_owned(),
            ),
            Self::Postgres(text) => {
                let query = statement.bind(Arg::Text(text.clone()));
                (
                    format!("FROM listings l, websearch_to_tsquery('english', {query}) AS q"),
                    "(ts_rank(l.search_vector, q)::float8)".to_owned(),
                )
            }
            Self::Sqlite(text) => {
                let query = statement.bind(Arg::Text(text.clone()));
                (
                    format!(
                        "FROM listings_fts JOIN listings l ON l.row_key = listings_fts.rowid \
                         AND listings_fts MATCH {query}"
                    ),
                    "(-bm25(listings_fts, 10.0, 5.0, 1.0))".to_owned(),
                )
            }
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Appends the WHERE conditions of `filters` (all but `omit`).
fn push_conditions(
    statement: &mut Statement,
    full_text: &FullText,
    filters: &Filters,
    omit: Option<Dimension>,
) {
    let mut conditions: Vec<String> = Vec::new();
    // PostgreSQL with keywords: the listing's tsvector also carries one
    // lexeme per ancestor category path ('c/<path>', migration
    // 20261124000004), so "keywords AND category" is one GIN lookup; the
    // other conditions are checked on the rows it finds.
    let category_in_index = full_text.is_postgres()
        && omit != Some(Dimension::Category)
        && filters
            .category_paths
            .as_ref()
            .is_some_and(|paths| !paths.is_empty());
    if full_text.is_postgres() {
        if category_in_index {
            let paths = filters.category_paths.as_deref().unwrap_or_default();
            let lexemes: Vec<String> = subtree_roots(paths)
                .into_iter()
                .map(|path| format!("'c/{}'", path.replace(['\\', '\''], "")))
                .collect();
            let categories = statement.bind(Arg::Text(lexemes.join(" | ")));
            // `numnode(q) > 0`: keywords that are all stop words match
            // nothing, as `@@ q` alone does, not the whole category.
            conditions.push(format!(
                "numnode(q) > 0 AND l.search_vector @@ (q && {categories}::tsquery)"
            ));
        } else {
            conditions.push("l.search_vector @@ q".to_owned());
        }
    }
    let list = |statement: &mut Statement, values: &[&'static str]| {
        values
            .iter()
            .map(|value| statement.bind(Arg::Text((*value).to_owned())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let statuses = list(statement, &filters.statuses);
    conditions.push(format!("l.status IN ({statuses})"));
    if omit != Some(Dimension::Category)
        && !category_in_index
        && let Some(paths) = &filters.category_paths
    {
        if paths.is_empty() {
            conditions.push("1 = 0".to_owned());
        } else {
            let alternatives: Vec<String> = paths
                .iter()
                .map(|path| {
                    let exact = statement.bind(Arg::Text(path.clone()));
                    let below = statement.bind(Arg::Text(format!("{path}/%")));
                    format!("l.category_path = {exact} OR l.category_path LIKE {below}")
                })
                .collect();
            conditions.push(format!("({})", alternatives.join(" OR ")));
        }
    }
    if let Some(currency) = &filters.currency {
        let currency = statement.bind(Arg::Text(currency.clone()));
        conditions.push(format!("l.currency = {currency}"));
    }
    // With keywords the price range is checked on the rows the text index
    // found: `+ 0` keeps PostgreSQL from intersecting them with a bitmap of
    // the price index (a quarter of all listings for a wide range).
    let price = if full_text.is_postgres() {
        "(l.current_price_e4 + 0)"
    } else {
        "l.current_price_e4"
    };
    if let Some(min) = filters.min_price {
        let min = statement.bind(Arg::Int(min));
        conditions.push(format!("{price} >= {min}"));
    }
    if let Some(max) = filters.max_price {
        let max = statement.bind(Arg::Int(max));
        conditions.push(format!("{price} <= {max}"));
    }
    if omit != Some(Dimension::Format) && !filters.formats.is_empty() {
        let formats = list(statement, &filters.formats);
        conditions.push(format!("l.format IN ({formats})"));
    }
    if let Some(end) = filters.end_before_ms {
        let end = statement.bind(Arg::Int(end));
        conditions.push(format!(
            "l.current_end_at_ms <= {end} AND l.format <> 'live'"
        ));
    }
    if let Some(seller) = filters.seller_id {
        let seller = statement.bind(Arg::Uuid(seller));
        conditions.push(format!("l.seller_id = {seller}"));
    }
    if !filters.conditions.is_empty() {
        let values = list(statement, &filters.conditions);
        conditions.push(format!("l.condition IN ({values})"));
    }
    if filters.buy_it_now_only {
        conditions.push("l.buy_it_now_price IS NOT NULL".to_owned());
    }
    if let Some(session) = filters.live_session_id {
        let session = statement.bind(Arg::Uuid(session));
        conditions.push(format!("l.live_session_id = {session}"));
    }
    statement.text.push_str(" WHERE ");
    statement.text.push_str(&conditions.join(" AND "));
}

/// The paths of `paths` that are not below another one of them: a listing's
/// tsvector holds a lexeme for every ancestor of its category, so the
/// root of a subtree alone matches the whole subtree.
fn subtree_roots(paths: &[String]) -> Vec<&str> {
    let mut roots: Vec<&str> = Vec::new();
    for path in paths {
        let below_another = paths.iter().any(|other| {
            path.len() > other.len()
                && path.starts_with(other.as_str())
                && path.as_bytes().get(other.len()) == Some(&b'/')
        });
        if !below_another && !roots.contains(&path.as_str()) {
            roots.push(path);
        }
    }
    roots
}

/// The sort actually used.
fn resolve_sort(sort: SearchSort, has_keywords: bool) -> SearchSort {
    match sort {
        SearchSort::Unspecified if has_keywords => SearchSort::Relevance,
        SearchSort::Unspecified => SearchSort::EndingSoonest,
        SearchSort::Relevance if !has_keywords => SearchSort::EndingSoonest,
        other => other,
    }
}

/// One key of a sort: its expression, whether it ascends, its type.
struct SortKey {
    expression: &'static str,
    ascending: bool,
    kind: KeyKind,
}

#[derive(Clone, Copy)]
enum KeyKind {
    Int,
    Text,
    Float,
    Id,
}

fn sort_keys(sort: SearchSort) -> Vec<SortKey> {
    let key = |expression, ascending, kind| SortKey {
        expression,
        ascending,
        kind,
    };
    match sort {
        SearchSort::Relevance => vec![
            key("score", false, KeyKind::Float),
            key("l.current_end_at_ms", true, KeyKind::Int),
            key("l.id", true, KeyKind::Id),
        ],
        SearchSort::Unspecified | SearchSort::EndingSoonest => vec![
            key("l.current_end_at_ms", true, KeyKind::Int),
            key("l.id", true, KeyKind::Id),
        ],
        SearchSort::NewlyListed => vec![
            key("l.created_at_ms", false, KeyKind::Int),
            key("l.id", false, KeyKind::Id),
        ],
        SearchSort::PriceAsc => vec![
            key("l.currency", true, KeyKind::Text),
            key("l.current_price_e4", true, KeyKind::Int),
            key("l.id", true, KeyKind::Id),
        ],
        SearchSort::PriceDesc => vec![
            key("l.currency", true, KeyKind::Text),
            key("l.current_price_e4", false, KeyKind::Int),
            key("l.id", false, KeyKind::Id),
        ],
        SearchSort::BidCountDesc => vec![
            key("l.bid_count", false, KeyKind::Int),
            key("l.id", false, KeyKind::Id),
        ],
    }
}

/// The cursor value of a key for a row.
fn key_value(key: &SortKey, listing: &ListingRecord, score: f64) -> String {
    match key.expression {
        "score" => format!("{:016x}", score.to_bits()),
        "l.current_end_at_ms" => listing.current_end_at_ms.to_string(),
        "l.created_at_ms" => listing.created_at_ms.to_string(),
        "l.currency" => listing.currency.clone(),
        "l.current_price_e4" => money::parse(&auction_proto::v1::Money {
            currency: listing.currency.clone(),
            amount: listing.current_price.clone(),
        })
        .map(|amount| amount.fixed_point())
        .unwrap_or(0)
        .to_string(),
        "l.bid_count" => listing.bid_count.to_string(),
        _ => listing.id.to_string(),
    }
}

/// Appends `AND (keys after the cursor)`: `k1 > v1 OR (k1 = v1 AND (k2 > v2 OR ...))`.
fn push_after(
    statement: &mut Statement,
    keys: &[SortKey],
    values: &[String],
    score_expression: &str,
) -> Result<(), CatalogError> {
    if keys.len() != values.len() {
        return Err(CatalogError::PageTokenInvalid);
    }
    let mut bound = Vec::with_capacity(keys.len());
    for (key, value) in keys.iter().zip(values) {
        let arg = match key.kind {
            KeyKind::Int => Arg::Int(value.parse().map_err(|_| CatalogError::PageTokenInvalid)?),
            KeyKind::Text => Arg::Text(value.clone()),
            KeyKind::Float => {
                let bits =
                    u64::from_str_radix(value, 16).map_err(|_| CatalogError::PageTokenInvalid)?;
                Arg::Float(f64::from_bits(bits))
            }
            KeyKind::Id => Arg::Uuid(value.parse().map_err(|_| CatalogError::PageTokenInvalid)?),
        };
        let expression = if key.expression == "score" {
            score_expression.to_owned()
        } else {
            key.expression.to_owned()
        };
        bound.push((expression, key.ascending, statement.bind(arg)));
    }
    let mut condition = String::new();
    for (index, (expression, ascending, placeholder)) in bound.iter().enumerate().rev() {
        let operator = if *ascending { ">" } else { "<" };
        condition = if index + 1 == bound.len() {
            format!("{expression} {operator} {placeholder}")
        } else {
            format!(
                "({expression} {operator} {placeholder} OR ({expression} = {placeholder} AND {condition}))"
            )
        };
    }
    statement.text.push_str(" AND ");
    statement.text.push_str(&condition);
    Ok(())
}

fn statuses_of(values: &[i32]) -> Result<Vec<&'static str>, CatalogError> {
    let mut statuses = Vec::new();
    for value in values {
        match AuctionStatus::try_from(*value) {
            Ok(AuctionStatus::Unspecified) => {}
            Ok(status) => statuses.push(listings::status_name(status)),
            Err(_) => {
                return Err(CatalogError::Invalid {
                    field: "filter.statuses",
                    message: format!("{value} is not an auction status"),
                });
            }
        }
    }
    if statuses.is_empty() {
        statuses = vec!["scheduled", "open", "extended"];
    }
    statuses.sort_unstable();
    statuses.dedup();
    Ok(statuses)
}

/// Search over one catalog database (what `SearchListings` runs, and what
/// the benchmark measures without the gRPC layer).
#[derive(Debug, Clone)]
pub struct Searcher {
    database: Database,
}

impl Searcher {
    /// A searcher over the catalog's (migrated) database.
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Every category: id -> (path, name, parent).
    async fn category_index(
        &self,
    ) -> Result<HashMap<Uuid, (String, String, Option<Uuid>)>, CatalogError> {
        let categories = crate::store::list_categories(&self.database).await?;
        Ok(categories
            .into_iter()
            .map(|category| {
                (
                    category.id,
                    (category.path, category.name, category.parent_id),
                )
            })
            .collect())
    }

    /// Checks a search filter.
    async fn filters(
        &self,
        filter: &auction_proto::v1::SearchFilter,
        categories: &HashMap<Uuid, (String, String, Option<Uuid>)>,
    ) -> Result<Filters, CatalogError> {
        let mut filters = Filters {
            statuses: statuses_of(&filter.statuses)?,
            ..Filters::default()
        };
        if !filter.category_ids.is_empty() {
            let mut paths = Vec::new();
            for id in &filter.category_ids {
                let id = parse_id("filter.category_ids", id)?;
                if let Some((path, _, _)) = categories.get(&id) {
                    paths.push(path.clone());
                }
            }
            filters.category_paths = Some(paths);
        }
        let price = |field: &'static str, value: &auction_proto::v1::Money| {
            money::parse(value).map_err(|error| {
                CatalogError::Rule(RuleError {
                    kind: RuleKind::Amount,
                    field: field.to_owned(),
                    message: error.to_string(),
                })
            })
        };
        let min = filter
            .min_price
            .as_ref()
            .map(|value| price("filter.min_price", value))
            .transpose()?;
        let max = filter
            .max_price
            .as_ref()
            .map(|value| price("filter.max_price", value))
            .transpose()?;
        if let (Some(min), Some(max)) = (&min, &max) {
            if min.currency != max.currency {
                return Err(CatalogError::Rule(RuleError {
                    kind: RuleKind::Currency,
                    field: "filter.max_price".to_owned(),
                    message: format!(
                        "is in {} but min_price is in {}",
                        max.currency, min.currency
                    ),
                }));
            }
            if min.value > max.value {
                return Err(CatalogError::Invalid {
                    field: "filter.min_price",
                    message: "must not exceed max_price".to_owned(),
                });
            }
        }
        filters.currency = min
            .as_ref()
            .or(max.as_ref())
            .map(|amount| amount.currency.clone());
        filters.min_price = min.as_ref().map(money::Amount::fixed_point);
        filters.max_price = max.as_ref().map(money::Amount::fixed_point);
        for format in &filter.formats {
            match AuctionFormat::try_from(*format) {
                Ok(AuctionFormat::Unspecified) => {}
                Ok(format) => filters.formats.push(listings::format_name(format)),
                Err(_) => {
                    return Err(CatalogError::Invalid {
                        field: "filter.formats",
                        message: format!("{format} is not an auction format"),
                    });
                }
            }
        }
        filters.end_before_ms = filter
            .end_before_time
            .as_ref()
            .map(auction_platform::bus::ms_from_timestamp);
        if !filter.seller_id.is_empty() {
            filters.seller_id = Some(parse_id("filter.seller_id", &filter.seller_id)?);
        }
        for condition in &filter.conditions {
            match ItemCondition::try_from(*condition)
                .ok()
                .map(items::condition_name)
            {
                Some(Some(name)) => filters.conditions.push(name),
                Some(None) => {}
                None => {
                    return Err(CatalogError::Invalid {
                        field: "filter.conditions",
                        message: format!("{condition} is not a condition"),
                    });
                }
            }
        }
        filters.buy_it_now_only = filter.buy_it_now_only;
        if !filter.live_session_id.is_empty() {
            filters.live_session_id =
                Some(parse_id("filter.live_session_id", &filter.live_session_id)?);
        }
        Ok(filters)
    }

    /// The search itself (also what the benchmark measures).
    pub async fn search(
        &self,
        request: &SearchListingsRequest,
    ) -> Result<SearchListingsResponse, CatalogError> {
        let keywords = parse_keywords(&request.query)?;
        let categories = self.category_index().await?;
        let filters = self
            .filters(&request.filter.clone().unwrap_or_default(), &categories)
            .await?;
        let sort = resolve_sort(
            SearchSort::try_from(request.sort).unwrap_or(SearchSort::Unspecified),
            !keywords.include.is_empty(),
        );
        let page_size = pagination::page_size(request.page_size, 20, 100);
        let binding = format!(
            "search:{}",
            request_hash(
                &SearchListingsRequest {
                    page_token: String::new(),
                    page_size: 0,
                    include_facets: false,
                    ..request.clone()
                }
                .encode_to_vec()
            )
        );
        let after = pagination::decode(&request.page_token, &binding)?;
        let full_text = FullText::new(&self.database, &keywords);
        let keys = sort_keys(sort);

        let mut statement = Statement::default();
        let (from, score) = full_text.source_and_score(&mut statement);
        statement.text = format!("SELECT {}, {score} AS score {from}", listing_columns("l"));
        push_conditions(&mut statement, &full_text, &filters, None);
        if let Some(values) = &after {
            push_after(&mut statement, &keys, values, &score)?;
        }
        let order: Vec<String> = keys
            .iter()
            .map(|key| {
                format!(
                    "{} {}",
                    key.expression,
                    if key.ascending { "ASC" } else { "DESC" }
                )
            })
            .collect();
        statement.text.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            order.join(", "),
            page_size + 1
        ));
        let rows = sql::fetch_all(&self.database, &statement.text, &statement.args).await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            found.push((ListingRecord::from_row(row)?, row.float("score")?));
        }
        let next_page_token = if found.len() > page_size {
            found.truncate(page_size);
            found
                .last()
                .map(|(listing, score)| {
                    let values: Vec<String> = keys
                        .iter()
                        .map(|key| key_value(key, listing, *score))
                        .collect();
                    pagination::encode(&binding, &values)
                })
                .unwrap_or_default()
        } else {
            String::new()
        };

        let first_page = after.is_none();
        let total_size_estimate = if first_page && found.len() < page_size {
            found.len() as u32
        } else {
            self.count(&full_text, &filters, None).await?
        };
        let facets = if first_page && request.include_facets {
            Some(self.facets(&full_text, &filters, &categories).await?)
        } else {
            None
        };
        Ok(SearchListingsResponse {
            listings: found
                .iter()
                .map(|(listing, _)| listing.to_summary())
                .collect(),
            next_page_token,
            total_size_estimate,
            facets,
        })
    }

    /// Matches, counted up to [`COUNT_LIMIT`].
    async fn count(
        &self,
        full_text: &FullText,
        filters: &Filters,
        omit: Option<Dimension>,
    ) -> Result<u32, CatalogError> {
        let mut statement = Statement::default();
        let (from, _) = full_text.source_and_score(&mut statement);
        statement.text = format!("SELECT 1 AS one {from}");
        push_conditions(&mut statement, full_text, filters, omit);
        let text = format!(
            "SELECT COUNT(*) AS n FROM ({} LIMIT {COUNT_LIMIT}) counted",
            statement.text
        );
        let row = sql::fetch_all(&self.database, &text, &statement.args).await?;
        let count = row
            .first()
            .map(|row| row.int("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Facet counts, each without its own dimension's filter.
    async fn facets(
        &self,
        full_text: &FullText,
        filters: &Filters,
        categories: &HashMap<Uuid, (String, String, Option<Uuid>)>,
    ) -> Result<SearchFacets, CatalogError> {
        let grouped = |column: &'static str, omit: Dimension| {
            let mut statement = Statement::default();
            let (from, _) = full_text.source_and_score(&mut statement);
            statement.text = format!("SELECT {column} AS facet, COUNT(*) AS n {from}");
            push_conditions(&mut statement, full_text, filters, Some(omit));
            statement.text.push_str(&format!(" GROUP BY {column}"));
            statement
        };
        let by_path = grouped("l.category_path", Dimension::Category);
        let rows = sql::fetch_all(&self.database, &by_path.text, &by_path.args).await?;
        let mut path_counts: Vec<(String, i64)> = Vec::with_capacity(rows.len());
        for row in rows {
            path_counts.push((row.text("facet")?, row.int("n")?));
        }
        // The categories whose counts are shown: the children of the one
        // filtered category, the filtered ones when several, else the roots.
        let filtered: Vec<Uuid> = match &filters.category_paths {
            Some(paths) => categories
                .iter()
                .filter(|(_, (path, _, _))| paths.contains(path))
                .map(|(id, _)| *id)
                .collect(),
            None => Vec::new(),
        };
        let shown: Vec<Uuid> = match filtered.as_slice() {
            [] => categories
                .iter()
                .filter(|(_, (_, _, parent))| parent.is_none())
                .map(|(id, _)| *id)
                .collect(),
            [one] => categories
                .iter()
                .filter(|(_, (_, _, parent))| *parent == Some(*one))
                .map(|(id, _)| *id)
                .collect(),
            several => several.to_vec(),
        };
        let mut category_facets: Vec<CategoryFacet> = shown
            .iter()
            .filter_map(|id| {
                let (path, name, _) = categories.get(id)?;
                let prefix = format!("{path}/");
                let count: i64 = path_counts
                    .iter()
                    .filter(|(facet, _)| facet == path || facet.starts_with(&prefix))
                    .map(|(_, count)| count)
                    .sum();
                (count > 0).then(|| CategoryFacet {
                    category_id: id.to_string(),
                    name: name.clone(),
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                })
            })
            .collect();
        category_facets.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        category_facets.truncate(MAX_CATEGORY_FACETS);

        let by_format = grouped("l.format", Dimension::Format);
        let rows = sql::fetch_all(&self.database, &by_format.text, &by_format.args).await?;
        let mut formats = Vec::new();
        for row in rows {
            let count = row.int("n")?;
            if count > 0 {
                formats.push(FormatFacet {
                    format: listings::format_from_name(&row.text("facet")?) as i32,
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                });
            }
        }
        formats.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.format.cmp(&b.format)));
        Ok(SearchFacets {
            categories: category_facets,
            formats,
        })
    }
}

impl Inner {
    /// `SearchListings`: anyone.
    pub async fn search_listings(
        &self,
        request: Request<SearchListingsRequest>,
    ) -> Result<Response<SearchListingsResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            Searcher::new(self.database.clone())
                .search(&request)
                .await?,
        ))
    }

    /// Listings by id, in the order given.
    async fn summaries(&self, ids: &[Uuid]) -> Result<Vec<ListingRecord>, CatalogError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let rows = sql::fetch_all(
            &self.database,
            &format!(
                "SELECT {} FROM listings l WHERE l.id IN ({})",
                listing_columns("l"),
                placeholders.join(", ")
            ),
            &ids.iter().map(|id| Arg::Uuid(*id)).collect::<Vec<_>>(),
        )
        .await?;
        let mut by_id: HashMap<Uuid, ListingRecord> = HashMap::new();
        for row in &rows {
            let listing = ListingRecord::from_row(row)?;
            by_id.insert(listing.id, listing);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Time-decayed activity score per listing over the trending window.
    #[allow(
        clippy::float_arithmetic,
        reason = "a ranking score, not money: the workspace lint guards amounts"
    )]
    async fn activity_scores(&self, now_ms: i64) -> Result<HashMap<Uuid, f64>, CatalogError> {
        let rows = sql::fetch_all(
            &self.database,
            "SELECT listing_id, kind, at_ms FROM listing_activity WHERE at_ms >= $1 ORDER BY at_ms DESC LIMIT 200000",
            &[Arg::Int(now_ms - TRENDING_WINDOW_MS)],
        )
        .await?;
        let mut scores: HashMap<Uuid, f64> = HashMap::new();
        for row in rows {
            let weight = match row.text("kind")?.as_str() {
                "bid" => TRENDING_BID_WEIGHT,
                _ => TRENDING_WATCH_WEIGHT,
            };
            let age_ms = (now_ms - row.int("at_ms")?).max(0) as f64;
            *scores.entry(row.uuid("listing_id")?).or_default() +=
                weight * (-age_ms / TRENDING_HALF_LIFE_MS * std::f64::consts::LN_2).exp();
        }
        Ok(scores)
    }

    /// `ListTrendingListings`: OPEN or EXTENDED listings with the most
    /// recent bidding and watching activity first.
    pub async fn list_trending_listings(
        &self,
        request: Request<ListTrendingListingsRequest>,
    ) -> Result<Response<ListTrendingListingsResponse>, Status> {
        let request = request.into_inner();
        let page_size = pagination::page_size(request.page_size, 20, 50);
        let binding = format!("trending:{}", request.category_id);
        let offset = offset_of(&request.page_token, &binding)?;
        let subtree = match request.category_id.as_str() {
            "" => None,
            text => {
                let id = parse_id("category_id", text)?;
                let categories = Searcher::new(self.database.clone())
                    .category_index()
                    .await?;
                Some(
                    categories
                        .get(&id)
                        .map(|(path, _, _)| path.clone())
                        .ok_or_else(|| CatalogError::CategoryNotFound(id.to_string()))?,
                )
            }
        };
        let now_ms = auction_platform::now_ms();
        let scores = self.activity_scores(now_ms).await?;
        let mut ranked: Vec<(Uuid, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let candidates: Vec<Uuid> = ranked.iter().take(1_000).map(|(id, _)| *id).collect();
        let listings: Vec<ListingRecord> = self
            .summaries(&candidates)
            .await?
            .into_iter()
            .filter(|listing| listing.status == "open" || listing.status == "extended")
            .filter(|listing| {
                subtree.as_ref().is_none_or(|path| {
                    listing.category_path == *path
                        || listing.category_path.starts_with(&format!("{path}/"))
                })
            })
            .collect();
        let (page, next_page_token) = page_of(&listings, offset, page_size, &binding);
        Ok(Response::new(ListTrendingListingsResponse {
            listings: page.iter().map(ListingRecord::to_summary).collect(),
            next_page_token,
        }))
    }

    /// `ListRecommendedListings`: active listings in the caller's interest
    /// categories and in the categories of what they watch or bid on, not
    /// those they already follow (or sell), best first.
    #[allow(
        clippy::float_arithmetic,
        reason = "a ranking score, not money: the workspace lint guards amounts"
    )]
    pub async fn list_recommended_listings(
        &self,
        request: Request<ListRecommendedListingsRequest>,
    ) -> Result<Response<ListRecommendedListingsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let page_size = pagination::page_size(request.page_size, 20, 50);
        let binding = format!("recommended:{}", caller.user_id);
        let offset = offset_of(&request.page_token, &binding)?;
        let user = caller.user_id;
        let categories = Searcher::new(self.database.clone())
            .category_index()
            .await?;

        let interest_rows = sql::fetch_all(
            &self.database,
            "SELECT category_id FROM user_interests WHERE user_id = $1",
            &[Arg::Uuid(user)],
        )
        .await?;
        let mut interest_paths = Vec::new();
        for row in interest_rows {
            if let Some((path, _, _)) = categories.get(&row.uuid("category_id")?) {
                interest_paths.push(path.clone());
            }
        }
        let followed_rows = sql::fetch_all(
            &self.database,
            "SELECT l.id, l.category_path FROM listings l WHERE l.id IN \
             (SELECT listing_id FROM watchlist WHERE user_id = $1 \
              UNION SELECT listing_id FROM listing_activity WHERE user_id = $1 AND kind = 'bid')",
            &[Arg::Uuid(user)],
        )
        .await?;
        let mut followed: HashSet<Uuid> = HashSet::new();
        let mut activity_paths: Vec<String> = Vec::new();
        for row in followed_rows {
            followed.insert(row.uuid("id")?);
            let path = row.text("category_path")?;
            if !activity_paths.contains(&path) {
                activity_paths.push(path);
            }
        }
        let mut all_paths = interest_paths.clone();
        all_paths.extend(activity_paths.iter().cloned());
        if all_paths.is_empty() {
            return Ok(Response::new(ListRecommendedListingsResponse::default()));
        }
        let filters = Filters {
            category_paths: Some(all_paths),
            statuses: vec!["extended", "open", "scheduled"],
            ..Filters::default()
        };
        let mut statement = Statement {
            text: format!("SELECT {} FROM listings l", listing_columns("l")),
            args: Vec::new(),
        };
        push_conditions(&mut statement, &FullText::None, &filters, None);
        let seller = statement.bind(Arg::Uuid(user));
        statement.text.push_str(&format!(
            " AND l.seller_id <> {seller} ORDER BY l.current_end_at_ms ASC, l.id ASC LIMIT 500"
        ));
        let rows = sql::fetch_all(&self.database, &statement.text, &statement.args).await?;
        let popularity = self.activity_scores(auction_platform::now_ms()).await?;
        let under = |listing: &ListingRecord, paths: &[String]| {
            paths.iter().any(|path| {
                listing.category_path == *path
                    || listing.category_path.starts_with(&format!("{path}/"))
            })
        };
        let mut scored: Vec<(f64, ListingRecord, RecommendationReason)> = Vec::new();
        for row in &rows {
            let listing = ListingRecord::from_row(row)?;
            if followed.contains(&listing.id) {
                continue;
            }
            let interest = under(&listing, &interest_paths);
            let similar = under(&listing, &activity_paths);
            let popular = popularity.get(&listing.id).copied().unwrap_or(0.0);
            let score = if interest { 3.0 } else { 0.0 }
                + if similar { 2.0 } else { 0.0 }
                + popular.min(5.0) / 5.0;
            let reason = if interest {
                RecommendationReason::InterestMatch
            } else if popular > 0.0 {
                RecommendationReason::PopularInCategory
            } else {
                RecommendationReason::SimilarToActivity
            };
            scored.push((score, listing, reason));
        }
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.current_end_at_ms.cmp(&b.1.current_end_at_ms))
                .then_with(|| a.1.id.cmp(&b.1.id))
        });
        let next_page_token = if scored.len() > offset + page_size {
            pagination::encode(&binding, &[(offset + page_size).to_string()])
        } else {
            String::new()
        };
        Ok(Response::new(ListRecommendedListingsResponse {
            recommendations: scored
                .iter()
                .skip(offset)
                .take(page_size)
                .map(|(_, listing, reason)| RecommendedListing {
                    listing: Some(listing.to_summary()),
                    reason: *reason as i32,
                })
                .collect(),
            next_page_token,
        }))
    }
}

/// The offset a ranked list's page token holds.
fn offset_of(token: &str, binding: &str) -> Result<usize, CatalogError> {
    match pagination::decode(token, binding)? {
        None => Ok(0),
        Some(values) => match values.as_slice() {
            [offset] => offset.parse().map_err(|_| CatalogError::PageTokenInvalid),
            _ => Err(CatalogError::PageTokenInvalid),
        },
    }
}

/// One page of a ranked list and the next token.
fn page_of<'a>(
    listings: &'a [ListingRecord],
    offset: usize,
    page_size: usize,
    binding: &str,
) -> (&'a [ListingRecord], String) {
    let start = offset.min(listings.len());
    let end = (offset + page_size).min(listings.len());
    let next = if end < listings.len() {
        pagination::encode(binding, &[end.to_string()])
    } else {
        String::new()
    };
    (&listings[start..end], next)
}

/// A short, stable hash of a request's other fields (the page-token binding).
fn request_hash(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    // Proves a category filter names each subtree once in the index query.
    #[test]
    fn a_subtree_root_stands_for_its_subtree() {
        let paths = [
            "electronics".to_owned(),
            "electronics/cameras".to_owned(),
            "electronics-parts".to_owned(),
            "art/prints".to_owned(),
            "electronics".to_owned(),
        ];
        assert_eq!(
            super::subtree_roots(&paths),
            ["electronics", "electronics-parts", "art/prints"]
        );
    }

    use super::*;

    // Proves the query language: words ANDed, phrases, exclusions, limits.
    #[test]
    fn parses_words_phrases_and_exclusions() {
        let keywords = parse_keywords(r#"leica "black chrome" -broken wi-fi"#).unwrap();
        assert_eq!(
            keywords.include,
            vec![
                Term::Word("leica".to_owned()),
                Term::Phrase(vec!["black".to_owned(), "chrome".to_owned()]),
                Term::Phrase(vec!["wi".to_owned(), "fi".to_owned()]),
            ]
        );
        assert_eq!(keywords.exclude, vec![Term::Word("broken".to_owned())]);
        assert_eq!(
            keywords.to_fts5(),
            r#""leica" AND "black chrome" AND "wi fi" NOT "broken""#
        );
        assert_eq!(
            keywords.to_websearch(),
            r#"leica "black chrome" "wi fi" -broken"#
        );
        assert!(parse_keywords("-only").is_err());
        assert!(parse_keywords(&"x".repeat(201)).is_err());
        assert_eq!(parse_keywords("  ").unwrap(), Keywords::default());
        // Operators of FTS5 are quoted, never interpreted.
        assert_eq!(
            parse_keywords("NEAR OR").unwrap().to_fts5(),
            r#""near" AND "or""#
        );
    }
}
