//! Mastodon: a reply is a status posted on the mission's home instance, in reply to the
//! post as that instance knows it.
//!
//! The post may live on another instance, so it is resolved first
//! (`GET /api/v2/search?q={url}&resolve=true&type=statuses&limit=1`: the home instance fetches
//! it and answers with its local id); then `POST /api/v1/statuses` sends the text with
//! `in_reply_to_id` and `Idempotency-Key: {reply key}`. The instance keeps the key for an
//! hour: the same key answers with the status it already made, so a retry never posts twice.
//! The token goes to the home instance only.

use flagship_core::Platform;
use flagship_platforms::html::html_to_text;
use serde_json::{Value, json};

use crate::{MastodonAccount, Outcome, Reply, Target, exchange, same_text, trimmed};

const P: Platform = Platform::Mastodon;

pub(crate) struct Mastodon {
    account: MastodonAccount,
}

impl Mastodon {
    pub(crate) fn new(mut account: MastodonAccount) -> Mastodon {
        account.instance = trimmed(&account.instance);
        Mastodon { account }
    }

    fn get(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        http.get(format!("{}{path}", self.account.instance))
            .bearer_auth(&self.account.token)
    }

    /// The post's id on the home instance.
    async fn resolve(&self, http: &reqwest::Client, target: &Target) -> Result<String, Outcome> {
        let q = target
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&target.id);
        let req = self.get(http, "/api/v2/search").query(&[
            ("q", q),
            ("resolve", "true"),
            ("type", "statuses"),
            ("limit", "1"),
        ]);
        let answer = exchange(P, req)
            .await
            .map_err(|t| t.failed("resolving the post on the home instance (search)"))?;
        if !answer.ok() {
            return Err(answer.failed(P, " (resolving the post: search)"));
        }
        match answer.json.pointer("/statuses/0/id").map(id_of) {
            Some(Some(id)) => Ok(id),
            _ => Err(Outcome::failed(
                None,
                format!("the home instance could not resolve {q}"),
            )),
        }
    }

    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Outcome {
        let in_reply_to = match self.resolve(http, target).await {
            Ok(id) => id,
            Err(o) => return o,
        };
        let req = http
            .post(format!("{}/api/v1/statuses", self.account.instance))
            .bearer_auth(&self.account.token)
            .header("Idempotency-Key", &reply.key)
            .json(&json!({"status": reply.text, "in_reply_to_id": in_reply_to}));
        let answer = match exchange(P, req).await {
            Ok(a) => a,
            Err(t) => return t.sending("POST /api/v1/statuses"),
        };
        if answer.ok() {
            let id = answer.json.get("id").and_then(id_of);
            let url = answer.str("/url").or(answer.str("/uri"));
            return match (id, url) {
                (Some(id), Some(url)) => Outcome::Sent {
                    id,
                    url: url.to_owned(),
                },
                _ => Outcome::Unknown {
                    message: format!(
                        "the instance answered {} without the status's id and url",
                        answer.status
                    ),
                },
            };
        }
        let note = match answer.status >= 500 {
            true => " (safe to retry: the same Idempotency-Key returns the status if it was made)",
            false => "",
        };
        answer.failed(P, note)
    }

    /// Looks for the reply among the account's 40 latest statuses. `Ok`: found or not;
    /// `Err`: could not tell.
    pub(crate) async fn check(
        &self,
        http: &reqwest::Client,
        target: &Target,
        reply: &Reply,
    ) -> Result<Outcome, Outcome> {
        let in_reply_to = self.resolve(http, target).await?;
        let me = match exchange(P, self.get(http, "/api/v1/accounts/verify_credentials")).await {
            Ok(a) if a.ok() => a.json.get("id").and_then(id_of),
            Ok(a) => return Err(a.failed(P, " (verify_credentials)")),
            Err(t) => return Err(t.failed("verify_credentials")),
        };
        let Some(me) = me else {
            return Err(Outcome::failed(
                None,
                "verify_credentials answered without the account's id",
            ));
        };
        let req = self
            .get(http, &format!("/api/v1/accounts/{me}/statuses"))
            .query(&[("limit", "40"), ("exclude_reblogs", "true")]);
        let answer = match exchange(P, req).await {
            Ok(a) if a.ok() => a,
            Ok(a) => return Err(a.failed(P, " (the account's statuses)")),
            Err(t) => return Err(t.failed("the account's statuses")),
        };
        let statuses = answer
            .json
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let found = statuses.iter().find(|s| {
            s.get("in_reply_to_id").and_then(id_of).as_deref() == Some(in_reply_to.as_str())
                && same_text(
                    &html_to_text(s.get("content").and_then(Value::as_str).unwrap_or_default()),
                    &reply.text,
                )
        });
        Ok(match found {
            Some(s) => Outcome::AlreadySent {
                id: s.get("id").and_then(id_of),
                url: s.get("url").and_then(Value::as_str).map(str::to_owned),
            },
            None => Outcome::failed(
                None,
                "not found among the account's recent statuses: safe to send again",
            ),
        })
    }
}

/// An id, as Mastodon writes it (a string; a number tolerated).
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
