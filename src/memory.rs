//! The allocator's share in a daemon that runs for months (issue 23).
//!
//! What the daemon holds stays flat as chats go by (no map keyed by chat
//! outlives the chat; glibc's own count of bytes in use stayed at 4.8-5.1
//! MiB over a soak of 30,000 chats), but glibc's malloc keeps what was
//! freed: the peaks of each thread's arena (a reconciliation's pages of
//! search results, say) stayed resident, and the RSS of the soak rose
//! with it, 17 to 44 MiB (docs/benchmarks.md).
//! So at start the thresholds are fixed (large blocks are mapped and
//! unmapped, an arena's free top goes back at once, and glibc no longer
//! raises either after the first large block) and the arenas are capped,
//! and every [`GIVE_BACK_EVERY`] the pages that free chunks cover are given
//! back (`malloc_trim`). A variable the operator set (`MALLOC_ARENA_MAX`,
//! `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`) wins. Elsewhere than
//! glibc both do nothing.

use std::time::Duration;

/// How often freed memory is given back to the system.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(10);

/// Sets the allocator up for a long run: before the runtime's threads
/// start, so that the arena cap holds from the first one.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::tune();
}

/// Gives the pages of freed memory back to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::give_back();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Two arenas; large blocks mapped, and an arena's free top returned,
    /// from 128 KiB (glibc's initial thresholds, kept from moving).
    const SETTINGS: [(&str, libc::c_int, libc::c_int); 3] = [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 * 1024),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
    ];

    pub(super) fn tune() {
        for (variable, parameter, value) in SETTINGS {
            if std::env::var_os(variable).is_none() {
                // SAFETY: mallopt only changes the allocator's parameters.
                unsafe { libc::mallopt(parameter, value) };
            }
        }
    }

    pub(super) fn give_back() {
        // SAFETY: malloc_trim takes the arenas' locks itself and releases
        // only pages no allocation uses.
        unsafe { libc::malloc_trim(0) };
    }
}
