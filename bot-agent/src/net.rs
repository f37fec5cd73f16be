//! Finding the address the bot announces.

use tokio::net::UdpSocket;

/// The host and port of `url` (`scheme://[user[:password]@]host[:port][/…]`), with the
/// scheme's default port.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = match scheme {
        "amqp" => 5672,
        "amqps" => 5671,
        "https" => 443,
        _ => 80,
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The local address this machine uses to reach `url`'s host: the source address of a UDP
/// socket "connected" to it (nothing is sent). 127.0.0.1 when that cannot be found.
pub async fn local_ip_towards(url: &str) -> String {
    let fallback = || "127.0.0.1".to_owned();
    let Some((host, port)) = host_port(url) else {
        return fallback();
    };
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0").await else {
        return fallback();
    };
    if socket.connect((host.as_str(), port)).await.is_err() {
        return fallback();
    }
    match socket.local_addr() {
        Ok(address) if !address.ip().is_unspecified() => address.ip().to_string(),
        _ => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_host_and_port_in_broker_and_api_urls() {
        let cases = [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", Some(("127.0.0.1", 5672))),
            ("amqp://rabbit/", Some(("rabbit", 5672))),
            ("http://orchestrator:8080", Some(("orchestrator", 8080))),
            ("https://api.example.com/x?y", Some(("api.example.com", 443))),
            ("http://[::1]:9000/", Some(("::1", 9000))),
            ("http://u:p@host/", Some(("host", 80))),
            ("not a url", None),
            ("http://host:port/", None),
        ];
        for (url, expected) in cases {
            let expected = expected.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(host_port(url), expected, "{url}");
        }
    }

    #[tokio::test]
    async fn the_loopback_is_reached_from_the_loopback() {
        assert_eq!(local_ip_towards("amqp://127.0.0.1:5672").await, "127.0.0.1");
        assert_eq!(local_ip_towards("nonsense").await, "127.0.0.1");
    }
}
