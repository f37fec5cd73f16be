//! How every Botline program logs: to standard error, as text or as JSON lines, at `RUST_LOG` or
//! the program's default filter.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How a program writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for a person; coloured only when standard error is a terminal, so a file or a
    /// journal gets no escape codes.
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, target, fields, the current span), for a log
    /// shipper.
    Json,
}

/// `--log-format`, the same for every program.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// How to log to standard error: text (coloured only on a terminal) or json (one object a
    /// line).
    #[arg(long, env = "BOTLINE_LOG_FORMAT", value_enum, default_value_t, global = true)]
    pub log_format: LogFormat,
}

/// What every program logs unless `RUST_LOG` says otherwise: info, with the database clients'
/// chatter below warnings left out, and lapin's own lines, whose every failure reaches Botline's
/// code and is logged there once with what it means (a consumer reconnecting, a publish
/// retried). `RUST_LOG=info,lapin=debug` brings them back.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,lapin=off";

/// Logs as `format` says at `RUST_LOG`, or else at [`DEFAULT_FILTER`]. Once per process: a later
/// call changes nothing.
pub fn init(format: LogFormat) {
    init_with(format, DEFAULT_FILTER);
}

/// [`init`] with a default filter of the program's own (a tool that keeps standard output and
/// error for its results logs only warnings, say); lapin's own lines stay off unless asked for.
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},lapin=off")));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}
