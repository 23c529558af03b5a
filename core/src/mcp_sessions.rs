//! Sessions of the initialize era, owned by the gateway: when an MCP server opens a session
//! (`Mcp-Session-Id` on its answer), the client gets an id of the gateway's own (128 random
//! bits), bound to the consumer the chain authenticated and mapped to the server's session in
//! the platform's key-value store (shared by replicas with Redis; Workers KV / Spin key-value at
//! the edge). A request with an id the gateway does not know, that expired, or that another
//! consumer opened gets 404 (the MCP answer that makes a client start a new session); the
//! server's own ids never reach clients.

use serde::{Deserialize, Serialize};

use crate::call::Call;
use crate::mcp_wire::header;
use crate::*;

/// How long a session lasts after its last use.
pub const IDLE_MS: u64 = 60 * 60 * 1000;
/// A session's expiry is pushed back at most this often (one write per session and minute).
const TOUCH_EVERY_MS: u64 = 60 * 1000;

/// What the gateway remembers of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The server's session id.
    pub upstream: String,
    /// The consumer that opened it (`None`: a proxy without authentication).
    pub consumer: Option<String>,
    /// When the expiry was last pushed back (ms since the epoch).
    pub touched_ms: u64,
}

impl Session {
    /// Whether `consumer` may use the session.
    pub fn belongs_to(&self, consumer: Option<&str>) -> bool {
        self.consumer.as_deref() == consumer
    }

    /// Whether the expiry is due to be pushed back at `now_ms`.
    pub fn stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.touched_ms) >= TOUCH_EVERY_MS
    }
}

/// The key of gateway session `id` of route `route` (a namespace no policy instance can have).
pub fn key(route: &str, id: &str) -> String {
    format!("gateway:mcp-sessions|{route}/{id}")
}

/// Whether `id` can be one of the gateway's ids (32 lower-case hex digits): others are not
/// looked up.
pub fn well_formed(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new session id: 128 random bits as 32 hex digits.
pub fn new_id(random: [u8; 16]) -> String {
    random.iter().map(|b| format!("{b:02x}")).collect()
}

// The session map in the platform's store, for the loop (mcp.rs).

/// The session the client's id `sid` names, if it is the gateway's, alive and `consumer`'s;
/// its expiry is pushed back when due.
pub(crate) async fn find_session<P: Platform>(
    call: &Call<P>,
    sid: &str,
    consumer: Option<&str>,
) -> Result<Option<Session>, GatewayError> {
    if !well_formed(sid) {
        return Ok(None);
    }
    let key = key(&call.route.name, sid);
    let stored = call
        .platform
        .state_get(&key)
        .await
        .map_err(|e| sessions_unavailable(call, &e))?;
    let Some(mut session) = stored.and_then(|b| serde_json::from_slice::<Session>(&b).ok()) else {
        return Ok(None);
    };
    if !session.belongs_to(consumer) {
        return Ok(None);
    }
    let now = call.platform.now_ms();
    if session.stale(now) {
        session.touched_ms = now;
        store_session(call, &key, &session).await?;
    }
    Ok(Some(session))
}

pub(crate) async fn store_session<P: Platform>(
    call: &Call<P>,
    key: &str,
    session: &Session,
) -> Result<(), GatewayError> {
    let bytes = serde_json::to_vec(session).unwrap_or_default();
    call.platform
        .state_set(key, bytes, IDLE_MS)
        .await
        .map_err(|e| sessions_unavailable(call, &e))
}

pub(crate) fn sessions_unavailable<P: Platform>(call: &Call<P>, detail: &str) -> GatewayError {
    call.platform.warn(
        &call.request_id,
        &format!("MCP sessions: the key-value store failed: {detail}"),
    );
    GatewayError::Unavailable {
        code: "session_store_unavailable",
        message: "The gateway cannot read or write MCP sessions now; retry shortly.".into(),
    }
}

/// The server's answer's `Mcp-Session-Id` becomes the gateway's: a new session (the answer to
/// `initialize`) gets a new id bound to `consumer`; the session the request used keeps its id.
/// A session the server ended (DELETE) or no longer knows (404) is forgotten.
pub(crate) async fn map_session<P: Platform>(
    call: &Call<P>,
    headers: &mut Headers,
    session: Option<&(String, Session)>,
    consumer: Option<&str>,
    method: &str,
    status: u16,
) -> Result<(), GatewayError> {
    if let Some((sid, _)) = session
        && ((method == "DELETE" && (200..300).contains(&status)) || status == 404)
    {
        let key = key(&call.route.name, sid);
        call.platform
            .state_delete(&key)
            .await
            .map_err(|e| sessions_unavailable(call, &e))?;
    }
    let Some(upstream) = header(headers, "mcp-session-id").map(str::to_owned) else {
        return Ok(());
    };
    headers.retain(|(n, _)| n != "mcp-session-id");
    let sid = match session {
        Some((sid, s)) if s.upstream == upstream => sid.clone(),
        _ => {
            let Some(random) = call.platform.random_bytes() else {
                return Err(GatewayError::Unavailable {
                    code: "session_store_unavailable",
                    message: "The gateway has no random source for session ids.".into(),
                });
            };
            let sid = new_id(random);
            let fresh = Session {
                upstream,
                consumer: consumer.map(str::to_owned),
                touched_ms: call.platform.now_ms(),
            };
            store_session(call, &key(&call.route.name, &sid), &fresh).await?;
            sid
        }
    };
    headers.push(("mcp-session-id".into(), sid));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bits_of_hex_and_sessions_belong_to_their_consumer() {
        let id = new_id([0xab; 16]);
        assert_eq!(id.len(), 32);
        assert!(well_formed(&id));
        assert!(!well_formed("ABABABABABABABABABABABABABABABAB"));
        assert!(!well_formed("b5c31ab69dad49d5b32394e63771692"));
        let s = Session {
            upstream: "u".into(),
            consumer: Some("alice".into()),
            touched_ms: 1_000,
        };
        assert!(s.belongs_to(Some("alice")));
        assert!(!s.belongs_to(Some("bob")) && !s.belongs_to(None));
        assert!(!s.stale(1_000 + TOUCH_EVERY_MS - 1) && s.stale(1_000 + TOUCH_EVERY_MS));
        assert_eq!(
            key("tools", &id),
            format!("gateway:mcp-sessions|tools/{id}")
        );
    }
}
