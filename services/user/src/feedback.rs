//! The rules of feedback (issue 7), with no I/O and no clock: who may leave
//! feedback on an order and when, which side they speak for, how sides and
//! ratings are stored, and the opaque page tokens of ListFeedback.

use auction_proto::v1::{FeedbackRating, FeedbackSide};
use base64::Engine as _;
use uuid::Uuid;

use crate::error::UserError;
use crate::store::{FeedbackRecord, OrderFact};

/// How long after an order's creation feedback may be left (60 days).
pub const FEEDBACK_WINDOW_MS: i64 = 60 * 24 * 3_600 * 1_000;
/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;
/// How long a page token stays valid (common.proto: 24 hours).
pub const PAGE_TOKEN_TTL_MS: i64 = 24 * 3_600 * 1_000;

/// Which side of an order an author was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The buyer, rating the seller.
    FromBuyer,
    /// The seller, rating the buyer.
    FromSeller,
}

impl Side {
    /// The name in the `feedback.side` column.
    pub fn storage_name(self) -> &'static str {
        match self {
            Self::FromBuyer => "from_buyer",
            Self::FromSeller => "from_seller",
        }
    }

    /// From the `feedback.side` column.
    pub fn from_storage_name(name: &str) -> Option<Self> {
        match name {
            "from_buyer" => Some(Self::FromBuyer),
            "from_seller" => Some(Self::FromSeller),
            _ => None,
        }
    }

    /// As the contract's enum.
    pub fn to_proto(self) -> FeedbackSide {
        match self {
            Self::FromBuyer => FeedbackSide::FromBuyer,
            Self::FromSeller => FeedbackSide::FromSeller,
        }
    }

    /// A ListFeedback filter: `None` for both sides (UNSPECIFIED).
    pub fn filter_from_proto(value: i32) -> Result<Option<Self>, UserError> {
        match FeedbackSide::try_from(value) {
            Ok(FeedbackSide::Unspecified) => Ok(None),
            Ok(FeedbackSide::FromBuyer) => Ok(Some(Self::FromBuyer)),
            Ok(FeedbackSide::FromSeller) => Ok(Some(Self::FromSeller)),
            Err(_) => Err(UserError::Validation {
                field: "side",
                message: "unknown side",
            }),
        }
    }
}

/// A feedback rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    /// Counts +1.
    Positive,
    /// Counted, but moves neither the score nor the percentage.
    Neutral,
    /// Counts -1.
    Negative,
}

impl Rating {
    /// The name in the `feedback.rating` column.
    pub fn storage_name(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Neutral => "neutral",
            Self::Negative => "negative",
        }
    }

    /// From the `feedback.rating` column.
    pub fn from_storage_name(name: &str) -> Option<Self> {
        match name {
            "positive" => Some(Self::Positive),
            "neutral" => Some(Self::Neutral),
            "negative" => Some(Self::Negative),
            _ => None,
        }
    }

    /// As the contract's enum.
    pub fn to_proto(self) -> FeedbackRating {
        match self {
            Self::Positive => FeedbackRating::Positive,
            Self::Neutral => FeedbackRating::Neutral,
            Self::Negative => FeedbackRating::Negative,
        }
    }

    /// A LeaveFeedback rating: it must be set.
    pub fn required_from_proto(value: i32) -> Result<Self, UserError> {
        match Self::filter_from_proto(value)? {
            Some(rating) => Ok(rating),
            None => Err(UserError::Validation {
                field: "rating",
                message: "must be set",
            }),
        }
    }

    /// A ListFeedback filter: `None` for every rating (UNSPECIFIED).
    pub fn filter_from_proto(value: i32) -> Result<Option<Self>, UserError> {
        match FeedbackRating::try_from(value) {
            Ok(FeedbackRating::Unspecified) => Ok(None),
            Ok(FeedbackRating::Positive) => Ok(Some(Self::Positive)),
            Ok(FeedbackRating::Neutral) => Ok(Some(Self::Neutral)),
            Ok(FeedbackRating::Negative) => Ok(Some(Self::Negative)),
            Err(_) => Err(UserError::Validation {
                field: "rating",
                message: "unknown rating",
            }),
        }
    }
}

/// What LeaveFeedback asks for, besides the request id: its "content" in
/// the sense of common.proto's idempotency rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackContent {
    /// The order.
    pub order_id: Uuid,
    /// The rating.
    pub rating: Rating,
    /// The comment as sent.
    pub comment: String,
}

impl FeedbackContent {
    /// Validates a request's fields.
    pub fn parse(order_id: &str, rating: i32, comment: String) -> Result<Self, UserError> {
        let order_id = order_id.parse().map_err(|_| UserError::Validation {
            field: "order_id",
            message: "must be a UUID",
        })?;
        let rating = Rating::required_from_proto(rating)?;
        if comment.chars().count() > MAX_COMMENT_CHARS {
            return Err(UserError::Validation {
                field: "comment",
                message: "at most 500 characters",
            });
        }
        Ok(Self {
            order_id,
            rating,
            comment,
        })
    }

    /// Whether `stored` is what this request would have made (a replay).
    pub fn matches(&self, stored: &FeedbackRecord) -> bool {
        stored.order_id == self.order_id
            && stored.rating == self.rating.storage_name()
            && stored.comment == self.comment
    }
}

/// The side `user` speaks for on `order`, or ORDER_NOT_FOUND when they are
/// neither its buyer nor its seller: others' orders are not revealed.
pub fn side_of(order: &OrderFact, user: Uuid) -> Result<Side, UserError> {
    if order.buyer_id == user {
        Ok(Side::FromBuyer)
    } else if order.seller_id == user {
        Ok(Side::FromSeller)
    } else {
        Err(UserError::OrderNotFound)
    }
}

/// The other party of `order`, whom `side`'s feedback is about.
pub fn subject_of(order: &OrderFact, side: Side) -> Uuid {
    match side {
        Side::FromBuyer => order.seller_id,
        Side::FromSeller => order.buyer_id,
    }
}

/// Whether feedback on `order` may be left at `now_ms`: once it is paid,
/// and until 60 days after it was created.
pub fn check_window(order: &OrderFact, now_ms: i64) -> Result<(), UserError> {
    if !order.paid {
        return Err(UserError::FeedbackNotAllowed("the order is not paid"));
    }
    if now_ms > order.created_at_ms.saturating_add(FEEDBACK_WINDOW_MS) {
        return Err(UserError::FeedbackNotAllowed(
            "feedback closes 60 days after the order was created",
        ));
    }
    Ok(())
}

/// The filters a ListFeedback page token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilters {
    /// Whose feedback.
    pub subject_user_id: Uuid,
    /// Side filter.
    pub side: Option<Side>,
    /// Rating filter.
    pub rating: Option<Rating>,
}

impl ListFilters {
    fn key(&self) -> String {
        format!(
            "{}.{}.{}",
            self.subject_user_id.simple(),
            self.side.map_or("any", Side::storage_name),
            self.rating.map_or("any", Rating::storage_name),
        )
    }
}

/// An opaque token for the page after `(created_at_ms, id)`, the last entry
/// of this page, bound to `filters` and stamped with `now_ms`.
pub fn page_token(filters: &ListFilters, last: (i64, Uuid), now_ms: i64) -> String {
    let (created_at_ms, id) = last;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "f1|{}|{created_at_ms}|{}|{now_ms}",
        filters.key(),
        id.simple()
    ))
}

/// The position a page token continues after; `None` for an empty token
/// (the first page). PAGE_TOKEN_INVALID when it is not one of ours, was
/// issued for other filters, or is older than 24 hours.
pub fn read_page_token(
    token: &str,
    filters: &ListFilters,
    now_ms: i64,
) -> Result<Option<(i64, Uuid)>, UserError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| UserError::PageTokenInvalid)?;
    let text = String::from_utf8(bytes).map_err(|_| UserError::PageTokenInvalid)?;
    let parts: Vec<&str> = text.split('|').collect();
    let ["f1", bound, created_at_ms, id, issued_at_ms] = parts.as_slice() else {
        return Err(UserError::PageTokenInvalid);
    };
    if *bound != filters.key() {
        return Err(UserError::PageTokenInvalid);
    }
    let created_at_ms: i64 = created_at_ms
        .parse()
        .map_err(|_| UserError::PageTokenInvalid)?;
    let id: Uuid = id.parse().map_err(|_| UserError::PageTokenInvalid)?;
    let issued_at_ms: i64 = issued_at_ms
        .parse()
        .map_err(|_| UserError::PageTokenInvalid)?;
    if now_ms.saturating_sub(issued_at_ms) > PAGE_TOKEN_TTL_MS {
        return Err(UserError::PageTokenInvalid);
    }
    Ok(Some((created_at_ms, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(paid: bool, created_at_ms: i64) -> OrderFact {
        OrderFact {
            order_id: Uuid::now_v7(),
            auction_id: Uuid::now_v7(),
            buyer_id: Uuid::now_v7(),
            seller_id: Uuid::now_v7(),
            created_at_ms,
            paid,
        }
    }

    fn reason(error: UserError) -> String {
        auction_platform::ServiceError::reason(&error).to_owned()
    }

    // Proves the side comes from the caller's role in the order, the subject
    // is the other party, and a stranger is told the order does not exist.
    #[test]
    fn side_and_subject_follow_the_callers_role() {
        let order = order(true, 0);
        assert_eq!(side_of(&order, order.buyer_id).unwrap(), Side::FromBuyer);
        assert_eq!(side_of(&order, order.seller_id).unwrap(), Side::FromSeller);
        assert_eq!(subject_of(&order, Side::FromBuyer), order.seller_id);
        assert_eq!(subject_of(&order, Side::FromSeller), order.buyer_id);
        assert_eq!(
            reason(side_of(&order, Uuid::now_v7()).unwrap_err()),
            "ORDER_NOT_FOUND"
        );
    }

    // Proves feedback opens once the order is paid and closes 60 days after
    // its creation, the last millisecond included.
    #[test]
    fn window_needs_payment_and_closes_after_60_days() {
        let created = 1_000_000;
        assert_eq!(
            reason(check_window(&order(false, created), created).unwrap_err()),
            "FEEDBACK_NOT_ALLOWED"
        );
        let paid = order(true, created);
        assert!(check_window(&paid, created).is_ok());
        assert!(check_window(&paid, created + FEEDBACK_WINDOW_MS).is_ok());
        assert_eq!(
            reason(check_window(&paid, created + FEEDBACK_WINDOW_MS + 1).unwrap_err()),
            "FEEDBACK_NOT_ALLOWED"
        );
    }

    // Proves a request's content is validated: a rating is required, the
    // comment has at most 500 characters (not bytes), the order is a UUID.
    #[test]
    fn content_is_validated() {
        let order_id = Uuid::now_v7().to_string();
        let rating = FeedbackRating::Positive as i32;
        assert!(FeedbackContent::parse(&order_id, rating, "é".repeat(500)).is_ok());
        for (order_id, rating, comment) in [
            (order_id.as_str(), rating, "é".repeat(501)),
            (
                order_id.as_str(),
                FeedbackRating::Unspecified as i32,
                String::new(),
            ),
            (order_id.as_str(), 42, String::new()),
            ("not-an-id", rating, String::new()),
        ] {
            assert_eq!(
                reason(FeedbackContent::parse(order_id, rating, comment).unwrap_err()),
                "VALIDATION_FAILED"
            );
        }
    }

    // Proves a page token round-trips, and is refused when tampered with,
    // reused with other filters, or older than 24 hours.
    #[test]
    fn page_tokens_are_bound_and_expire() {
        let filters = ListFilters {
            subject_user_id: Uuid::now_v7(),
            side: Some(Side::FromBuyer),
            rating: None,
        };
        let last = (1_700_000_000_000, Uuid::now_v7());
        let token = page_token(&filters, last, 5_000);
        assert_eq!(read_page_token("", &filters, 5_000).unwrap(), None);
        assert_eq!(
            read_page_token(&token, &filters, 5_000).unwrap(),
            Some(last)
        );
        let other = ListFilters {
            rating: Some(Rating::Negative),
            ..filters
        };
        for (token, filters, now_ms) in [
            (token.as_str(), &other, 5_000),
            (token.as_str(), &filters, 5_000 + PAGE_TOKEN_TTL_MS + 1),
            ("garbage!", &filters, 5_000),
            ("ZjF8eA", &filters, 5_000),
        ] {
            assert_eq!(
                reason(read_page_token(token, filters, now_ms).unwrap_err()),
                "PAGE_TOKEN_INVALID"
            );
        }
    }
}
