//! etcd's authentication and authorisation, as replicated state: users (with bcrypt
//! password hashes), roles with read, write and readwrite permissions on keys, key ranges
//! and prefixes, the `root` user and role, and whether authentication is enabled.
//!
//! Every change is a command in the log, applied in order on every replica, and checked
//! there: who may make it (with authentication enabled, only a user holding the `root`
//! role), and whether it is consistent (a user named twice, a role that does not exist).
//! Writes to keys carry the name of the user who sent them and the auth revision their
//! credential was issued at; they are checked against the permissions as they stand when
//! the entry is applied, so a permission revoked before the write commits stops it on every
//! replica alike. Reads are checked at the node serving them, after it caught up with the
//! leader.
//!
//! **Tokens.** `Authenticate` answers a token any node of the cluster accepts without
//! asking the others: the user name, the auth revision, the time of issue and an HMAC of
//! them under a key drawn when authentication was enabled (part of the replicated state,
//! never served). A token stops working after its time to live (`--auth-token-ttl`), and
//! as soon as any user, role or permission changes (etcd's "revision of auth store is old",
//! on which etcd's clients authenticate again). Passwords are hashed by the node that
//! receives them, before the request enters the log: the log and snapshots hold hashes,
//! never passwords.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::KvError;
use crate::proto::authpb::{permission, Role, User, UserAddOptions};
use crate::proto::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use crate::proto::internal::{AuthEnableRequest, AuthState};

/// The name of the user and the role with every permission.
pub const ROOT: &str = "root";

/// Bytes of the key that signs tokens.
pub const TOKEN_KEY_BYTES: usize = 32;

/// Longest user or role name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

/// Largest bcrypt cost accepted for `--bcrypt-cost` (etcd's bound); the smallest is 4.
pub const BCRYPT_COST_MAX: u32 = 31;

/// Who sent a request, as the node that received it established.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInfo {
    /// The user name; empty when the request carried no credential.
    pub user: String,
    /// The auth revision the credential was issued at (0 for none).
    pub revision: u64,
}

/// The replicated authentication state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthStore {
    pub(crate) enabled: bool,
    /// Advanced by every change of users, roles, permissions or enablement.
    pub(crate) revision: u64,
    /// The key that signs tokens; drawn anew at every enable.
    pub(crate) token_key: Vec<u8>,
    /// Users by name; `password` holds the bcrypt hash.
    pub(crate) users: BTreeMap<String, User>,
    /// Roles by name, each permission list sorted by key and range end.
    pub(crate) roles: BTreeMap<String, Role>,
}

// The protobuf types hold no floating-point fields: equality is total.
impl Eq for AuthStore {}

/// The kind of access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading keys.
    Read,
    /// Writing keys.
    Write,
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_name(name: &str, empty: KvError) -> Result<(), KvError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(KvError::AuthNameTooLong {
            max: NAME_BYTES_MAX,
        });
    }
    Ok(())
}

/// The end of the interval `[key, range_end)` a permission or request covers, with etcd's
/// conventions: an empty `range_end` is the single key, `"\0"` every key from `key` on
/// (`None`: no end).
fn interval_end(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            Some(end)
        }
        [0] => None,
        end => Some(end.to_vec()),
    }
}

/// Whether the union of `intervals` covers `[start, end)`.
fn covers(
    mut intervals: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    start: &[u8],
    end: Option<&[u8]>,
) -> bool {
    intervals.sort();
    let mut reached: Vec<u8> = start.to_vec();
    for (from, to) in intervals {
        if from.as_slice() > reached.as_slice() {
            break;
        }
        match to {
            None => return true,
            Some(to) if to > reached => reached = to,
            Some(_) => {}
        }
        if end.is_some_and(|end| reached.as_slice() >= end) {
            return true;
        }
    }
    end.is_some_and(|end| reached.as_slice() >= end)
}

impl AuthStore {
    /// Whether authentication is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn bump(&mut self) {
        self.revision += 1;
    }

    fn has_root_role(user: &User) -> bool {
        user.roles.iter().any(|r| r == ROOT)
    }

    /// Checks that `info` names a user who exists, with a credential of the current auth
    /// revision.
    fn user_of(&self, info: &AuthInfo) -> Result<&User, KvError> {
        if info.user.is_empty() {
            return Err(KvError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(KvError::AuthOldRevision);
        }
        self.users.get(&info.user).ok_or(KvError::UserNotFound)
    }

    /// May `info` manage users, roles and authentication? (Always, while it is disabled.)
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        if Self::has_root_role(self.user_of(info)?) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    /// May `info` read or write the keys `[key, range_end)` (etcd's conventions for
    /// `range_end`)?
    pub fn check_keys(
        &self,
        info: &AuthInfo,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.user_of(info)?;
        if Self::has_root_role(user) {
            return Ok(());
        }
        let wanted = |t: i32| match access {
            Access::Read => {
                t == permission::Type::Read as i32 || t == permission::Type::Readwrite as i32
            }
            Access::Write => {
                t == permission::Type::Write as i32 || t == permission::Type::Readwrite as i32
            }
        };
        let intervals = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.key_permission.iter())
            .filter(|p| wanted(p.perm_type))
            .map(|p| (p.key.clone(), interval_end(&p.key, &p.range_end)))
            .collect();
        // etcd reads a range from "\0" as every key.
        let start: &[u8] = if key == [0] && range_end == [0] {
            &[]
        } else {
            key
        };
        let end = interval_end(key, range_end);
        if covers(intervals, start, end.as_deref()) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    /// May `info` be authenticated at all (a user that exists, a current credential)?
    pub fn check_authenticated(&self, info: &AuthInfo) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        self.user_of(info).map(|_| ())
    }

    /// The user named `name`, with its bcrypt hash.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every user name, ascending.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Every role name, ascending.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// May `info` see user `name`? Administrators see every user, a user itself.
    pub fn check_user_visible(&self, info: &AuthInfo, name: &str) -> Result<(), KvError> {
        match self.check_admin(info) {
            Err(KvError::PermissionDenied) if info.user == name => Ok(()),
            other => other,
        }
    }

    /// May `info` see role `name`? Administrators see every role, a user the roles it has.
    pub fn check_role_visible(&self, info: &AuthInfo, name: &str) -> Result<(), KvError> {
        match self.check_admin(info) {
            Err(KvError::PermissionDenied)
                if self
                    .users
                    .get(&info.user)
                    .is_some_and(|u| u.roles.iter().any(|r| r == name)) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    pub(crate) fn enable(
        &mut self,
        info: &AuthInfo,
        req: &AuthEnableRequest,
    ) -> Result<(), KvError> {
        if self.enabled {
            // etcd answers an enable of enabled authentication with success.
            return self.check_admin(info);
        }
        let root = self.users.get(ROOT).ok_or(KvError::RootUserNotExist)?;
        if !Self::has_root_role(root) {
            return Err(KvError::RootRoleNotExist);
        }
        if req.token_key.len() != TOKEN_KEY_BYTES {
            return Err(KvError::MalformedCommand {
                reason: format!(
                    "auth enable carries a token key of {} bytes, not {TOKEN_KEY_BYTES}",
                    req.token_key.len()
                ),
            });
        }
        self.enabled = true;
        self.token_key = req.token_key.clone();
        self.bump();
        Ok(())
    }

    pub(crate) fn disable(&mut self, info: &AuthInfo) -> Result<(), KvError> {
        self.check_admin(info)?;
        if self.enabled {
            self.enabled = false;
            self.token_key.clear();
            self.bump();
        }
        Ok(())
    }

    pub(crate) fn user_add(
        &mut self,
        info: &AuthInfo,
        req: &AuthUserAddRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        check_name(&req.name, KvError::UserEmpty)?;
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        if !no_password && req.hashed_password.is_empty() {
            return Err(KvError::PasswordEmpty);
        }
        if self.users.contains_key(&req.name) {
            return Err(KvError::UserAlreadyExist);
        }
        let user = User {
            name: req.name.as_bytes().to_vec(),
            password: if no_password {
                Vec::new()
            } else {
                req.hashed_password.as_bytes().to_vec()
            },
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        self.users.insert(req.name.clone(), user);
        self.bump();
        Ok(())
    }

    pub(crate) fn user_delete(
        &mut self,
        info: &AuthInfo,
        req: &AuthUserDeleteRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        if self.enabled && req.name == ROOT {
            return Err(KvError::InvalidAuthMgmt);
        }
        self.users.remove(&req.name).ok_or(KvError::UserNotFound)?;
        self.bump();
        Ok(())
    }

    pub(crate) fn user_change_password(
        &mut self,
        info: &AuthInfo,
        req: &AuthUserChangePasswordRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        let user = self.users.get_mut(&req.name).ok_or(KvError::UserNotFound)?;
        if req.hashed_password.is_empty() {
            return Err(KvError::PasswordEmpty);
        }
        user.password = req.hashed_password.as_bytes().to_vec();
        user.options = Some(UserAddOptions { no_password: false });
        self.bump();
        Ok(())
    }

    pub(crate) fn user_grant_role(
        &mut self,
        info: &AuthInfo,
        req: &AuthUserGrantRoleRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        // The root role holds every permission without being created.
        if req.role != ROOT && !self.roles.contains_key(&req.role) {
            return Err(KvError::RoleNotFound);
        }
        let user = self.users.get_mut(&req.user).ok_or(KvError::UserNotFound)?;
        if !user.roles.contains(&req.role) {
            user.roles.push(req.role.clone());
            user.roles.sort();
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn user_revoke_role(
        &mut self,
        info: &AuthInfo,
        req: &AuthUserRevokeRoleRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        if self.enabled && req.name == ROOT && req.role == ROOT {
            return Err(KvError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(&req.name).ok_or(KvError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|r| r != &req.role);
        if user.roles.len() == before {
            return Err(KvError::RoleNotGranted);
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn role_add(
        &mut self,
        info: &AuthInfo,
        req: &AuthRoleAddRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        check_name(&req.name, KvError::RoleEmpty)?;
        if self.roles.contains_key(&req.name) {
            return Err(KvError::RoleAlreadyExist);
        }
        let role = Role {
            name: req.name.as_bytes().to_vec(),
            key_permission: Vec::new(),
        };
        self.roles.insert(req.name.clone(), role);
        self.bump();
        Ok(())
    }

    pub(crate) fn role_delete(
        &mut self,
        info: &AuthInfo,
        req: &AuthRoleDeleteRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        if self.enabled && req.role == ROOT {
            return Err(KvError::InvalidAuthMgmt);
        }
        self.roles.remove(&req.role).ok_or(KvError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|r| r != &req.role);
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn role_grant_permission(
        &mut self,
        info: &AuthInfo,
        req: &AuthRoleGrantPermissionRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        let perm = req.perm.clone().ok_or(KvError::PermissionEmpty)?;
        if permission::Type::try_from(perm.perm_type).is_err() {
            return Err(KvError::PermissionEmpty);
        }
        let role = self.roles.get_mut(&req.name).ok_or(KvError::RoleNotFound)?;
        // A permission on the same keys replaces the one there, as in etcd.
        match role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                role.key_permission.push(perm);
                role.key_permission
                    .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            }
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn role_revoke_permission(
        &mut self,
        info: &AuthInfo,
        req: &AuthRoleRevokePermissionRequest,
    ) -> Result<(), KvError> {
        self.check_admin(info)?;
        let role = self.roles.get_mut(&req.role).ok_or(KvError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| !(p.key == req.key && p.range_end == req.range_end));
        if role.key_permission.len() == before {
            return Err(KvError::PermissionNotGranted);
        }
        self.bump();
        Ok(())
    }

    /// The state as a snapshot holds it.
    pub(crate) fn to_snapshot(&self) -> Option<AuthState> {
        if *self == AuthStore::default() {
            return None;
        }
        Some(AuthState {
            enabled: self.enabled,
            revision: self.revision,
            token_key: self.token_key.clone(),
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        })
    }

    /// The state a snapshot holds, checked.
    pub(crate) fn from_snapshot(state: Option<AuthState>) -> Result<AuthStore, String> {
        let Some(state) = state else {
            return Ok(AuthStore::default());
        };
        let mut store = AuthStore {
            enabled: state.enabled,
            revision: state.revision,
            token_key: state.token_key,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        };
        if store.enabled && store.token_key.len() != TOKEN_KEY_BYTES {
            return Err("authentication is enabled without a token key".into());
        }
        for user in state.users {
            let name = name_of(&user.name);
            if store.users.insert(name.clone(), user).is_some() {
                return Err(format!("user {name:?} twice"));
            }
        }
        for role in state.roles {
            let name = name_of(&role.name);
            if store.roles.insert(name.clone(), role).is_some() {
                return Err(format!("role {name:?} twice"));
            }
        }
        Ok(store)
    }

    /// Issues a token of `kind` for `user` at the current revision, valid from `now`.
    pub fn issue_token_of(
        &self,
        kind: &TokenKind,
        user: &str,
        now: SystemTime,
    ) -> Result<String, KvError> {
        match kind {
            TokenKind::Simple => Ok(self.issue_token(user, now)),
            TokenKind::Jwt(jwt) => jwt
                .issue(user, self.revision, now)
                .map_err(|reason| KvError::TokenIssue { reason }),
        }
    }

    /// The sender a token of `kind` names, checked as [`AuthStore::check_token`] checks
    /// simple ones (`ttl` bounds those; a JWT carries its own expiry).
    pub fn check_token_of(
        &self,
        kind: &TokenKind,
        token: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<AuthInfo, KvError> {
        match kind {
            TokenKind::Simple => self.check_token(token, ttl, now),
            TokenKind::Jwt(jwt) => {
                let info = jwt.check(token, now)?;
                if info.revision < self.revision {
                    return Err(KvError::AuthOldRevision);
                }
                Ok(info)
            }
        }
    }

    /// Issues a token for `user` at the current revision, valid from `now`.
    pub fn issue_token(&self, user: &str, now: SystemTime) -> String {
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let body = format!("{}.{}.{issued}", hex(user.as_bytes()), self.revision);
        format!("{body}.{}", hex(&self.sign(&body)))
    }

    fn sign(&self, body: &str) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.token_key);
        ring::hmac::sign(&key, body.as_bytes()).as_ref().to_vec()
    }

    /// The sender named by `token`, if this cluster issued it, it is younger than `ttl`
    /// at `now`, and authentication is enabled.
    pub fn check_token(
        &self,
        token: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<AuthInfo, KvError> {
        if !self.enabled {
            return Err(KvError::InvalidAuthToken);
        }
        let parse = || -> Option<(AuthInfo, u64)> {
            let (body, mac) = token.rsplit_once('.')?;
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.token_key);
            ring::hmac::verify(&key, body.as_bytes(), &unhex(mac)?).ok()?;
            let mut parts = body.split('.');
            let user = String::from_utf8(unhex(parts.next()?)?).ok()?;
            let revision = parts.next()?.parse().ok()?;
            let issued = parts.next()?.parse().ok()?;
            parts
                .next()
                .is_none()
                .then_some((AuthInfo { user, revision }, issued))
        };
        let (info, issued) = parse().ok_or(KvError::InvalidAuthToken)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.saturating_sub(issued) > ttl.as_secs() {
            return Err(KvError::InvalidAuthToken);
        }
        if info.revision < self.revision {
            return Err(KvError::AuthOldRevision);
        }
        Ok(info)
    }
}

/// How `Authenticate` makes tokens, and how members check them.
#[derive(Clone, Debug, Default)]
pub enum TokenKind {
    /// Signed by the cluster's own key (see the module documentation): etcd's `simple`.
    #[default]
    Simple,
    /// JSON Web Tokens signed with the operator's key pair: etcd's `jwt`.
    Jwt(Arc<JwtTokens>),
}

/// The claims of a JWT token, as etcd writes them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct JwtClaims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Issues and checks JWT tokens (etcd's `--auth-token jwt,pub-key=…,priv-key=…,
/// sign-method=…,ttl=…`): every member checks them with the public key; members with the
/// private key issue them.
pub struct JwtTokens {
    algorithm: jsonwebtoken::Algorithm,
    encoding: Option<jsonwebtoken::EncodingKey>,
    decoding: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("signs", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtTokens {
    /// Keys from PEM files' contents for `sign_method` (RS256/384/512, PS256/384/512,
    /// ES256/384); without a private key this member checks tokens but issues none.
    pub fn from_pem(
        sign_method: &str,
        public_pem: &[u8],
        private_pem: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<JwtTokens, String> {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
        let algorithm: Algorithm = sign_method
            .parse()
            .map_err(|_| format!("sign-method `{sign_method}` is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"))?;
        let rsa = matches!(
            algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        );
        let ec = matches!(algorithm, Algorithm::ES256 | Algorithm::ES384);
        if !rsa && !ec {
            return Err(format!(
                "sign-method `{sign_method}` needs a shared secret; use an RSA or ECDSA key pair"
            ));
        }
        let decoding = if rsa {
            DecodingKey::from_rsa_pem(public_pem)
        } else {
            DecodingKey::from_ec_pem(public_pem)
        }
        .map_err(|e| format!("pub-key: {e}"))?;
        let encoding = match private_pem {
            Some(pem) => Some(
                if rsa {
                    EncodingKey::from_rsa_pem(pem)
                } else {
                    EncodingKey::from_ec_pem(pem)
                }
                .map_err(|e| format!("priv-key: {e}"))?,
            ),
            None => None,
        };
        let tokens = JwtTokens {
            algorithm,
            encoding,
            decoding,
            ttl,
        };
        // A pair that does not belong together would issue tokens no member accepts.
        if tokens.encoding.is_some() {
            let probe = tokens.issue("probe", 0, SystemTime::now())?;
            tokens
                .check(&probe, SystemTime::now())
                .map_err(|_| "priv-key and pub-key are not one key pair".to_string())?;
        }
        Ok(tokens)
    }

    /// A token for `user` at auth `revision`, valid for the time to live from `now`.
    pub fn issue(&self, user: &str, revision: u64, now: SystemTime) -> Result<String, String> {
        let Some(key) = &self.encoding else {
            return Err("this member has no private key to sign tokens with (priv-key)".into());
        };
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = JwtClaims {
            username: user.to_string(),
            revision,
            exp: (issued + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.algorithm), &claims, key)
            .map_err(|e| e.to_string())
    }

    /// The sender a token names, if it is signed with this key pair and not expired at
    /// `now`.
    pub fn check(&self, token: &str, now: SystemTime) -> Result<AuthInfo, KvError> {
        let mut validation = jsonwebtoken::Validation::new(self.algorithm);
        validation.leeway = 0;
        // Expiry is checked below against `now`, so tests can move the clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<JwtClaims>(token, &self.decoding, &validation)
            .map_err(|_| KvError::InvalidAuthToken)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if data.claims.exp <= now {
            return Err(KvError::InvalidAuthToken);
        }
        Ok(AuthInfo {
            user: data.claims.username,
            revision: data.claims.revision,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The roles a user has, for `UserGet`.
pub fn roles_of(user: &User) -> Vec<String> {
    let roles: BTreeSet<&String> = user.roles.iter().collect();
    roles.into_iter().cloned().collect()
}

/// Checks a password against a user's stored hash (slow by design: run it off the async
/// threads). A user added with `no_password` never authenticates by password.
pub fn password_matches(user: &User, password: &str) -> bool {
    if user.options.as_ref().is_some_and(|o| o.no_password) || user.password.is_empty() {
        return false;
    }
    let hash = String::from_utf8_lossy(&user.password);
    bcrypt::verify(password, &hash).unwrap_or(false)
}

/// Hashes a password with bcrypt at `cost` (slow by design: run it off the async threads).
pub fn hash_password(password: &str, cost: u32) -> Result<String, KvError> {
    bcrypt::hash(password, cost).map_err(|e| KvError::PasswordHash {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(
        perm_type: permission::Type,
        key: &[u8],
        range_end: &[u8],
    ) -> crate::proto::authpb::Permission {
        crate::proto::authpb::Permission {
            perm_type: perm_type as i32,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }

    fn info(user: &str, revision: u64) -> AuthInfo {
        AuthInfo {
            user: user.into(),
            revision,
        }
    }

    /// A store with root (root role) and alice (role `reader`: read on `/app/` and its
    /// prefix, write on `/app/w`), authentication enabled.
    fn store() -> AuthStore {
        let admin = AuthInfo::default();
        let mut s = AuthStore::default();
        for name in [ROOT, "alice"] {
            s.user_add(
                &admin,
                &AuthUserAddRequest {
                    name: name.into(),
                    hashed_password: "hash".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        s.role_add(
            &admin,
            &AuthRoleAddRequest {
                name: "reader".into(),
            },
        )
        .unwrap();
        for perm in [
            permission(permission::Type::Read, b"/app/", b"/app0"),
            permission(permission::Type::Write, b"/app/w", b""),
        ] {
            s.role_grant_permission(
                &admin,
                &AuthRoleGrantPermissionRequest {
                    name: "reader".into(),
                    perm: Some(perm),
                },
            )
            .unwrap();
        }
        for (user, role) in [(ROOT, ROOT), ("alice", "reader")] {
            s.user_grant_role(
                &admin,
                &AuthUserGrantRoleRequest {
                    user: user.into(),
                    role: role.into(),
                },
            )
            .unwrap();
        }
        s.enable(
            &admin,
            &AuthEnableRequest {
                token_key: vec![7; TOKEN_KEY_BYTES],
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn permissions_cover_keys_ranges_and_prefixes_and_nothing_else() {
        let s = store();
        let alice = info("alice", s.revision);
        let check = |access, key: &[u8], end: &[u8]| s.check_keys(&alice, access, key, end);
        assert_eq!(check(Access::Read, b"/app/x", b""), Ok(()));
        assert_eq!(check(Access::Read, b"/app/", b"/app0"), Ok(()));
        assert_eq!(check(Access::Read, b"/app/a", b"/app/z"), Ok(()));
        assert_eq!(
            check(Access::Read, b"/app/", b"/app1"),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            check(Access::Read, b"/other", b""),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            check(Access::Read, b"\0", b"\0"),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(check(Access::Write, b"/app/w", b""), Ok(()));
        assert_eq!(
            check(Access::Write, b"/app/x", b""),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(check(Access::Read, b"/app/w", b""), Ok(()));
        let root = info(ROOT, s.revision);
        assert_eq!(s.check_keys(&root, Access::Write, b"\0", b"\0"), Ok(()));
        assert_eq!(
            s.check_keys(&AuthInfo::default(), Access::Read, b"/app/x", b""),
            Err(KvError::UserEmpty)
        );
    }

    #[test]
    fn adjacent_permissions_join_and_an_open_range_covers_everything_after() {
        assert!(covers(
            vec![
                (b"a".to_vec(), Some(b"c".to_vec())),
                (b"c".to_vec(), Some(b"e".to_vec()))
            ],
            b"b",
            Some(b"d"),
        ));
        assert!(!covers(
            vec![
                (b"a".to_vec(), Some(b"c".to_vec())),
                (b"d".to_vec(), Some(b"e".to_vec()))
            ],
            b"b",
            Some(b"d"),
        ));
        assert!(covers(vec![(b"m".to_vec(), None)], b"x", None));
        assert!(!covers(
            vec![(b"m".to_vec(), Some(b"z".to_vec()))],
            b"x",
            None
        ));
    }

    #[test]
    fn only_root_manages_and_root_cannot_be_removed_while_enabled() {
        let mut s = store();
        let alice = info("alice", s.revision);
        let root = info(ROOT, s.revision);
        let add = AuthRoleAddRequest {
            name: "writer".into(),
        };
        assert_eq!(s.role_add(&alice, &add), Err(KvError::PermissionDenied));
        assert_eq!(
            s.user_delete(&root, &AuthUserDeleteRequest { name: ROOT.into() }),
            Err(KvError::InvalidAuthMgmt)
        );
        assert_eq!(
            s.user_revoke_role(
                &root,
                &AuthUserRevokeRoleRequest {
                    name: ROOT.into(),
                    role: ROOT.into()
                }
            ),
            Err(KvError::InvalidAuthMgmt)
        );
        s.role_add(&root, &add).unwrap();
        // Every change makes earlier credentials old.
        assert_eq!(s.role_add(&root, &add), Err(KvError::AuthOldRevision));
        let root = info(ROOT, s.revision);
        assert_eq!(s.role_add(&root, &add), Err(KvError::RoleAlreadyExist));
    }

    #[test]
    fn enable_needs_a_root_user_with_the_root_role() {
        let admin = AuthInfo::default();
        let mut s = AuthStore::default();
        let key = AuthEnableRequest {
            token_key: vec![1; TOKEN_KEY_BYTES],
        };
        assert_eq!(s.enable(&admin, &key), Err(KvError::RootUserNotExist));
        s.user_add(
            &admin,
            &AuthUserAddRequest {
                name: ROOT.into(),
                hashed_password: "h".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.enable(&admin, &key), Err(KvError::RootRoleNotExist));
        assert!(!s.is_enabled());
    }

    #[test]
    fn tokens_name_their_user_and_stop_working_when_old_forged_or_expired() {
        let s = store();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(300);
        let token = s.issue_token("alice", now);
        assert_eq!(
            s.check_token(&token, ttl, now),
            Ok(info("alice", s.revision))
        );
        let later = now + Duration::from_secs(301);
        assert_eq!(
            s.check_token(&token, ttl, later),
            Err(KvError::InvalidAuthToken)
        );
        let forged = token.replacen(&hex(b"alice"), &hex(ROOT.as_bytes()), 1);
        assert_eq!(
            s.check_token(&forged, ttl, now),
            Err(KvError::InvalidAuthToken)
        );
        assert_eq!(
            s.check_token("garbage", ttl, now),
            Err(KvError::InvalidAuthToken)
        );
        let mut changed = s.clone();
        changed.bump();
        assert_eq!(
            changed.check_token(&token, ttl, now),
            Err(KvError::AuthOldRevision)
        );
        let mut other_key = s.clone();
        other_key.token_key = vec![8; TOKEN_KEY_BYTES];
        assert_eq!(
            other_key.check_token(&token, ttl, now),
            Err(KvError::InvalidAuthToken)
        );
    }

    #[test]
    fn jwt_tokens_carry_user_and_revision_and_stop_working_when_old_forged_or_expired() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let ttl = Duration::from_secs(600);
        let pem = |k: &rcgen::KeyPair| (k.public_key_pem(), k.serialize_pem());
        let (public, private) = pem(&key);
        let jwt =
            JwtTokens::from_pem("ES256", public.as_bytes(), Some(private.as_bytes()), ttl).unwrap();
        let kind = TokenKind::Jwt(Arc::new(jwt));
        let s = store();
        let now = SystemTime::now();
        let token = s.issue_token_of(&kind, "alice", now).unwrap();
        assert_eq!(token.split('.').count(), 3, "{token}");
        assert_eq!(
            s.check_token_of(&kind, &token, ttl, now),
            Ok(info("alice", s.revision))
        );
        let later = now + Duration::from_secs(601);
        assert_eq!(
            s.check_token_of(&kind, &token, ttl, later),
            Err(KvError::InvalidAuthToken)
        );
        let mut changed = s.clone();
        changed.bump();
        assert_eq!(
            changed.check_token_of(&kind, &token, ttl, now),
            Err(KvError::AuthOldRevision)
        );
        // Another key pair's members do not accept it; a verify-only member issues none.
        let (other_public, _) = pem(&other);
        let verify_only = JwtTokens::from_pem("ES256", other_public.as_bytes(), None, ttl).unwrap();
        let verify_only = TokenKind::Jwt(Arc::new(verify_only));
        assert_eq!(
            s.check_token_of(&verify_only, &token, ttl, now),
            Err(KvError::InvalidAuthToken)
        );
        assert!(s.issue_token_of(&verify_only, "alice", now).is_err());
        // Mismatched files are refused when read.
        let (_, other_private) = pem(&other);
        let error = JwtTokens::from_pem(
            "ES256",
            public.as_bytes(),
            Some(other_private.as_bytes()),
            ttl,
        )
        .unwrap_err();
        assert!(error.contains("not one key pair"), "{error}");
        assert!(JwtTokens::from_pem("HS256", public.as_bytes(), None, ttl).is_err());
    }

    #[test]
    fn a_snapshot_of_the_auth_state_restores_it() {
        let s = store();
        let back = AuthStore::from_snapshot(s.to_snapshot()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            AuthStore::from_snapshot(None).unwrap(),
            AuthStore::default()
        );
        assert!(AuthStore::default().to_snapshot().is_none());
    }
}
