//! Test harness: a simulator served for real on a random port, stopped when dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::io;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running simulator and a client that, like the bots, follows no redirect.
pub struct Server {
    base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Starts `serve` (a simulator's `serve` with its config applied) on 127.0.0.1:0.
    pub async fn start<F, Fut>(serve: F) -> Server
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(serve(listener, shutdown.clone()));
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Server { base, client, shutdown, handle: Some(handle) }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and returns what `serve` returned.
    pub async fn stop(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        self.handle.take().unwrap().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
