//! X: a reply is a post made with `POST /2/tweets` `{text, reply: {in_reply_to_tweet_id}}`
//! and the account's OAuth 2 user-context token.
//!
//! X takes no idempotency key: a request that hangs past the timeout or loses its connection
//! after sending is `Unknown`, and [`check`](crate::Replier::check) looks for the reply among
//! the account's recent posts (`GET /2/users/:id/tweets`) before anyone sends again. A 403
//! "duplicate content" is checked the same way: the reply found is `AlreadySent`.

use flagship_core::Platform;
use serde_json::{Value, json};

use crate::{Outcome, Reply, Target, XAccount, exchange, same_text, trimmed};

const P: Platform = Platform::X;

pub(crate) struct X {
    account: XAccount,
}

/// A post's page.
pub fn post_url(id: &str) -> String {
    format!("https://x.com/i/web/status/{id}")
}

impl X {
    pub(crate) fn new(mut account: XAccount) -> X {
        account.base_url = trimmed(&account.base_url);
        account.user_id = account.user_id.trim().to_owned();
        X { account }
    }

    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Outcome {
        if target.id.is_empty() || !target.id.bytes().all(|b| b.is_ascii_digit()) {
            return Outcome::failed(None, format!("{:?} is not an X post id", target.id));
        }
        let body = json!({"text": reply.text, "reply": {"in_reply_to_tweet_id": target.id}});
        let req = http
            .post(format!("{}/2/tweets", self.account.base_url))
            .bearer_auth(&self.account.user_token)
            .json(&body);
        let answer = match exchange(P, req).await {
            Ok(a) => a,
            Err(t) => return t.sending("POST /2/tweets"),
        };
        if answer.ok() {
            return match answer.str("/data/id") {
                Some(id) => Outcome::Sent {
                    id: id.to_owned(),
                    url: post_url(id),
                },
                None => Outcome::Unknown {
                    message: format!("X answered {} without the post's id", answer.status),
                },
            };
        }
        if answer.status == 403
            && answer.message(P).to_lowercase().contains("duplicate")
            && let Ok(found) = self.check(http, target, reply).await
            && found.posted()
        {
            return found;
        }
        let note = match answer.status >= 500 {
            true => " (X may have posted it all the same: check before sending again)",
            false => "",
        };
        answer.failed(P, note)
    }

    /// Looks for the reply among the account's 100 latest posts. `Ok`: found or not; `Err`:
    /// could not tell.
    pub(crate) async fn check(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Result<Outcome, Outcome> {
        let url = format!(
            "{}/2/users/{}/tweets",
            self.account.base_url, self.account.user_id
        );
        let req = http.get(url).bearer_auth(&self.account.user_token).query(&[
            ("tweet.fields", "referenced_tweets,conversation_id"),
            ("max_results", "100"),
        ]);
        let answer = match exchange(P, req).await {
            Ok(a) if a.ok() => a,
            Ok(a) => return Err(a.failed(P, " (the account's recent posts)")),
            Err(t) => return Err(t.failed("the account's recent posts")),
        };
        let posts = answer
            .json
            .pointer("/data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let replies_to_target = |p: &&Value| {
            p.get("referenced_tweets")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r.get("type").and_then(Value::as_str) == Some("replied_to")
                            && r.get("id").and_then(Value::as_str) == Some(target.id.as_str())
                    })
                })
        };
        let found = posts.iter().filter(replies_to_target).find(|p| {
            same_text(
                p.get("text").and_then(Value::as_str).unwrap_or_default(),
                &reply.text,
            )
        });
        Ok(
            match found.and_then(|p| p.get("id")).and_then(Value::as_str) {
                Some(id) => Outcome::AlreadySent {
                    id: Some(id.to_owned()),
                    url: Some(post_url(id)),
                },
                None => Outcome::failed(
                    None,
                    "not found among the account's recent posts: safe to send again",
                ),
            },
        )
    }
}
