//! Session affinity: the value of a session header → the endpoint that serves the session,
//! bounded. Sessions are kept by a hash of their id, so memory per session is fixed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

use super::lru::Lru;

/// The key of a session id.
pub fn session_key(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// Session → endpoint, at most a fixed number of sessions.
#[derive(Debug)]
pub struct Sessions {
    map: Lru<SocketAddr>,
}

impl Sessions {
    /// At most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Lru::new(capacity),
        }
    }

    /// Adapts the bound to the pool's current setting.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.map.set_capacity(capacity);
    }

    /// The endpoint of a session, if it has one.
    pub fn endpoint(&self, session: u64) -> Option<SocketAddr> {
        self.map.peek(session)
    }

    /// The session is served by `endpoint` from now on (and counts as recently used).
    pub fn bind(&mut self, session: u64, endpoint: SocketAddr) {
        if self.map.get(session) != Some(endpoint) {
            self.map.insert(session, endpoint);
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_keeps_its_endpoint_until_moved_and_the_map_is_bounded() {
        let a = SocketAddr::from(([10, 0, 0, 1], 1));
        let b = SocketAddr::from(([10, 0, 0, 2], 1));
        let mut s = Sessions::new(100);
        let k = session_key("conversation-1");
        assert_eq!(s.endpoint(k), None);
        s.bind(k, a);
        assert_eq!(s.endpoint(k), Some(a));
        s.bind(k, b);
        assert_eq!(s.endpoint(k), Some(b));
        assert_ne!(session_key("conversation-2"), k);
        for i in 0..10_000 {
            s.bind(session_key(&i.to_string()), a);
            assert!(s.len() <= 100);
        }
    }
}
