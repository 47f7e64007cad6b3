//! Bluesky: a reply is an `app.bsky.feed.post` record written to the mission's repo on its
//! PDS.
//!
//! Signing in is `com.atproto.server.createSession` with the app password; the session (its
//! access JWT and the account's DID) is kept and made again once when the PDS says it expired.
//! The record (`com.atproto.repo.createRecord`) points at the post (`reply.parent`) and its
//! thread's root, and carries facets for `@handle` mentions (resolved with
//! `com.atproto.identity.resolveHandle`; one that does not resolve stays plain text) and
//! `https://` links, at UTF-8 byte offsets.
//!
//! **Never twice.** The record key is a TID derived from the reply's key ([`rkey`]), so a
//! retry writes the same record: the PDS refuses it as existing, which is `AlreadySent`. A PDS
//! that answers a duplicate with a 500 (the reference PDS does) is asked for the record
//! (`com.atproto.repo.getRecord`) before the failure is reported.

use std::collections::HashMap;

use flagship_core::Platform;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Answer, BlueskyAccount, Outcome, Reply, StrongRef, Target, exchange, trimmed};

/// The collection replies are written to.
pub const POST: &str = "app.bsky.feed.post";
const TID_CHARS: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
const P: Platform = Platform::Bluesky;

/// The record key for a reply key: a valid TID (13 base32-sortable characters of a 64-bit
/// integer whose top bit is 0) made of the key's SHA-256, so the same key gives the same rkey.
pub fn rkey(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let v = u64::from_be_bytes(first) & !(1 << 63);
    (0..13)
        .map(|i| TID_CHARS[((v >> (60 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// Whether `s` is TID syntax: 13 characters of the alphabet, the first one of `2…j`.
pub fn is_tid(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| TID_CHARS.contains(&b))
        && TID_CHARS[..16].contains(&s.as_bytes()[0])
}

/// A stretch of the text that becomes a facet, at UTF-8 byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// `@handle`: `start` at the `@`.
    Mention {
        start: usize,
        end: usize,
        handle: String,
    },
    Link {
        start: usize,
        end: usize,
        uri: String,
    },
}

impl Span {
    fn end(&self) -> usize {
        match self {
            Span::Mention { end, .. } | Span::Link { end, .. } => *end,
        }
    }
}

/// The mentions (`@` and a domain-like handle) and `http(s)://` links of `text`, each at the
/// start of the text or after whitespace or `(`; trailing `.,;:!?` quotes and an unbalanced
/// `)` are not part of a link.
pub fn spans(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let (mut i, mut prev) = (0, None::<char>);
    while let Some(c) = text[i..].chars().next() {
        if prev.is_none_or(|p| p.is_whitespace() || p == '(')
            && let Some(span) = mention_at(text, i).or_else(|| link_at(text, i))
        {
            i = span.end();
            prev = text[..i].chars().next_back();
            out.push(span);
            continue;
        }
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

fn mention_at(text: &str, start: usize) -> Option<Span> {
    let rest = text[start..].strip_prefix('@')?;
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    let handle = rest[..len].trim_end_matches(['.', '-']);
    let tld = handle.rsplit('.').next().unwrap_or_default();
    let ok = handle.contains('.')
        && !handle.starts_with(['.', '-'])
        && tld.chars().any(|c| c.is_ascii_alphabetic());
    ok.then(|| Span::Mention {
        start,
        end: start + 1 + handle.len(),
        handle: handle.to_owned(),
    })
}

fn link_at(text: &str, start: usize) -> Option<Span> {
    let rest = &text[start..];
    let after = rest
        .strip_prefix("https://")
        .or_else(|| rest.strip_prefix("http://"))?;
    let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let mut uri = &rest[..len];
    loop {
        if uri.ends_with(['.', ',', ';', ':', '!', '?', '"', '\''])
            || (uri.ends_with(')') && uri.matches(')').count() > uri.matches('(').count())
        {
            uri = &uri[..uri.len() - 1];
        } else {
            break;
        }
    }
    let scheme = rest.len() - after.len();
    let host = uri[scheme..]
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let tld = host.rsplit('.').next().unwrap_or_default();
    (host.contains('.') && tld.chars().any(|c| c.is_ascii_alphabetic())).then(|| Span::Link {
        start,
        end: start + uri.len(),
        uri: uri.to_owned(),
    })
}

/// A session: shown as `Session(did)`, never its JWT.
#[derive(Clone)]
struct Session {
    jwt: String,
    did: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.did)
    }
}

pub(crate) struct Bluesky {
    account: BlueskyAccount,
    session: tokio::sync::Mutex<Option<Session>>,
    handles: std::sync::Mutex<HashMap<String, String>>,
}

impl Bluesky {
    pub(crate) fn new(mut account: BlueskyAccount) -> Bluesky {
        account.pds = trimmed(&account.pds);
        account.appview = trimmed(&account.appview);
        Bluesky {
            account,
            session: tokio::sync::Mutex::new(None),
            handles: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The public read API this account names (the thread view reads parents there).
    pub(crate) fn appview(&self) -> &str {
        &self.account.appview
    }

    fn xrpc(&self, method: &str) -> String {
        format!("{}/xrpc/{method}", self.account.pds)
    }

    /// The kept session, or a new one when there is none or `stale` is the kept one's JWT.
    async fn session(
        &self,
        http: &reqwest::Client,
        stale: Option<&str>,
    ) -> Result<Session, Outcome> {
        let mut kept = self.session.lock().await;
        if let Some(s) = kept.as_ref().filter(|s| Some(s.jwt.as_str()) != stale) {
            return Ok(s.clone());
        }
        let body = json!({
            "identifier": self.account.identifier.trim(),
            "password": self.account.app_password,
        });
        let req = http
            .post(self.xrpc("com.atproto.server.createSession"))
            .json(&body);
        let answer = exchange(P, req)
            .await
            .map_err(|t| t.failed("signing in (createSession)"))?;
        if !answer.ok() {
            return Err(answer.failed(P, " (signing in: createSession)"));
        }
        let (Some(jwt), Some(did)) = (answer.str("/accessJwt"), answer.str("/did")) else {
            return Err(Outcome::failed(
                Some(answer.status),
                "createSession answered without accessJwt and did",
            ));
        };
        let session = Session {
            jwt: jwt.to_owned(),
            did: did.to_owned(),
        };
        *kept = Some(session.clone());
        Ok(session)
    }

    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Outcome {
        let Some(cid) = target.cid.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Outcome::failed(
                None,
                format!(
                    "the Bluesky post {} has no cid: a reply needs the post's uri and cid",
                    target.id
                ),
            );
        };
        let parent = StrongRef {
            uri: target.id.clone(),
            cid: cid.to_owned(),
        };
        let root = target.root.clone().unwrap_or_else(|| parent.clone());
        let mut session = match self.session(http, None).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let mut record = json!({
            "$type": POST,
            "text": reply.text,
            "createdAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reply": { "root": root, "parent": parent },
        });
        let facets = self.facets(http, &reply.text).await;
        if !facets.is_empty() {
            record["facets"] = Value::Array(facets);
        }
        let rkey = rkey(&reply.key);
        let mut signed_in_again = false;
        loop {
            let body =
                json!({"repo": session.did, "collection": POST, "rkey": rkey, "record": record});
            let req = http
                .post(self.xrpc("com.atproto.repo.createRecord"))
                .bearer_auth(&session.jwt)
                .json(&body);
            let answer = match exchange(P, req).await {
                Ok(a) => a,
                Err(t) => return t.sending("createRecord"),
            };
            let (uri, url) = links(&session.did, &rkey);
            if answer.ok() {
                let id = answer.str("/uri").map_or(uri, str::to_owned);
                return Outcome::Sent { id, url };
            }
            if !signed_in_again && expired(&answer) {
                signed_in_again = true;
                match self.session(http, Some(&session.jwt)).await {
                    Ok(s) => session = s,
                    Err(o) => return o,
                }
                continue;
            }
            let exists = [400, 409].contains(&answer.status) && says_exists(&answer);
            if exists
                || (answer.status >= 500
                    && self.record_exists(http, &session.did, &rkey).await == Ok(true))
            {
                return Outcome::AlreadySent {
                    id: Some(uri),
                    url: Some(url),
                };
            }
            let note = match answer.status >= 500 {
                true => " (safe to retry: the same key writes the same record)",
                false => "",
            };
            return answer.failed(P, note);
        }
    }

    /// `Ok`: found or not; `Err`: could not tell.
    pub(crate) async fn check(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Result<Outcome, Outcome> {
        let session = self.session(http, None).await?;
        let rkey = rkey(&reply.key);
        let (uri, url) = links(&session.did, &rkey);
        Ok(match self.record_exists(http, &session.did, &rkey).await? {
            true => Outcome::AlreadySent {
                id: Some(uri),
                url: Some(url),
            },
            false => Outcome::failed(
                None,
                format!("no reply to {} at {uri}: safe to send again", target.id),
            ),
        })
    }

    /// Whether the account's post at `rkey` exists (`com.atproto.repo.getRecord`).
    async fn record_exists(
        &self,
        http: &reqwest::Client,
        did: &str,
        rkey: &str,
    ) -> Result<bool, Outcome> {
        let req = http.get(self.xrpc("com.atproto.repo.getRecord")).query(&[
            ("repo", did),
            ("collection", POST),
            ("rkey", rkey),
        ]);
        let answer = exchange(P, req).await.map_err(|t| t.failed("getRecord"))?;
        match answer.status {
            200..=299 => Ok(true),
            404 => Ok(false),
            400 if answer.str("/error") == Some("RecordNotFound") => Ok(false),
            _ => Err(answer.failed(P, " (getRecord)")),
        }
    }

    /// The text's facets: mentions whose handle resolves, and links.
    async fn facets(&self, http: &reqwest::Client, text: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for span in spans(text) {
            let (start, end, feature) = match span {
                Span::Mention { start, end, handle } => {
                    let Some(did) = self.resolve(http, &handle).await else {
                        tracing::debug!(%handle, "bluesky: handle did not resolve; no mention facet");
                        continue;
                    };
                    let feature = json!({"$type": "app.bsky.richtext.facet#mention", "did": did});
                    (start, end, feature)
                }
                Span::Link { start, end, uri } => (
                    start,
                    end,
                    json!({"$type": "app.bsky.richtext.facet#link", "uri": uri}),
                ),
            };
            out.push(json!({
                "index": {"byteStart": start, "byteEnd": end},
                "features": [feature],
            }));
        }
        out
    }

    async fn resolve(&self, http: &reqwest::Client, handle: &str) -> Option<String> {
        let req = http
            .get(self.xrpc("com.atproto.identity.resolveHandle"))
            .query(&[("handle", handle)]);
        let answer = exchange(P, req).await.ok().filter(Answer::ok)?;
        answer.str("/did").map(str::to_owned)
    }

    /// A DID's handle through the AppView's `app.bsky.actor.getProfile`, cached.
    pub(crate) async fn handle(&self, http: &reqwest::Client, did: &str) -> Option<String> {
        if let Some(h) = self.lock_handles().get(did) {
            return Some(h.clone());
        }
        let req = http
            .get(format!(
                "{}/xrpc/app.bsky.actor.getProfile",
                self.account.appview
            ))
            .query(&[("actor", did)]);
        let answer = exchange(P, req).await.ok().filter(Answer::ok)?;
        let handle = answer
            .str("/handle")
            .filter(|h| *h != "handle.invalid")?
            .to_owned();
        self.lock_handles().insert(did.to_owned(), handle.clone());
        Some(handle)
    }

    fn lock_handles(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The record's `at://` uri and its page.
fn links(did: &str, rkey: &str) -> (String, String) {
    (
        format!("at://{did}/{POST}/{rkey}"),
        format!("https://bsky.app/profile/{did}/post/{rkey}"),
    )
}

fn expired(a: &Answer) -> bool {
    let error = a.str("/error").unwrap_or_default();
    let message = a.str("/message").unwrap_or_default().to_lowercase();
    a.status == 401
        || (a.status == 400
            && (error == "ExpiredToken" || error == "InvalidToken" || message.contains("expired")))
}

fn says_exists(a: &Answer) -> bool {
    let text = format!(
        "{} {}",
        a.str("/error").unwrap_or_default(),
        a.str("/message").unwrap_or_default()
    )
    .to_lowercase();
    text.contains("already exists") || text.contains("alreadyexists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rkeys_are_tids_stable_per_key() {
        for key in ["desk-reply-1", "desk-reply-2", "", "é🚀"] {
            let k = rkey(key);
            assert!(is_tid(&k), "{k}");
            assert_eq!(k, rkey(key));
        }
        assert_ne!(rkey("desk-reply-1"), rkey("desk-reply-2"));
        assert!(!is_tid("kzzzzzzzzzzzz"));
        assert!(!is_tid("3k2abc"));
    }

    #[test]
    fn spans_at_byte_offsets() {
        let text = "Café 🚀 東京 @ana.bsky.social see https://example.org/a_(b)). (@x.y) a@b.c";
        let s = spans(text);
        let at = text.find("@ana").unwrap();
        let link = text.find("https://").unwrap();
        let paren = text.find("@x.y").unwrap();
        assert_eq!(
            s,
            vec![
                Span::Mention {
                    start: at,
                    end: at + "@ana.bsky.social".len(),
                    handle: "ana.bsky.social".into()
                },
                Span::Link {
                    start: link,
                    end: link + "https://example.org/a_(b)".len(),
                    uri: "https://example.org/a_(b)".into()
                },
                Span::Mention {
                    start: paren,
                    end: paren + 4,
                    handle: "x.y".into()
                },
            ]
        );
        assert!(spans("@nodot https:// http://localhost").is_empty());
    }
}
