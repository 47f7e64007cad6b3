//! Who may use the desk and what they may do: a users file of argon2 hashes with each
//! person's [`Role`] (`name:role:$argon2id$…`, one per line — a line `name:$argon2id$…`
//! without a role is an `agent` — written by [`add_user`], read again when it changes)
//! and/or a shared token read from an environment variable; what a session is ([`Session`],
//! [`SessionPolicy`]; the sessions themselves live in the desk's database under
//! [`session_key`], never their ids); and the login rate limit ([`Failures`], per client and
//! user name, bounded). With no method configured the desk serves loopback only, to the local
//! user. The shared token's holders and the local user are leads (they run the desk).
//!
//! Secrets are never logged: a failed login names the user, not the password or token.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per client address in [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The shortest shared token accepted (it is guessable otherwise).
pub const MIN_TOKEN: usize = 32;

/// What a person may do at the desk, each role everything the one before may do:
/// a `viewer` reads (the mission's scientists), an `agent` decides, takes posts and replies,
/// a `lead` also gives posts to teammates, edits saved answers and manages the team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Agent,
    Lead,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Agent, Role::Lead];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Lead => "lead",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s).ok_or_else(|| format!("role {s:?}: use viewer, agent or lead"))
    }
}

/// A person in the users file: their password's argon2 PHC string and their role.
#[derive(Debug, Clone, PartialEq)]
struct User {
    hash: String,
    role: Role,
}

/// The suffix a shared-token login's name carries (no file user's name can: no spaces).
pub const TOKEN_SUFFIX: &str = " (token)";

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

/// The login methods configured. The users file is read again when it changes (a password
/// changed or a user removed by `flagship desk user …` holds at once, without a restart).
#[derive(Default)]
pub struct Methods {
    /// The users file, if one is configured, and when it was last read (its modification
    /// time and length).
    file: Option<(PathBuf, Mutex<Option<Stamp>>)>,
    /// name → their hash and role.
    users: RwLock<HashMap<String, User>>,
    token: Option<String>,
    /// People whose sessions must end (see [`Methods::take_changed`]).
    changed: Mutex<Vec<String>>,
}

impl Methods {
    /// The methods the config names: the users file (`users`, if set) and the token in the
    /// variable `token_env` (if set; it must then hold one).
    pub fn load(users: Option<&Path>, token_env: Option<&str>) -> Result<Methods, AuthError> {
        let mut m = Methods::default();
        if let Some(path) = users {
            m.users = RwLock::new(read_users(path)?);
            m.file = Some((path.to_owned(), Mutex::new(stamp(path))));
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

    /// Methods from values (tests, embedding): name → argon2 hash, every one an `agent`.
    pub fn new(users: HashMap<String, String>, token: Option<String>) -> Methods {
        Methods::with_roles(
            users
                .into_iter()
                .map(|(n, h)| (n, (h, Role::Agent)))
                .collect(),
            token,
        )
    }

    /// Methods from values: name → (argon2 hash, role).
    pub fn with_roles(users: HashMap<String, (String, Role)>, token: Option<String>) -> Methods {
        Methods {
            file: None,
            users: RwLock::new(
                users
                    .into_iter()
                    .map(|(n, (hash, role))| (n, User { hash, role }))
                    .collect(),
            ),
            token,
            changed: Mutex::default(),
        }
    }

    /// The role of `user` as a session names them: a file user's from the file, a token
    /// holder's (`NAME (token)`) and — with no login method — the local user's `lead`;
    /// `None` for a name the desk no longer knows (removed: their sessions end).
    pub fn role(&self, user: &str) -> Option<Role> {
        if !self.any() {
            return Some(Role::Lead);
        }
        if user.ends_with(TOKEN_SUFFIX) {
            return self.token.is_some().then_some(Role::Lead);
        }
        self.users().get(user).map(|u| u.role)
    }

    /// The file's users and their roles, by name.
    pub fn team(&self) -> Vec<(String, Role)> {
        let mut t: Vec<(String, Role)> = self
            .users()
            .iter()
            .map(|(n, u)| (n.clone(), u.role))
            .collect();
        t.sort();
        t
    }

    /// Whether any method is configured (else: loopback only, no login). A configured users
    /// file counts even while it names nobody.
    pub fn any(&self) -> bool {
        self.file.is_some() || !self.users().is_empty() || self.token.is_some()
    }

    fn users(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, User>> {
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the users file again if it changed since it was last read (blocking: a file);
    /// the people removed, or whose role or password changed, wait in
    /// [`Methods::take_changed`] — their sessions must end. A file that no longer reads keeps
    /// the users last read, and says so in the log.
    pub fn refresh(&self) {
        let changed = self.reread();
        if !changed.is_empty() {
            self.changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(changed);
        }
    }

    /// The people removed, or whose role or password changed, since this was last asked.
    pub fn take_changed(&self) -> Vec<String> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts people back among the changed (their sessions could not be ended yet).
    pub fn requeue(&self, users: Vec<String>) {
        self.changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(users);
    }

    fn reread(&self) -> Vec<String> {
        let Some((path, seen)) = &self.file else {
            return Vec::new();
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(path);
        if now == *seen {
            return Vec::new();
        }
        match read_users(path) {
            Ok(users) => {
                let mut held = self.users.write().unwrap_or_else(|e| e.into_inner());
                let mut changed: Vec<String> = held
                    .iter()
                    .filter(|(n, u)| users.get(*n) != Some(*u))
                    .map(|(n, _)| n.clone())
                    .collect();
                changed.sort();
                *held = users;
                *seen = now;
                tracing::info!(path = %path.display(), changed = changed.len(), "desk: users file read again");
                changed
            }
            Err(e) => {
                tracing::error!("desk: {e}; the users read before stay");
                Vec::new()
            }
        }
    }

    /// The configured token's fingerprint (the first 16 hex digits of its SHA-256; the token
    /// itself is never stored): a changed token ends the sessions opened with the old one.
    pub fn token_fingerprint(&self) -> Option<String> {
        self.token
            .as_deref()
            .map(|t| session_key(t)[..16].to_owned())
    }

    /// Whether `token` is the configured token (constant time).
    pub fn token_ok(&self, token: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }

    /// A login with the shared token (fast: no argon2): `NAME (token)` for a valid name that
    /// is no file user's (compared without case), when `secret` is the token.
    pub fn token_login(&self, name: &str, secret: &str) -> Option<String> {
        let taken = self.users().keys().any(|u| u.eq_ignore_ascii_case(name));
        (self.token_ok(secret) && valid_name(name) && !taken)
            .then(|| format!("{name}{TOKEN_SUFFIX}"))
    }

    /// Checks a login (slow on purpose: argon2, also for names not in the file, so the time
    /// taken tells no name apart) and returns who it is: a user in the file with their
    /// password, or — with the shared token — `NAME (token)`, for a name that is no file
    /// user's (compared without case), so the audit never shows a token holder as a user.
    /// Blocking: reads the users file again if it changed.
    pub fn verify(&self, name: &str, secret: &str) -> Option<String> {
        self.refresh();
        let argon = |hash: &str| {
            PasswordHash::new(hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
        };
        let hash = self.users().get(name).map(|u| u.hash.clone());
        if let Some(hash) = hash {
            return argon(&hash).then(|| name.to_owned());
        }
        let _ = argon(dummy_hash());
        self.token_login(name, secret)
    }
}

/// A users file's modification time and length: what tells that it changed.
type Stamp = (std::time::SystemTime, u64);

/// The users file's [`Stamp`], if it reads.
fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
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

/// A user name: letters, digits, `.`, `_`, `-`, `@`, at most 64 bytes — and not `token`,
/// the name the bearer token's actions are recorded under.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.eq_ignore_ascii_case("token")
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn read_users(path: &Path) -> Result<HashMap<String, User>, AuthError> {
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
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| bad("expected name:role:$argon2id$…".into()))?;
        if !valid_name(name) {
            return Err(bad(format!("user name {name:?} is not valid")));
        }
        // `name:$argon2id$…` (before roles): an agent.
        let (role, hash) = match rest.split_once(':') {
            Some((role, hash)) if !rest.starts_with('$') => (
                Role::parse(role).ok_or_else(|| {
                    bad(format!(
                        "user {name}: role {role:?} is not viewer, agent or lead"
                    ))
                })?,
                hash,
            ),
            _ => (Role::Agent, rest),
        };
        PasswordHash::new(hash)
            .map_err(|e| bad(format!("user {name}: not an argon2 hash ({e})")))?;
        let user = User {
            hash: hash.to_owned(),
            role,
        };
        if users.insert(name.to_owned(), user).is_some() {
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

/// Adds `name` with a hash of `password` in the users file at `path` (created if missing;
/// written to a temporary name and renamed, mode 0600), or replaces their password: with
/// `role`, else the role they had (a new user: `agent`).
pub fn add_user(
    path: &Path,
    name: &str,
    password: &str,
    role: Option<Role>,
) -> Result<(), AuthError> {
    if !valid_name(name) {
        return Err(AuthError::BadName(name.to_owned()));
    }
    let hash = hash_password(password)?;
    let role = role.or_else(|| role_in(path, name)).unwrap_or(Role::Agent);
    let mut out = users_but(path, name)?.0;
    out.push_str(&format!("{name}:{role}:{hash}\n"));
    write_users(path, out)
}

/// Gives `name` `role` in the users file at `path`; whether they are there (a file without
/// them is left as it is).
pub fn set_role(path: &Path, name: &str, role: Role) -> Result<bool, AuthError> {
    let users = match read_users(path) {
        Ok(u) => u,
        Err(AuthError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let Some(user) = users.get(name) else {
        return Ok(false);
    };
    let mut out = users_but(path, name)?.0;
    out.push_str(&format!("{name}:{role}:{}\n", user.hash));
    write_users(path, out)?;
    Ok(true)
}

/// `name`'s role from their own line of the users file at `path` (other lines are not
/// read: a bad one elsewhere never changes this person's role); `None` when they have no
/// line, or it names no role it can read.
fn role_in(path: &Path, name: &str) -> Option<Role> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))?;
    if rest.starts_with('$') {
        return Some(Role::Agent);
    }
    Role::parse(rest.split_once(':')?.0)
}

/// Removes `name` from the users file at `path`; whether it was there (a file without it is
/// left as it is).
pub fn remove_user(path: &Path, name: &str) -> Result<bool, AuthError> {
    let (out, found) = users_but(path, name)?;
    if found {
        write_users(path, out)?;
    }
    Ok(found)
}

/// The users file's lines but `name`'s (a missing file: none), and whether `name` had one.
fn users_but(path: &Path, name: &str) -> Result<(String, bool), AuthError> {
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
    let mut found = false;
    let out = existing
        .lines()
        .filter(|l| {
            let theirs = l.split_once(':').is_some_and(|(n, _)| n == name);
            found |= theirs;
            !theirs
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Ok((out, found))
}

/// Writes the users file: a temporary name beside it, mode 0600, then renamed.
fn write_users(path: &Path, text: String) -> Result<(), AuthError> {
    let write = |e: flagship_store::fs::WriteError| AuthError::Write {
        path: e.path,
        source: e.source,
    };
    let io = |source| AuthError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = flagship_store::fs::temp_beside(path).map_err(write)?;
    std::fs::write(tmp.path(), text).map_err(io)?;
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

/// A logged-in person: who, and the CSRF token their page's requests carry. The session's
/// id lives in the cookie only; the database keeps its SHA-256 ([`session_key`]).
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    /// What they may do: read from the users file (or the token) at each request, so a
    /// changed role holds at once; the database never stores it.
    pub role: Role,
}

/// How long sessions last and how many one user holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionPolicy {
    /// A session without a request (or an open page) this long ends.
    pub idle: Duration,
    /// A session ends this long after it opened, whatever happens.
    pub max: Duration,
    /// Sessions a user holds at most: a new one ends their oldest.
    pub per_user: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(3600),
            max: SESSION_TTL,
            per_user: 10,
        }
    }
}

/// The key a session is stored under: the SHA-256 of its id, as hex (a stolen database
/// names no cookie).
pub fn session_key(id: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Keys the failure map holds at most: past it, a new key pushes out the oldest.
pub const FAILURE_KEYS: usize = 10_000;

/// Failed logins and bearer tokens, per (client address, user name) — the name is empty for
/// a bearer token. A fixed window of [`FAILURE_WINDOW`] from a key's first failure; at most
/// [`FAILURE_KEYS`] keys, expired ones dropped oldest first: every attempt is O(1)
/// (amortised), under one short lock.
pub struct Failures {
    inner: Mutex<FailureMap>,
    capacity: usize,
}

type FailureKey = (IpAddr, String);

#[derive(Default)]
struct FailureMap {
    counts: HashMap<FailureKey, (usize, Instant)>,
    /// The keys in the order their windows opened (so the oldest expire first).
    order: VecDeque<FailureKey>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures::with_capacity(FAILURE_KEYS)
    }
}

impl Failures {
    /// A map of at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Failures {
        Failures {
            inner: Mutex::new(FailureMap::default()),
            capacity: capacity.max(1),
        }
    }

    fn key(client: IpAddr, name: &str) -> FailureKey {
        // A name is a form field: bounded before it is kept.
        (client, name.chars().take(64).collect())
    }

    /// Takes one attempt for `name` from `client` — counted as a failure until
    /// [`Failures::succeeded`] returns it — if that pair had fewer than [`MAX_FAILURES`] in
    /// its window (parallel attempts count at once); else the seconds until it may try again.
    pub fn attempt(&self, client: IpAddr, name: &str) -> Result<(), u64> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some(k) = m.order.front() {
            match m.counts.get(k) {
                Some((_, since)) if now.duration_since(*since) < FAILURE_WINDOW => break,
                _ => {
                    let k = m.order.pop_front().expect("a front");
                    m.counts.remove(&k);
                }
            }
        }
        let key = Failures::key(client, name);
        if let Some((count, since)) = m.counts.get_mut(&key) {
            if *count >= MAX_FAILURES {
                let wait = FAILURE_WINDOW.saturating_sub(now.duration_since(*since));
                return Err(wait.as_secs().max(1));
            }
            *count += 1;
            return Ok(());
        }
        if m.counts.len() >= self.capacity
            && let Some(old) = m.order.pop_front()
        {
            m.counts.remove(&old);
        }
        m.counts.insert(key.clone(), (1, now));
        m.order.push_back(key);
        Ok(())
    }

    /// The attempt taken for (`client`, `name`) succeeded: it no longer counts (earlier
    /// failures do).
    pub fn succeeded(&self, client: IpAddr, name: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, _)) = m.counts.get_mut(&Failures::key(client, name)) {
            *count = count.saturating_sub(1);
        }
    }

    /// Keys held now (tests, the bound).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        add_user(&path, "ana", "correct horse", Some(Role::Lead)).unwrap();
        add_user(&path, "bo", "battery staple", None).unwrap();
        add_user(&path, "ana", "new password", None).unwrap(); // replaced, not added
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("new password"));
        let m = Methods::load(Some(&path), None).unwrap();
        assert_eq!(m.verify("ana", "new password").as_deref(), Some("ana"));
        assert!(m.verify("ana", "correct horse").is_none());
        assert!(m.verify("bo", "new password").is_none());
        assert!(m.verify("nobody", "battery staple").is_none());
        // A new password keeps the role; a new user is an agent.
        assert_eq!(m.role("ana"), Some(Role::Lead));
        assert_eq!(m.role("bo"), Some(Role::Agent));
        assert_eq!(m.role("nobody"), None);
        assert!(set_role(&path, "bo", Role::Viewer).unwrap());
        assert!(!set_role(&path, "nobody", Role::Viewer).unwrap());
        m.refresh();
        assert_eq!(m.take_changed(), vec!["bo".to_owned()], "bo's sessions end");
        assert!(m.take_changed().is_empty());
        assert_eq!(m.role("bo"), Some(Role::Viewer));
        assert_eq!(m.verify("bo", "battery staple").as_deref(), Some("bo"));
        assert!(matches!(
            add_user(&path, "a b", "x", None),
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
        assert!(e.contains("line 1: expected name:role:$argon2id$"), "{e}");
        std::fs::write(
            &path,
            "ana:boss:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA\n",
        )
        .unwrap();
        let e = Methods::load(Some(&path), None).err().unwrap().to_string();
        assert!(
            e.contains("line 1: user ana: role \"boss\" is not viewer, agent or lead"),
            "{e}"
        );
        // A line from before roles reads as an agent.
        let old = format!("carla:{}\n", hash_password("pw-of-carla-1").unwrap());
        std::fs::write(&path, old).unwrap();
        let m = Methods::load(Some(&path), None).unwrap();
        assert_eq!(m.role("carla"), Some(Role::Agent));
        assert_eq!(m.verify("carla", "pw-of-carla-1").as_deref(), Some("carla"));
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
        // The token's holders and the local user (no login method) lead; a file user's
        // role is theirs.
        assert_eq!(m.role("carla (token)"), Some(Role::Lead));
        assert_eq!(m.role("Ana"), Some(Role::Agent));
        assert_eq!(Methods::default().role("me"), Some(Role::Lead));
        let no_token = Methods::new(
            HashMap::from([("bo".to_owned(), hash_password("pw-of-bo-1234").unwrap())]),
            None,
        );
        assert_eq!(no_token.role("carla (token)"), None);
        assert_eq!(no_token.role("bo"), Some(Role::Agent));
    }

    #[test]
    fn failures_count_per_client_and_name_and_stay_bounded() {
        let f = Failures::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(f.attempt(ip, "ana").is_ok());
        }
        assert!(
            f.attempt(ip, "ana").is_err(),
            "parallel attempts count at once"
        );
        // Another name from the same client, and the same name from another client, go on.
        assert!(f.attempt(ip, "bo").is_ok());
        assert!(f.attempt("10.0.0.1".parse().unwrap(), "ana").is_ok());
        f.succeeded("10.0.0.1".parse().unwrap(), "ana");

        // Past its capacity the map drops its oldest key: it never grows.
        let small = Failures::with_capacity(100);
        for i in 0..10_000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert!(small.attempt(client, "ana").is_ok());
        }
        assert_eq!(small.len(), 100);
        let (id, s) = (
            "a".repeat(64),
            Session {
                user: "ana".into(),
                csrf: "t".into(),
                role: Role::Agent,
            },
        );
        assert!(csrf_ok(&s, "t") && !csrf_ok(&s, "forged"));
        assert_eq!(session_key(&id).len(), 64);
        assert_ne!(session_key(&id), id);
    }

    #[test]
    fn the_token_logs_in_without_argon2_and_never_as_a_file_user() {
        let users = HashMap::from([("Ana".to_owned(), hash_password("pw-of-ana-123").unwrap())]);
        let m = Methods::new(users, Some("s3cret-token".into()));
        assert_eq!(
            m.token_login("carla", "s3cret-token").as_deref(),
            Some("carla (token)")
        );
        assert!(m.token_login("ana", "s3cret-token").is_none());
        assert!(m.token_login("carla", "wrong").is_none());
    }

    #[test]
    fn a_changed_users_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        add_user(&path, "ana", "correct horse", None).unwrap();
        let m = Methods::load(Some(&path), None).unwrap();
        assert_eq!(m.verify("ana", "correct horse").as_deref(), Some("ana"));
        assert!(remove_user(&path, "ana").unwrap());
        assert!(!remove_user(&path, "ana").unwrap());
        assert!(
            m.verify("ana", "correct horse").is_none(),
            "removed: no login"
        );
        assert!(
            m.any(),
            "a configured users file keeps logins on, even empty"
        );
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
