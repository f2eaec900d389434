//! `demo.user.v1.UserService`: an in-memory user directory that keeps emails unique.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::control::{CallKind, DemoHandle, lock};
use crate::method;
use crate::pb::user::user_service_server::UserService;
use crate::pb::user::{
    CreateUserRequest, CreateUserResponse, DeleteUserRequest, DeleteUserResponse, GetUserRequest, GetUserResponse, User,
};

pub(crate) struct Users {
    control: DemoHandle,
    directory: Mutex<Directory>,
}

#[derive(Default)]
struct Directory {
    by_id: HashMap<String, User>,
    /// Normalised email → user id, so duplicates are refused regardless of case.
    by_email: HashMap<String, String>,
    /// `nexus-idempotency-key` → the user that call created: a retried call (same key) gets the
    /// same user back instead of ALREADY_EXISTS, as a well-behaved backend should.
    by_idempotency_key: HashMap<String, String>,
    last_sequence: i64,
}

impl Users {
    pub(crate) fn new(control: DemoHandle) -> Self {
        let n = control.capacity();
        let directory = Directory {
            by_id: HashMap::with_capacity(n),
            by_email: HashMap::with_capacity(n),
            by_idempotency_key: HashMap::with_capacity(n),
            last_sequence: 0,
        };
        Self { control, directory: Mutex::new(directory) }
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        let _call = self.control.admit(method::CREATE_USER, &request, CallKind::Unary).await?;
        let key =
            request.metadata().get(crate::IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request = request.into_inner();
        if let Some(key) = &key {
            let directory = lock(&self.directory);
            if let Some(user) = directory.by_idempotency_key.get(key).and_then(|id| directory.by_id.get(id)) {
                return Ok(Response::new(CreateUserResponse { user: Some(user.clone()) }));
            }
        }
        let email = request.email.trim();
        if email.is_empty() {
            return Err(Status::invalid_argument("email must not be empty"));
        }
        let email_key = email.to_lowercase();

        let mut directory = lock(&self.directory);
        if directory.by_email.contains_key(&email_key) {
            return Err(Status::already_exists(format!("a user with email {email} already exists")));
        }
        directory.last_sequence += 1;
        let sequence = directory.last_sequence;
        let user = User {
            id: format!("usr_{sequence:06}"),
            email: email.to_owned(),
            display_name: request.display_name,
            created_at: Some(SystemTime::now().into()),
            roles: request.roles,
            sequence,
        };
        directory.by_email.insert(email_key, user.id.clone());
        directory.by_id.insert(user.id.clone(), user.clone());
        if let Some(key) = key {
            directory.by_idempotency_key.insert(key, user.id.clone());
        }
        Ok(Response::new(CreateUserResponse { user: Some(user) }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let _call = self.control.admit(method::GET_USER, &request, CallKind::Unary).await?;
        let user_id = request.into_inner().user_id;
        let user = lock(&self.directory)
            .by_id
            .get(&user_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("user {user_id} not found")))?;
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<DeleteUserResponse>, Status> {
        let _call = self.control.admit(method::DELETE_USER, &request, CallKind::Unary).await?;
        let user_id = request.into_inner().user_id;
        let mut directory = lock(&self.directory);
        let user =
            directory.by_id.remove(&user_id).ok_or_else(|| Status::not_found(format!("user {user_id} not found")))?;
        // Freeing the email lets a compensation (delete) followed by a retry (create) succeed.
        directory.by_email.remove(&user.email.to_lowercase());
        Ok(Response::new(DeleteUserResponse { deleted: true }))
    }
}
