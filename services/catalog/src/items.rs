//! Items: the things for sale. Field rules, their rows, and the item RPCs
//! (create, get, update, list, delete).
//!
//! - Only the seller (or an admin) edits or deletes an item, and only while
//!   none of its listings is OPEN or EXTENDED (edits) or active at all
//!   (deletes: SCHEDULED, OPEN, EXTENDED, or still being scheduled).
//! - An item that never had a listing is visible to its seller and admins
//!   only; once listed, to anyone. Deleting hides it and keeps the row for
//!   order history.

use std::collections::{BTreeMap, HashMap};

use auction_platform::auth::{self, Caller, Role};
use auction_proto::v1::{
    CreateItemRequest, CreateItemResponse, DeleteItemRequest, DeleteItemResponse, GetItemRequest,
    GetItemResponse, Item, ItemCondition, ListItemsRequest, ListItemsResponse, UpdateItemRequest,
    UpdateItemResponse,
};
use prost::Message as _;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency::{self, IdempotencyKey, Prior};
use crate::pagination;
use crate::sql::{self, Arg, Row, Transaction};
use crate::store::StoreError;

/// Longest title, in characters.
pub const TITLE_MAX_CHARS: usize = 120;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 20_000;
/// Most attributes per item.
pub const MAX_ATTRIBUTES: usize = 50;
/// Longest attribute key, in characters.
pub const ATTRIBUTE_KEY_MAX_CHARS: usize = 64;
/// Longest attribute value, in characters.
pub const ATTRIBUTE_VALUE_MAX_CHARS: usize = 512;

/// Statuses of a listing that keep its item from being deleted.
pub const ACTIVE_STATUSES_SQL: &str = "('pending', 'scheduled', 'open', 'extended')";
/// Statuses of a listing during which its item cannot be edited.
pub const RUNNING_STATUSES_SQL: &str = "('open', 'extended')";

/// The storage name of a condition.
pub fn condition_name(condition: ItemCondition) -> Option<&'static str> {
    match condition {
        ItemCondition::Unspecified => None,
        ItemCondition::New => Some("new"),
        ItemCondition::LikeNew => Some("like_new"),
        ItemCondition::UsedGood => Some("used_good"),
        ItemCondition::UsedFair => Some("used_fair"),
        ItemCondition::Refurbished => Some("refurbished"),
        ItemCondition::ForParts => Some("for_parts"),
    }
}

/// The condition of a storage name.
pub fn condition_from_name(name: &str) -> ItemCondition {
    match name {
        "new" => ItemCondition::New,
        "like_new" => ItemCondition::LikeNew,
        "used_good" => ItemCondition::UsedGood,
        "used_fair" => ItemCondition::UsedFair,
        "refurbished" => ItemCondition::Refurbished,
        "for_parts" => ItemCondition::ForParts,
        _ => ItemCondition::Unspecified,
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        field,
        message: message.into(),
    }
}

/// Parses a UUID request field.
pub fn parse_id(field: &'static str, text: &str) -> Result<Uuid, CatalogError> {
    Uuid::parse_str(text).map_err(|_| invalid(field, format!("`{text}` is not a UUID")))
}

/// Checks a title: 1-120 characters, not only spaces.
pub fn check_title(field: &'static str, title: &str) -> Result<(), CatalogError> {
    let length = title.chars().count();
    if title.trim().is_empty() || length > TITLE_MAX_CHARS {
        return Err(invalid(
            field,
            format!("must be 1-{TITLE_MAX_CHARS} characters"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_description(field: &'static str, description: &str) -> Result<(), CatalogError> {
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(invalid(
            field,
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_condition(field: &'static str, value: i32) -> Result<&'static str, CatalogError> {
    ItemCondition::try_from(value)
        .ok()
        .and_then(condition_name)
        .ok_or_else(|| invalid(field, "a condition is required"))
}

/// Checks attributes (keys 1-64 of `[a-z0-9_]`, values 1-512 characters,
/// at most 50) and returns them in key order.
pub fn check_attributes(
    field: &'static str,
    attributes: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, CatalogError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid(
            field,
            format!("at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    for (key, value) in attributes {
        let key_valid = (1..=ATTRIBUTE_KEY_MAX_CHARS).contains(&key.len())
            && key
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if !key_valid {
            return Err(invalid(
                field,
                format!("key `{key}` must be 1-{ATTRIBUTE_KEY_MAX_CHARS} characters of [a-z0-9_]"),
            ));
        }
        let length = value.chars().count();
        if !(1..=ATTRIBUTE_VALUE_MAX_CHARS).contains(&length) || value.chars().any(char::is_control)
        {
            return Err(invalid(
                field,
                format!(
                    "value of `{key}` must be 1-{ATTRIBUTE_VALUE_MAX_CHARS} characters without control characters"
                ),
            ));
        }
    }
    Ok(attributes
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect())
}

fn check_country(field: &'static str, country: &str) -> Result<(), CatalogError> {
    if country.is_empty() || (country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be an ISO 3166-1 alpha-2 code (two upper-case letters) or empty",
        ))
    }
}

/// An item row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    /// UUIDv7.
    pub id: Uuid,
    /// Owner.
    pub seller_id: Uuid,
    /// Category.
    pub category_id: Uuid,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Storage name of the condition.
    pub condition: String,
    /// Attributes in key order.
    pub attributes: BTreeMap<String, String>,
    /// ISO 3166-1 alpha-2 or empty.
    pub ship_from_country: String,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

const ITEM_COLUMNS: &str = "id, seller_id, category_id, title, description, condition, attributes, ship_from_country, version, created_at_ms, updated_at_ms";

impl ItemRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let attributes: BTreeMap<String, String> =
            serde_json::from_str(&row.text("attributes")?)
                .map_err(|_| StoreError::Corrupt("item attributes"))?;
        Ok(Self {
            id: row.uuid("id")?,
            seller_id: row.uuid("seller_id")?,
            category_id: row.uuid("category_id")?,
            title: row.text("title")?,
            description: row.text("description")?,
            condition: row.text("condition")?,
            attributes,
            ship_from_country: row.text("ship_from_country")?,
            version: row.int("version")?,
            created_at_ms: row.int("created_at_ms")?,
            updated_at_ms: row.int("updated_at_ms")?,
        })
    }

    fn attributes_json(&self) -> String {
        // A map of strings always serialises.
        serde_json::to_string(&self.attributes).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Attribute values joined by spaces (what search indexes).
    pub fn attributes_text(&self) -> String {
        self.attributes
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// As the contract's message.
    pub fn to_proto(&self, active_listing_id: Option<Uuid>) -> Item {
        Item {
            item_id: self.id.to_string(),
            seller_id: self.seller_id.to_string(),
            title: self.title.clone(),
            description: self.description.clone(),
            category_id: self.category_id.to_string(),
            condition: condition_from_name(&self.condition) as i32,
            attributes: self
                .attributes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            media: Vec::new(),
            ship_from_country: self.ship_from_country.clone(),
            active_listing_id: active_listing_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            version: self.version,
            create_time: Some(auction_platform::bus::timestamp_from_ms(self.created_at_ms)),
            update_time: Some(auction_platform::bus::timestamp_from_ms(self.updated_at_ms)),
        }
    }
}

/// The item `id` if it exists and is not deleted.
pub async fn load(
    transaction: &mut Transaction,
    id: Uuid,
) -> Result<Option<ItemRecord>, StoreError> {
    transaction
        .fetch_optional(
            &format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1 AND deleted_at_ms IS NULL"),
            &[Arg::Uuid(id)],
        )
        .await?
        .map(|row| ItemRecord::from_row(&row))
        .transpose()
}

/// The item `id`, deleted or not (listings keep showing their item).
pub async fn load_any(
    transaction: &mut Transaction,
    id: Uuid,
) -> Result<Option<ItemRecord>, StoreError> {
    transaction
        .fetch_optional(
            &format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1"),
            &[Arg::Uuid(id)],
        )
        .await?
        .map(|row| ItemRecord::from_row(&row))
        .transpose()
}

/// The active listing of an item (being scheduled, scheduled or running).
pub async fn active_listing(
    transaction: &mut Transaction,
    item_id: Uuid,
) -> Result<Option<(Uuid, String)>, StoreError> {
    transaction
        .fetch_optional(
            &format!(
                "SELECT id, status FROM listings WHERE item_id = $1 AND status IN {ACTIVE_STATUSES_SQL}"
            ),
            &[Arg::Uuid(item_id)],
        )
        .await?
        .map(|row| Ok((row.uuid("id")?, row.text("status")?)))
        .transpose()
}

/// The category `id`'s slug path, if it exists.
pub async fn category_path(
    transaction: &mut Transaction,
    id: Uuid,
) -> Result<Option<String>, StoreError> {
    transaction
        .fetch_optional(
            "SELECT path FROM categories WHERE id = $1",
            &[Arg::Uuid(id)],
        )
        .await?
        .map(|row| row.text("path"))
        .transpose()
}

async fn insert(transaction: &mut Transaction, item: &ItemRecord) -> Result<(), StoreError> {
    transaction
        .execute(
            &format!(
                "INSERT INTO items ({ITEM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                Arg::Uuid(item.id),
                Arg::Uuid(item.seller_id),
                Arg::Uuid(item.category_id),
                Arg::Text(item.title.clone()),
                Arg::Text(item.description.clone()),
                Arg::Text(item.condition.clone()),
                Arg::Text(item.attributes_json()),
                Arg::Text(item.ship_from_country.clone()),
                Arg::Int(item.version),
                Arg::Int(item.created_at_ms),
                Arg::Int(item.updated_at_ms),
            ],
        )
        .await?;
    Ok(())
}

/// Only the seller (or an admin) may change an item.
fn require_owner(caller: &Caller, item: &ItemRecord) -> Result<(), CatalogError> {
    if caller.is_user(item.seller_id) || caller.is_admin() {
        Ok(())
    } else {
        Err(CatalogError::NotOwner)
    }
}

impl Inner {
    /// `CreateItem`: SELLER role; idempotent.
    pub async fn create_item(
        &self,
        request: Request<CreateItemRequest>,
    ) -> Result<Response<CreateItemResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_role(Role::Seller)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        check_title("title", &request.title)?;
        check_description("description", &request.description)?;
        let category_id = parse_category("category_id", &request.category_id)?;
        let condition = check_condition("condition", request.condition)?;
        let attributes = check_attributes("attributes", &request.attributes)?;
        check_country("ship_from_country", &request.ship_from_country)?;
        let key = IdempotencyKey::new(
            &caller,
            "CreateItem",
            &request.request_id,
            idempotency::fingerprint(
                &CreateItemRequest {
                    request_id: String::new(),
                    attributes: HashMap::new(),
                    ..request.clone()
                }
                .encode_to_vec(),
                &attributes
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str()))
                    .collect::<Vec<_>>(),
            ),
        )?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        match key.claim(&mut transaction, None, now_ms).await? {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            Prior::InFlight(_) => {
                return Err(CatalogError::Store(StoreError::Corrupt("in-flight item")).into());
            }
            Prior::Fresh => {}
        }
        if category_path(&mut transaction, category_id)
            .await
            .map_err(CatalogError::from)?
            .is_none()
        {
            return Err(CatalogError::CategoryUnknown {
                field: "category_id",
                id: category_id.to_string(),
            }
            .into());
        }
        let item = ItemRecord {
            id: Uuid::now_v7(),
            seller_id: caller.user_id,
            category_id,
            title: request.title,
            description: request.description,
            condition: condition.to_owned(),
            attributes,
            ship_from_country: request.ship_from_country,
            version: 1,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        insert(&mut transaction, &item)
            .await
            .map_err(CatalogError::from)?;
        let response = CreateItemResponse {
            item: Some(item.to_proto(None)),
        };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        tracing::info!(item_id = %item.id, user_id = %caller.user_id, "item created");
        Ok(Response::new(response))
    }

    /// `GetItem`: anyone once the item was listed; before, its seller or an admin.
    pub async fn get_item(
        &self,
        request: Request<GetItemRequest>,
    ) -> Result<Response<GetItemResponse>, Status> {
        let caller = auth::optional_caller(&request);
        let id = parse_id("item_id", &request.get_ref().item_id)?;
        let mut transaction = Transaction::begin(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let item = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::ItemNotFound(id.to_string()))?;
        let privileged = caller
            .as_ref()
            .is_some_and(|caller| caller.is_user(item.seller_id) || caller.is_admin());
        if !privileged {
            let listed = transaction
                .fetch_optional(
                    "SELECT id FROM listings WHERE item_id = $1 AND status <> 'pending'",
                    &[Arg::Uuid(id)],
                )
                .await
                .map_err(CatalogError::from)?
                .is_some();
            if !listed {
                return Err(CatalogError::ItemNotFound(id.to_string()).into());
            }
        }
        let active = active_listing(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?;
        transaction.commit().await.map_err(CatalogError::from)?;
        let mut proto = item.to_proto(active.map(|(id, _)| id));
        proto.media = self.media_of(&[id]).await?.remove(&id).unwrap_or_default();
        Ok(Response::new(GetItemResponse { item: Some(proto) }))
    }

    /// `UpdateItem`: the fields named in the mask; owner or admin; not while
    /// a listing of the item runs; idempotent; optimistic version check.
    pub async fn update_item(
        &self,
        request: Request<UpdateItemRequest>,
    ) -> Result<Response<UpdateItemResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        let id = parse_id("item_id", &request.item_id)?;
        let paths: Vec<String> = request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(invalid("update_mask", "name at least one field to update").into());
        }
        let update = request.item.clone().unwrap_or_default();
        let mut new_attributes = None;
        let mut new_category = None;
        for path in &paths {
            match path.as_str() {
                "title" => check_title("item.title", &update.title)?,
                "description" => check_description("item.description", &update.description)?,
                "category_id" => {
                    new_category = Some(parse_category("item.category_id", &update.category_id)?);
                }
                "condition" => {
                    check_condition("item.condition", update.condition)?;
                }
                "attributes" => {
                    new_attributes = Some(check_attributes("item.attributes", &update.attributes)?);
                }
                "ship_from_country" => {
                    check_country("item.ship_from_country", &update.ship_from_country)?;
                }
                "media_order" => {
                    for id in &update.media_order {
                        parse_id("item.media_order", id)?;
                    }
                }
                other => {
                    return Err(invalid(
                        "update_mask",
                        format!("`{other}` is not an updatable field"),
                    )
                    .into());
                }
            }
        }
        let sorted: Vec<(&str, &str)> = new_attributes
            .iter()
            .flatten()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let key = IdempotencyKey::new(
            &caller,
            "UpdateItem",
            &request.request_id,
            idempotency::fingerprint(
                &UpdateItemRequest {
                    request_id: String::new(),
                    item: request.item.clone().map(|mut item| {
                        item.attributes.clear();
                        item
                    }),
                    ..request.clone()
                }
                .encode_to_vec(),
                &sorted,
            ),
        )?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        match key.claim(&mut transaction, None, now_ms).await? {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            Prior::InFlight(_) => {
                return Err(CatalogError::Store(StoreError::Corrupt("in-flight update")).into());
            }
            Prior::Fresh => {}
        }
        let mut item = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::ItemNotFound(id.to_string()))?;
        require_owner(&caller, &item)?;
        if request.expected_version != 0 && request.expected_version != item.version {
            return Err(CatalogError::VersionConflict {
                expected: request.expected_version,
                current: item.version,
            }
            .into());
        }
        let active = active_listing(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?;
        if let Some((listing_id, status)) = &active
            && (status == "open" || status == "extended")
        {
            return Err(CatalogError::NotEditable(format!(
                "listing {listing_id} of this item is running; edit it after it ends"
            ))
            .into());
        }
        let mut category_path_text = None;
        if let Some(category_id) = new_category {
            category_path_text = Some(
                category_path(&mut transaction, category_id)
                    .await
                    .map_err(CatalogError::from)?
                    .ok_or_else(|| CatalogError::CategoryUnknown {
                        field: "item.category_id",
                        id: category_id.to_string(),
                    })?,
            );
            item.category_id = category_id;
        }
        for path in &paths {
            match path.as_str() {
                "title" => item.title.clone_from(&update.title),
                "description" => item.description.clone_from(&update.description),
                "condition" => {
                    item.condition =
                        check_condition("item.condition", update.condition)?.to_owned();
                }
                "attributes" => item.attributes = new_attributes.clone().unwrap_or_default(),
                "ship_from_country" => item.ship_from_country.clone_from(&update.ship_from_country),
                "media_order" => reorder_media(&mut transaction, id, &update.media_order).await?,
                _ => {}
            }
        }
        item.version += 1;
        item.updated_at_ms = now_ms;
        transaction
            .execute(
                "UPDATE items SET category_id = $1, title = $2, description = $3, condition = $4, \
                 attributes = $5, ship_from_country = $6, version = $7, updated_at_ms = $8 WHERE id = $9",
                &[
                    Arg::Uuid(item.category_id),
                    Arg::Text(item.title.clone()),
                    Arg::Text(item.description.clone()),
                    Arg::Text(item.condition.clone()),
                    Arg::Text(item.attributes_json()),
                    Arg::Text(item.ship_from_country.clone()),
                    Arg::Int(item.version),
                    Arg::Int(now_ms),
                    Arg::Uuid(item.id),
                ],
            )
            .await
            .map_err(CatalogError::from)?;
        // A scheduled listing shows the item as it is now (title, text,
        // category, condition), so search finds what will be sold.
        if let Some((listing_id, _)) = &active {
            let path = match category_path_text {
                Some(path) => path,
                None => category_path(&mut transaction, item.category_id)
                    .await
                    .map_err(CatalogError::from)?
                    .unwrap_or_default(),
            };
            transaction
                .execute(
                    "UPDATE listings SET title = $1, description = $2, attributes_text = $3, category_id = $4, \
                     category_path = $5, condition = $6, updated_at_ms = $7 WHERE id = $8",
                    &[
                        Arg::Text(item.title.clone()),
                        Arg::Text(item.description.clone()),
                        Arg::Text(item.attributes_text()),
                        Arg::Uuid(item.category_id),
                        Arg::Text(path),
                        Arg::Text(item.condition.clone()),
                        Arg::Int(now_ms),
                        Arg::Uuid(*listing_id),
                    ],
                )
                .await
                .map_err(CatalogError::from)?;
        }
        let mut proto = item.to_proto(active.map(|(id, _)| id));
        proto.media = self.media_in(&mut transaction, id).await?;
        let response = UpdateItemResponse { item: Some(proto) };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        Ok(Response::new(response))
    }

    /// `ListItems`: a seller's items, newest first; the seller or an admin.
    pub async fn list_items(
        &self,
        request: Request<ListItemsRequest>,
    ) -> Result<Response<ListItemsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let seller_id = match request.seller_id.as_str() {
            "" => caller.user_id,
            text => parse_id("seller_id", text)?,
        };
        if !(caller.is_user(seller_id) || caller.is_admin()) {
            return Err(CatalogError::NotOwner.into());
        }
        let page_size = pagination::page_size(request.page_size, 20, 100);
        let binding = format!("items:{seller_id}");
        let after = pagination::decode(&request.page_token, &binding)?;
        let mut query = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE seller_id = $1 AND deleted_at_ms IS NULL"
        );
        let mut args = vec![Arg::Uuid(seller_id)];
        if let Some(cursor) = &after {
            let (created, id) = pagination::time_and_id(cursor)?;
            query.push_str(" AND (created_at_ms < $2 OR (created_at_ms = $2 AND id < $3))");
            args.push(Arg::Int(created));
            args.push(Arg::Uuid(id));
        }
        query.push_str(&format!(
            " ORDER BY created_at_ms DESC, id DESC LIMIT {}",
            page_size + 1
        ));
        let rows = sql::fetch_all(&self.database, &query, &args)
            .await
            .map_err(CatalogError::from)?;
        let mut items = rows
            .iter()
            .map(ItemRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CatalogError::from)?;
        let next_page_token = if items.len() > page_size {
            items.truncate(page_size);
            items
                .last()
                .map(|last| {
                    pagination::encode(
                        &binding,
                        &[last.created_at_ms.to_string(), last.id.to_string()],
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let ids: Vec<Uuid> = items.iter().map(|item| item.id).collect();
        let active = self.active_listings_of(&ids).await?;
        Ok(Response::new(ListItemsResponse {
            items: items
                .iter()
                .map(|item| item.to_proto(active.get(&item.id).copied()))
                .collect(),
            next_page_token,
        }))
    }

    async fn active_listings_of(
        &self,
        items: &[Uuid],
    ) -> Result<HashMap<Uuid, Uuid>, CatalogError> {
        let mut active = HashMap::new();
        if items.is_empty() {
            return Ok(active);
        }
        let placeholders: Vec<String> = (1..=items.len()).map(|n| format!("${n}")).collect();
        let rows = sql::fetch_all(
            &self.database,
            &format!(
                "SELECT id, item_id FROM listings WHERE item_id IN ({}) AND status IN {ACTIVE_STATUSES_SQL}",
                placeholders.join(", ")
            ),
            &items.iter().map(|id| Arg::Uuid(*id)).collect::<Vec<_>>(),
        )
        .await?;
        for row in rows {
            active.insert(row.uuid("item_id")?, row.uuid("id")?);
        }
        Ok(active)
    }

    /// `DeleteItem`: owner or admin, not while a listing is active;
    /// idempotent (a replay answers the same).
    pub async fn delete_item(
        &self,
        request: Request<DeleteItemRequest>,
    ) -> Result<Response<DeleteItemResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        let id = parse_id("item_id", &request.item_id)?;
        let key = IdempotencyKey::new(
            &caller,
            "DeleteItem",
            &request.request_id,
            idempotency::fingerprint(request.item_id.as_bytes(), &[]),
        )?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        match key.claim(&mut transaction, None, now_ms).await? {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            Prior::InFlight(_) => {
                return Err(CatalogError::Store(StoreError::Corrupt("in-flight delete")).into());
            }
            Prior::Fresh => {}
        }
        let item = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::ItemNotFound(id.to_string()))?;
        require_owner(&caller, &item)?;
        if let Some((listing_id, _)) = active_listing(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
        {
            return Err(CatalogError::ItemHasActiveListing(listing_id.to_string()).into());
        }
        transaction
            .execute(
                "UPDATE items SET deleted_at_ms = $1, version = version + 1 WHERE id = $2",
                &[Arg::Int(now_ms), Arg::Uuid(id)],
            )
            .await
            .map_err(CatalogError::from)?;
        let response = DeleteItemResponse {
            item_id: id.to_string(),
        };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        tracing::info!(item_id = %id, user_id = %caller.user_id, "item deleted");
        Ok(Response::new(response))
    }
}

/// Puts an item's media in the order given, which must list exactly them.
async fn reorder_media(
    transaction: &mut Transaction,
    item_id: Uuid,
    order: &[String],
) -> Result<(), CatalogError> {
    let rows = transaction
        .fetch_all(
            "SELECT id FROM media WHERE item_id = $1",
            &[Arg::Uuid(item_id)],
        )
        .await?;
    let mut current = Vec::with_capacity(rows.len());
    for row in rows {
        current.push(row.uuid("id")?);
    }
    let mut wanted = Vec::with_capacity(order.len());
    for id in order {
        wanted.push(parse_id("item.media_order", id)?);
    }
    let mut sorted_current = current.clone();
    sorted_current.sort_unstable();
    let mut sorted_wanted = wanted.clone();
    sorted_wanted.sort_unstable();
    if sorted_current != sorted_wanted {
        return Err(invalid(
            "item.media_order",
            "must list every media id of the item exactly once",
        ));
    }
    for (position, id) in wanted.iter().enumerate() {
        transaction
            .execute(
                "UPDATE media SET position = $1 WHERE id = $2",
                &[
                    Arg::Int(i64::try_from(position).unwrap_or(i64::MAX)),
                    Arg::Uuid(*id),
                ],
            )
            .await?;
    }
    Ok(())
}

fn parse_category(field: &'static str, text: &str) -> Result<Uuid, CatalogError> {
    if text.is_empty() {
        return Err(invalid(field, "a category is required"));
    }
    Uuid::parse_str(text).map_err(|_| CatalogError::CategoryUnknown {
        field,
        id: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the attribute rules of the contract.
    #[test]
    fn attribute_rules() {
        let ok = HashMap::from([("brand".to_owned(), "Omega".to_owned())]);
        assert!(check_attributes("attributes", &ok).is_ok());
        let upper = HashMap::from([("Brand".to_owned(), "Omega".to_owned())]);
        assert!(check_attributes("attributes", &upper).is_err());
        let empty = HashMap::from([("brand".to_owned(), String::new())]);
        assert!(check_attributes("attributes", &empty).is_err());
        let many: HashMap<String, String> =
            (0..51).map(|n| (format!("k{n}"), "v".to_owned())).collect();
        assert!(check_attributes("attributes", &many).is_err());
    }

    // Proves titles and countries follow the contract's shapes.
    #[test]
    fn title_and_country_rules() {
        assert!(check_title("title", "Leica M6").is_ok());
        assert!(check_title("title", "   ").is_err());
        assert!(check_title("title", &"x".repeat(121)).is_err());
        assert!(check_country("c", "DE").is_ok());
        assert!(check_country("c", "").is_ok());
        assert!(check_country("c", "de").is_err());
    }
}
