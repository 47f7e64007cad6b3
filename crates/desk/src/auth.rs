//! Who may use the desk: a users file of argon2 hashes (`name:$argon2id$…`, one per line,
//! written by [`add_user`]) and/or a shared token read from an environment variable; the
//! sessions they open (random ids in an `HttpOnly; SameSite=Strict` cookie, each with its own
//! CSRF token); and the login rate limit. With no method configured the desk serves loopback
//! only, to the local user.
//!
//! Secrets are never logged: a failed login names the user, not the password or token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per client address in [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The shortest shared token accepted (it is guessable otherwise).
pub const MIN_TOKEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("users file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("users file {path}: line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot write users file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("desk.token_env names {0}, which is not set (or empty)")]
    NoToken(String),
    #[error("the token in {var} has {len} characters; a desk token needs at least {MIN_TOKEN}")]
    ShortToken { var: String, len: usize },
    #[error("user name {0:?}: use letters, digits, `.`, `_`, `-` or `@`")]
    BadName(String),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// The login methods configured.
#[derive(Default)]
pub struct Methods {
    /// name → argon2 PHC string.
    users: HashMap<String, String>,
    token: Option<String>,
}

impl Methods {
    /// The methods the config names: the users file (`users`, if set) and the token in the
    /// variable `token_env` (if set; it must then hold one).
    pub fn load(users: Option<&Path>, token_env: Option<&str>) -> Result<Methods, AuthError> {
        let mut m = Methods::default();
        if let Some(path) = users {
            m.users = read_users(path)?;
        }
        if let Some(var) = token_env {
            let token = std::env::var(var).unwrap_or_default();
            if token.trim().is_empty() {
                return Err(AuthError::NoToken(var.to_owned()));
            }
            if token.trim().chars().count() < MIN_TOKEN {
                return Err(AuthError::ShortToken {
                    var: var.to_owned(),
                    len: token.trim().chars().count(),
                });
            }
            m.token = Some(token.trim().to_owned());
        }
        Ok(m)
    }

    /// Methods from values (tests, embedding).
    pub fn new(users: HashMap<String, String>, token: Option<String>) -> Methods {
        Methods { users, token }
    }

    /// Whether any method is configured (else: loopback only, no login).
    pub fn any(&self) -> bool {
        !self.users.is_empty() || self.token.is_some()
    }

    /// Whether `token` is the configured token (constant time).
    pub fn token_ok(&self, token: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }

    /// Checks a login (slow on purpose: argon2, also for names not in the file, so the time
    /// taken tells no name apart) and returns who it is: a user in the file with their
    /// password, or — with the shared token — `NAME (token)`, for a name that is no file
    /// user's (compared without case), so the audit never shows a token holder as a user.
    pub fn verify(&self, name: &str, secret: &str) -> Option<String> {
        let argon = |hash: &str| {
            PasswordHash::new(hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
        };
        if let Some(hash) = self.users.get(name) {
            return argon(hash).then(|| name.to_owned());
        }
        let _ = argon(dummy_hash());
        let taken = self.users.keys().any(|u| u.eq_ignore_ascii_case(name));
        (valid_name(name) && !taken && self.token_ok(secret)).then(|| format!("{name} (token)"))
    }
}

/// A hash no password matches, verified for unknown names (equal time).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).expect("argon2 hashes"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A user name as logs may show it: valid names as they are, anything else replaced.
pub fn loggable(name: &str) -> &str {
    if valid_name(name) {
        name
    } else {
        "(invalid name)"
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn read_users(path: &Path) -> Result<HashMap<String, String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: String| AuthError::Line {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected name:$argon2id$…".into()))?;
        if !valid_name(name) {
            return Err(bad(format!("user name {name:?} is not valid")));
        }
        PasswordHash::new(hash)
            .map_err(|e| bad(format!("user {name}: not an argon2 hash ({e})")))?;
        if users.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(bad(format!("user {name} appears twice")));
        }
    }
    Ok(users)
}

/// An argon2id hash of `password` (a fresh random salt), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Adds (or replaces) `name` with a hash of `password` in the users file at `path`
/// (created if missing; written to a temporary name and renamed, mode 0600).
pub fn add_user(path: &Path, name: &str, password: &str) -> Result<(), AuthError> {
    if !valid_name(name) {
        return Err(AuthError::BadName(name.to_owned()));
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let hash = hash_password(password)?;
    let mut out: String = existing
        .lines()
        .filter(|l| l.split_once(':').is_none_or(|(n, _)| n != name))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{name}:{hash}\n"));
    let write = |e: flagship_store::fs::WriteError| AuthError::Write {
        path: e.path,
        source: e.source,
    };
    let io = |source| AuthError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = flagship_store::fs::temp_beside(path).map_err(write)?;
    std::fs::write(tmp.path(), out).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    flagship_store::fs::persist(tmp, path).map_err(write)?;
    Ok(())
}

/// A random token: 32 bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    created: Instant,
}

/// Open sessions, by id (kept in memory: a restart asks people to log in again).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Sessions {
    /// Opens a session for `user`: its id (the cookie's value).
    pub fn open(&self, user: &str) -> (String, Session) {
        let id = random_token();
        let s = Session {
            user: user.to_owned(),
            csrf: random_token(),
            created: Instant::now(),
        };
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        open.insert(id.clone(), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let open = self.open.lock().expect("sessions lock");
        open.get(id)
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .cloned()
    }

    pub fn close(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(id);
    }

    /// Takes one attempt for `ip` — counted as a failure until [`Sessions::succeeded`]
    /// returns it — if it had fewer than [`MAX_FAILURES`] in the window (parallel attempts
    /// count at once); else the seconds until it may try again. Used for logins and for
    /// bearer tokens alike.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        let mut f = self.failures.lock().expect("failures lock");
        if f.len() > 10_000 {
            f.retain(|_, l| l.iter().any(|t| t.elapsed() < FAILURE_WINDOW));
        }
        let list = f.entry(ip).or_default();
        list.retain(|t| t.elapsed() < FAILURE_WINDOW);
        if list.len() >= MAX_FAILURES {
            let wait = FAILURE_WINDOW.saturating_sub(list[0].elapsed());
            return Err(wait.as_secs().max(1));
        }
        list.push(Instant::now());
        Ok(())
    }

    /// The attempt taken for `ip` succeeded: it no longer counts (earlier failures do).
    pub fn succeeded(&self, ip: IpAddr) {
        if let Some(l) = self.failures.lock().expect("failures lock").get_mut(&ip) {
            l.pop();
        }
    }
}

/// Whether the CSRF token sent matches the session's (constant time).
pub fn csrf_ok(session: &Session, sent: &str) -> bool {
    csrf_ok_str(&session.csrf, sent)
}

/// Whether two tokens are equal (constant time).
pub fn csrf_ok_str(expected: &str, sent: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected.as_bytes(), sent.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        add_user(&path, "ana", "correct horse").unwrap();
        add_user(&path, "bo", "battery staple").unwrap();
        add_user(&path, "ana", "new password").unwrap(); // replaced, not added
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("new password"));
        let m = Methods::load(Some(&path), None).unwrap();
        assert_eq!(m.verify("ana", "new password").as_deref(), Some("ana"));
        assert!(m.verify("ana", "correct horse").is_none());
        assert!(m.verify("bo", "new password").is_none());
        assert!(m.verify("nobody", "battery staple").is_none());
        assert!(matches!(
            add_user(&path, "a b", "x"),
            Err(AuthError::BadName(_))
        ));

        std::fs::write(&path, "ana:$argon2id$v=19$m=19456,t=2,p=1$bad\n").unwrap();
        let e = Methods::load(Some(&path), None).err().unwrap().to_string();
        assert!(
            e.contains("users.txt: line 1: user ana: not an argon2 hash"),
            "{e}"
        );
        std::fs::write(&path, "just-a-name\n").unwrap();
        let e = Methods::load(Some(&path), None).err().unwrap().to_string();
        assert!(e.contains("line 1: expected name:$argon2id$"), "{e}");
    }

    #[test]
    fn token_logins_and_the_rate_limit() {
        let users = HashMap::from([("Ana".to_owned(), hash_password("pw-of-ana-123").unwrap())]);
        let m = Methods::new(users, Some("s3cret-token".into()));
        assert!(m.any());
        assert_eq!(
            m.verify("carla", "s3cret-token").as_deref(),
            Some("carla (token)")
        );
        assert!(m.verify("carla", "s3cret-tokem").is_none());
        assert!(m.verify("", "s3cret-token").is_none());
        // A token holder cannot sign as a user of the file, in any case.
        assert!(m.verify("ana", "s3cret-token").is_none());
        assert!(m.verify("Ana", "s3cret-token").is_none());
        assert!(!Methods::default().any());
        assert!(Methods::default().verify("x", "").is_none());

        let s = Sessions::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(s.attempt(ip).is_ok());
        }
        assert!(s.attempt(ip).is_err(), "parallel attempts count at once");
        assert!(s.attempt("10.0.0.1".parse().unwrap()).is_ok());
        s.succeeded("10.0.0.1".parse().unwrap());
        let (id, session) = s.open("carla");
        assert_eq!(s.get(&id).unwrap().user, "carla");
        assert!(csrf_ok(&session, &session.csrf));
        assert!(!csrf_ok(&session, "forged"));
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn an_unset_or_short_token_is_an_error() {
        let e = Methods::load(None, Some("FLAGSHIP_TEST_SURELY_UNSET_TOKEN"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("FLAGSHIP_TEST_SURELY_UNSET_TOKEN"),
            "{e}"
        );
        // HOME is set, and shorter than a token must be (or long enough: then it loads).
        if let Err(e) = Methods::load(None, Some("HOME")) {
            assert!(e.to_string().contains("needs at least 32"), "{e}");
        }
    }
}
