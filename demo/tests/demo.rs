//! Integration tests for the demo services over real sockets: one binary, one module per area.

use std::time::Duration;

use anyhow::{Context, ensure};
use nexus_demo::{DemoHandle, DemoOptions, DemoServer, method};
use tonic::transport::Channel;

/// A running demo server plus a connected channel; the server stops when this is dropped.
struct Fixture {
    handle: DemoHandle,
    server: DemoServer,
    channel: Channel,
}

async fn start(options: DemoOptions) -> anyhow::Result<Fixture> {
    let (address, handle, server) = nexus_demo::spawn(options).await?;
    let channel =
        Channel::from_shared(format!("http://{address}"))?.connect().await.context("connecting to the demo server")?;
    Ok(Fixture { handle, server, channel })
}

/// Polls `condition` until it holds, because some counters move just after a response is sent.
async fn eventually(what: &str, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

mod users {
    use nexus_demo::pb::user::user_service_client::UserServiceClient;
    use nexus_demo::pb::user::{CreateUserRequest, DeleteUserRequest, GetUserRequest};
    use tonic::Code;

    use super::*;

    fn create(email: &str) -> CreateUserRequest {
        CreateUserRequest { email: email.into(), display_name: "Ada".into(), roles: vec!["admin".into()] }
    }

    /// A retried CreateUser (same `nexus-idempotency-key`) returns the user the first call made.
    #[tokio::test]
    async fn a_retried_create_with_the_same_key_returns_the_same_user() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = UserServiceClient::new(fixture.channel.clone());
        let keyed = |key: &str| {
            let mut r = tonic::Request::new(create("grace@example.com"));
            r.metadata_mut().insert("nexus-idempotency-key", key.parse().expect("ascii"));
            r
        };
        let first = client.create_user(keyed("exec/user")).await?.into_inner().user.context("user")?;
        let again = client.create_user(keyed("exec/user")).await?.into_inner().user.context("user")?;
        assert_eq!(first, again);
        let other = client.create_user(keyed("other/user")).await.expect_err("a new key is a new create");
        assert_eq!(other.code(), Code::AlreadyExists);
        Ok(())
    }

    #[tokio::test]
    async fn create_get_delete() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = UserServiceClient::new(fixture.channel.clone());

        let user = client.create_user(create("ada@example.com")).await?.into_inner().user.context("user")?;
        assert_eq!(user.id, "usr_000001");
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.roles, ["admin"]);
        assert_eq!(user.sequence, 1);
        assert!(user.created_at.is_some());

        let fetched = client.get_user(GetUserRequest { user_id: user.id.clone() }).await?.into_inner().user;
        assert_eq!(fetched.as_ref(), Some(&user));

        let duplicate = client.create_user(create("ADA@example.com")).await;
        assert_eq!(duplicate.err().map(|s| s.code()), Some(Code::AlreadyExists));
        let empty = client.create_user(create("  ")).await;
        assert_eq!(empty.err().map(|s| s.code()), Some(Code::InvalidArgument));

        let deleted = client.delete_user(DeleteUserRequest { user_id: user.id.clone() }).await?.into_inner();
        assert!(deleted.deleted);
        for result in [
            client.get_user(GetUserRequest { user_id: user.id.clone() }).await.map(drop),
            client.delete_user(DeleteUserRequest { user_id: user.id.clone() }).await.map(drop),
        ] {
            assert_eq!(result.err().map(|s| s.code()), Some(Code::NotFound));
        }

        // Deleting frees the email, so a compensated create can be retried.
        client.create_user(create("ada@example.com")).await?;
        // Every call is counted, including the refused ones.
        assert_eq!(fixture.handle.calls(method::CREATE_USER), 4);
        assert_eq!(fixture.handle.calls(method::GET_USER), 2);
        assert_eq!(fixture.handle.in_flight(method::CREATE_USER), 0);
        fixture.server.shutdown().await?;
        Ok(())
    }
}

mod assets {
    use nexus_demo::pb::asset::asset_service_client::AssetServiceClient;
    use nexus_demo::pb::asset::{GetAssetRequest, UploadAssetRequest};
    use tonic::Code;

    use super::*;

    #[tokio::test]
    async fn upload_then_get() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = AssetServiceClient::new(fixture.channel.clone());
        let asset = client
            .upload_asset(UploadAssetRequest {
                owner_id: "usr_000001".into(),
                source_url: "https://example.com/me/avatar.png?v=2".into(),
                content_type: String::new(),
            })
            .await?
            .into_inner()
            .asset
            .context("asset")?;
        assert_eq!(asset.url, format!("https://cdn.demo.local/assets/{}", asset.id));
        assert_eq!(asset.content_type, "image/png");
        assert_eq!(asset.owner_id, "usr_000001");

        let fetched = client.get_asset(GetAssetRequest { asset_id: asset.id.clone() }).await?.into_inner().asset;
        assert_eq!(fetched, Some(asset));

        let missing = client.get_asset(GetAssetRequest { asset_id: "ast_999999".into() }).await;
        assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));
        Ok(())
    }
}

mod notifications {
    use nexus_demo::pb::notification::notification_service_client::NotificationServiceClient;
    use nexus_demo::pb::notification::{SendEmailRequest, SendPushRequest};
    use tonic::Request;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn send_records_idempotency_keys_and_traceparent() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = NotificationServiceClient::new(fixture.channel.clone());
        for key in ["key-1", "key-1", "key-2"] {
            let mut request = Request::new(SendEmailRequest {
                to: "ada@example.com".into(),
                subject: "Welcome".into(),
                body: "Hello".into(),
            });
            request.metadata_mut().insert(nexus_demo::IDEMPOTENCY_KEY_HEADER, key.parse()?);
            request.metadata_mut().insert(nexus_demo::TRACEPARENT_HEADER, TRACEPARENT.parse()?);
            let response = client.send_email(request).await?.into_inner();
            assert!(response.accepted);
            assert!(response.message_id.starts_with("msg_"));
        }
        assert_eq!(fixture.handle.idempotency_keys(method::SEND_EMAIL), ["key-1", "key-1", "key-2"]);
        assert_eq!(fixture.handle.last_traceparent(method::SEND_EMAIL).as_deref(), Some(TRACEPARENT));
        assert_eq!(fixture.handle.last_traceparent(method::SEND_PUSH), None);

        let push = client
            .send_push(SendPushRequest {
                user_id: "usr_000001".into(),
                title: "Hi".into(),
                body: "There".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(!push.message_id.is_empty());
        Ok(())
    }
}

mod broadcasts {
    use nexus_demo::pb::broadcast::broadcast_service_client::BroadcastServiceClient;
    use nexus_demo::pb::broadcast::{CheckAccessRequest, CreateBroadcastRequest, SubscribeRequest};
    use tonic::Code;

    use super::*;

    fn subscribe(broadcast_id: &str, max_chunks: i32) -> SubscribeRequest {
        SubscribeRequest { broadcast_id: broadcast_id.into(), token: String::new(), max_chunks }
    }

    #[tokio::test]
    async fn check_access() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = BroadcastServiceClient::new(fixture.channel.clone());
        let check =
            |broadcast_id: &str| CheckAccessRequest { broadcast_id: broadcast_id.into(), user_id: "usr_000001".into() };

        let public = client.check_access(check("public-news")).await?.into_inner();
        assert!(public.allowed);
        assert!(!public.token.is_empty());

        let unknown = client.check_access(check("brd_404")).await?.into_inner();
        assert!(!unknown.allowed);
        assert!(!unknown.reason.is_empty());

        let created = client
            .create_broadcast(CreateBroadcastRequest {
                title: "Launch".into(),
                owner_id: "usr_000001".into(),
                chunk_count: 0,
            })
            .await?
            .into_inner()
            .broadcast
            .context("broadcast")?;
        assert_eq!(created.chunk_count, 10);
        let known = client.check_access(check(&created.id)).await?.into_inner();
        assert!(known.allowed);
        Ok(())
    }

    #[tokio::test]
    async fn subscribe_streams_chunks_in_order() -> anyhow::Result<()> {
        let fixture = start(DemoOptions { chunk_interval: Duration::from_millis(1), ..DemoOptions::default() }).await?;
        let mut client = BroadcastServiceClient::new(fixture.channel.clone());

        let mut stream = client.subscribe(subscribe("public-news", 5)).await?.into_inner();
        let mut texts = Vec::new();
        while let Some(chunk) = stream.message().await? {
            assert_eq!(chunk.broadcast_id, "public-news");
            assert_eq!(chunk.sequence, i64::try_from(texts.len())? + 1);
            texts.push(chunk.text);
        }
        assert_eq!(texts, ["chunk 1 of 5", "chunk 2 of 5", "chunk 3 of 5", "chunk 4 of 5", "chunk 5 of 5"]);
        let handle = &fixture.handle;
        eventually("the subscribe to end", || handle.subscribes_ended() == 1).await?;
        assert_eq!(handle.subscribes_started(), 1);
        assert_eq!(handle.subscribes_active(), 0);

        // A registered broadcast has its own length, which max_chunks may only shorten.
        let created = client
            .create_broadcast(CreateBroadcastRequest { title: "Short".into(), owner_id: String::new(), chunk_count: 3 })
            .await?
            .into_inner()
            .broadcast
            .context("broadcast")?;
        let mut stream = client.subscribe(subscribe(&created.id, 100)).await?.into_inner();
        let mut count = 0;
        while stream.message().await?.is_some() {
            count += 1;
        }
        assert_eq!(count, 3);

        let missing = client.subscribe(subscribe("brd_404", 0)).await;
        assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));
        Ok(())
    }

    #[tokio::test]
    async fn subscribe_ends_when_client_drops_mid_stream() -> anyhow::Result<()> {
        let fixture =
            start(DemoOptions { chunk_interval: Duration::from_millis(20), ..DemoOptions::default() }).await?;
        let mut client = BroadcastServiceClient::new(fixture.channel.clone());
        let mut stream = client.subscribe(subscribe("public-live", 1000)).await?.into_inner();
        for expected in 1..=2 {
            let chunk = stream.message().await?.context("chunk")?;
            assert_eq!(chunk.sequence, expected);
        }
        let handle = &fixture.handle;
        assert_eq!(handle.subscribes_active(), 1);
        assert_eq!(handle.in_flight(method::SUBSCRIBE), 1);

        drop(stream);
        eventually("the dropped subscribe to end", || handle.subscribes_ended() == 1).await?;
        assert_eq!(handle.subscribes_active(), 0);
        eventually("the subscribe call to leave flight", || handle.in_flight(method::SUBSCRIBE) == 0).await?;
        Ok(())
    }
}

mod injection {
    use nexus_demo::pb::notification::SendEmailRequest;
    use nexus_demo::pb::notification::notification_service_client::NotificationServiceClient;
    use nexus_demo::pb::user::GetUserRequest;
    use nexus_demo::pb::user::user_service_client::UserServiceClient;
    use tonic::Code;

    use super::*;

    #[tokio::test]
    async fn fail_next_fails_exactly_n_calls() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = UserServiceClient::new(fixture.channel.clone());
        fixture.handle.fail_next(method::GET_USER, 2, Code::ResourceExhausted);
        let mut codes = Vec::new();
        for _ in 0..4 {
            let result = client.get_user(GetUserRequest { user_id: "usr_404".into() }).await;
            codes.push(result.err().map(|s| s.code()));
        }
        assert_eq!(
            codes,
            [Some(Code::ResourceExhausted), Some(Code::ResourceExhausted), Some(Code::NotFound), Some(Code::NotFound)]
        );
        assert_eq!(fixture.handle.calls(method::GET_USER), 4);
        Ok(())
    }

    #[tokio::test]
    async fn failure_rate_one_fails_every_unary_call() -> anyhow::Result<()> {
        let fixture = start(DemoOptions { failure_rate: 1.0, ..DemoOptions::default() }).await?;
        let mut client = UserServiceClient::new(fixture.channel.clone());
        let request = || GetUserRequest { user_id: "usr_404".into() };
        let failed = client.get_user(request()).await;
        assert_eq!(failed.err().map(|s| s.code()), Some(Code::Unavailable));
        fixture.handle.set_failure_rate(0.0);
        let answered = client.get_user(request()).await;
        assert_eq!(answered.err().map(|s| s.code()), Some(Code::NotFound));
        Ok(())
    }

    #[tokio::test]
    async fn latency_holds_concurrent_calls_in_flight() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        fixture.handle.set_latency(method::SEND_EMAIL, Duration::from_millis(200));
        let client = NotificationServiceClient::new(fixture.channel.clone());
        let started = tokio::time::Instant::now();
        let calls = (0..4).map(|i| {
            let mut client = client.clone();
            async move {
                client
                    .send_email(SendEmailRequest {
                        to: format!("user{i}@example.com"),
                        subject: String::new(),
                        body: String::new(),
                    })
                    .await
            }
        });
        for result in futures::future::join_all(calls).await {
            result?;
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(fixture.handle.max_in_flight(method::SEND_EMAIL), 4);
        assert_eq!(fixture.handle.in_flight(method::SEND_EMAIL), 0);
        Ok(())
    }
}

mod reflection {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    use super::*;

    #[tokio::test]
    async fn lists_the_demo_services() -> anyhow::Result<()> {
        let fixture = start(DemoOptions::default()).await?;
        let mut client = ServerReflectionClient::new(fixture.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
        let response = responses.message().await?.context("reflection response")?;
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            anyhow::bail!("unexpected reflection response: {response:?}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for service in nexus_demo::SERVICE_NAMES {
            ensure!(names.iter().any(|n| n == service), "{service} missing from {names:?}");
        }
        Ok(())
    }
}
