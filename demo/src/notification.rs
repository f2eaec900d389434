//! `demo.notification.v1.NotificationService`: accepts emails and pushes without delivering them.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Request, Response, Status};

use crate::control::{CallKind, DemoHandle};
use crate::method;
use crate::pb::notification::notification_service_server::NotificationService;
use crate::pb::notification::{SendEmailRequest, SendEmailResponse, SendPushRequest, SendPushResponse};

pub(crate) struct Notifications {
    control: DemoHandle,
    last_message: AtomicU64,
}

impl Notifications {
    pub(crate) fn new(control: DemoHandle) -> Self {
        Self { control, last_message: AtomicU64::new(0) }
    }

    fn next_message_id(&self) -> String {
        let sequence = self.last_message.fetch_add(1, Ordering::Relaxed) + 1;
        format!("msg_{sequence:06}")
    }
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn send_email(&self, request: Request<SendEmailRequest>) -> Result<Response<SendEmailResponse>, Status> {
        let _call = self.control.admit(method::SEND_EMAIL, &request, CallKind::Unary).await?;
        if request.get_ref().to.trim().is_empty() {
            return Err(Status::invalid_argument("to must not be empty"));
        }
        Ok(Response::new(SendEmailResponse { message_id: self.next_message_id(), accepted: true }))
    }

    async fn send_push(&self, request: Request<SendPushRequest>) -> Result<Response<SendPushResponse>, Status> {
        let _call = self.control.admit(method::SEND_PUSH, &request, CallKind::Unary).await?;
        if request.get_ref().user_id.trim().is_empty() {
            return Err(Status::invalid_argument("user_id must not be empty"));
        }
        Ok(Response::new(SendPushResponse { message_id: self.next_message_id(), devices: 1 }))
    }
}
