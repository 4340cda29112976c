//! The connections being served, counted by client address: a cap per
//! client and a cap in all. When every slot is taken, a new connection
//! closes another to make room, never one serving an authenticated
//! request: first a stranger's unauthenticated connection (idle, sending
//! headers or trickling a body) of a client holding more than the
//! newcomer's, the client holding the most first, then the oldest; then an
//! idle connection of a known client past [`GRACE`]. A client becomes
//! known when a request of its proves a credential (a signed webhook, the
//! intake's token, a console session), and a known client's newcomer may
//! close any stranger's unauthenticated connection: so strangers holding
//! sockets open, from however many addresses, cannot keep HelpCrunch out
//! once it has delivered one signed webhook, and its first one finds room
//! beside any client holding more than it. A burst from one client waits
//! its turn instead of cutting itself off.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Connections served at once, all clients together. An idle connection
/// costs a few KiB (its read buffer grows only as a request needs).
pub const MAX_CONNECTIONS: usize = 128;

/// How long a known client's new connection is spared: long enough to
/// send its headers and a webhook's body.
pub const GRACE: Duration = Duration::from_secs(1);

/// How long a client stays known after its last proven credential.
pub const KNOWN_FOR: Duration = Duration::from_secs(3600);

/// Clients remembered as known at most: past it, the longest unproven goes.
pub const KNOWN_MAX: usize = 4096;

/// Connections one client address (an IPv6 /64) may hold at once; a
/// trusted proxy is exempt here, its clients are counted per request.
pub const MAX_PER_CLIENT: usize = 32;

/// One connection: how to close it, and whether it may be closed.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    client: IpAddr,
    opened: Instant,
    close: CancellationToken,
    /// Requests being served on it now.
    busy: AtomicUsize,
    /// It has served a request with a valid credential.
    authenticated: AtomicBool,
    /// Where its client is remembered as known.
    registry: std::sync::Weak<Conns>,
}

impl Conn {
    /// Closed when the connection must make room for another.
    pub fn closing(&self) -> &CancellationToken {
        &self.close
    }

    /// Called once a request on it proved a credential.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
        if let Some(registry) = self.registry.upgrade() {
            registry.know(self.client);
        }
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// The connection a request came on, in the request's extensions.
#[derive(Debug, Clone)]
pub struct ConnHandle(pub Arc<Conn>);

/// Marks the connection of a request whose credential proved good, so
/// that it is not closed to make room while it serves.
pub fn authenticated(extensions: &axum::http::Extensions) {
    if let Some(ConnHandle(conn)) = extensions.get::<ConnHandle>() {
        conn.authenticated();
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: BTreeMap<u64, Arc<Conn>>,
    by_client: HashMap<IpAddr, usize>,
    /// Requests in flight per client behind a trusted proxy, whose
    /// connections all count as the proxy's.
    forwarded: HashMap<IpAddr, usize>,
    /// Clients that proved a credential, and when they last did.
    known: HashMap<IpAddr, Instant>,
}

/// The registry of open connections.
pub struct Conns {
    inner: Mutex<Inner>,
    freed: Notify,
    capacity: usize,
    per_client: usize,
    grace: Duration,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client already holds its share.
    PerClient,
    /// Every slot serves an authenticated request: wait for one to free.
    Full,
}

/// A connection's place in the registry; dropping it frees the place.
pub struct Slot {
    conns: Arc<Conns>,
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.remove(self.conn.id);
    }
}

impl Conns {
    pub fn new(capacity: usize, per_client: usize) -> Arc<Self> {
        Self::with_grace(capacity, per_client, GRACE)
    }

    pub fn with_grace(capacity: usize, per_client: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
            capacity,
            per_client,
            grace,
        })
    }

    /// A slot for a new connection from `client` (capped per client unless
    /// `exempt`); at capacity another connection is closed for it. Returns
    /// the slot and whether a connection was closed to make room.
    pub fn admit(self: &Arc<Self>, client: IpAddr, exempt: bool) -> Result<(Slot, bool), Refused> {
        let mut inner = self.inner.lock().expect("connections lock");
        let held = inner.by_client.get(&client).copied().unwrap_or(0);
        if !exempt && held >= self.per_client {
            return Err(Refused::PerClient);
        }
        let mut evicted = false;
        if inner.open.len() >= self.capacity {
            let victim = victim(&inner, client, held, self.grace).ok_or(Refused::Full)?;
            victim.close.cancel();
            forget(&mut inner, victim.id);
            evicted = true;
        }
        let id = inner.next;
        inner.next += 1;
        let conn = Arc::new(Conn {
            id,
            client,
            opened: Instant::now(),
            close: CancellationToken::new(),
            busy: AtomicUsize::new(0),
            authenticated: AtomicBool::new(false),
            registry: Arc::downgrade(self),
        });
        inner.open.insert(id, conn.clone());
        *inner.by_client.entry(client).or_insert(0) += 1;
        let slot = Slot {
            conns: self.clone(),
            conn,
        };
        Ok((slot, evicted))
    }

    /// Counts a request forwarded by a trusted proxy for `client` until
    /// the guard is dropped; None if that client already has its share.
    pub fn forwarded(self: &Arc<Self>, client: IpAddr) -> Option<Forwarded> {
        let mut inner = self.inner.lock().expect("connections lock");
        let n = inner.forwarded.entry(client).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Forwarded {
            conns: self.clone(),
            client,
        })
    }

    /// Remembers `client` as known (it proved a credential just now).
    fn know(&self, client: IpAddr) {
        let mut inner = self.inner.lock().expect("connections lock");
        let now = Instant::now();
        if inner.known.len() >= KNOWN_MAX && !inner.known.contains_key(&client) {
            inner
                .known
                .retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            let oldest = inner
                .known
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(ip, _)| *ip);
            if let (true, Some(oldest)) = (inner.known.len() >= KNOWN_MAX, oldest) {
                inner.known.remove(&oldest);
            }
        }
        inner.known.insert(client, now);
    }

    /// Resolves when a slot may have been freed; made (and enabled) before
    /// an admission is tried, it misses no release after it.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Open connections now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.inner.lock().expect("connections lock").open.len()
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().expect("connections lock");
        if forget(&mut inner, id) {
            self.freed.notify_waiters();
        }
    }
}

/// A forwarded request in flight.
pub struct Forwarded {
    conns: Arc<Conns>,
    client: IpAddr,
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        let mut inner = self.conns.inner.lock().expect("connections lock");
        if let Some(n) = inner.forwarded.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                inner.forwarded.remove(&self.client);
            }
        }
    }
}

/// Takes `id` out of the counts; false if it was already out (evicted).
fn forget(inner: &mut Inner, id: u64) -> bool {
    let Some(conn) = inner.open.remove(&id) else {
        return false;
    };
    if let Some(n) = inner.by_client.get_mut(&conn.client) {
        *n -= 1;
        if *n == 0 {
            inner.by_client.remove(&conn.client);
        }
    }
    true
}

/// The connection to close for a newcomer from `client`, which holds
/// `held`, in the order of the module's comment; None if all are spared.
fn victim(inner: &Inner, client: IpAddr, held: usize, grace: Duration) -> Option<Arc<Conn>> {
    let now = Instant::now();
    let known = |ip: &IpAddr| {
        inner
            .known
            .get(ip)
            .is_some_and(|at| now.duration_since(*at) < KNOWN_FOR)
    };
    let newcomer_known = known(&client);
    let held_by = |c: &Conn| inner.by_client.get(&c.client).copied().unwrap_or(0);
    inner
        .open
        .values()
        .filter_map(|c| {
            let busy = c.busy.load(Ordering::Acquire) > 0;
            let authenticated = c.authenticated.load(Ordering::Relaxed);
            let old = now.duration_since(c.opened) >= grace;
            let stranger = !authenticated && !known(&c.client);
            let tier = if stranger && (newcomer_known || held_by(c) > held) {
                0
            } else if !busy && old && !stranger {
                1
            } else {
                return None;
            };
            Some(((tier, std::cmp::Reverse(held_by(c)), c.id), c))
        })
        .min_by_key(|(key, _)| *key)
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn a_client_gets_its_share_and_no_more() {
        let conns = Conns::new(10, 2);
        let _a = conns.admit(ip(2), false).unwrap();
        let _b = conns.admit(ip(2), false).unwrap();
        assert_eq!(conns.admit(ip(2), false).err(), Some(Refused::PerClient));
        // An exempt peer (a trusted proxy) is not capped per client.
        let c = conns.admit(ip(2), true).unwrap();
        drop((_a, c));
        assert!(conns.admit(ip(2), false).is_ok());
    }

    #[test]
    fn a_newcomer_closes_the_oldest_of_the_client_holding_most() {
        let conns = Conns::new(4, 10);
        let s1 = conns.admit(ip(2), false).unwrap().0;
        let s2 = conns.admit(ip(3), false).unwrap().0;
        let s3 = conns.admit(ip(3), false).unwrap().0;
        let s4 = conns.admit(ip(3), false).unwrap().0;
        let (s5, evicted) = conns.admit(ip(4), false).unwrap();
        assert!(evicted);
        assert!(s2.conn.closing().is_cancelled(), "ip 3 held the most");
        assert!(!s1.conn.closing().is_cancelled());
        assert_eq!(conns.open(), 4);
        // The evicted slot's drop does not free a second place.
        drop(s2);
        assert_eq!(conns.open(), 4);
        drop((s1, s3, s4, s5));
        assert_eq!(conns.open(), 0);
    }

    #[test]
    fn clients_behind_a_proxy_are_counted_per_request() {
        let conns = Conns::new(10, 2);
        let a = conns.forwarded(ip(9)).unwrap();
        let _b = conns.forwarded(ip(9)).unwrap();
        assert!(conns.forwarded(ip(9)).is_none());
        assert!(conns.forwarded(ip(8)).is_some());
        drop(a);
        assert!(conns.forwarded(ip(9)).is_some());
    }

    #[test]
    fn an_authenticated_request_is_never_cut_off() {
        let conns = Conns::new(3, 10);
        let a = conns.admit(ip(2), false).unwrap().0;
        let b = conns.admit(ip(2), false).unwrap().0;
        let c = conns.admit(ip(3), false).unwrap().0;
        a.conn.authenticated();
        let _serving = a.conn.busy();
        // ip 2 is known now: its newcomer closes a stranger's connection,
        // and a stranger's newcomer closes none of ip 2's young ones.
        let _e = conns.admit(ip(2), false).unwrap().0;
        assert!(c.conn.closing().is_cancelled());
        assert_eq!(conns.admit(ip(5), false).err(), Some(Refused::Full));
        assert!(!a.conn.closing().is_cancelled() && !b.conn.closing().is_cancelled());
        // Past the grace an idle authenticated connection may go; a busy one never.
        let old = Conns::with_grace(2, 10, Duration::ZERO);
        let x = old.admit(ip(2), false).unwrap().0;
        let y = old.admit(ip(2), false).unwrap().0;
        x.conn.authenticated();
        y.conn.authenticated();
        let _y_serving = y.conn.busy();
        let z = old.admit(ip(5), false).unwrap().0;
        assert!(x.conn.closing().is_cancelled());
        let _w = old.admit(ip(6), false).unwrap().0;
        assert!(z.conn.closing().is_cancelled());
        assert!(!y.conn.closing().is_cancelled());
    }

    #[test]
    fn a_burst_from_one_client_waits_instead_of_cutting_itself_off() {
        let conns = Conns::new(2, 10);
        let a = conns.admit(ip(2), true).unwrap().0;
        let _b = conns.admit(ip(2), true).unwrap().0;
        assert_eq!(conns.admit(ip(2), true).err(), Some(Refused::Full));
        assert!(!a.conn.closing().is_cancelled());
        drop(a);
        assert!(conns.admit(ip(2), true).is_ok());
    }

    #[test]
    fn a_known_client_finds_room_among_strangers_holding_one_each() {
        let conns = Conns::new(4, 10);
        let strangers: Vec<_> = (2..5)
            .map(|n| conns.admit(ip(n), false).unwrap().0)
            .collect();
        let first = conns.admit(ip(9), false).unwrap().0;
        // Unknown, holding one: no room beside clients holding one each.
        assert_eq!(conns.admit(ip(9), false).err(), Some(Refused::Full));
        first.conn.authenticated();
        let _serving = first.conn.busy();
        let more: Vec<_> = (0..3).map(|_| conns.admit(ip(9), false).unwrap()).collect();
        assert_eq!(more.len(), 3);
        assert!(strangers.iter().all(|s| s.conn.closing().is_cancelled()));
    }

    #[test]
    fn known_clients_are_bounded() {
        let conns = Conns::new(1, 1);
        for n in 0..(KNOWN_MAX + 10) {
            conns.know(IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]));
        }
        assert_eq!(conns.inner.lock().unwrap().known.len(), KNOWN_MAX);
    }
}
