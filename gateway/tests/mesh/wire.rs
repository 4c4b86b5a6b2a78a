//! Calls over gRPC and grpc-web against `run_all` started on port 0.

use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_proto::v1::catalog_service_client::CatalogServiceClient;
use auction_proto::v1::{ErrorDetail, GetLiveSessionRequest, ListCategoriesRequest};
use auction_testkit::{Backend, spawn_app};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn every_service_is_serving(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel().await);
    for service in auction_gateway::SERVICES.iter().chain(&[""]) {
        let response = health
            .check(HealthCheckRequest {
                service: (*service).to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("health of {service:?}: {status}"));
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{service}"
        );
    }
    // An unknown service is NOT_FOUND, as the health protocol requires.
    let unknown = health
        .check(HealthCheckRequest {
            service: "auction.v1.Nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

// Proves health reports SERVING for all five services on SQLite.
#[tokio::test]
async fn health_serving_sqlite() {
    every_service_is_serving(Backend::Sqlite).await;
}

// Proves health reports SERVING for all five services on PostgreSQL.
#[tokio::test]
async fn health_serving_postgres() {
    every_service_is_serving(Backend::Postgres).await;
}

// Proves reflection lists every service and serves their descriptors.
#[tokio::test]
async fn reflection_lists_every_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "auction.v1.BiddingService".to_owned(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::ListServicesResponse(listed) = listed else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in auction_gateway::SERVICES.iter().chain(&[
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    let file = responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::FileDescriptorResponse(file) = file else {
        panic!("expected a file descriptor, got {file:?}");
    };
    let descriptor =
        prost_types::FileDescriptorProto::decode(file.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(descriptor.package(), "auction.v1");
    assert!(
        descriptor
            .service
            .iter()
            .any(|service| service.name() == "BiddingService")
    );
    app.stop().await;
}

async fn categories_are_seeded(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut catalog = CatalogServiceClient::new(app.channel().await);
    let tree = catalog
        .list_categories(ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(tree.categories.len() >= 10, "the category tree is seeded");
    let coins = tree
        .categories
        .iter()
        .find(|category| category.slug == "coins")
        .unwrap();
    assert_eq!(coins.path_names, ["Collectibles", "Coins"]);
    assert_eq!(coins.depth, 1);
    // Parents come before their children.
    for (index, category) in tree.categories.iter().enumerate() {
        if !category.parent_category_id.is_empty() {
            let parent = tree
                .categories
                .iter()
                .position(|candidate| candidate.category_id == category.parent_category_id)
                .unwrap();
            assert!(parent < index);
        }
    }
    // A subtree.
    let collectibles = tree
        .categories
        .iter()
        .find(|category| category.slug == "collectibles")
        .unwrap();
    let subtree = catalog
        .list_categories(ListCategoriesRequest {
            root_category_id: collectibles.category_id.clone(),
            max_depth: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let slugs: Vec<&str> = subtree
        .categories
        .iter()
        .map(|category| category.slug.as_str())
        .collect();
    assert_eq!(slugs, ["collectibles", "coins", "stamps", "trading-cards"]);
    app.stop().await;
}

// Proves the catalogue's category tree is seeded and served on SQLite.
#[tokio::test]
async fn categories_sqlite() {
    categories_are_seeded(Backend::Sqlite).await;
}

// Proves the catalogue's category tree is seeded and served on PostgreSQL.
#[tokio::test]
async fn categories_postgres() {
    categories_are_seeded(Backend::Postgres).await;
}

fn error_detail(status: &tonic::Status) -> ErrorDetail {
    let details =
        tonic_types::pb::Status::decode(status.details()).expect("google.rpc.Status details");
    details
        .details
        .iter()
        .find(|any| any.type_url == "type.googleapis.com/auction.v1.ErrorDetail")
        .map(|any| ErrorDetail::decode(any.value.as_slice()).expect("ErrorDetail"))
        .expect("an auction.v1.ErrorDetail")
}

// Proves bad input gets INVALID_ARGUMENT / NOT_FOUND with a stable reason, and
// an RPC not built yet answers UNIMPLEMENTED with its tracking issue.
#[tokio::test]
async fn precise_statuses() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut catalog = CatalogServiceClient::new(app.channel().await);

    let malformed = catalog
        .list_categories(ListCategoriesRequest {
            root_category_id: "not-a-uuid".to_owned(),
            max_depth: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let detail = error_detail(&malformed);
    assert_eq!(detail.reason, "VALIDATION_FAILED");
    assert_eq!(detail.field_violations[0].field, "root_category_id");
    assert_eq!(
        malformed
            .metadata()
            .get("auction-error-reason")
            .unwrap()
            .to_str()
            .unwrap(),
        "VALIDATION_FAILED"
    );

    let unknown = catalog
        .list_categories(ListCategoriesRequest {
            root_category_id: "019ab000-0000-7000-8000-000000000000".to_owned(),
            max_depth: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(error_detail(&unknown).reason, "CATEGORY_NOT_FOUND");

    let malformed = catalog
        .get_live_session(GetLiveSessionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let detail = error_detail(&malformed);
    assert_eq!(detail.reason, "VALIDATION_FAILED");
    let unknown_session = catalog
        .get_live_session(GetLiveSessionRequest {
            session_id: "019ab000-0000-7000-8000-000000000000".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_session.code(), Code::NotFound);
    assert_eq!(error_detail(&unknown_session).reason, "SESSION_NOT_FOUND");
    app.stop().await;
}

// Proves a grpc-web client (HTTP/1.1, grpc-web framing) reaches the services
// on the same port as native gRPC.
#[tokio::test]
async fn grpc_web_over_http1() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let service = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(client);
    let mut catalog = CatalogServiceClient::with_origin(service, app.url().parse().unwrap());
    let tree = catalog
        .list_categories(ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        tree.categories
            .iter()
            .any(|category| category.slug == "watches")
    );
    // Errors travel over grpc-web too.
    let malformed = catalog
        .list_categories(ListCategoriesRequest {
            root_category_id: "x".to_owned(),
            max_depth: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    app.stop().await;
}

// Proves `auctiond dev`'s demo data gives a newcomer running auctions of
// several formats at once, visible through ListAuctions.
#[tokio::test]
async fn demo_auctions_are_running() {
    let data = tempfile::tempdir().unwrap();
    let mut config = auction_platform::Config::embedded_default();
    config.server.listen_address = "127.0.0.1:0".to_owned();
    config.storage.data_dir = data.path().to_owned();
    config.media.local_dir = data.path().join("media");
    let app = auction_testkit::spawn_with(config, data).await;
    let mut bidding = BiddingServiceClient::new(app.channel().await);
    let running = bidding
        .list_auctions(auction_proto::v1::ListAuctionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .auctions;
    let formats: std::collections::BTreeSet<i32> =
        running.iter().map(|auction| auction.format).collect();
    assert!(running.len() >= 4, "{running:?}");
    assert!(formats.len() >= 3, "several formats: {formats:?}");
    assert!(
        running
            .iter()
            .all(|auction| auction.status == auction_proto::v1::AuctionStatus::Open as i32)
    );
    app.stop().await;
}

/// Sends one grpc-web call (HTTP/1.1, an empty `GetProfile` with a bad
/// token) on `stream` and reads the whole answer; returns its text.
async fn refused_grpc_web_call(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // One grpc-web frame: flag 0, length 0 (an empty request message).
    let body = [0_u8, 0, 0, 0, 0];
    let head = format!(
        "POST /auction.v1.UserService/GetProfile HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         authorization: Bearer not-a-token\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    // The refusal is small: read until its (empty-bodied) end.
    loop {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("an answer")
                .unwrap();
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((headers, rest)) = text.split_once("\r\n\r\n")
            && (headers.to_ascii_lowercase().contains("content-length: 0")
                || rest.ends_with("0\r\n\r\n"))
        {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

// Proves a grpc-web call refused before its body was read (a bad token)
// still gets its status over HTTP/1.1 and leaves the connection usable: the
// server reads the small body first instead of dropping the connection on
// a client that may still be writing (seen as a broken pipe by Node).
#[tokio::test]
async fn refused_grpc_web_calls_keep_the_connection() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    for _ in 0..2 {
        let answer = refused_grpc_web_call(&mut stream).await;
        let lower = answer.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200"), "{answer}");
        assert!(
            lower.contains("grpc-status: 16"),
            "UNAUTHENTICATED: {answer}"
        );
        assert!(!lower.contains("connection: close"), "{answer}");
    }
    app.stop().await;
}
