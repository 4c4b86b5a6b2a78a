//! The catalog service's tables, on PostgreSQL or SQLite.

use auction_platform::Database;
use uuid::Uuid;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("catalog store")]
    Database(#[from] sqlx::Error),
    /// A stored value could not be read back.
    #[error("corrupt {0} in the catalog store")]
    Corrupt(&'static str),
}

impl StoreError {
    /// Whether a unique constraint refused the write (a concurrent
    /// duplicate, e.g. a second active listing of one item).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(error)) => matches!(
                error.code().as_deref(),
                // PostgreSQL unique_violation; SQLite CONSTRAINT_UNIQUE and
                // CONSTRAINT_PRIMARYKEY.
                Some("23505") | Some("2067") | Some("1555")
            ),
            Self::Database(_) | Self::Corrupt(_) => false,
        }
    }
}

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// UUIDv7.
    pub id: Uuid,
    /// URL-safe unique name, e.g. `cameras`.
    pub slug: String,
    /// The parent; `None` for a top-level category.
    pub parent_id: Option<Uuid>,
    /// Ancestors' slugs and its own joined by `/`, e.g. `electronics/cameras`.
    pub path: String,
    /// Shown to people.
    pub name: String,
    /// Order among siblings.
    pub position: u32,
}

/// A category row as both backends return it (ids as text).
#[derive(sqlx::FromRow)]
struct CategoryRow {
    id: String,
    slug: String,
    parent_id: Option<String>,
    path: String,
    name: String,
    position: i32,
}

impl TryFrom<CategoryRow> for Category {
    type Error = StoreError;

    fn try_from(row: CategoryRow) -> Result<Self, StoreError> {
        let parse =
            |text: &str| Uuid::parse_str(text).map_err(|_| StoreError::Corrupt("category id"));
        Ok(Self {
            id: parse(&row.id)?,
            slug: row.slug,
            parent_id: row.parent_id.as_deref().map(parse).transpose()?,
            path: row.path,
            name: row.name,
            position: u32::try_from(row.position)
                .map_err(|_| StoreError::Corrupt("category position"))?,
        })
    }
}

/// Goods a seller can put up for auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// UUIDv7.
    pub id: Uuid,
    /// The seller's user id.
    pub seller_id: Uuid,
    /// The category.
    pub category_id: Uuid,
    /// Short title.
    pub title: String,
    /// Longer description.
    pub description: String,
    /// `new`, `like_new`, `used_good`, `used_fair`, `refurbished`, `for_parts`.
    pub condition: String,
    /// Free-form attributes, a JSON object of strings.
    pub attributes_json: String,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

pub use auction_platform::now_ms;

/// Every category, parents before children (ordered by path).
pub async fn list_categories(database: &Database) -> Result<Vec<Category>, StoreError> {
    let rows: Vec<CategoryRow> =
        match database {
            Database::Postgres(pool) => sqlx::query_as(
                "SELECT id::text AS id, slug, parent_id::text AS parent_id, path, name, position \
                 FROM categories ORDER BY path",
            )
            .fetch_all(pool)
            .await?,
            Database::Sqlite(pool) => sqlx::query_as(
                "SELECT id, slug, parent_id, path, name, position FROM categories ORDER BY path",
            )
            .fetch_all(pool)
            .await?,
        };
    rows.into_iter().map(Category::try_from).collect()
}

/// Adds a category; its parent must already exist.
pub async fn insert_category(database: &Database, category: &Category) -> Result<(), StoreError> {
    let position =
        i32::try_from(category.position).map_err(|_| StoreError::Corrupt("category position"))?;
    match database {
        Database::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO categories (id, slug, parent_id, path, name, position) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(category.id)
            .bind(&category.slug)
            .bind(category.parent_id)
            .bind(&category.path)
            .bind(&category.name)
            .bind(position)
            .execute(pool)
            .await?;
        }
        Database::Sqlite(pool) => {
            sqlx::query(
                "INSERT INTO categories (id, slug, parent_id, path, name, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(category.id.to_string())
            .bind(&category.slug)
            .bind(category.parent_id.map(|id| id.to_string()))
            .bind(&category.path)
            .bind(&category.name)
            .bind(position)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Adds an item.
pub async fn insert_item(database: &Database, item: &Item) -> Result<(), StoreError> {
    const COLUMNS: &str = "id, seller_id, category_id, title, description, condition, attributes, created_at_ms, updated_at_ms";
    match database {
        Database::Postgres(pool) => {
            sqlx::query(&format!(
                "INSERT INTO items ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(item.id)
            .bind(item.seller_id)
            .bind(item.category_id)
            .bind(&item.title)
            .bind(&item.description)
            .bind(&item.condition)
            .bind(&item.attributes_json)
            .bind(item.created_at_ms)
            .bind(item.updated_at_ms)
            .execute(pool)
            .await?;
        }
        Database::Sqlite(pool) => {
            sqlx::query(&format!(
                "INSERT INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))
            .bind(item.id.to_string())
            .bind(item.seller_id.to_string())
            .bind(item.category_id.to_string())
            .bind(&item.title)
            .bind(&item.description)
            .bind(&item.condition)
            .bind(&item.attributes_json)
            .bind(item.created_at_ms)
            .bind(item.updated_at_ms)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// How many categories exist.
pub async fn count_categories(database: &Database) -> Result<i64, StoreError> {
    const QUERY: &str = "SELECT COUNT(*) FROM categories";
    let count = match database {
        Database::Postgres(pool) => sqlx::query_scalar(QUERY).fetch_one(pool).await?,
        Database::Sqlite(pool) => sqlx::query_scalar(QUERY).fetch_one(pool).await?,
    };
    Ok(count)
}
