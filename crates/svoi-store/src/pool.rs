//! `Pool<C>`: the bounded connection pool behind [`crate::Reader`], for either backend. A fixed
//! number of slots, each holding a connection or empty (not opened yet, or dropped after it
//! broke); a caller leases a slot, waiting a bounded time for one to come back when all are
//! leased, and fills an empty slot by opening a connection.
//!
//! The pool knows nothing of databases: what a connection is, how one is opened and when one
//! is broken is the backend's business ([`Lease::get_or_open`], [`Lease::discard`]).

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::StoreError;

/// At most `size` connections, shared by the callers that lease them.
pub(crate) struct Pool<C> {
    slots: Mutex<Slots<C>>,
    /// Signalled whenever a lease ends, so that one waiting caller takes its slot.
    returned: Condvar,
    /// How long a caller waits for a free slot before giving up (the busy timeout): callers
    /// queue on the blocking thread pool, so an unbounded wait would let a burst of requests
    /// pile up threads without limit.
    wait: Duration,
}

/// The slots not leased: those with a connection, and how many are empty.
struct Slots<C> {
    idle: Vec<C>,
    empty: usize,
}

impl<C> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.lock();
        f.debug_struct("Pool")
            .field("idle", &slots.idle.len())
            .field("empty", &slots.empty)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl<C> Pool<C> {
    /// A pool of `size` slots, `open` of them holding the connections given, the others empty.
    /// `size` below `open.len()` is raised to it.
    pub(crate) fn new(open: Vec<C>, size: usize, wait: Duration) -> Pool<C> {
        let empty = size.saturating_sub(open.len());
        Pool {
            slots: Mutex::new(Slots { idle: open, empty }),
            returned: Condvar::new(),
            wait,
        }
    }

    /// The slots, whatever panicked while holding the lock (they are consistent at every
    /// point a panic can happen).
    fn lock(&self) -> MutexGuard<'_, Slots<C>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases a slot, one with a connection if any is free, else an empty one; waits up to the
    /// pool's wait for a lease to end if every slot is leased, then gives up with
    /// [`StoreError::ReadersBusy`] (retryable).
    pub(crate) fn lease(&self) -> Result<Lease<'_, C>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut slots = self.lock();
        loop {
            if let Some(conn) = slots.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if slots.empty > 0 {
                slots.empty -= 1;
                return Ok(Lease {
                    pool: self,
                    conn: None,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::ReadersBusy { waited: self.wait });
            }
            slots = self
                .returned
                .wait_timeout(slots, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A leased slot; goes back to the pool when dropped, also when its user panics (so the pool
/// never shrinks), with its connection or empty.
pub(crate) struct Lease<'p, C> {
    pool: &'p Pool<C>,
    conn: Option<C>,
}

impl<C> Lease<'_, C> {
    /// The slot's connection, if it holds one.
    pub(crate) fn get(&self) -> Option<&C> {
        self.conn.as_ref()
    }

    /// The slot's connection, opened with `open` if the slot is empty. When `open` fails, its
    /// error is returned and the slot stays empty, for the next caller to try again.
    pub(crate) fn get_or_open<E>(
        &mut self,
        open: impl FnOnce() -> Result<C, E>,
    ) -> Result<&mut C, E> {
        if self.conn.is_none() {
            self.conn = Some(open()?);
        }
        match &mut self.conn {
            Some(conn) => Ok(conn),
            None => unreachable!("opened above"),
        }
    }

    /// Drops the slot's connection (it broke): the slot goes back empty and the next lease of
    /// it opens a new one.
    pub(crate) fn discard(&mut self) {
        self.conn = None;
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let mut slots = self.pool.lock();
        match self.conn.take() {
            Some(conn) => slots.idle.push(conn),
            None => slots.empty += 1,
        }
        drop(slots);
        self.pool.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A connection that is a number, opened by never failing.
    fn ok(n: u32) -> impl FnOnce() -> Result<u32, StoreError> {
        move || Ok(n)
    }

    #[test]
    fn a_lease_goes_back_to_the_pool_even_when_its_user_panics() {
        let pool = Pool::new(vec![1u32], 1, Duration::from_secs(30));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let lease = pool.lease().unwrap();
            assert_eq!(lease.get(), Some(&1));
            panic!("boom");
        }));
        assert!(result.is_err());
        // Would wait 30 s and fail had the connection been lost.
        let lease = pool.lease().unwrap();
        assert_eq!(lease.get(), Some(&1));
    }

    #[test]
    fn a_waiting_caller_gets_the_connection_when_it_is_returned() {
        let pool = Arc::new(Pool::new(vec![42u32], 1, Duration::from_secs(30)));
        let lease = pool.lease().unwrap();
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || *pool.lease().unwrap().get_or_open(ok(0)).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(lease);
        assert_eq!(waiter.join().unwrap(), 42);
    }

    #[test]
    fn a_caller_gives_up_after_the_wait_with_a_retryable_error() {
        let pool = Pool::new(vec![1u32], 1, Duration::from_millis(30));
        let held = pool.lease().unwrap();
        let started = Instant::now();
        let err = pool.lease().err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(
            matches!(err, StoreError::ReadersBusy { waited } if waited == Duration::from_millis(30)),
            "{err}"
        );
        assert!(err.is_retryable());
        drop(held);
        assert!(pool.lease().is_ok());
    }

    #[test]
    fn empty_slots_count_towards_the_bound_and_are_opened_on_first_use() {
        let pool = Pool::new(vec![1u32], 3, Duration::from_millis(10));
        let mut a = pool.lease().unwrap();
        let mut b = pool.lease().unwrap();
        let mut c = pool.lease().unwrap();
        assert!(matches!(
            pool.lease().err(),
            Some(StoreError::ReadersBusy { .. })
        ));
        // The open connection is handed out before an empty slot.
        assert_eq!(a.get(), Some(&1));
        assert_eq!(*a.get_or_open(ok(9)).unwrap(), 1);
        assert_eq!(b.get(), None);
        assert_eq!(*b.get_or_open(ok(2)).unwrap(), 2);
        assert_eq!(*b.get_or_open(ok(9)).unwrap(), 2, "opened once");
        assert_eq!(*c.get_or_open(ok(3)).unwrap(), 3);
        drop((a, b, c));
        let leases: Vec<_> = (0..3).map(|_| pool.lease().unwrap()).collect();
        let mut got: Vec<u32> = leases.iter().map(|l| *l.get().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn a_failed_open_or_a_discard_leaves_the_slot_empty_for_the_next_caller() {
        let pool = Pool::new(vec![1u32], 1, Duration::from_millis(10));
        let mut lease = pool.lease().unwrap();
        lease.discard();
        assert_eq!(lease.get(), None);
        drop(lease);
        let mut lease = pool.lease().unwrap();
        assert_eq!(lease.get(), None);
        let failed = lease.get_or_open(|| Err(StoreError::Invalid("down".to_owned())));
        assert!(matches!(failed.err(), Some(StoreError::Invalid(_))));
        drop(lease);
        // The slot is neither lost nor filled by the failure.
        let mut lease = pool.lease().unwrap();
        assert_eq!(lease.get(), None);
        assert_eq!(*lease.get_or_open(ok(5)).unwrap(), 5);
        drop(lease);
        assert_eq!(pool.lease().unwrap().get(), Some(&5));
    }
}
