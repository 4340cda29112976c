//! What may hold the account's budget or shut calls outside this process.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Take;

/// A future the shared budget returns.
pub type BudgetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The account's budget when it is kept outside this process, shared by
/// every daemon of the account (PostgreSQL: one GCRA row on the database's
/// clock). The limiter then asks it for each slot instead of its own GCRA.
pub trait SharedBudget: Send + Sync {
    /// Takes one call's slot, handed out up to `ahead` before it is due.
    /// Assignment calls go before background ones.
    fn take(
        &self,
        period: Duration,
        tau: Duration,
        assignment: bool,
        ahead: Duration,
    ) -> BudgetFuture<'_, Take>;
    /// Pauses every daemon's calls for `pause` (after a 429).
    fn pause(&self, pause: Duration) -> BudgetFuture<'_, ()>;
}

/// Whether this process may call HelpCrunch at all now. On SQLite only the
/// daemon holding the file may, and only while its hold is known to last: a
/// holder stopped past its lease (SIGSTOP, a stalled VM) that wakes up must
/// not call beside the daemon that took over, each with its own budget.
pub trait Fence: Send + Sync {
    /// `None` while calls may go; else how long to wait before asking again.
    fn shut_for(&self) -> Option<Duration>;
}
