//! Configuration: flags, with environment variables behind them.

use std::net::SocketAddr;

/// The orchestrator's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB.
    #[arg(long, env = "BOTLINE_DATABASE_URL", default_value = migrations::DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Address the API listens on.
    #[arg(long, env = "BOTLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest CSV attachment accepted, in bytes (decoded).
    #[arg(long, env = "BOTLINE_MAX_ATTACHMENT_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_attachment_bytes: usize,
}

impl Config {
    /// The settings for a database, with every other value at its default.
    pub fn for_database(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://bot:s3cret@db:5432/botline"),
            "postgres://bot:***@db:5432/botline"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact("sqlite://botline.db?mode=rwc"),
            "sqlite://botline.db?mode=rwc"
        );
    }
}
