//! `/api/v1/reports/attendance`: the attendance report as JSON, and `/reports/attendance`: the
//! same as charts, one self-contained page embedded in the binary (nothing fetched from the
//! internet).

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::auth::{AnyCaller, Guarded};
use super::extract::Query;
use crate::error::{ApiError, ErrorBody};
use crate::etl::report::{self, AttendanceReport, DayRange};

const PAGE: &str = include_str!("../../assets/reports.html");

/// The report routes under `/api/v1`.
pub fn router() -> Router<Guarded> {
    Router::new().route("/reports/attendance", get(attendance_report))
}

/// The report pages, outside `/api/v1`.
pub fn pages() -> Router<Guarded> {
    Router::new().route("/reports/attendance", get(attendance_page))
}

/// The days of `GET /api/v1/reports/attendance`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The first day, YYYY-MM-DD, in the platform's time zone (default: no lower bound).
    from: Option<String>,
    /// The last day, YYYY-MM-DD, included (default: no upper bound).
    to: Option<String>,
}

/// The attendance report over a range of days: totals by channel, by service and by day, the
/// average score, the shares solved and with each symptom, and covid test positivity.
#[utoipa::path(get, path = "/api/v1/reports/attendance", tag = "reports", params(ReportQuery),
    responses((status = 200, body = AttendanceReport), (status = 400, body = ErrorBody)))]
pub async fn attendance_report(
    AnyCaller(state): AnyCaller,
    Query(q): Query<ReportQuery>,
) -> Result<Json<AttendanceReport>, ApiError> {
    let range = DayRange { from: parse_day("from", q.from)?, to: parse_day("to", q.to)? };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && to < from
    {
        return Err(ApiError::invalid_parameter("to", format!("{to} is before from ({from})")));
    }
    Ok(Json(report::attendance_report(&state.db, range).await?))
}

/// An empty value (a form's blank input) is no bound.
fn parse_day(field: &'static str, raw: Option<String>) -> Result<Option<NaiveDate>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else { return Ok(None) };
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map(Some).map_err(|_| {
        ApiError::invalid_parameter(field, format!("'{raw}' is not a date as YYYY-MM-DD"))
    })
}

async fn attendance_page() -> impl IntoResponse {
    // The page changes with the binary: revalidate rather than cache for long. Its script and
    // style are inline: the dashboard's content policy, with those allowed.
    let policy = super::CONTENT_SECURITY_POLICY
        .replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
        .replace("style-src 'self'", "style-src 'self' 'unsafe-inline'");
    ([(CACHE_CONTROL, "no-cache".to_owned()), (CONTENT_SECURITY_POLICY, policy)], Html(PAGE))
}
