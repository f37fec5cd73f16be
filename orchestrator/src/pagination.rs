//! List pagination: `limit` with `offset`, or an opaque `cursor`, newest or oldest first.
//!
//! Lists are ordered by `(created_at, id)`, which is unique, so a cursor (the last row's pair)
//! resumes exactly where the previous page ended even while rows are added.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// The default page size.
pub const DEFAULT_LIMIT: u64 = 50;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u64 = 500;
/// The largest offset: the databases take a signed 64-bit one (a larger one made the SQLite
/// driver panic, found by scripts/fuzz-api).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Which end of the list comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most recently created first (the default).
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
}

/// A position in a list: the `(created_at, id)` of the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    /// The cursor after a row.
    pub fn after(created_at: DateTime<Utc>, id: Uuid) -> Cursor {
        Cursor { created_at, id }
    }

    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.timestamp_micros(), self.id))
    }

    /// Parses a cursor a client sent back.
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (micros, id) = raw.split_once(':')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor { created_at, id: id.parse().ok()? })
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows per page.
    pub limit: u64,
    /// Rows to skip (offset paging); 0 with a cursor.
    pub offset: u64,
    /// Where to resume (cursor paging).
    pub cursor: Option<Cursor>,
    /// Which end first.
    pub order: Order,
}

impl PageRequest {
    /// Checks the raw parameters: a limit of 1 to [`MAX_LIMIT`], an offset of at most
    /// [`MAX_OFFSET`], and a cursor or an offset, not both.
    pub fn parse(
        limit: Option<u64>,
        offset: Option<u64>,
        cursor: Option<&str>,
        order: Option<Order>,
    ) -> Result<PageRequest, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid_parameter(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        if offset.is_some_and(|o| o > MAX_OFFSET) {
            return Err(ApiError::invalid_parameter(
                "offset",
                format!("offset must be at most {MAX_OFFSET}"),
            ));
        }
        let cursor = match cursor {
            None => None,
            Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
                ApiError::invalid_parameter("cursor", "cursor is not one this API returned")
            })?),
        };
        if cursor.is_some() && offset.is_some_and(|o| o > 0) {
            return Err(ApiError::invalid_parameter(
                "offset",
                "use either offset or cursor, not both",
            ));
        }
        Ok(PageRequest {
            limit,
            offset: offset.unwrap_or(0),
            cursor,
            order: order.unwrap_or_default(),
        })
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many rows match the filters, over all pages.
    pub total: u64,
    /// The page size used.
    pub limit: u64,
    /// The offset used (0 with a cursor).
    pub offset: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Runs `select` (already filtered) as one page ordered by `(created, id)`, and maps each row.
pub async fn fetch_page<E, T>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    (created, id): (E::Column, E::Column),
    page: PageRequest,
    key: impl Fn(&E::Model) -> (DateTime<Utc>, Uuid),
    map: impl Fn(E::Model) -> Result<T, ApiError>,
) -> Result<Page<T>, ApiError>
where
    E: EntityTrait,
    E::Model: Sync,
{
    let total = select.clone().count(db).await?;
    let mut select = select;
    if let Some(cursor) = page.cursor {
        let (before_at, same_at_before_id) = match page.order {
            Order::Newest => (created.lt(cursor.created_at), id.lt(cursor.id)),
            Order::Oldest => (created.gt(cursor.created_at), id.gt(cursor.id)),
        };
        select = select.filter(
            Condition::any()
                .add(before_at)
                .add(Condition::all().add(created.eq(cursor.created_at)).add(same_at_before_id)),
        );
    }
    let select = match page.order {
        Order::Newest => select.order_by_desc(created).order_by_desc(id),
        Order::Oldest => select.order_by_asc(created).order_by_asc(id),
    };
    let rows = select.offset(page.offset).limit(page.limit).all(db).await?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() as u64 == page.limit => {
            let (at, id) = key(last);
            Some(Cursor::after(at, id).encode())
        }
        _ => None,
    };
    let items = rows.into_iter().map(map).collect::<Result<_, _>>()?;
    Ok(Page { items, total, limit: page.limit, offset: page.offset, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor::after(crate::clock::now(), Uuid::now_v7());
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12:nope")), None);
    }

    #[test]
    fn page_parameters_are_checked() {
        let default = PageRequest::parse(None, None, None, None).expect("defaults");
        assert_eq!(
            (default.limit, default.offset, default.order),
            (DEFAULT_LIMIT, 0, Order::Newest)
        );
        assert!(PageRequest::parse(Some(0), None, None, None).is_err());
        assert!(PageRequest::parse(Some(MAX_LIMIT + 1), None, None, None).is_err());
        assert!(PageRequest::parse(None, None, Some("bad"), None).is_err());
        let cursor = Cursor::after(crate::clock::now(), Uuid::now_v7()).encode();
        assert!(PageRequest::parse(None, Some(5), Some(&cursor), None).is_err());
        assert!(PageRequest::parse(None, Some(0), Some(&cursor), None).is_ok());
    }
}
