//! The attendance report: the service team's questions over a range of days, answered with SQL
//! aggregates that run unchanged on SQLite and PostgreSQL.
//!
//! Days are the days the platform recorded (its time zone, stored as `attended_on` at load), so
//! "1 to 7 August" means the same attendances whatever the database's own zone.

use chrono::NaiveDate;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use serde::Serialize;

use crate::entity::{attendance, attendance_service};

/// The days a report covers, both ends included; an open end covers everything that way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayRange {
    /// The first day.
    pub from: Option<NaiveDate>,
    /// The last day.
    pub to: Option<NaiveDate>,
}

/// How many attendances answered yes, and their share of all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Share {
    /// Attendances that answered yes.
    pub count: i64,
    /// `count` over all attendances (0–1); null when there are none.
    pub share: Option<f64>,
}

/// Covid tests and their positivity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CovidTests {
    /// Positive tests.
    pub positive: i64,
    /// Negative tests.
    pub negative: i64,
    /// Customers not tested.
    pub not_tested: i64,
    /// Positive over tested (positive + negative), 0–1; null when nobody was tested.
    pub positivity: Option<f64>,
}

/// The figures of a set of attendances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// How many.
    pub attendances: i64,
    /// Mean service score (0–10); null when there are none.
    pub average_score: Option<f64>,
    /// Requests solved.
    pub solved: Share,
    /// Customers with a headache.
    pub headache: Share,
    /// Customers with other symptoms.
    pub other_symptoms: Share,
    /// Customers who met someone with covid.
    pub covid_contact: Share,
    /// Covid tests.
    pub covid_tests: CovidTests,
}

/// The figures of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelTotals {
    /// `whatsapp`, `phone`, `webchat`, `email`, `sms`, `app` or `other`.
    pub channel: String,
    /// Its figures.
    #[serde(flatten)]
    pub totals: Totals,
}

/// The figures of one day.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DayTotals {
    /// The day (the platform's time zone).
    pub day: NaiveDate,
    /// Its figures.
    #[serde(flatten)]
    pub totals: Totals,
}

/// How many attendances asked for one service.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServiceTotals {
    /// The service, lowercased.
    pub service: String,
    /// Attendances that asked for it.
    pub attendances: i64,
    /// Their share of all attendances (0–1); an attendance may ask for several services.
    pub share: Option<f64>,
}

/// `GET /api/v1/reports/attendance`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AttendanceReport {
    /// The first day covered; null for no lower bound.
    pub from: Option<NaiveDate>,
    /// The last day covered; null for no upper bound.
    pub to: Option<NaiveDate>,
    /// Every attendance in the range.
    #[serde(flatten)]
    pub totals: Totals,
    /// By channel, the busiest first.
    pub by_channel: Vec<ChannelTotals>,
    /// By service, the most asked first.
    pub by_service: Vec<ServiceTotals>,
    /// By day, oldest first.
    pub by_day: Vec<DayTotals>,
}

/// Computes the report over `range`.
pub async fn attendance_report<C: ConnectionTrait>(
    db: &C,
    range: DayRange,
) -> Result<AttendanceReport, DbErr> {
    let overall = db.query_one(&totals_query(range)).await?;
    let totals = overall
        .as_ref()
        .map(read_totals)
        .transpose()?
        .unwrap_or_else(|| totals_of(&Sums::default()));

    let mut by_channel_query = totals_query(range);
    by_channel_query
        .column(attendance::Column::Channel)
        .group_by_col(attendance::Column::Channel)
        .order_by_expr(Expr::cust("attendances"), Order::Desc)
        .order_by(attendance::Column::Channel, Order::Asc);
    let mut by_channel = Vec::new();
    for row in db.query_all(&by_channel_query).await? {
        let channel: String = row.try_get("", "channel")?;
        by_channel.push(ChannelTotals { channel, totals: read_totals(&row)? });
    }

    let mut by_day_query = totals_query(range);
    by_day_query
        .column(attendance::Column::AttendedOn)
        .group_by_col(attendance::Column::AttendedOn)
        .order_by(attendance::Column::AttendedOn, Order::Asc);
    let mut by_day = Vec::new();
    for row in db.query_all(&by_day_query).await? {
        let day: NaiveDate = row.try_get("", "attended_on")?;
        by_day.push(DayTotals { day, totals: read_totals(&row)? });
    }

    let mut by_service = Vec::new();
    for row in db.query_all(&services_query(range)).await? {
        let service: String = row.try_get("", "service")?;
        let count: i64 = row.try_get("", "attendances")?;
        by_service.push(ServiceTotals {
            service,
            attendances: count,
            share: ratio(count, totals.attendances),
        });
    }

    Ok(AttendanceReport { from: range.from, to: range.to, totals, by_channel, by_service, by_day })
}

/// The sums a [`Totals`] is made of, as the database counts them.
#[derive(Debug, Default)]
struct Sums {
    attendances: i64,
    score_sum: i64,
    solved: i64,
    headache: i64,
    other_symptoms: i64,
    covid_contact: i64,
    covid_positive: i64,
    covid_negative: i64,
}

fn totals_of(s: &Sums) -> Totals {
    let share = |count| Share { count, share: ratio(count, s.attendances) };
    Totals {
        attendances: s.attendances,
        average_score: (s.attendances > 0).then(|| s.score_sum as f64 / s.attendances as f64),
        solved: share(s.solved),
        headache: share(s.headache),
        other_symptoms: share(s.other_symptoms),
        covid_contact: share(s.covid_contact),
        covid_tests: CovidTests {
            positive: s.covid_positive,
            negative: s.covid_negative,
            not_tested: s.attendances - s.covid_positive - s.covid_negative,
            positivity: ratio(s.covid_positive, s.covid_positive + s.covid_negative),
        },
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

// Integer sums only: SUM over booleans differs between the backends (PostgreSQL has no SUM of
// booleans), and AVG is numeric on PostgreSQL; CASE and COUNT are the same on both, and the
// ratios are computed here.
const SUMS: [(&str, &str); 8] = [
    ("attendances", "COUNT(*)"),
    ("score_sum", "COALESCE(SUM(service_score), 0)"),
    ("solved", "COALESCE(SUM(CASE WHEN solved THEN 1 ELSE 0 END), 0)"),
    ("headache", "COALESCE(SUM(CASE WHEN headache THEN 1 ELSE 0 END), 0)"),
    ("other_symptoms", "COALESCE(SUM(CASE WHEN other_symptoms THEN 1 ELSE 0 END), 0)"),
    ("covid_contact", "COALESCE(SUM(CASE WHEN covid_contact THEN 1 ELSE 0 END), 0)"),
    ("covid_positive", "COALESCE(SUM(CASE WHEN covid_test = 'positive' THEN 1 ELSE 0 END), 0)"),
    ("covid_negative", "COALESCE(SUM(CASE WHEN covid_test = 'negative' THEN 1 ELSE 0 END), 0)"),
];

fn totals_query(range: DayRange) -> SelectStatement {
    let mut query = Query::select();
    query.from(attendance::Entity);
    for (alias, expression) in SUMS {
        query.expr_as(Expr::cust(expression), Alias::new(alias));
    }
    within(&mut query, range);
    query
}

fn services_query(range: DayRange) -> SelectStatement {
    let mut query = Query::select();
    query
        .column((attendance_service::Entity, attendance_service::Column::Service))
        .expr_as(
            Expr::cust("COUNT(DISTINCT attendance_services.attendance_id)"),
            Alias::new("attendances"),
        )
        .from(attendance_service::Entity)
        .inner_join(
            attendance::Entity,
            Expr::col((attendance::Entity, attendance::Column::Id))
                .equals((attendance_service::Entity, attendance_service::Column::AttendanceId)),
        )
        .group_by_col((attendance_service::Entity, attendance_service::Column::Service))
        .order_by_expr(Expr::cust("attendances"), Order::Desc)
        .order_by((attendance_service::Entity, attendance_service::Column::Service), Order::Asc);
    within(&mut query, range);
    query
}

fn within(query: &mut SelectStatement, range: DayRange) {
    let day = (attendance::Entity, attendance::Column::AttendedOn);
    if let Some(from) = range.from {
        query.and_where(Expr::col(day).gte(from));
    }
    if let Some(to) = range.to {
        query.and_where(Expr::col(day).lte(to));
    }
}

fn read_totals(row: &QueryResult) -> Result<Totals, DbErr> {
    let get = |alias: &str| row.try_get::<i64>("", alias);
    Ok(totals_of(&Sums {
        attendances: get("attendances")?,
        score_sum: get("score_sum")?,
        solved: get("solved")?,
        headache: get("headache")?,
        other_symptoms: get("other_symptoms")?,
        covid_contact: get("covid_contact")?,
        covid_positive: get("covid_positive")?,
        covid_negative: get("covid_negative")?,
    }))
}
