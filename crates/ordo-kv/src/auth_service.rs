//! The etcd v3 Auth service: users, roles and permissions changed through the log (see
//! [`crate::auth`]), `Authenticate` answering tokens, and reads of the auth state after the
//! member caught up with the leader.

use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::auth::{hash_password, password_matches, roles_of, AuthInfo, TOKEN_KEY_BYTES};
use crate::backend::KvBackend;
use crate::command::{ApplyResponse, Command};
use crate::error::KvError;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::auth_server;
use crate::proto::internal::AuthEnableRequest;
use crate::service::EtcdApi;

impl<B: KvBackend> EtcdApi<B> {
    /// Orders an auth change sent by `by` and waits for it to apply.
    async fn change_auth(
        &self,
        by: AuthInfo,
        command: Command,
    ) -> Result<pb::ResponseHeader, Status> {
        match self.propose(Command::sent_by(by, command)).await? {
            ApplyResponse::Auth => Ok(self.header(self.current_revision())),
            other => Err(Status::internal(format!(
                "ordo: state machine answered an auth change with {other:?}"
            ))),
        }
    }

    /// Hashes a password off the async threads (bcrypt is slow by design).
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || hash_password(&password, cost))
            .await
            .map_err(|e| Status::internal(format!("ordo: hashing the password failed: {e}")))?
            .map_err(Status::from)
    }

    /// Runs `f` on the auth state once this member has caught up with the leader.
    async fn read_auth<R>(
        &self,
        f: impl FnOnce(&crate::auth::AuthStore) -> R,
    ) -> Result<R, Status> {
        self.barrier().await?;
        Ok(self.backend.state().read(|store| f(store.auth())))
    }
}

fn random_key() -> Result<Vec<u8>, Status> {
    let mut key = vec![0u8; TOKEN_KEY_BYTES];
    getrandom::fill(&mut key)
        .map_err(|e| Status::internal(format!("ordo: no randomness for the token key: {e}")))?;
    Ok(key)
}

#[tonic::async_trait]
impl<B: KvBackend> auth_server::Auth for EtcdApi<B> {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let by = self.sender(&request)?;
        let command = Command::AuthEnable(AuthEnableRequest {
            token_key: random_key()?,
        });
        let header = self.change_auth(by, command).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::AuthDisable(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let (enabled, revision) = self.read_auth(|a| (a.is_enabled(), a.revision())).await?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(self.header(self.current_revision())),
            enabled,
            auth_revision: revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(KvError::UserEmpty.into());
        }
        // Caught up first: the token carries this member's auth revision, which must be
        // the cluster's for the writes it signs to be accepted.
        let user = self
            .read_auth(|a| {
                if a.is_enabled() {
                    Ok(a.user(&req.name).cloned())
                } else {
                    Err(KvError::AuthNotEnabled)
                }
            })
            .await??;
        let Some(user) = user else {
            return Err(KvError::AuthFailed.into());
        };
        let password = req.password;
        let matches = tokio::task::spawn_blocking(move || password_matches(&user, &password))
            .await
            .map_err(|e| Status::internal(format!("ordo: checking the password failed: {e}")))?;
        if !matches {
            return Err(KvError::AuthFailed.into());
        }
        let token = self.backend.state().read(|store| {
            let auth = store.auth();
            // Changed while the password was being checked: the user must still exist.
            match auth.user(&req.name) {
                Some(_) if auth.is_enabled() => {
                    auth.issue_token_of(&self.config.auth_token, &req.name, SystemTime::now())
                }
                Some(_) => Err(KvError::AuthNotEnabled),
                None => Err(KvError::AuthFailed),
            }
        })?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(self.header(self.current_revision())),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let by = self.sender(&request)?;
        let mut req = request.into_inner();
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        if !no_password && req.hashed_password.is_empty() {
            if req.password.is_empty() {
                return Err(KvError::PasswordEmpty.into());
            }
            req.hashed_password = self.hash(std::mem::take(&mut req.password)).await?;
        }
        // The log never holds a password, only its hash.
        req.password.clear();
        let header = self.change_auth(by, Command::UserAdd(req)).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let by = self.sender(&request)?;
        let name = request.into_inner().name;
        let roles = self
            .read_auth(|a| {
                a.check_user_visible(&by, &name)?;
                a.user(&name).map(roles_of).ok_or(KvError::UserNotFound)
            })
            .await??;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(self.header(self.current_revision())),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let by = self.sender(&request)?;
        let users = self
            .read_auth(|a| a.check_admin(&by).map(|()| a.user_names()))
            .await??;
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(self.header(self.current_revision())),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::UserDelete(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let by = self.sender(&request)?;
        let mut req = request.into_inner();
        if req.hashed_password.is_empty() {
            if req.password.is_empty() {
                return Err(KvError::PasswordEmpty.into());
            }
            req.hashed_password = self.hash(std::mem::take(&mut req.password)).await?;
        }
        req.password.clear();
        let header = self
            .change_auth(by, Command::UserChangePassword(req))
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::UserGrantRole(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::UserRevokeRole(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::RoleAdd(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let by = self.sender(&request)?;
        let name = request.into_inner().role;
        let perm = self
            .read_auth(|a| {
                a.check_role_visible(&by, &name)?;
                a.role(&name)
                    .map(|r| r.key_permission.clone())
                    .ok_or(KvError::RoleNotFound)
            })
            .await??;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(self.header(self.current_revision())),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let by = self.sender(&request)?;
        let roles = self
            .read_auth(|a| a.check_admin(&by).map(|()| a.role_names()))
            .await??;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(self.header(self.current_revision())),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::RoleDelete(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::RoleGrantPermission(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let by = self.sender(&request)?;
        let header = self
            .change_auth(by, Command::RoleRevokePermission(request.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}
