//! The attendance report: the service team's questions over a range of days, answered with SQL
//! aggregates that run unchanged on SQLite and PostgreSQL.
//!
//! Days are the days the platform recorded (its time zone, stored as `attended_on` at load), so
//! "1 to 7 August" means the same attendances whatever the database's own zone.

use std::collections::BTreeMap;

use chrono::{Datelike as _, NaiveDate};
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
    /// By day, oldest first: the days with attendances.
    pub by_day: Vec<DayTotals>,
    /// The chart of attendances by day ([`day_series`]): every day from `from` (or the first
    /// attendance) to `to` (or the last), days without attendances at zero, with their axis
    /// labels; empty when there are no attendances.
    pub day_series: Vec<ChartDay>,
}

/// One day of the chart of attendances by day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChartDay {
    /// The day (the platform's time zone).
    pub day: NaiveDate,
    /// Its attendances; 0 on a day without any.
    pub attendances: i64,
    /// Its axis label: `MM-DD`, or `YYYY-MM-DD` when the series crosses a year.
    pub label: String,
    /// Whether the axis shows the label: about a dozen evenly spaced, the last day always.
    pub tick: bool,
}

/// The most days the chart covers; of a longer range, the latest.
pub const MAX_CHART_DAYS: usize = 3660;

/// The chart's days: every day of `range` from its first to its last (an open end is the first or
/// last day of `counts`), those not in `counts` (day → attendances) at zero. A range longer than
/// [`MAX_CHART_DAYS`] is narrowed to the days with attendances, then to the latest
/// [`MAX_CHART_DAYS`]. Labels carry the year when the first and last days are in different years;
/// ticks are evenly spaced, about 12 (8 with years, being longer), and the last day always has
/// one, never crowded by the one before it.
pub fn day_series(range: DayRange, counts: &[(NaiveDate, i64)]) -> Vec<ChartDay> {
    let counts: BTreeMap<NaiveDate, i64> = counts.iter().copied().collect();
    let (Some((&first_data, _)), Some((&last_data, _))) =
        (counts.first_key_value(), counts.last_key_value())
    else {
        return Vec::new();
    };
    let span = |from: NaiveDate, to: NaiveDate| (to - from).num_days() + 1;
    let max = i64::try_from(MAX_CHART_DAYS).unwrap_or(i64::MAX);
    let (mut first, mut last) = (range.from.unwrap_or(first_data), range.to.unwrap_or(last_data));
    if span(first, last) > max {
        (first, last) = (Ord::max(first, first_data), Ord::min(last, last_data));
    }
    if span(first, last) > max {
        first = last - chrono::Days::new(MAX_CHART_DAYS as u64 - 1);
    }
    if first > last {
        return Vec::new();
    }
    let days: Vec<NaiveDate> = first.iter_days().take_while(|day| *day <= last).collect();
    let with_year = first.year() != last.year();
    let ticks = if with_year { 8 } else { 12 };
    let every = days.len().div_ceil(ticks).max(1);
    let end = days.len() - 1;
    days.into_iter()
        .enumerate()
        .map(|(i, day)| ChartDay {
            day,
            attendances: counts.get(&day).copied().unwrap_or(0),
            label: day.format(if with_year { "%Y-%m-%d" } else { "%m-%d" }).to_string(),
            // The last tick of the even spacing gives way to the last day's, which would
            // otherwise sit closer to it than the spacing.
            tick: i == end || (i % every == 0 && i + every <= end),
        })
        .collect()
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

    let counts: Vec<(NaiveDate, i64)> =
        by_day.iter().map(|d| (d.day, d.totals.attendances)).collect();
    let day_series = day_series(range, &counts);

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

    Ok(AttendanceReport {
        from: range.from,
        to: range.to,
        totals,
        by_channel,
        by_service,
        by_day,
        day_series,
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn range(from: Option<&str>, to: Option<&str>) -> DayRange {
        DayRange { from: from.map(day), to: to.map(day) }
    }

    fn counts(series: &[ChartDay]) -> Vec<(String, i64)> {
        series.iter().map(|d| (d.day.to_string(), d.attendances)).collect()
    }

    #[test]
    fn days_without_attendances_are_in_the_series_at_zero() {
        let data = [(day("2021-08-02"), 3), (day("2021-08-04"), 1)];
        let series = day_series(range(Some("2021-08-01"), Some("2021-08-05")), &data);
        assert_eq!(
            counts(&series),
            [
                ("2021-08-01".into(), 0),
                ("2021-08-02".into(), 3),
                ("2021-08-03".into(), 0),
                ("2021-08-04".into(), 1),
                ("2021-08-05".into(), 0),
            ]
        );
        let labels: Vec<&str> = series.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["08-01", "08-02", "08-03", "08-04", "08-05"], "one year: no year");
        assert!(series.iter().all(|d| d.tick), "few days: every label shows");
    }

    #[test]
    fn open_ends_are_the_first_and_last_days_with_attendances() {
        let data = [(day("2021-08-04"), 1), (day("2021-08-02"), 3)];
        let series = day_series(DayRange::default(), &data);
        assert_eq!(
            counts(&series),
            [("2021-08-02".into(), 3), ("2021-08-03".into(), 0), ("2021-08-04".into(), 1)]
        );
        let from = day_series(range(Some("2021-08-03"), None), &[(day("2021-08-04"), 1)]);
        assert_eq!(counts(&from), [("2021-08-03".into(), 0), ("2021-08-04".into(), 1)]);
        assert!(day_series(range(Some("2021-08-01"), Some("2021-08-31")), &[]).is_empty());
    }

    #[test]
    fn labels_carry_the_year_when_the_range_crosses_one() {
        let data = [(day("2021-12-31"), 2), (day("2022-01-01"), 1)];
        let series = day_series(range(Some("2021-12-30"), Some("2022-01-02")), &data);
        let labels: Vec<&str> = series.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["2021-12-30", "2021-12-31", "2022-01-01", "2022-01-02"]);
        let open = day_series(DayRange::default(), &data);
        assert_eq!(open[0].label, "2021-12-31", "open ends that cross a year too");
        let within = day_series(range(Some("2022-01-01"), Some("2022-12-31")), &data[1..]);
        assert_eq!((within[0].label.as_str(), within[364].label.as_str()), ("01-01", "12-31"));
    }

    #[test]
    fn ticks_are_evenly_spaced_and_the_last_day_always_has_one() {
        let data = [(day("2021-08-01"), 1)];
        // 40 days: a tick every 4 days (40 / 12, rounded up); the one on day 36 gives way to
        // the last day's (39).
        let series = day_series(range(Some("2021-08-01"), Some("2021-09-09")), &data);
        let ticks: Vec<usize> = (0..series.len()).filter(|i| series[*i].tick).collect();
        assert_eq!(ticks, [0, 4, 8, 12, 16, 20, 24, 28, 32, 39]);
        // 37 days: the last is on the spacing (36) and keeps its place.
        let series = day_series(range(Some("2021-08-01"), Some("2021-09-06")), &data);
        let ticks: Vec<usize> = (0..series.len()).filter(|i| series[*i].tick).collect();
        assert_eq!(ticks, [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]);
        // With years, labels are longer: fewer ticks (8 at most, plus the last).
        let series = day_series(range(Some("2021-12-01"), Some("2022-01-09")), &data);
        let ticks = series.iter().filter(|d| d.tick).count();
        assert!(ticks <= 9, "{ticks}");
        assert!(series.last().unwrap().tick);
        for n in 1..=400_u64 {
            let to = day("2021-01-01") + chrono::Days::new(n - 1);
            let series = day_series(range(Some("2021-01-01"), Some(&to.to_string())), &data);
            assert_eq!(series.len() as u64, n);
            assert!(series.last().unwrap().tick && series[0].tick, "{n} days");
            let ticked: Vec<usize> = (0..series.len()).filter(|i| series[*i].tick).collect();
            let every = series.len().div_ceil(if n > 365 { 8 } else { 12 });
            assert!(ticked.windows(2).all(|w| w[1] - w[0] >= every), "{n} days: {ticked:?}");
        }
    }

    #[test]
    fn a_range_too_long_for_the_chart_is_narrowed() {
        let data = [(day("2021-08-02"), 3)];
        let wide = day_series(range(Some("1990-01-01"), Some("2040-12-31")), &data);
        assert_eq!(counts(&wide), [("2021-08-02".into(), 3)], "narrowed to the attendances");
        let spread = [(day("2001-01-01"), 1), (day("2021-08-02"), 3)];
        let latest = day_series(DayRange::default(), &spread);
        assert_eq!(latest.len(), MAX_CHART_DAYS);
        assert_eq!(latest.last().unwrap().day, day("2021-08-02"), "the latest days");
    }
}
