//! Graceful shutdown of the long-running subcommands (`serve`, `issuer`, `operator`): the
//! first SIGTERM or SIGINT asks every part of the process to stop (listeners stop accepting
//! and let in-flight requests finish, controllers finish their reconciles, the operator
//! releases its Lease); a second one exits at once.
//!
//! As PID 1 of a container the kernel drops every signal whose handler is the default one, so
//! the handlers are installed first thing in the runtime, before anything that can take time.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

static REQUESTED: OnceLock<watch::Sender<bool>> = OnceLock::new();

fn requested_flag() -> &'static watch::Sender<bool> {
    REQUESTED.get_or_init(|| watch::channel(false).0)
}

/// Installs the SIGTERM and SIGINT handlers of the process. Needs a Tokio runtime.
pub fn listen_for_signals() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let first = next_signal(&mut term, &mut int).await;
        tracing::info!(signal = first, "shutting down: no new connections; in-flight work finishes");
        request();
        let second = next_signal(&mut term, &mut int).await;
        tracing::warn!(signal = second, "second signal: exiting without waiting for in-flight work");
        std::process::exit(1);
    });
    Ok(())
}

async fn next_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Asks the process to shut down, as a signal does.
pub fn request() {
    requested_flag().send_replace(true);
}

/// Whether shutdown was asked for.
pub fn is_requested() -> bool {
    *requested_flag().borrow()
}

/// Resolves once shutdown is asked for (at once if it already was).
pub async fn requested() {
    let mut rx = requested_flag().subscribe();
    // The sender lives in a static: it is never dropped, so this fails never.
    let _ = rx.wait_for(|asked| *asked).await;
}

/// Runs `work`, giving it at most `grace` after shutdown is asked for: `None` if it had to be
/// cut short. The process's last word on time, whatever `work` waits on.
pub async fn within_grace<T>(work: impl Future<Output = T>, grace: Duration) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        () = async {
            requested().await;
            tokio::time::sleep(grace).await;
        } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the flag is process-wide, and other tests of this binary must not see it set.
    #[tokio::test(start_paused = true)]
    async fn work_gets_its_grace_after_shutdown_is_asked_for_then_is_cut() {
        assert!(!is_requested());
        let quick = within_grace(async { 7 }, Duration::from_secs(1)).await;
        assert_eq!(quick, Some(7), "work that ends by itself returns its result");

        let started = tokio::time::Instant::now();
        let stuck = tokio::spawn(within_grace(std::future::pending::<()>(), Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!stuck.is_finished(), "no shutdown asked for: work runs as long as it likes");
        request();
        assert!(is_requested());
        requested().await;
        assert_eq!(stuck.await.unwrap(), None);
        assert_eq!(started.elapsed(), Duration::from_secs(65), "cut exactly its grace after the request");
    }
}
