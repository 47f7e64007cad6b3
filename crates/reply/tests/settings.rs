//! Settings: secrets never in Debug output; only configured platforms can reply; unsafe
//! settings refused.

use std::time::Duration;

use flagship_reply::{
    BlueskyAccount, MastodonAccount, Platform, Replier, ReplyError, Settings, XAccount,
};

const SECRETS: [&str; 3] = [
    "bsky-app-password-1234",
    "masto-token-5678",
    "x-user-token-9012",
];

fn all() -> Settings {
    Settings {
        bluesky: Some(BlueskyAccount {
            pds: "https://bsky.social".into(),
            appview: "https://public.api.bsky.app".into(),
            identifier: "mission.bsky.social".into(),
            app_password: SECRETS[0].into(),
        }),
        mastodon: Some(MastodonAccount {
            instance: "https://mastodon.social".into(),
            token: SECRETS[1].into(),
        }),
        x: Some(XAccount {
            base_url: "https://api.x.com".into(),
            user_token: SECRETS[2].into(),
            user_id: "42".into(),
        }),
        timeout: Duration::from_secs(15),
    }
}

#[test]
fn debug_output_never_shows_a_secret() {
    let s = all();
    for shown in [
        format!("{s:?}"),
        format!("{s:#?}"),
        format!("{:?}", Replier::new(s.clone()).unwrap()),
    ] {
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    let shown = format!("{s:?}");
    assert!(
        shown.contains("mission.bsky.social") && shown.contains("https://api.x.com"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn only_configured_platforms_can_reply() {
    let r = Replier::new(all()).unwrap();
    assert!(Platform::ALL.iter().all(|p| r.can_reply(*p)));
    let only_mastodon = Replier::new(Settings {
        bluesky: None,
        x: None,
        ..all()
    })
    .unwrap();
    assert!(only_mastodon.can_reply(Platform::Mastodon));
    assert!(!only_mastodon.can_reply(Platform::Bluesky));
    assert!(!only_mastodon.can_reply(Platform::X));
    let none = Replier::new(Settings::default()).unwrap();
    assert!(Platform::ALL.iter().all(|p| !none.can_reply(*p)));
    assert_eq!(Settings::default().timeout, Duration::from_secs(15));
}

#[test]
fn plain_http_and_blank_credentials_are_refused() {
    let mut s = all();
    s.mastodon.as_mut().unwrap().instance = "http://mastodon.social".into();
    assert!(matches!(
        Replier::new(s),
        Err(ReplyError::Insecure {
            platform: Platform::Mastodon,
            ..
        })
    ));
    let mut s = all();
    s.x.as_mut().unwrap().user_token = " ".into();
    let e = Replier::new(s).unwrap_err();
    assert!(
        matches!(
            e,
            ReplyError::Blank {
                platform: Platform::X,
                field: "user_token"
            }
        ),
        "{e}"
    );
    let mut s = all();
    s.bluesky.as_mut().unwrap().pds = "http://127.0.0.1:9".into();
    assert!(Replier::new(s).is_ok(), "loopback is allowed (local fakes)");
}
