//! Stopping on Ctrl-C and SIGTERM, the same way in every Botline program: the first signal
//! cancels a [`CancellationToken`], so the program finishes or hands back what it holds and
//! exits on its own; a second signal stops the process at once with exit code
//! [`FORCED_EXIT_CODE`], after logging what that leaves for others to take back (each program
//! says it in a sentence of its own).
//!
//! The decision is [`follow`]-ed over any source of signals, so it is tested with a channel; the
//! process's own signals are only the source [`stop_on_signals`] installs.

use std::fmt;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The exit code of a stop forced by a second signal: 128 + SIGINT, what a shell reports for a
/// program stopped by Ctrl-C.
pub const FORCED_EXIT_CODE: i32 = 130;

/// A signal that asks a program to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C at a terminal (SIGINT).
    Interrupt,
    /// SIGTERM: what `kill`, `docker stop` and systemd send.
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Where signals come from: the process's own, or a channel in tests.
pub(crate) trait Signals {
    /// The next signal; `None` when no more can be received.
    async fn next(&mut self) -> Option<Signal>;
}

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM; on a second one, logs `hand_back` (what a
/// forced stop leaves behind and who takes it back, as a sentence) and exits the process with
/// [`FORCED_EXIT_CODE`].
///
/// The handlers are installed before this returns, so a signal that arrives right after is
/// caught; from then on Ctrl-C no longer kills the process outright. Call it within a Tokio
/// runtime, once per program.
pub fn stop_on_signals(shutdown: CancellationToken, hand_back: &'static str) -> JoinHandle<()> {
    let mut signals = OsSignals::install();
    tokio::spawn(async move {
        if follow(&mut signals, &shutdown, hand_back).await.is_some() {
            std::process::exit(FORCED_EXIT_CODE);
        }
    })
}

/// Follows `signals`: the first cancels `shutdown`, the second is returned (the caller stops at
/// once). `None` when the signals end before a second one, saying why in the log.
pub(crate) async fn follow(
    signals: &mut impl Signals,
    shutdown: &CancellationToken,
    hand_back: &str,
) -> Option<Signal> {
    let Some(first) = signals.next().await else {
        tracing::warn!("signals can no longer be received: stop this program with SIGKILL");
        return None;
    };
    tracing::info!(
        signal = %first,
        "stop requested: finishing what is in hand; a second Ctrl-C or SIGTERM stops at once"
    );
    shutdown.cancel();
    let Some(second) = signals.next().await else {
        tracing::warn!("signals can no longer be received: a second one will not force the stop");
        return None;
    };
    tracing::warn!(signal = %second, "{}", forced_stop_message(hand_back));
    Some(second)
}

/// The line logged when a second signal forces the stop.
fn forced_stop_message(hand_back: &str) -> String {
    format!("second signal: stopping at once (exit code {FORCED_EXIT_CODE}); {hand_back}")
}

/// The process's Ctrl-C and SIGTERM. A handler that cannot be installed is logged and left out.
struct OsSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    #[cfg(unix)]
    fn install() -> OsSignals {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| {
            signal(kind)
                .inspect_err(|error| tracing::error!(%error, "cannot listen for {name}"))
                .ok()
        };
        OsSignals {
            interrupt: install(SignalKind::interrupt(), "Ctrl-C (SIGINT)"),
            terminate: install(SignalKind::terminate(), "SIGTERM"),
        }
    }

    #[cfg(not(unix))]
    fn install() -> OsSignals {
        OsSignals {}
    }
}

impl Signals for OsSignals {
    #[cfg(unix)]
    async fn next(&mut self) -> Option<Signal> {
        let OsSignals { interrupt, terminate } = self;
        if interrupt.is_none() && terminate.is_none() {
            return None;
        }
        let interrupt = async move {
            match interrupt {
                Some(stream) => stream.recv().await.map(|()| Signal::Interrupt),
                None => std::future::pending().await,
            }
        };
        let terminate = async move {
            match terminate {
                Some(stream) => stream.recv().await.map(|()| Signal::Terminate),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = interrupt => got,
            got = terminate => got,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> Option<Signal> {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Some(Signal::Interrupt),
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    impl Signals for mpsc::UnboundedReceiver<Signal> {
        async fn next(&mut self) -> Option<Signal> {
            self.recv().await
        }
    }

    /// A channel of signals and [`follow`] running over it.
    fn following(
        shutdown: &CancellationToken,
    ) -> (mpsc::UnboundedSender<Signal>, JoinHandle<Option<Signal>>) {
        let (send, mut receive) = mpsc::unbounded_channel();
        let shutdown = shutdown.clone();
        let follower =
            tokio::spawn(async move { follow(&mut receive, &shutdown, "nothing held").await });
        (send, follower)
    }

    #[tokio::test]
    async fn the_first_signal_cancels_and_the_second_forces_the_stop() {
        let shutdown = CancellationToken::new();
        let (send, follower) = following(&shutdown);
        assert!(!shutdown.is_cancelled());
        send.send(Signal::Terminate).expect("following");
        shutdown.cancelled().await;
        // Cancelled, and still waiting: only a second signal (or the end of the signals) ends it.
        assert!(!follower.is_finished());
        send.send(Signal::Interrupt).expect("following");
        assert_eq!(follower.await.expect("no panic"), Some(Signal::Interrupt));
    }

    #[tokio::test]
    async fn signals_that_end_never_force_the_stop() {
        let untouched = CancellationToken::new();
        let (send, follower) = following(&untouched);
        drop(send);
        assert_eq!(follower.await.expect("no panic"), None);
        assert!(!untouched.is_cancelled(), "no signal came");

        let shutdown = CancellationToken::new();
        let (send, follower) = following(&shutdown);
        send.send(Signal::Interrupt).expect("following");
        drop(send);
        assert_eq!(follower.await.expect("no panic"), None);
        assert!(shutdown.is_cancelled(), "the one signal that came stops the program gracefully");
    }

    #[test]
    fn the_forced_stop_says_its_exit_code_and_what_is_handed_back() {
        let line = forced_stop_message("unacknowledged messages go back to their queues");
        assert!(line.contains("exit code 130"), "{line}");
        assert!(line.ends_with("unacknowledged messages go back to their queues"), "{line}");
    }
}
